"""Decision log: every decision the API makes, and the outcomes that followed, in SQLite or PostgreSQL.

`DecisionLog(url)` picks the store from a SQLAlchemy URL:

- `sqlite:///relative/path.db` or `sqlite:////absolute/path.db` — one file in WAL mode with
  `synchronous=NORMAL` (the embedded default); parent directories are created.
- `postgresql://USER[:PASSWORD]@HOST:PORT/DB` (read as `postgresql+psycopg://…`), optionally with
  the tables in their own `schema`.

**Group commit: an appended decision is committed before `append` returns** (`durable=True`, what the
API uses). `append` puts the record on a bounded queue and waits; the writer thread started by `start`
takes everything queued, encodes it (JSON, on the writer, not the caller), inserts it in one transaction
and then releases every caller of that batch — so a decision the API answered is in the store even if the
process is killed with SIGKILL the moment after (SQLite in WAL mode keeps a commit across a process crash
with `synchronous=NORMAL`; only a power cut can lose it), while concurrent requests share one commit.
A record the log gives up on raises `DecisionNotLogged` in its caller, so no decision is answered that
is not logged. With `durable=False` `append` returns at once and the record is written later (lost if
the process dies first). Without a running writer, or when the queue is full, the record is written on
the caller's thread instead (counted as `overflow` when the queue was full). A failed batch is retried with
exponential backoff; if it still fails, each of its records is tried alone, and a record that fails
even then is counted in `failed`, logged, passed to `on_failure` and kept in `dead_letter`. Inserts
skip decision ids already stored, so a retry after a commit whose acknowledgement was lost writes
nothing twice (such rows are counted in `duplicates`).

**Tables.** `decisions` (one row per decision, JSON columns as text, index on `(user_id, ts)`) and
`outcomes` (primary key `(decision_id, outcome)`, so recording an outcome is idempotent). Times are
timezone-aware: `timestamptz` on PostgreSQL; on SQLite fixed-width ISO 8601 text in UTC, whose text
order is time order.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import queue
import re
import sqlite3
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError, StatementError
from sqlalchemy.schema import CreateIndex, CreateSchema, CreateTable

from serving.journal import ContactLedger, Journal, Line

__all__ = [
    "DecisionLog",
    "DecisionLogError",
    "DecisionLogUnavailable",
    "DecisionNotLogged",
    "DecisionRecord",
    "FailedRecord",
    "OutcomeConflict",
    "OutcomeStatus",
    "UnknownDecision",
]

logger = logging.getLogger(__name__)

OutcomeStatus = Literal["recorded", "duplicate"]

JSON_COLUMNS = ("versions", "candidates", "payload", "inputs", "shadow")
SQLITE_BUSY_TIMEOUT_SECONDS = 30.0
POSTGRES_CONNECT_TIMEOUT_SECONDS = 5
WRITER_POLL_SECONDS = 0.1
ORPHAN_CHECK_SECONDS = 5.0  # how often the journal writer looks for files left by killed processes
CONTACT_PULL_SECONDS = 30.0  # how often contacts logged by other machines are read into the ledger
CONTACT_PULL_OVERLAP = dt.timedelta(minutes=5)  # re-read behind the last pull: commits arrive late
NO_ACTION = "no_action"  # models.catalog.NO_ACTION
URL_FORMS = "sqlite:///relative/path.db, sqlite:////absolute/path.db or postgresql://USER@HOST:PORT/DB"
_ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
# Serialises table creation when several worker processes start at once against one PostgreSQL.
_DDL_ADVISORY_LOCK = zlib.crc32(b"clm.serving.decision_log")
_PASSWORD_IN_URL = re.compile(r"(://[^:/@]*):[^@/]*@")


class DecisionLogError(RuntimeError):
    """The decision log's store cannot be opened."""


class DecisionNotLogged(DecisionLogError):
    """A durable append whose record was not committed (given up on, the log closed, or no commit in time)."""


class DecisionLogUnavailable(DecisionLogError):
    """A read or write of the log's database failed or waited past the statement timeout (a locked table,
    an unreachable server): the request may be retried."""


class OutcomeConflict(ValueError):
    """An outcome already recorded for a decision, sent again with a different action, time or value."""


class UnknownDecision(LookupError):
    """An outcome names a decision that is not in the log."""


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """One decision as the API made it: enough to audit it, replay it and evaluate a policy offline."""

    decision_id: str  # uuid4 hex made by the API
    ts: dt.datetime  # UTC, when the decision was made
    user_id: str | None
    request_digest: str  # sha256 of the canonical request
    versions: dict[str, str]  # churn_model, upgrade_model, policy, features
    stage: str
    action: str  # chosen action (or "no_action")
    propensity: float  # probability the policy gave the chosen action
    explored: bool
    expected_value: float
    candidates: list[dict]  # every candidate with its value or suppression reason
    latency_ms: float
    payload: dict  # the full decision as returned to the client
    inputs: dict  # the feature vector the decision was made from
    shadow: dict | None = None  # a challenger's decision beside it, when shadow mode is on


@dataclass(frozen=True, slots=True)
class FailedRecord:
    """A record the log gave up on, kept in memory so it can be inspected or appended again."""

    record: DecisionRecord
    error: str
    failed_at: dt.datetime


@dataclass(slots=True)
class _Pending:
    """A record on its way to the store; a durable caller waits on `settled`."""

    record: DecisionRecord
    settled: threading.Event | None = None  # set once written or given up on (durable appends only)
    row: dict[str, Any] | None = None  # the column values, JSON encoded by the writer
    error: str | None = None  # why it was given up on


class _UtcTimestamp(sa.TypeDecorator[dt.datetime]):
    """`timestamptz` on PostgreSQL; elsewhere fixed-width ISO 8601 text in UTC, so text order is time order."""

    impl = sa.String(32)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        return dialect.type_descriptor(sa.String(32))

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        value = _as_utc(value, "timestamp")
        return value if dialect.name == "postgresql" else value.isoformat(timespec="microseconds")

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        return value.astimezone(dt.UTC)


def _as_utc(value: dt.datetime, name: str) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got the naive {value.isoformat()}")
    return value.astimezone(dt.UTC)


def _tables(schema: str | None) -> tuple[sa.Table, sa.Table]:
    metadata = sa.MetaData(schema=schema)
    decisions = sa.Table(
        "decisions",
        metadata,
        sa.Column("decision_id", sa.String, primary_key=True),
        sa.Column("ts", _UtcTimestamp, nullable=False),
        sa.Column("user_id", sa.String),
        sa.Column("request_digest", sa.String, nullable=False),
        sa.Column("versions", sa.Text, nullable=False),
        sa.Column("stage", sa.String, nullable=False),
        sa.Column("action", sa.String, nullable=False),
        sa.Column("propensity", sa.Float, nullable=False),
        sa.Column("explored", sa.Boolean, nullable=False),
        sa.Column("expected_value", sa.Float, nullable=False),
        sa.Column("candidates", sa.Text, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("inputs", sa.Text, nullable=False),
        sa.Column("shadow", sa.Text),
        sa.Index("ix_decisions_user_id_ts", "user_id", "ts"),
    )
    outcomes = sa.Table(
        "outcomes",
        metadata,
        sa.Column("decision_id", sa.String, nullable=False),
        sa.Column("outcome", sa.String, nullable=False),
        sa.Column("action_taken", sa.String, nullable=False),
        sa.Column("ts", _UtcTimestamp, nullable=False),
        sa.Column("recorded_at", _UtcTimestamp, nullable=False),
        sa.Column("value", sa.Float),
        sa.PrimaryKeyConstraint("decision_id", "outcome", name="pk_outcomes"),
    )
    return decisions, outcomes


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=_ORJSON_OPTIONS).decode()


def _encode(record: DecisionRecord) -> dict[str, Any]:
    """The record's column values; raises when it cannot be stored as it is."""
    if not isinstance(record.decision_id, str) or not record.decision_id:
        raise ValueError(f"decision_id must be a non-empty string, got {record.decision_id!r}")
    return {
        "decision_id": record.decision_id,
        "ts": _as_utc(record.ts, "ts"),
        "user_id": record.user_id,
        "request_digest": record.request_digest,
        "versions": _dumps(record.versions),
        "stage": record.stage,
        "action": record.action,
        "propensity": float(record.propensity),
        "explored": bool(record.explored),
        "expected_value": float(record.expected_value),
        "candidates": _dumps(record.candidates),
        "latency_ms": float(record.latency_ms),
        "payload": _dumps(record.payload),
        "inputs": _dumps(record.inputs),
        "shadow": None if record.shadow is None else _dumps(record.shadow),
    }


def _decode(row: sa.Row[Any]) -> dict[str, Any]:
    decoded = dict(row._mapping)
    for name in JSON_COLUMNS:
        if decoded[name] is not None:
            decoded[name] = orjson.loads(decoded[name])
    return decoded


def _describe(error: BaseException) -> str:
    """`Type: message` of the driver's error, without SQLAlchemy's long statement text."""
    if isinstance(error, StatementError) and error.orig is not None:
        error = error.orig
    return f"{type(error).__name__}: {error}".strip()


def _redact(url: str) -> str:
    return _PASSWORD_IN_URL.sub(r"\1:***@", url)


def _sqlite_on_connect(dbapi_connection: Any, _connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        mode = cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise DecisionLogError(f"cannot put the SQLite decision log in WAL mode (journal_mode is {mode})")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _create_engine(
    url: str, schema: str | None, busy_timeout_seconds: float = SQLITE_BUSY_TIMEOUT_SECONDS
) -> tuple[Engine, str]:
    """The engine for `url` (not connected yet) and the URL as it may be shown: without a password."""
    try:
        parsed: URL = make_url(url)
    except ArgumentError:
        raise ValueError(f"decision log URL {_redact(url)!r} is not a URL; expected {URL_FORMS}") from None
    shown = url if parsed.password is None else parsed.render_as_string(hide_password=True)
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "sqlite" and driver == "pysqlite":
        if schema is not None:
            raise ValueError(f"decision log {shown!r}: schema={schema!r} applies to PostgreSQL only")
        path = parsed.database
        if not path or path == ":memory:" or parsed.query:
            raise ValueError(
                f"decision log URL {shown!r} needs a file path and no options; expected {URL_FORMS}"
            )
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DecisionLogError(f"cannot open the decision log at {shown}: {_describe(exc)}") from exc
        engine = sa.create_engine(
            parsed, hide_parameters=True, connect_args={"timeout": busy_timeout_seconds}
        )
        sa.event.listen(engine, "connect", _sqlite_on_connect)
        return engine, shown
    if backend == "postgresql" and parsed.drivername in ("postgresql", "postgresql+psycopg"):
        connect_args = (
            {} if "connect_timeout" in parsed.query else {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS}
        )
        engine = sa.create_engine(
            parsed.set(drivername="postgresql+psycopg"),
            hide_parameters=True,  # decisions hold user features: keep them out of error messages and logs
            pool_pre_ping=True,  # survive a database restart without failing the first write after it
            connect_args=connect_args,
        )
        return engine, shown
    raise ValueError(f"unsupported decision log URL {shown!r}; expected {URL_FORMS}")


class DecisionLog:
    """Append-only log of decisions, written in batches by a writer thread (each durable append waits for its
    batch's commit); outcomes recorded idempotently.

    Thread-safe: `append`, `record_outcome` and the readers may be called from any number of threads.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        queue_size: int = 10_000,
        retries: int = 3,
        retry_backoff_seconds: float = 0.05,
        batch_size: int = 200,
        on_failure: Callable[[str, Exception], None] | None = None,
        dead_letter_size: int = 10_000,
        durable: bool = False,
        commit_timeout_seconds: float = 30.0,
        statement_timeout_seconds: float | None = None,
        journal_dir: Path | None = None,
        fsync_seconds: float = 1.0,
    ) -> None:
        for name, value, least in (
            ("queue_size", queue_size, 1),
            ("retries", retries, 0),
            ("batch_size", batch_size, 1),
            ("dead_letter_size", dead_letter_size, 1),
        ):
            if value < least:
                raise ValueError(f"{name} must be at least {least}, got {value}")
        if not retry_backoff_seconds >= 0:
            raise ValueError(f"retry_backoff_seconds must be >= 0, got {retry_backoff_seconds}")
        if statement_timeout_seconds is not None and not statement_timeout_seconds > 0:
            raise ValueError(f"statement_timeout_seconds must be > 0, got {statement_timeout_seconds}")
        self._statement_timeout_seconds = statement_timeout_seconds
        self._engine, self.url = _create_engine(
            url, schema, statement_timeout_seconds or SQLITE_BUSY_TIMEOUT_SECONDS
        )
        self.schema = schema
        self._decisions, self._outcomes = _tables(schema)
        self._retries = retries
        self._retry_backoff_seconds = retry_backoff_seconds
        self._batch_size = batch_size
        self._on_failure = on_failure
        self.durable = durable
        self._commit_timeout_seconds = commit_timeout_seconds
        self._queue: queue.Queue[_Pending] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._settled = threading.Condition(self._lock)
        self._consume_lock = threading.Lock()  # one consumer at a time keeps the queue's order
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._enqueued = 0  # records ever put on the queue
        self._dequeued = 0  # of those, records written or given up on
        self._counts = dict.fromkeys(("written", "failed", "retries", "overflow", "duplicates", "commits"), 0)
        self._dead_letter: deque[FailedRecord] = deque(maxlen=dead_letter_size)
        self._build_statements()
        self._journal: Journal | None = None
        self._ledger: ContactLedger | None = None
        self._wake = threading.Event()
        self._ledger_since: dt.datetime | None = (
            None  # contacts from the database are in the ledger from then
        )
        self._ledger_pulled: float = 0.0
        try:
            self._create_tables()
        except (SQLAlchemyError, OSError, DecisionLogError) as exc:
            self._engine.dispose()
            message = _describe(exc)
            password = make_url(url).password
            if password:
                message = message.replace(str(password), "***")
            raise DecisionLogError(f"cannot open the decision log at {self.url}: {message}") from exc
        if journal_dir is not None:
            try:
                self._journal = Journal(Path(journal_dir), fsync_seconds=fsync_seconds)
                self._ledger = ContactLedger(Path(journal_dir) / "contacts.db")
            except (OSError, sqlite3.Error) as exc:
                self._engine.dispose()
                raise DecisionLogError(f"cannot open the decision journal in {journal_dir}: {exc}") from exc

    @property
    def journaled(self) -> bool:
        """Whether appends go to the local journal (answered at once, stored by the writer)."""
        return self._journal is not None

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine, for reading the log with SQL (e.g. offline policy evaluation)."""
        return self._engine

    @property
    def decisions_table(self) -> sa.Table:
        """The `decisions` table (in `schema` when one was given)."""
        return self._decisions

    @property
    def outcomes_table(self) -> sa.Table:
        """The `outcomes` table (in `schema` when one was given)."""
        return self._outcomes

    @property
    def dead_letter(self) -> list[FailedRecord]:
        """The latest records given up on, oldest first."""
        with self._lock:
            return list(self._dead_letter)

    def __repr__(self) -> str:
        return f"DecisionLog({self.url!r}, schema={self.schema!r})"

    def _build_statements(self) -> None:
        insert = postgresql.insert if self._engine.dialect.name == "postgresql" else sqlite.insert
        decisions, outcomes = self._decisions, self._outcomes
        # SQLAlchemy keeps an INSERT's row count only when asked; it tells how many ids were new.
        counted = {"preserve_rowcount": True}
        self._insert_decisions = insert(decisions).on_conflict_do_nothing().execution_options(**counted)
        # One statement that reads and writes: a separate SELECT first would, on SQLite, fail with
        # SQLITE_BUSY whenever the writer thread commits in between.
        columns = ["decision_id", "outcome", "action_taken", "ts", "recorded_at", "value"]
        values = sa.select(*(sa.cast(sa.bindparam(name), outcomes.c[name].type) for name in columns)).where(
            sa.exists().where(decisions.c.decision_id == sa.bindparam("decision_id"))
        )
        self._insert_outcome = (
            insert(outcomes)
            .from_select(columns, values)
            .on_conflict_do_nothing()
            .execution_options(**counted)
        )

    def _create_tables(self) -> None:
        with self._engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_DDL_ADVISORY_LOCK)))
                if self.schema is not None:
                    conn.execute(CreateSchema(self.schema, if_not_exists=True))
            for table in (self._decisions, self._outcomes):
                conn.execute(CreateTable(table, if_not_exists=True))
                for index in table.indexes:
                    conn.execute(CreateIndex(index, if_not_exists=True))

    # --- writing decisions -------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (idempotent)."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"decision log {self.url} is closed")
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="clm-decision-log", daemon=True)
            self._thread.start()

    def append(self, record: DecisionRecord) -> None:
        """Log the record. Durable: return once it is committed (raise DecisionNotLogged if it was given up
        on). Otherwise queue it and return at once. Without a running writer, or when the queue is full, it
        is written on this thread. Journaled: write it to the local journal and return (see serving/journal.py)."""
        if self._journal is not None:
            self._append_to_journal(record)
            return
        pending = _Pending(record, threading.Event() if self.durable else None)
        with self._lock:
            if self._closed:
                raise RuntimeError(
                    f"decision log {self.url} is closed; decision {record.decision_id} not logged"
                )
            writer_running = self._thread is not None
            queued = False
            if writer_running or not self.durable:
                try:
                    self._queue.put_nowait(pending)
                except queue.Full:
                    self._counts["overflow"] += 1
                else:
                    self._enqueued += 1  # under the lock, so the count and the queue's order agree
                    queued = True
        if not queued:
            self._write([pending])
        elif pending.settled is None:
            return
        elif not pending.settled.wait(self._commit_timeout_seconds):
            raise DecisionNotLogged(
                f"decision {record.decision_id} was not committed to {self.url} within "
                f"{self._commit_timeout_seconds:.0f} s"
            )
        if pending.error is not None:
            raise DecisionNotLogged(f"decision {record.decision_id} was not logged: {pending.error}")

    def _append_to_journal(self, record: DecisionRecord) -> None:
        journal, ledger = self._journal, self._ledger
        assert journal is not None and ledger is not None
        with self._lock:
            if self._closed:
                raise RuntimeError(
                    f"decision log {self.url} is closed; decision {record.decision_id} not logged"
                )
        try:
            row = _encode(record)
            journal.append(orjson.dumps(row, option=_ORJSON_OPTIONS))
        except (ValueError, TypeError, OSError) as exc:
            with self._lock:
                self._counts["failed"] += 1
            raise DecisionNotLogged(
                f"decision {record.decision_id} was not logged: {_describe(exc)}"
            ) from exc
        with self._lock:
            self._enqueued += 1
        if record.user_id is not None and record.action != NO_ACTION:
            try:
                ledger.add([(record.decision_id, record.user_id, row["ts"], record.action)])
            except sqlite3.Error:  # the record is safe in the journal; only this worker's cooldown view lags
                logger.exception("contact ledger %s: decision %s not added", ledger.path, record.decision_id)
        # no wake-up: the writer stores what arrived every WRITER_POLL_SECONDS, many records a commit

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record appended so far is written or given up on; False on timeout."""
        deadline = time.monotonic() + timeout
        if self._journal is not None:
            return self._flush_journal(deadline)
        with self._lock:
            target = self._enqueued
            writer_running = self._thread is not None and self._thread.is_alive()
        if not writer_running:
            self._drain(deadline)
        with self._settled:
            return self._settled.wait_for(
                lambda: self._dequeued >= target, timeout=max(0.0, deadline - time.monotonic())
            )

    def close(self, timeout: float = 5.0) -> None:
        """Flush, stop the writer and release connections; records still queued then are given up on."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        deadline = time.monotonic() + timeout
        flushed = self.flush(timeout)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(max(0.1, deadline - time.monotonic()))
            if self._thread.is_alive():
                logger.error("decision log writer for %s did not stop within %.1f s", self.url, timeout)
        if not flushed:
            logger.error(
                "decision log %s: not every record was written within %.1f s of close", self.url, timeout
            )
        self._abandon_queue()
        if self._journal is not None:
            self._journal.close()  # what is not stored stays in its file, for the next start
            assert self._ledger is not None
            self._ledger.close()
        self._engine.dispose()

    def stats(self) -> dict[str, int]:
        """Counts since construction, and records pending now.

        Every record appended is in exactly one of `written` (inserted), `duplicates` (its id was
        already stored), `failed` (given up on, in `dead_letter`) and `pending`. `retries` counts
        repeated attempts of failed batches; `overflow` the records written on the caller's thread; `commits`
        the transactions that stored records (several records share one under group commit).
        """
        with self._lock:
            return {**self._counts, "pending": self._enqueued - self._dequeued}

    def _run(self) -> None:
        if self._journal is not None:
            self._run_journal()
            return
        while not self._stop.is_set():
            with self._consume_lock:
                batch = self._take(timeout=WRITER_POLL_SECONDS)
                if batch:
                    self._settle(batch)

    # --- the journal's writer ----------------------------------------------------------------------

    def _run_journal(self) -> None:
        journal = self._journal
        assert journal is not None
        next_orphans = 0.0
        while not self._stop.is_set():
            self._wake.wait(WRITER_POLL_SECONDS)
            self._wake.clear()
            try:
                if time.monotonic() >= next_orphans:
                    next_orphans = time.monotonic() + ORPHAN_CHECK_SECONDS
                    self._store_orphans()
                self._store_own()
                journal.sync()
                if time.monotonic() - self._ledger_pulled >= CONTACT_PULL_SECONDS:
                    self._pull_contacts()
            except Exception:  # the lines stay in the journal: tried again on the next round
                logger.exception("decision log %s: the journal writer failed; retrying", self.url)
                self._stop.wait(self._retry_backoff_seconds)

    def _store_own(self) -> None:
        """Store this process's unstored journal lines, a batch at a time, until none are left."""
        journal = self._journal
        assert journal is not None
        while True:
            lines = journal.pending()
            if not lines:
                return
            for start in range(0, len(lines), self._batch_size):
                batch = lines[start : start + self._batch_size]
                if not self._store_lines(batch):
                    return  # the database refused: the lines wait in the journal
                journal.committed(batch[-1].end)
                with self._settled:
                    self._dequeued += len(batch)
                    self._settled.notify_all()

    def _store_orphans(self) -> None:
        journal = self._journal
        assert journal is not None
        for path, lines in journal.orphans():
            stored = all(
                self._store_lines(lines[start : start + self._batch_size])
                for start in range(0, len(lines), self._batch_size)
            )
            if stored:
                journal.forget(path)
                logger.warning("decision log %s: stored %d decisions left in %s by a process that died",
                               self.url, len(lines), path.name)  # fmt: skip
            else:
                journal.release(path)

    def _store_lines(self, lines: list[Line]) -> bool:
        """Insert the lines' rows (ids already stored are skipped). False when the database refused them
        all (unreachable, locked…): they stay in the journal. A line no insert accepts while others go in is
        moved to `rejected.jsonl` beside the journal and counted as failed."""
        rows, bad = [], []
        for line in lines:
            try:
                row = orjson.loads(line.data)
                row["ts"] = dt.datetime.fromisoformat(row["ts"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                bad.append(line)
            else:
                rows.append(row)
        if rows and self._attempt(rows, attempts=1 + self._retries) is not None:
            if len(rows) == 1:
                return False
            failed = [row for row in rows if self._attempt([row], attempts=1) is not None]
            if len(failed) == len(rows):
                return False
            bad.extend(Line(0, orjson.dumps(row, option=_ORJSON_OPTIONS)) for row in failed)
        if bad:
            self._reject(bad)
        return True

    def _reject(self, lines: list[Line]) -> None:
        journal = self._journal
        assert journal is not None
        with open(journal.directory / "rejected.jsonl", "ab") as handle:
            handle.write(b"".join(line.data + b"\n" for line in lines))
        with self._lock:
            self._counts["failed"] += len(lines)
        logger.error("decision log %s: %d journal lines could not be stored; kept in %s", self.url, len(lines),
                     journal.directory / "rejected.jsonl")  # fmt: skip

    def _flush_journal(self, deadline: float) -> bool:
        journal = self._journal
        assert journal is not None
        writer_running = self._thread is not None and self._thread.is_alive()
        if not writer_running:  # also what dead processes left (the writer does that every few seconds)
            with self._consume_lock:
                self._store_orphans()
                self._store_own()
            return not journal.unstored()
        while journal.unstored():
            if time.monotonic() >= deadline:
                return False
            self._wake.set()
            with self._settled:
                self._settled.wait(timeout=min(0.05, max(0.0, deadline - time.monotonic())))
        return True

    def _pull_contacts(self) -> None:
        """Contacts in the database since the last pull (other machines' decisions) into the ledger, and the
        outcomes recorded since then against decisions the ledger covers."""
        started = time.monotonic()
        since = self._ledger_since
        if since is not None:
            recent = (
                dt.datetime.now(dt.UTC) - CONTACT_PULL_OVERLAP - dt.timedelta(seconds=CONTACT_PULL_SECONDS)
            )
            self._seed_ledger(max(since, recent), keep_since=True)
            self._seed_outcomes(since, recorded_from=recent)
        self._ledger_pulled = started

    def _seed_ledger(self, since: dt.datetime, *, keep_since: bool = False) -> None:
        ledger = self._ledger
        assert ledger is not None
        decisions = self._decisions
        statement = sa.select(decisions.c.decision_id, decisions.c.user_id, decisions.c.ts, decisions.c.action).where(
            decisions.c.ts >= _as_utc(since, "since"), decisions.c.action != NO_ACTION,
            decisions.c.user_id.is_not(None),
        )  # fmt: skip
        with self._engine.connect() as conn:
            ledger.add((row[0], row[1], row[2], row[3]) for row in conn.execute(statement))
        if not keep_since:
            self._seed_outcomes(since)
            self._ledger_since = since

    def _seed_outcomes(self, since: dt.datetime, *, recorded_from: dt.datetime | None = None) -> None:
        """Outcomes of the decisions made at or after `since` (recorded at or after `recorded_from`) into the
        ledger, with each decision's user and time."""
        ledger = self._ledger
        assert ledger is not None
        d, o = self._decisions, self._outcomes
        statement = (
            sa.select(o.c.decision_id, o.c.outcome, d.c.user_id, d.c.ts, o.c.action_taken)
            .join(d, d.c.decision_id == o.c.decision_id)
            .where(d.c.ts >= _as_utc(since, "since"), d.c.user_id.is_not(None))
        )
        if recorded_from is not None:
            statement = statement.where(o.c.recorded_at >= _as_utc(recorded_from, "recorded_from"))
        with self._engine.connect() as conn:
            ledger.add_outcomes((row[0], row[1], row[2], row[3], row[4]) for row in conn.execute(statement))

    def _drain(self, deadline: float) -> None:
        with self._consume_lock:
            while time.monotonic() < deadline:
                batch = self._take(timeout=None)
                if not batch:
                    return
                self._settle(batch)

    def _take(self, timeout: float | None) -> list[_Pending]:
        try:
            first = self._queue.get_nowait() if timeout is None else self._queue.get(timeout=timeout)
        except queue.Empty:
            return []
        batch = [first]
        while len(batch) < self._batch_size:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _settle(self, batch: list[_Pending]) -> None:
        try:
            self._write(batch)
        except Exception:
            logger.exception("decision log writer for %s failed on a batch of %d", self.url, len(batch))
        finally:
            with self._settled:
                self._dequeued += len(batch)
                self._settled.notify_all()

    def _abandon_queue(self) -> None:
        abandoned = 0
        while True:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                break
            self._give_up(pending, DecisionLogError("the decision log closed before it was written"))
            if pending.settled is not None:
                pending.settled.set()
            abandoned += 1
        with self._settled:
            self._dequeued += abandoned
            self._settled.notify_all()

    def _write(self, batch: list[_Pending]) -> None:
        """Encode, write with retries; if the batch still fails, try each record alone and give up on the
        rest. Every record's waiter is released at the end, written or not."""
        try:
            self._write_encoded(self._encoded(batch))
        finally:
            for pending in batch:
                if pending.settled is not None:
                    pending.settled.set()

    def _encoded(self, batch: list[_Pending]) -> list[_Pending]:
        """The records that could be encoded; the others are given up on (reported, never silently dropped)."""
        encoded = []
        for pending in batch:
            try:
                pending.row = _encode(pending.record)
            except Exception as exc:
                self._give_up(pending, exc)
            else:
                encoded.append(pending)
        return encoded

    def _write_encoded(self, batch: list[_Pending]) -> None:
        if not batch:
            return
        error = self._attempt([pending.row for pending in batch], attempts=1 + self._retries)
        if error is None:
            return
        if len(batch) == 1:
            self._give_up(batch[0], error)
            return
        logger.warning(
            "decision log %s: a batch of %d failed %d times (%s); writing its records one by one",
            self.url,
            len(batch),
            1 + self._retries,
            _describe(error),
        )
        for pending in batch:
            error = self._attempt([pending.row], attempts=1)
            if error is not None:
                self._give_up(pending, error)

    def _attempt(self, rows: list[dict[str, Any]], *, attempts: int) -> Exception | None:
        """None once the rows are stored, else the last error."""
        error: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                with self._lock:
                    self._counts["retries"] += 1
                time.sleep(self._retry_backoff_seconds * 2 ** (attempt - 1))
            try:
                inserted = self._insert(rows)
            except Exception as exc:  # any failure is retried, then reported with the record
                error = exc
                continue
            with self._lock:
                self._counts["written"] += inserted
                self._counts["duplicates"] += len(rows) - inserted
                self._counts["commits"] += 1
            if inserted < len(rows):
                logger.warning(
                    "decision log %s: %d of %d decision ids were already stored; kept the stored rows",
                    self.url,
                    len(rows) - inserted,
                    len(rows),
                )
            return None
        return error

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sa.Connection]:
        """A write transaction bounded by the statement timeout: PostgreSQL's `statement_timeout` for this
        transaction only; on SQLite the busy timeout (the wait for a lock) is set at connect."""
        with self._engine.begin() as conn:
            if self._statement_timeout_seconds is not None and conn.dialect.name == "postgresql":
                conn.exec_driver_sql(
                    f"SET LOCAL statement_timeout = {int(self._statement_timeout_seconds * 1000)}"
                )
            yield conn

    def _insert(self, rows: list[dict[str, Any]]) -> int:
        """Insert in one transaction; the number of rows inserted (ids already stored are skipped)."""
        with self._writing() as conn:
            inserted = conn.execute(self._insert_decisions, rows).rowcount
        return len(rows) if inserted < 0 else inserted  # < 0: the driver could not tell

    def _give_up(self, pending: _Pending, error: Exception) -> None:
        record = pending.record
        failed = FailedRecord(record=record, error=_describe(error), failed_at=dt.datetime.now(dt.UTC))
        pending.error = failed.error
        with self._lock:
            self._counts["failed"] += 1
            self._dead_letter.append(failed)
        logger.error(
            "decision %s was not written to the decision log %s: %s",
            record.decision_id,
            self.url,
            failed.error,
        )
        if self._on_failure is not None:
            try:
                self._on_failure(record.decision_id, error)
            except Exception:
                logger.exception("on_failure raised for decision %s", record.decision_id)

    # --- outcomes and reads ------------------------------------------------------------------------

    def record_outcome(
        self,
        decision_id: str,
        outcome: str,
        action_taken: str,
        ts: dt.datetime,
        value: float | None = None,
    ) -> OutcomeStatus:
        """Store what happened after a decision: "recorded", or "duplicate" if this outcome is already stored.

        Raises UnknownDecision when the decision is not in the log (pending writes are flushed first),
        OutcomeConflict when this outcome is stored with another action, time or value, and
        DecisionLogUnavailable when the write fails or waits past the statement timeout.
        """
        self._check_open()
        if value is not None and not math.isfinite(value):
            raise ValueError(f"outcome value must be finite or None, got {value}")
        row = {
            "decision_id": decision_id,
            "outcome": outcome,
            "action_taken": action_taken,
            "ts": _as_utc(ts, "ts"),
            "recorded_at": dt.datetime.now(dt.UTC),
            "value": None if value is None else float(value),
        }
        status = self._store_outcome(row)
        if (
            status is None
        ):  # the decision may still be queued, or be written while we looked: flush, try again
            self.flush()
            status = self._store_outcome(row)
        if status is None:
            given_up = any(failed.record.decision_id == decision_id for failed in self.dead_letter)
            detail = " (its write failed; it is in the dead letter list)" if given_up else ""
            raise UnknownDecision(f"decision {decision_id!r} is not in the decision log{detail}")
        if self._ledger is not None:  # the next request for the user, on any worker here, sees it at once
            self._ledger_outcome(decision_id, outcome, action_taken)
        return status

    def _ledger_outcome(self, decision_id: str, outcome: str, action_taken: str) -> None:
        ledger = self._ledger
        assert ledger is not None
        d = self._decisions
        try:
            with self._engine.connect() as conn:
                found = conn.execute(
                    sa.select(d.c.user_id, d.c.ts).where(d.c.decision_id == decision_id)
                ).first()
            if found is not None and found[0] is not None:
                ledger.add_outcomes([(decision_id, outcome, found[0], found[1], action_taken)])
        except (
            SQLAlchemyError,
            sqlite3.Error,
        ):  # stored in the log; only this machine's view lags (next pull)
            logger.exception(
                "contact ledger %s: outcome %s of %s not added", ledger.path, outcome, decision_id
            )

    def _store_outcome(self, row: Mapping[str, Any]) -> OutcomeStatus | None:
        try:
            with self._writing() as conn:
                if conn.execute(self._insert_outcome, row).rowcount == 1:
                    return "recorded"
                # Nothing inserted: either this outcome is stored already, or the decision was not there when
                # the insert looked (it may have been committed since, so asking for the decision would lie).
                outcomes = self._outcomes
                stored = conn.execute(
                    sa.select(outcomes.c.action_taken, outcomes.c.ts, outcomes.c.value).where(
                        (outcomes.c.decision_id == row["decision_id"])
                        & (outcomes.c.outcome == row["outcome"])
                    )
                ).first()
        except OperationalError as exc:
            raise DecisionLogUnavailable(
                f"the decision log did not record the outcome ({_describe(exc)}); retry"
            ) from exc
        if stored is None:
            return None
        differs = [
            f"{name} {getattr(stored, name)!r} (this request: {row[name]!r})"
            for name in ("action_taken", "ts", "value")
            if getattr(stored, name) != row[name]
        ]
        if differs:
            raise OutcomeConflict(
                f"outcome {row['outcome']!r} of decision {row['decision_id']!r} is already recorded with "
                + ", ".join(differs)
            )
        return "duplicate"

    def get_decision(self, decision_id: str) -> dict[str, Any] | None:
        """The stored decision with its JSON columns decoded, or None."""
        self._check_open()
        statement = sa.select(self._decisions).where(self._decisions.c.decision_id == decision_id)
        with self._engine.connect() as conn:
            row = conn.execute(statement).first()
        return None if row is None else _decode(row)

    def decisions_for_user(self, user_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The user's latest decisions, newest first."""
        self._check_open()
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        decisions = self._decisions
        statement = (
            sa.select(decisions)
            .where(decisions.c.user_id == user_id)
            .order_by(decisions.c.ts.desc(), decisions.c.decision_id.desc())
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return [_decode(row) for row in conn.execute(statement)]

    def contacts_since(
        self, user_id: str, since: dt.datetime, *, no_action: str = "no_action"
    ) -> list[tuple[dt.datetime, str]]:
        """(ts, action) of the user's decisions logged at or after `since` that contacted them (any action but
        `no_action`), newest first: one indexed query (ix_decisions_user_id_ts), read by the request path to
        apply the contacts made since a snapshot. The statement is built once (a new one per call costs
        SQLAlchemy several times the query). Journaled: read from the contact ledger, which the database
        fills once per `since` (and then every CONTACT_PULL_SECONDS), and every append on this machine at once."""
        self._check_open()
        if self._ledger is not None:
            if self._ledger_since is None or since < self._ledger_since:
                self._seed_ledger(since)
            return [(ts, action) for ts, action in self._ledger.since(user_id, since) if action != no_action]
        statement = getattr(self, "_contacts_statement", None)
        if statement is None:
            decisions = self._decisions
            statement = self._contacts_statement = (
                sa.select(decisions.c.ts, decisions.c.action)
                .where(
                    decisions.c.user_id == sa.bindparam("user_id"),
                    decisions.c.ts >= sa.bindparam("since", type_=_UtcTimestamp),
                    decisions.c.action != sa.bindparam("no_action"),
                )
                .order_by(decisions.c.ts.desc())
            )
        params = {"user_id": user_id, "since": _as_utc(since, "since"), "no_action": no_action}
        with self._engine.connect() as conn:
            return [(row[0], row[1]) for row in conn.execute(statement, params)]

    def outcomes_since(self, user_id: str, since: dt.datetime) -> list[tuple[str, str]]:
        """(action taken, outcome) of every outcome recorded against the user's decisions logged at or after
        `since` — what the request path adds to the snapshot's negative outcomes per action. Journaled: from the
        contact ledger (filled by `record_outcome` at once, from the database once per `since` and every
        CONTACT_PULL_SECONDS); otherwise one indexed query."""
        self._check_open()
        if self._ledger is not None:
            if self._ledger_since is None or since < self._ledger_since:
                self._seed_ledger(since)
            return self._ledger.outcomes_since(user_id, since)
        statement = getattr(self, "_outcomes_statement", None)
        if statement is None:
            d, o = self._decisions, self._outcomes
            statement = self._outcomes_statement = (
                sa.select(o.c.action_taken, o.c.outcome)
                .join(d, d.c.decision_id == o.c.decision_id)
                .where(
                    d.c.user_id == sa.bindparam("user_id"),
                    d.c.ts >= sa.bindparam("since", type_=_UtcTimestamp),
                )
            )
        with self._engine.connect() as conn:
            rows = conn.execute(statement, {"user_id": user_id, "since": _as_utc(since, "since")})
            return [(row[0], row[1]) for row in rows]

    def read_decisions(self, since: dt.datetime | None = None) -> list[dict[str, Any]]:
        """Every decision about a stored user (at or after `since`), oldest first, as what lift and campaign
        history read: decision_id, ts, user_id, stage, action, propensity, explored, versions, and from the
        payload's action block intended_action, control_group, holdout and cost (a decision logged before the
        control group existed: its own action, not held out)."""
        self._check_open()
        d = self._decisions
        statement = sa.select(d.c.decision_id, d.c.ts, d.c.user_id, d.c.stage, d.c.action, d.c.propensity,
                              d.c.explored, d.c.versions, d.c.payload).where(d.c.user_id.is_not(None))  # fmt: skip
        if since is not None:
            statement = statement.where(
                d.c.ts >= sa.bindparam("since", _as_utc(since, "since"), _UtcTimestamp)
            )
        out = []
        with self._engine.connect() as conn:
            for row in conn.execute(statement.order_by(d.c.ts, d.c.decision_id)):
                action = orjson.loads(row.payload).get("action", {})
                out.append({
                    "decision_id": row.decision_id, "ts": row.ts, "user_id": row.user_id, "stage": row.stage,
                    "action": row.action, "propensity": row.propensity, "explored": bool(row.explored),
                    "policy": orjson.loads(row.versions).get("policy"),
                    "intended_action": action.get("intended_action") or row.action,
                    "control_group": bool(action.get("control_group", False)),
                    "holdout": action.get("holdout"), "cost": float(action.get("cost", 0.0)),
                })  # fmt: skip
        return out

    def read_outcomes(self) -> list[dict[str, Any]]:
        """Every recorded outcome: decision_id, outcome, action_taken, ts, value."""
        self._check_open()
        o = self._outcomes
        statement = sa.select(o.c.decision_id, o.c.outcome, o.c.action_taken, o.c.ts, o.c.value)
        with self._engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(statement)]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"decision log {self.url} is closed")
