"""The decision log's local journal (serving/journal.py): lines are handed to the writer until stored, a
large stored file is replaced, a file whose process died is an orphan any other process stores, a line cut
short by a kill is left out; the contact ledger is shared by every process on the machine."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from serving import journal as journal_module
from serving.decision_log import DecisionLog
from serving.journal import ContactLedger, Journal, complete_lines
from tests.serving.test_decision_log import make_record

UTC = dt.UTC
T0 = dt.datetime(2026, 2, 1, 12, tzinfo=UTC)


def test_lines_wait_in_the_journal_until_stored(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    for i in range(3):
        journal.append(b'{"n": %d}' % i)
    lines = journal.pending()
    assert [line.data for line in lines] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    assert journal.pending() == lines, "not stored yet: handed out again"
    journal.committed(lines[1].end)
    assert [line.data for line in journal.pending()] == [b'{"n": 2}']
    assert journal.unstored()
    journal.committed(lines[2].end)
    assert journal.pending() == [] and not journal.unstored()
    path = journal.path
    journal.close()
    assert not path.exists(), "a file whose lines are all stored is deleted on close"


def test_a_file_with_unstored_lines_stays_on_close(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.append(b"{}")
    path = journal.path
    journal.close()
    assert path.read_bytes() == b"{}\n"


def test_a_large_stored_file_is_replaced_by_a_new_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(journal_module, "ROTATE_BYTES", 100)
    journal = Journal(tmp_path)
    first = journal.path
    for _ in range(20):
        journal.append(b"x" * 10)
    journal.committed(journal.pending()[-1].end)
    assert journal.path != first and not first.exists()
    journal.append(b"after")
    assert [line.data for line in journal.pending()] == [b"after"]
    journal.close()


def test_a_line_cut_short_by_a_kill_is_left_out() -> None:
    lines = list(complete_lines(b'{"a": 1}\n{"b": 2}\n{"c": ', 100))
    assert [(line.end, line.data) for line in lines] == [(109, b'{"a": 1}'), (118, b'{"b": 2}')]


HOLDER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {root!r})
    from serving.journal import Journal
    journal = Journal({directory!r})
    journal.append(b'{{"decision_id": "d1"}}')
    journal.append(b'{{"decision_id": "d2"}}')
    print(journal.path, flush=True)
    time.sleep(600)
    """
)


def test_the_file_of_a_killed_process_is_an_orphan_and_a_living_ones_is_not(tmp_path: Path) -> None:
    root = str(Path(__file__).resolve().parents[2])
    child = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=root, directory=str(tmp_path))],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        held = Path(child.stdout.readline().strip())
        assert held.exists()
        mine = Journal(tmp_path)
        assert list(mine.orphans()) == [], "its process is alive: it holds the lock"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    found = list(mine.orphans())
    assert [(path, [line.data for line in lines]) for path, lines in found] == [
        (held, [b'{"decision_id": "d1"}', b'{"decision_id": "d2"}'])
    ]
    mine.forget(held)
    assert not held.exists()
    mine.close()


def test_the_contact_ledger_is_shared_and_keeps_one_row_per_decision(tmp_path: Path) -> None:
    one, other = ContactLedger(tmp_path / "contacts.db"), ContactLedger(tmp_path / "contacts.db")
    day = dt.datetime(2026, 1, 2, 10, tzinfo=UTC)
    one.add([("d1", "u1", day, "discount"), ("d2", "u1", day + dt.timedelta(hours=1), "winback_offer")])
    one.add([("d1", "u1", day, "discount")])
    other.add([("d3", "u2", day, "discount")])
    assert other.since("u1", day) == [(day + dt.timedelta(hours=1), "winback_offer"), (day, "discount")]
    assert one.since("u1", day + dt.timedelta(minutes=1)) == [(day + dt.timedelta(hours=1), "winback_offer")]
    assert one.since("u2", day - dt.timedelta(days=1)) == [(day, "discount")]
    one.close()
    other.close()


def test_a_journaled_append_returns_before_the_commit_and_flush_stores_it(tmp_path: Path) -> None:
    log = DecisionLog(f"sqlite:///{tmp_path / 'log.db'}", journal_dir=tmp_path / "journal")
    log.start()
    try:
        record = make_record(user_id="u1")
        log.append(record)
        assert log.flush(timeout=10)
        assert log.get_decision(record.decision_id) is not None
        contacted = record.action != "no_action"
        assert bool(log.contacts_since("u1", record.ts - dt.timedelta(seconds=1))) is contacted
    finally:
        log.close()


def test_lines_the_database_refuses_wait_in_the_journal(tmp_path: Path, monkeypatch) -> None:
    log = DecisionLog(f"sqlite:///{tmp_path / 'log.db'}", journal_dir=tmp_path / "journal", retries=0)
    record = make_record(user_id="u1")
    log.append(record)
    refuse = pytest.MonkeyPatch()
    refuse.setattr(log, "_insert", lambda rows: (_ for _ in ()).throw(RuntimeError("database down")))
    assert not log.flush(timeout=1), "nothing could be stored"
    assert log.get_decision(record.decision_id) is None
    refuse.undo()
    assert log.flush(timeout=10)
    assert log.get_decision(record.decision_id) is not None
    assert log.stats()["failed"] == 0
    log.close()


def test_a_decision_the_journal_cannot_take_is_not_answered(tmp_path: Path) -> None:
    from serving.decision_log import DecisionNotLogged

    log = DecisionLog(f"sqlite:///{tmp_path / 'log.db'}", journal_dir=tmp_path / "journal")
    os.close(log._journal._fd)  # the file is gone from under it (disk error)
    with pytest.raises(DecisionNotLogged, match="was not logged"):
        log.append(make_record(user_id="u1"))
    log._journal._fd = os.open(os.devnull, os.O_WRONLY)
    log.close()


def test_the_writer_stores_what_arrives_without_being_woken(tmp_path: Path) -> None:
    log = DecisionLog(f"sqlite:///{tmp_path / 'log.db'}", journal_dir=tmp_path / "journal")
    log.start()
    try:
        record = make_record(user_id="u9")
        log.append(record)
        deadline = time.monotonic() + 10
        while log.get_decision(record.decision_id) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert log.get_decision(record.decision_id) is not None
    finally:
        log.close()


@pytest.mark.parametrize("journaled", [True, False])
def test_outcomes_recorded_since_a_snapshot_are_read_per_user(tmp_path: Path, journaled: bool) -> None:
    """The negative outcomes the request path counts: every outcome recorded against the user's decisions made
    since the snapshot, with the action taken — at once on this machine (the ledger), from the database on
    another (its ledger is seeded from it), and without a journal straight from the database."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = DecisionLog(url, journal_dir=tmp_path / "journal" if journaled else None)
    log.start()
    snapshot = T0 - dt.timedelta(days=1)
    try:
        old = make_record(
            user_id="u1", ts=snapshot - dt.timedelta(days=3)
        )  # before the snapshot: in its data
        new = make_record(user_id="u1", ts=T0)
        other = make_record(user_id="u2", ts=T0)
        for record in (old, new, other):
            log.append(record)
        for record, outcome in ((old, "churned"), (new, "churned"), (new, "complained"), (other, "churned")):
            log.record_outcome(record.decision_id, outcome, "retention_discount", T0 + dt.timedelta(days=9))
        assert sorted(log.outcomes_since("u1", snapshot)) == [
            ("retention_discount", "churned"), ("retention_discount", "complained")]  # fmt: skip
        assert log.outcomes_since("u3", snapshot) == []  # a user with nothing logged
        elsewhere = DecisionLog(url, journal_dir=tmp_path / "other-machine" if journaled else None)
        try:
            assert sorted(elsewhere.outcomes_since("u1", snapshot)) == sorted(
                log.outcomes_since("u1", snapshot)
            )
        finally:
            elsewhere.close()
    finally:
        log.close()
