"""The decision log's local journal: what makes an answered decision survive SIGKILL without making the
request wait for a database commit.

A request appends its encoded record to its process's journal file — one `write` of one line to a file
opened with O_APPEND, a few microseconds — and answers. Once `write` has returned the bytes belong to the
kernel, so killing the process loses nothing (a power cut can lose what was not yet fsync'd: the writer
thread fsyncs the file every `fsync_seconds`). The log's writer thread drains the file into the database in
batches (`Journal.pending`, `Journal.committed`) and starts a new file once everything in a large one is
stored.

Each process holds an exclusive `flock` on its own file for as long as it lives. A file nobody holds is
an orphan — its process was killed or crashed before draining it — and `Journal.orphans` hands its lines
to whichever process looks next (at start and then every few seconds), which stores them (inserts skip
decision ids already stored, so a line stored twice is written once) and deletes the file.

`ContactLedger` keeps, beside the journal, who was contacted (decisions whose action is not `no_action`) and
the outcomes recorded against decisions, in a small SQLite file shared by every process on the machine:
written before the request answers and read by the next request for the same user on any worker, so
cooldowns, caps and the suppression rule hold across workers at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import functools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

ROTATE_BYTES = 64 * 1024 * 1024  # a drained file larger than this is replaced by a new one
PREFIX, SUFFIX = "journal-", ".jsonl"


@dataclass(frozen=True, slots=True)
class Line:
    """One journal line: the file's offset just past it, and its bytes without the newline."""

    end: int
    data: bytes


def complete_lines(data: bytes, start: int) -> Iterator[Line]:
    """The complete lines of `data`, read from file offset `start` (a last line without its newline was cut
    short by a kill mid-write: it is left out, and its request was never answered)."""
    position = 0
    while True:
        newline = data.find(b"\n", position)
        if newline < 0:
            return
        if newline > position:
            yield Line(start + newline + 1, data[position:newline])
        position = newline + 1


class Journal:
    """This process's journal file in `directory` (created), locked for the process's lifetime."""

    def __init__(self, directory: Path, *, fsync_seconds: float = 1.0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync_seconds = fsync_seconds
        self._lock = threading.Lock()  # appends and the switch to a new file
        self._generation = 0
        self._fd = -1
        self.path = self._open_new()
        self._committed_offset = 0  # of the current file: lines before it are stored
        self._last_fsync = time.monotonic()
        self._dirty = False
        self._orphan_fds: dict[Path, int] = {}
        self._reader: BinaryIO | None = None  # the writer's handle on the current file

    def _open_new(self) -> Path:
        self._generation += 1
        path = self.directory / f"{PREFIX}{os.getpid()}-{time.time_ns()}-{self._generation}{SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else can hold it
        self._fd = fd
        return path

    def append(self, line: bytes) -> None:
        """Write one record (a line without newline) before the caller answers; raises OSError (disk full…)."""
        data = line + b"\n"
        with self._lock:
            written = os.write(self._fd, data)
            self._dirty = True
        if written != len(data):  # a regular file short-writes only when the disk is full
            raise OSError(f"journal {self.path}: wrote {written} of {len(data)} bytes")

    def pending(self, max_bytes: int = 4 * 1024 * 1024) -> list[Line]:
        """Lines of this process's file not yet stored, in order (about `max_bytes` at most, and at least
        one line however long); read again until `committed` moves past them."""
        with self._lock:
            path, start = self.path, self._committed_offset
        if self._reader is None or self._reader.name != str(path):
            if self._reader is not None:
                self._reader.close()
            self._reader = open(path, "rb")  # noqa: SIM115 (kept open: one per file, closed on rotation)
        handle = self._reader
        handle.seek(start)
        data = handle.read(max_bytes)
        while data and b"\n" not in data:  # one line longer than max_bytes
            more = handle.read(max_bytes)
            if not more:
                break
            data += more
        return list(complete_lines(data, start))

    def committed(self, end: int) -> None:
        """Everything before offset `end` of the current file is stored; a large file fully stored is
        replaced by a new one (and deleted)."""
        self._committed_offset = max(self._committed_offset, end)
        if self._committed_offset < ROTATE_BYTES:
            return
        with self._lock:
            if os.fstat(self._fd).st_size != self._committed_offset:
                return  # appended since: the next drain gets there
            old_fd, old_path = self._fd, self.path
            self.path = self._open_new()
            self._committed_offset = 0
        os.close(old_fd)
        old_path.unlink(missing_ok=True)

    def sync(self, force: bool = False) -> None:
        """fsync the file when something was written and `fsync_seconds` have passed (power-cut safety)."""
        now = time.monotonic()
        if self._dirty and (force or now - self._last_fsync >= self.fsync_seconds):
            with self._lock:
                fd, self._dirty = self._fd, False
            os.fsync(fd)
            self._last_fsync = now

    def unstored(self) -> bool:
        """Whether lines of this process's file are not yet stored."""
        with self._lock:
            return os.fstat(self._fd).st_size > self._committed_offset

    def orphans(self) -> Iterator[tuple[Path, list[Line]]]:
        """(file, lines) of each journal file no live process holds; the caller stores the lines, then
        `forget`s the file. The file stays locked by this process until then."""
        for path in sorted(self.directory.glob(f"{PREFIX}*{SUFFIX}")):
            if path == self.path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # another process took it
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue  # its process is alive (or another one is draining it)
            if not path.exists():  # drained and deleted between our listing and our lock
                os.close(fd)
                continue
            with os.fdopen(fd, "rb", closefd=False) as handle:
                lines = list(complete_lines(handle.read(), 0))
            self._orphan_fds[path] = fd
            yield path, lines

    def forget(self, path: Path) -> None:
        """An orphan's lines are stored: delete it."""
        path.unlink(missing_ok=True)
        fd = self._orphan_fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def release(self, path: Path) -> None:
        """An orphan could not be stored now: unlock it for a later try."""
        fd = self._orphan_fds.pop(path, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        """Close this process's file: deleted when everything in it is stored, else left for the next start."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        with self._lock:
            fd, path = self._fd, self.path
            size = os.fstat(fd).st_size
            self._fd = -1
        if size <= self._committed_offset:
            path.unlink(missing_ok=True)
        else:
            with contextlib.suppress(OSError):
                os.fsync(fd)
        os.close(fd)


class ContactLedger:
    """Who was contacted when, shared by every process on this machine (SQLite in WAL mode, one
    connection per thread). Rows are keyed by decision id, so adding one twice keeps one."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        with self._connection() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS contacts (decision_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, "
                "ts TEXT NOT NULL, action TEXT NOT NULL)"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS ix_contacts_user_ts ON contacts (user_id, ts)")
            # outcomes recorded against decisions (POST /v1/outcomes), with the decision's user and time
            conn.execute(
                "CREATE TABLE IF NOT EXISTS outcomes (decision_id TEXT NOT NULL, outcome TEXT NOT NULL, "
                "user_id TEXT NOT NULL, ts TEXT NOT NULL, action TEXT NOT NULL, PRIMARY KEY (decision_id, outcome))"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS ix_outcomes_user_ts ON outcomes (user_id, ts)")

    @contextlib.contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        yield self._conn()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def add(self, rows: Iterable[tuple[str, str, dt.datetime, str]]) -> None:
        """(decision_id, user_id, ts in UTC, action) of contacts, in one transaction."""
        self._insert(
            "INSERT OR IGNORE INTO contacts VALUES (?, ?, ?, ?)",
            [(d, u, _text(ts), a) for d, u, ts, a in rows],
        )

    def _insert(self, statement: str, values: list[tuple[str, ...]]) -> None:
        """`statement` over every row of `values` in one immediate transaction (nothing when empty)."""
        if not values:
            return
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(statement, values)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def since(self, user_id: str, since: dt.datetime) -> list[tuple[dt.datetime, str]]:
        """(ts, action) of the user's contacts at or after `since`, newest first."""
        rows = (
            self._conn()
            .execute(
                "SELECT ts, action FROM contacts WHERE user_id = ? AND ts >= ? ORDER BY ts DESC",
                (user_id, _text(since)),
            )
            .fetchall()
        )
        return [(dt.datetime.fromisoformat(ts), action) for ts, action in rows]

    def add_outcomes(self, rows: Iterable[tuple[str, str, str, dt.datetime, str]]) -> None:
        """(decision_id, outcome, user_id, the decision's ts in UTC, action taken) of recorded outcomes."""
        self._insert(
            "INSERT OR IGNORE INTO outcomes VALUES (?, ?, ?, ?, ?)",
            [(d, o, u, _text(ts), a) for d, o, u, ts, a in rows],
        )

    def outcomes_since(self, user_id: str, since: dt.datetime) -> list[tuple[str, str]]:
        """(action taken, outcome) recorded against the user's decisions made at or after `since`."""
        rows = (
            self._conn()
            .execute(
                "SELECT action, outcome FROM outcomes WHERE user_id = ? AND ts >= ?", (user_id, _text(since))
            )
            .fetchall()
        )
        return [(action, outcome) for action, outcome in rows]

    def prune(self, before: dt.datetime) -> None:
        with self._connection() as conn:
            conn.execute("DELETE FROM contacts WHERE ts < ?", (_text(before),))
            conn.execute("DELETE FROM outcomes WHERE ts < ?", (_text(before),))

    def close(self) -> None:
        with self._all_lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


@functools.lru_cache(maxsize=64)  # the request path asks for the same `since` (a snapshot's start) each time
def _text(ts: dt.datetime) -> str:
    """Fixed-width ISO 8601 in UTC: text order is time order."""
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
