"""The durable decision log (group commit): a durable `append` returns only once its record is committed,
concurrent appends share commits, the writer (not the caller) encodes, a record given up on raises in its
caller, and a process killed with SIGKILL while appending from many threads has every acknowledged record
stored — on a real SQLite file and on the real PostgreSQL server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
import test_decision_log as plain
from test_decision_log import Store, fail_inserts, make_record, stored_ids

import serving.decision_log as decision_log_module
from serving.decision_log import DecisionLog, DecisionNotLogged

# the same stores as the plain log's tests: a SQLite file and a schema of our own in the real PostgreSQL
postgres_schema, store, make_log = plain.postgres_schema, plain.store, plain.make_log


def slow_inserts(log: DecisionLog, seconds: float) -> None:
    """Every INSERT into `decisions` takes `seconds` longer (inside the driver call, before it runs)."""

    def before_cursor_execute(conn, cursor, statement, parameters, context, executemany) -> None:
        if "INSERT INTO" in statement and "decisions" in statement:
            time.sleep(seconds)

    sa.event.listen(log.engine, "before_cursor_execute", before_cursor_execute)


def stored_elsewhere(store: Store, decision_id: str) -> bool:
    """Whether another connection (a fresh engine) sees the decision: it is committed, not just queued."""
    other = DecisionLog(store.url, schema=store.schema)
    try:
        return other.get_decision(decision_id) is not None
    finally:
        other.close()


@pytest.mark.parametrize("durable", [True, False])
def test_a_durable_append_returns_once_its_record_is_committed(
    make_log: Callable[..., DecisionLog], store: Store, durable: bool
) -> None:
    log = make_log(durable=durable)
    slow_inserts(log, 0.3)
    log.start()
    record = make_record()
    log.append(record)
    assert stored_elsewhere(store, record.decision_id) is durable
    assert log.flush()
    assert stored_elsewhere(store, record.decision_id)


def test_concurrent_durable_appends_share_commits(make_log: Callable[..., DecisionLog]) -> None:
    log = make_log(durable=True, batch_size=64)
    log.start()
    records = [[make_record(user_id=f"u-{thread}") for _ in range(40)] for thread in range(8)]
    returned: list[str] = []
    barrier = threading.Barrier(len(records))

    def append_all(batch) -> None:
        barrier.wait()
        for record in batch:
            log.append(record)
            returned.append(record.decision_id)

    threads = [threading.Thread(target=append_all, args=(batch,)) for batch in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    expected = {record.decision_id for batch in records for record in batch}
    assert set(returned) == expected and set(stored_ids(log)) == expected
    assert log.stats()["written"] == 320 and log.stats()["pending"] == 0
    inserts = log.stats()["commits"]
    assert 0 < inserts < 320, "every record had a transaction of its own: no group commit"
    print(f"320 durable appends from 8 threads in {inserts} transactions")


def test_the_writer_encodes_not_the_caller(make_log: Callable[..., DecisionLog], monkeypatch) -> None:
    threads: list[str] = []
    encode = decision_log_module._encode

    def watched(record):
        threads.append(threading.current_thread().name)
        return encode(record)

    monkeypatch.setattr(decision_log_module, "_encode", watched)
    log = make_log(durable=True)
    log.start()
    for _ in range(3):
        log.append(make_record())
    assert threads == ["clm-decision-log"] * 3


def test_a_durable_record_given_up_on_raises_in_its_caller(make_log: Callable[..., DecisionLog]) -> None:
    failures: list[str] = []
    log = make_log(
        durable=True, retries=1, retry_backoff_seconds=0.001, on_failure=lambda i, _: failures.append(i)
    )
    log.start()
    good, poison = make_record(), make_record()
    fail_inserts(log, lambda parameters: poison.decision_id in parameters)
    log.append(good)
    with pytest.raises(DecisionNotLogged, match="connection reset"):
        log.append(poison)
    with pytest.raises(DecisionNotLogged, match="timezone-aware"):
        log.append(make_record(ts=make_record().ts.replace(tzinfo=None)))
    assert stored_ids(log) == [good.decision_id]
    assert failures[0] == poison.decision_id and len(failures) == 2


def test_a_durable_append_without_a_writer_is_written_on_the_callers_thread(
    make_log: Callable[..., DecisionLog], store: Store
) -> None:
    log = make_log(durable=True)  # not started
    record = make_record()
    log.append(record)
    assert stored_elsewhere(store, record.decision_id)
    assert log.stats()["pending"] == 0


APPENDER = textwrap.dedent(
    """
    import sys, threading
    sys.path.insert(0, {tests!r})
    from test_decision_log import make_record
    from serving.decision_log import DecisionLog

    log = DecisionLog({url!r}, schema={schema!r}, durable={durable!r}, journal_dir={journal!r})
    log.start()
    lock = threading.Lock()

    def run(thread):
        while True:
            record = make_record(user_id=f"u-{{thread}}")
            log.append(record)
            with lock:  # acknowledged: what a server would now answer with 200
                sys.stdout.write(record.decision_id + "\\n")
                sys.stdout.flush()

    for thread in range(8):
        threading.Thread(target=run, args=(thread,), daemon=True).start()
    threading.Event().wait()
    """
)


def kill_while_appending(
    store: Store, tmp_path: Path, *, durable: bool, seconds: float, journal: Path | None = None
) -> tuple[int, int]:
    """Run 8 appending threads in a child process, SIGKILL it after `seconds`; (acknowledged, lost). With a
    `journal`, the reader opened afterwards on the same journal stores what the dead child left there."""
    script = tmp_path / "appender.py"
    tests = str(Path(__file__).parent)
    script.write_text(APPENDER.format(tests=tests, url=store.url, schema=store.schema, durable=durable,
                                      journal=None if journal is None else str(journal)))  # fmt: skip
    acknowledged_path = tmp_path / f"acknowledged-{durable}.txt"
    with acknowledged_path.open("w") as out:
        child = subprocess.Popen([sys.executable, str(script)], stdout=out, start_new_session=True)
        time.sleep(seconds)
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    acknowledged = {line for line in acknowledged_path.read_text().split("\n") if len(line) == 32}
    reader = DecisionLog(store.url, schema=store.schema, journal_dir=journal)
    try:
        assert reader.flush(timeout=60)
        stored = set(stored_ids(reader))
    finally:
        reader.close()
    return len(acknowledged), len(acknowledged - stored)


def test_sigkill_while_appending_loses_no_acknowledged_record(store: Store, tmp_path: Path) -> None:
    DecisionLog(store.url, schema=store.schema).close()  # tables first, so the child starts at once
    acknowledged, lost = kill_while_appending(store, tmp_path, durable=True, seconds=6.0)
    print(f"durable: {acknowledged} acknowledged, {lost} lost after SIGKILL")
    assert acknowledged > 50, "the child acknowledged too little to test anything"
    assert lost == 0


def test_sigkill_while_appending_to_the_journal_loses_no_acknowledged_record(
    store: Store, tmp_path: Path
) -> None:
    """The API's mode: an append is answered once it is in the local journal (no wait for a commit); the
    records the killed process had not stored yet are stored by the next process on the same journal."""
    DecisionLog(store.url, schema=store.schema).close()
    journal = tmp_path / "journal"
    acknowledged, lost = kill_while_appending(store, tmp_path, durable=True, seconds=6.0, journal=journal)
    left = sorted(path.name for path in journal.glob("journal-*"))
    print(f"journaled: {acknowledged} acknowledged, {lost} lost after SIGKILL; files left {left}")
    assert acknowledged > 50, "the child acknowledged too little to test anything"
    assert lost == 0
    assert left == [], "the dead process's journal was stored and deleted"


def test_sigkill_loses_acknowledged_records_without_durability(store: Store, tmp_path: Path) -> None:
    """The control: the same kill with `durable=False` loses what was still queued (so the test above can fail)."""
    DecisionLog(store.url, schema=store.schema).close()
    acknowledged, lost = kill_while_appending(store, tmp_path, durable=False, seconds=6.0)
    print(f"not durable: {acknowledged} acknowledged, {lost} lost after SIGKILL")
    assert acknowledged > 50 and lost > 0
