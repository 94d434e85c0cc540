"""The decision log on a real SQLite file and on the real PostgreSQL server (127.0.0.1:5432, database `test`)."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import sqlite3
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from serving.decision_log import (
    DecisionLog,
    DecisionLogError,
    DecisionLogUnavailable,
    DecisionRecord,
    OutcomeConflict,
    UnknownDecision,
)

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES_SERVER = "PostgreSQL at 127.0.0.1:5432 (database test)"
T0 = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
INSERT_DECISIONS = re.compile(r"INSERT INTO (\S+\.)?decisions\b")


@dataclass(frozen=True)
class Store:
    url: str
    schema: str | None


def counts(log: DecisionLog) -> dict[str, int]:
    """The log's counts but `commits` (how many transactions depends on how the writer batched)."""
    return {key: value for key, value in log.stats().items() if key != "commits"}


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    """A fresh schema name of this test's own in the test PostgreSQL, dropped with CASCADE afterwards.

    An unreachable server fails the test — unless CLM_SKIP_SERVICES=1, which skips it deliberately.
    """
    engine = sa.create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        if os.environ.get("CLM_SKIP_SERVICES") == "1":
            pytest.skip(f"{POSTGRES_SERVER} is unreachable ({exc.orig}); CLM_SKIP_SERVICES=1")
        pytest.fail(
            f"{POSTGRES_SERVER} is unreachable: {exc.orig}. Start it, "
            "or set CLM_SKIP_SERVICES=1 to skip PostgreSQL tests deliberately"
        )
    schema = f"clm_test_{uuid.uuid4().hex[:16]}"
    yield schema
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        left = conn.execute(
            sa.text("SELECT count(*) FROM pg_namespace WHERE nspname = :schema"), {"schema": schema}
        ).scalar_one()
    engine.dispose()
    assert left == 0, f"schema {schema} survived the clean-up"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def store(request: pytest.FixtureRequest, tmp_path) -> Store:
    if request.param == "sqlite":
        return Store(f"sqlite:///{tmp_path}/logs/decisions.db", None)
    return Store(POSTGRES_URL, request.getfixturevalue("postgres_schema"))


@pytest.fixture
def make_log(store: Store) -> Iterator[Callable[..., DecisionLog]]:
    """`make_log(**options)`: a DecisionLog on the test's store, closed after the test."""
    logs: list[DecisionLog] = []

    def make(**options: Any) -> DecisionLog:
        log = DecisionLog(store.url, schema=store.schema, **options)
        logs.append(log)
        return log

    yield make
    for log in logs:
        log.close()


def make_record(user_id: str | None = "u-1", ts: dt.datetime = T0, **overrides: Any) -> DecisionRecord:
    fields: dict[str, Any] = {
        "decision_id": uuid.uuid4().hex,
        "ts": ts,
        "user_id": user_id,
        "request_digest": "ab" * 32,
        "versions": {"churn_model": "7", "upgrade_model": "3", "policy": "p-2", "features": "f-1"},
        "stage": "at_risk",
        "action": "retention_discount",
        "propensity": 0.85,
        "explored": False,
        "expected_value": 12.5,
        "candidates": [
            {"name": "retention_discount", "expected_value": 12.5},
            {"name": "no_action", "expected_value": 0.0},
            {"name": "win_back_offer", "suppressed_reason": "stage at_risk not eligible"},
        ],
        "latency_ms": 3.25,
        "payload": {"user_id": user_id, "stage": {"name": "at_risk", "rule": "churn ≥ 0.6"}, "clv": 310.0},
        "inputs": {"days_since_last_event": 21.0, "plan": "pro", "sessions_28d": None},
        "shadow": None,
    }
    fields.update(overrides)
    return DecisionRecord(**fields)


def stored_ids(log: DecisionLog) -> list[str]:
    with log.engine.connect() as conn:
        return list(conn.execute(sa.select(log.decisions_table.c.decision_id)).scalars())


def fail_inserts(log: DecisionLog, should_fail: Callable[[str], bool]) -> None:
    """Make every INSERT into `decisions` whose parameters satisfy `should_fail` raise inside the driver call."""

    def before_cursor_execute(conn, cursor, statement, parameters, context, executemany) -> None:
        if INSERT_DECISIONS.search(statement) and should_fail(repr(parameters)):
            raise ConnectionResetError("injected: connection reset by peer")

    sa.event.listen(log.engine, "before_cursor_execute", before_cursor_execute)


def test_append_flush_get_round_trip(make_log: Callable[..., DecisionLog]) -> None:
    log = make_log()
    log.start()
    shanghai = dt.timezone(dt.timedelta(hours=8))
    record = make_record(
        ts=dt.datetime(2025, 6, 1, 20, 30, 15, 123456, tzinfo=shanghai),
        explored=True,
        propensity=np.float64(0.125),
        inputs={"sessions_28d": np.float32(4.0), "plan": "pro", "missing": None},
        shadow={"action": "no_action", "expected_value": 0.0, "policy": "p-3"},
    )
    log.append(record)
    assert log.flush()

    stored = log.get_decision(record.decision_id)
    assert stored is not None
    assert stored["ts"] == dt.datetime(2025, 6, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)
    assert stored["ts"].tzinfo == dt.UTC
    assert stored == {
        "decision_id": record.decision_id,
        "ts": record.ts,
        "user_id": "u-1",
        "request_digest": "ab" * 32,
        "versions": record.versions,
        "stage": "at_risk",
        "action": "retention_discount",
        "propensity": 0.125,
        "explored": True,
        "expected_value": 12.5,
        "candidates": record.candidates,
        "latency_ms": 3.25,
        "payload": record.payload,
        "inputs": {"sessions_28d": 4.0, "plan": "pro", "missing": None},
        "shadow": record.shadow,
    }
    assert log.get_decision(uuid.uuid4().hex) is None
    assert counts(log) == {
        "written": 1,
        "failed": 0,
        "retries": 0,
        "overflow": 0,
        "duplicates": 0,
        "pending": 0,
    }


@pytest.mark.services
def test_times_read_back_in_utc_whatever_the_sessions_time_zone(postgres_schema: str) -> None:
    shanghai_session = f"{POSTGRES_URL}?options=-c%20TimeZone%3DAsia%2FShanghai"
    log = DecisionLog(shanghai_session, schema=postgres_schema)
    try:
        record = make_record()
        log.append(record)
        log.record_outcome(
            record.decision_id, "retained_30d", "retention_discount", T0 + dt.timedelta(days=30)
        )
        with log.engine.connect() as conn:
            assert conn.execute(sa.text("SHOW TimeZone")).scalar_one() == "Asia/Shanghai"
            stored_utc = conn.execute(
                sa.text(f"SELECT ts AT TIME ZONE 'UTC' FROM {postgres_schema}.decisions")
            ).scalar_one()
            outcome_ts = conn.execute(sa.select(log.outcomes_table.c.ts)).scalar_one()
        assert stored_utc == T0.replace(tzinfo=None)
        assert log.get_decision(record.decision_id)["ts"].tzinfo == dt.UTC
        assert outcome_ts == T0 + dt.timedelta(days=30)
        assert outcome_ts.tzinfo == dt.UTC
    finally:
        log.close()


def test_a_reopened_log_finds_what_was_written(make_log: Callable[..., DecisionLog]) -> None:
    first = make_log()
    record = make_record(user_id=None)
    first.append(record)
    first.close()

    reopened = make_log()
    stored = reopened.get_decision(record.decision_id)
    assert stored is not None
    assert stored["user_id"] is None
    assert stored["shadow"] is None


def test_the_record_is_logged_as_it_was_when_appended(make_log: Callable[..., DecisionLog]) -> None:
    log = make_log(durable=True)  # the writer encodes: a durable append returns once the record is stored
    log.start()
    record = make_record()
    log.append(record)
    record.payload["clv"] = -1.0  # a caller reusing its dict after the decision was returned
    assert log.flush()
    assert log.get_decision(record.decision_id)["payload"]["clv"] == 310.0


def test_concurrent_appends_are_all_written_exactly_once(make_log: Callable[..., DecisionLog]) -> None:
    log = make_log(batch_size=50)
    log.start()
    records = [[make_record(user_id=f"u-{thread}") for _ in range(200)] for thread in range(8)]
    barrier = threading.Barrier(len(records))

    def append_all(batch: list[DecisionRecord]) -> None:
        barrier.wait()
        for record in batch:
            log.append(record)

    threads = [threading.Thread(target=append_all, args=(batch,)) for batch in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert log.flush(timeout=30)

    ids = stored_ids(log)
    assert len(ids) == 8 * 200
    assert set(ids) == {record.decision_id for batch in records for record in batch}
    assert counts(log) == {
        "written": 1600,
        "failed": 0,
        "retries": 0,
        "overflow": 0,
        "duplicates": 0,
        "pending": 0,
    }


def test_appending_a_decision_id_twice_keeps_the_first_row(make_log: Callable[..., DecisionLog]) -> None:
    log = make_log()
    record = make_record()
    log.append(record)
    log.append(make_record(decision_id=record.decision_id, action="no_action"))
    assert log.flush()
    assert stored_ids(log) == [record.decision_id]
    assert log.get_decision(record.decision_id)["action"] == "retention_discount"
    assert log.stats()["written"] == 1
    assert log.stats()["duplicates"] == 1


def test_outcomes_are_recorded_once(make_log: Callable[..., DecisionLog]) -> None:
    log = make_log()
    log.start()
    record = make_record()
    log.append(record)  # not flushed: record_outcome must find it anyway
    first = log.record_outcome(record.decision_id, "retained_30d", "retention_discount", T0, value=1.0)
    again = log.record_outcome(record.decision_id, "retained_30d", "retention_discount", T0, value=1.0)
    with pytest.raises(OutcomeConflict, match=r"already recorded with action_taken 'retention_discount'"):
        log.record_outcome(
            record.decision_id, "retained_30d", "no_action", T0 + dt.timedelta(days=1), value=0.0
        )
    other = log.record_outcome(record.decision_id, "upgraded_30d", "retention_discount", T0)

    assert (first, again, other) == ("recorded", "duplicate", "recorded")
    outcomes = log.outcomes_table
    with log.engine.connect() as conn:
        rows = conn.execute(sa.select(outcomes).order_by(outcomes.c.outcome)).mappings().all()
    assert [(row["outcome"], row["action_taken"], row["ts"], row["value"]) for row in rows] == [
        ("retained_30d", "retention_discount", T0, 1.0),
        ("upgraded_30d", "retention_discount", T0, None),
    ]
    assert all(row["recorded_at"].tzinfo is not None for row in rows)


def test_an_outcome_of_an_unknown_decision_is_refused(make_log: Callable[..., DecisionLog]) -> None:
    log = make_log()
    log.append(make_record())
    with pytest.raises(UnknownDecision, match="not in the decision log"):
        log.record_outcome(uuid.uuid4().hex, "retained_30d", "no_action", T0)
    with log.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(log.outcomes_table)).scalar_one() == 0


def test_decisions_for_user_newest_first_and_limited(make_log: Callable[..., DecisionLog]) -> None:
    log = make_log()
    hours = [5, 1, 9, 3, 7]
    for hour in hours:
        log.append(make_record(user_id="u-a", ts=T0 + dt.timedelta(hours=hour), stage=f"h{hour}"))
    log.append(make_record(user_id="u-b", ts=T0 + dt.timedelta(hours=20)))
    assert log.flush()

    assert [row["stage"] for row in log.decisions_for_user("u-a")] == ["h9", "h7", "h5", "h3", "h1"]
    assert [row["stage"] for row in log.decisions_for_user("u-a", limit=2)] == ["h9", "h7"]
    assert log.decisions_for_user("u-a", limit=1)[0]["candidates"][0]["name"] == "retention_discount"
    assert log.decisions_for_user("nobody") == []
    with pytest.raises(ValueError, match="limit"):
        log.decisions_for_user("u-a", limit=0)


def test_a_full_queue_writes_on_the_callers_thread(make_log: Callable[..., DecisionLog]) -> None:
    log = make_log(queue_size=2)  # writer not started: the queue fills after two records
    records = [make_record() for _ in range(5)]
    for record in records:
        log.append(record)

    assert counts(log) == {
        "written": 3,
        "failed": 0,
        "retries": 0,
        "overflow": 3,
        "duplicates": 0,
        "pending": 2,
    }
    assert set(stored_ids(log)) == {record.decision_id for record in records[2:]}
    assert log.flush()
    assert set(stored_ids(log)) == {record.decision_id for record in records}
    assert log.stats()["pending"] == 0


def test_a_transient_failure_is_retried(make_log: Callable[..., DecisionLog]) -> None:
    failures: list[str] = []
    log = make_log(retries=3, retry_backoff_seconds=0.001, on_failure=lambda *args: failures.append(args))
    attempts = 0

    def first_two_attempts(_parameters: str) -> bool:
        nonlocal attempts
        attempts += 1
        return attempts <= 2

    fail_inserts(log, first_two_attempts)
    records = [make_record() for _ in range(3)]
    for record in records:
        log.append(record)
    assert log.flush()

    assert attempts == 3  # one batch: two failures, then the write
    assert sorted(stored_ids(log)) == sorted(record.decision_id for record in records)
    assert counts(log) == {
        "written": 3,
        "failed": 0,
        "retries": 2,
        "overflow": 0,
        "duplicates": 0,
        "pending": 0,
    }
    assert failures == []
    assert log.dead_letter == []


def test_a_record_that_always_fails_is_reported_and_the_others_written(
    make_log: Callable[..., DecisionLog], caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[tuple[str, Exception]] = []
    log = make_log(retries=2, retry_backoff_seconds=0.001, on_failure=lambda *args: failures.append(args))
    records = [make_record() for _ in range(3)]
    poison = records[1].decision_id
    fail_inserts(log, lambda parameters: poison in parameters)
    for record in records:
        log.append(record)
    with caplog.at_level(logging.ERROR, logger="serving.decision_log"):
        assert log.flush()

    assert sorted(stored_ids(log)) == sorted([records[0].decision_id, records[2].decision_id])
    assert counts(log) == {
        "written": 2,
        "failed": 1,
        "retries": 2,
        "overflow": 0,
        "duplicates": 0,
        "pending": 0,
    }
    assert [(decision_id, type(error)) for decision_id, error in failures] == [(poison, ConnectionResetError)]
    [dead] = log.dead_letter
    assert dead.record == records[1]
    assert "connection reset" in dead.error
    assert [record.levelname for record in caplog.records if poison in record.getMessage()] == ["ERROR"]


@pytest.mark.services
def test_a_row_postgresql_rejects_is_dead_lettered(postgres_schema: str) -> None:
    failures: list[str] = []
    log = DecisionLog(
        POSTGRES_URL,
        schema=postgres_schema,
        retries=1,
        retry_backoff_seconds=0.001,
        on_failure=lambda decision_id, _: failures.append(decision_id),
    )
    try:
        good, bad = make_record(), make_record(user_id="u-\x00")  # PostgreSQL text cannot hold NUL
        log.append(good)
        log.append(bad)
        assert log.flush()
        assert stored_ids(log) == [good.decision_id]
        assert failures == [bad.decision_id]
        assert log.dead_letter[0].record == bad
    finally:
        log.close()


def test_a_record_that_cannot_be_encoded_is_reported_not_raised(make_log: Callable[..., DecisionLog]) -> None:
    failures: list[str] = []
    log = make_log(on_failure=lambda decision_id, _: failures.append(decision_id))
    naive = make_record(ts=dt.datetime(2025, 6, 1, 12, 0))
    log.append(naive)
    assert log.flush()
    assert failures == [naive.decision_id]
    assert "timezone-aware" in log.dead_letter[0].error
    assert log.stats()["failed"] == 1
    assert stored_ids(log) == []


def test_close_flushes_and_is_idempotent(make_log: Callable[..., DecisionLog]) -> None:
    log = make_log()
    log.start()
    records = [make_record() for _ in range(10)]
    for record in records:
        log.append(record)
    log.close()
    log.close()

    with pytest.raises(RuntimeError, match="closed"):
        log.append(make_record())
    with pytest.raises(RuntimeError, match="closed"):
        log.get_decision(records[0].decision_id)
    reopened = make_log()
    assert sorted(stored_ids(reopened)) == sorted(record.decision_id for record in records)


def test_records_a_close_cannot_wait_for_are_reported(make_log: Callable[..., DecisionLog]) -> None:
    failures: list[str] = []
    log = make_log(on_failure=lambda decision_id, _: failures.append(decision_id))
    records = [make_record() for _ in range(3)]
    for record in records:
        log.append(record)
    log.close(timeout=0)

    assert failures == [record.decision_id for record in records]
    assert [dead.record for dead in log.dead_letter] == records
    assert log.stats()["failed"] == 3
    assert log.stats()["pending"] == 0


def test_tables_and_index(make_log: Callable[..., DecisionLog], store: Store) -> None:
    log = make_log()
    inspector = sa.inspect(log.engine)
    assert {"decisions", "outcomes"} <= set(inspector.get_table_names(schema=store.schema))
    indexes = inspector.get_indexes("decisions", schema=store.schema)
    assert ["user_id", "ts"] in [index["column_names"] for index in indexes]
    key = inspector.get_pk_constraint("outcomes", schema=store.schema)
    assert key["constrained_columns"] == ["decision_id", "outcome"]


def test_sqlite_file_is_in_wal_mode(tmp_path) -> None:
    path = tmp_path / "nested" / "dir" / "decisions.db"
    log = DecisionLog(f"sqlite:///{path}")
    try:
        log.append(make_record())
        assert log.flush()
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        log.close()


def _error_text(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


def test_an_unreachable_postgresql_names_the_url_without_its_password() -> None:
    url = "postgresql://clm:s3cret-pw@127.0.0.1:1/clm"  # port 1: nothing listens there
    with pytest.raises(DecisionLogError) as raised:
        DecisionLog(url)
    assert "cannot open the decision log at postgresql://clm:***@127.0.0.1:1/clm" in str(raised.value)
    assert "s3cret-pw" not in _error_text(raised.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mysql://clm:s3cret-pw@db.internal/clm", "mysql://clm:***@db.internal/clm"),
        (
            "postgresql+asyncpg://clm:s3cret-pw@db.internal/clm",
            "postgresql+asyncpg://clm:***@db.internal/clm",
        ),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("sqlite://", "sqlite://"),
    ],
)
def test_an_unsupported_url_is_refused_by_name(url: str, shown: str) -> None:
    with pytest.raises(ValueError, match="expected sqlite:///") as raised:
        DecisionLog(url)
    assert repr(shown) in str(raised.value)
    assert "s3cret-pw" not in _error_text(raised.value)


def test_a_sqlite_path_that_cannot_be_created_is_named(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    url = f"sqlite:///{blocker}/decisions.db"
    with pytest.raises(DecisionLogError, match=re.escape(f"cannot open the decision log at {url}")):
        DecisionLog(url)


def test_schema_is_refused_for_sqlite(tmp_path) -> None:
    with pytest.raises(ValueError, match="PostgreSQL only"):
        DecisionLog(f"sqlite:///{tmp_path}/decisions.db", schema="clm")


def test_an_outcome_write_waiting_on_a_locked_table_fails_within_the_statement_timeout(
    make_log: Callable[..., DecisionLog], store: Store
) -> None:
    """A write that waits on a lock gives up after the statement timeout (503 in the API), not after 30 s."""
    log = make_log(statement_timeout_seconds=0.5)
    record = make_record()
    log.append(record)
    assert log.flush()
    locker = sa.create_engine(log.engine.url)
    with locker.connect() as conn:
        if store.schema is None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")  # SQLite: hold the database's write lock
        else:
            conn.exec_driver_sql(f'LOCK TABLE "{store.schema}".outcomes IN ACCESS EXCLUSIVE MODE')
        started = time.monotonic()
        raised: list[BaseException] = []

        def write_outcome() -> None:
            try:
                log.record_outcome(record.decision_id, "retained_30d", "no_action", T0)
            except BaseException as exc:  # handed to the test thread
                raised.append(exc)

        writer = threading.Thread(target=write_outcome)
        writer.start()
        writer.join(timeout=10)  # without a timeout the write would wait for the lock for ever
        waited = time.monotonic() - started
        conn.rollback()
        writer.join()
    locker.dispose()
    assert waited < 5.0 and len(raised) == 1, f"waited {waited:.1f} s, raised {raised}"
    assert isinstance(raised[0], DecisionLogUnavailable) and "did not record the outcome" in str(raised[0])
    assert log.record_outcome(record.decision_id, "retained_30d", "no_action", T0) == "recorded"
