"""The canonical data directory on disk: immutable versions and one pointer, switched in one step.

    DIR/current.json          {"version": "<name>", "previous": ["<name>"]}
    DIR/versions/<name>/      events.parquet, rejects.parquet and, when given, users/subscriptions/campaigns
    DIR/truth/, anything else left alone

A run writes its files into a hidden staging directory, renames it into `versions/`, and only then replaces
`current.json` with `os.replace`: a reader sees the old version or the new one, never a mix of files from
two runs, and a run killed at any point leaves the old version current. The next run cleans what a killed
one left (staging directories, versions never made current, a half-written pointer).

`resolve_data_dir` is the one function every reader calls. A directory without `current.json` (the flat
layout `clm simulate` writes, and ingest wrote before versions) is read as it is; the first run that writes
into a flat directory moves its files into a version first and says so.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from features.schemas import KINDS

log = logging.getLogger(__name__)

POINTER_FILE = "current.json"
VERSIONS_DIR = "versions"
REJECTS_FILE = "rejects.parquet"
CANONICAL_FILES: tuple[str, ...] = (*(f"{kind}.parquet" for kind in KINDS), REJECTS_FILE)
KEEP_PREVIOUS = 1
"""Versions kept besides the current one, so that a reader that resolved just before a switch can finish."""

# The points between a run's steps where the fault hook (`checkpoint`) is called, in order.
MIGRATION_STEPS = ("migrate-staged", "migrate-renamed", "migrate-pointed")
PUBLISH_STEPS = ("staged", "renamed", "pointed")
STEPS = MIGRATION_STEPS + PUBLISH_STEPS

Checkpoint = Callable[[str], None]


class DataDirectoryError(ValueError):
    """A data directory that cannot be used (no events, a broken pointer, a cutoff outside the data)."""


class DataDirectoryBusy(DataDirectoryError):
    """Another run holds the directory's write lock."""


def _pointer(root: Path) -> dict | None:
    path = root / POINTER_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DataDirectoryError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        pointer = json.loads(text)
        version = pointer["version"]
    except (ValueError, KeyError, TypeError):
        raise DataDirectoryError(f"{path}: not a data directory pointer ({text[:80]!r})") from None
    if not isinstance(version, str) or not version or "/" in version or version.startswith("."):
        raise DataDirectoryError(f"{path}: names no valid version ({version!r})")
    previous = pointer.get("previous") or []
    return {"version": version, "previous": [name for name in previous if isinstance(name, str)]}


def current_version(root: Path) -> str | None:
    """The version `root/current.json` names, or None for a flat (unversioned) directory."""
    pointer = _pointer(Path(root))
    return None if pointer is None else pointer["version"]


def resolve_data_dir(root: Path) -> Path:
    """Where the canonical files of the data directory `root` are now: its current version's directory, or
    `root` itself when it has no pointer (the flat layout). Every reader of a data directory calls this once
    and reads all its tables from the one path it returns."""
    root = Path(root)
    pointer = _pointer(root)
    if pointer is None:
        return root
    path = root / VERSIONS_DIR / pointer["version"]
    if not path.is_dir():
        raise DataDirectoryError(
            f"{root}/{POINTER_FILE} names version {pointer['version']!r}, which {path} does not hold"
        )
    return path


def _new_version_name() -> str:
    return f"v{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:6]}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for child in path.iterdir():
        if child.is_file():
            with open(child, "rb") as handle:
                os.fsync(handle.fileno())
    _fsync_dir(path)


def link_or_copy(source: Path, target: Path) -> None:
    """`target` as a hard link to `source` (same file system, no copy), else as a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@dataclass
class Publication:
    """What one run did to the directory: the version it made current and what it said on the way."""

    root: Path
    version: str
    previous: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.root / VERSIONS_DIR / self.version


class DataDirectoryWriter:
    """The one run writing a data directory: holds its lock (a flock on DIR itself), cleans what killed runs left, and publishes a
    new version in one step. `with DataDirectoryWriter(DIR) as writer: ... writer.publish(write)` holds the
    lock for the whole block; `checkpoint(step)` is called between the steps (STEPS: the fault hook the tests
    use to kill the process there)."""

    def __init__(self, root: Path, *, checkpoint: Checkpoint | None = None) -> None:
        self.root = Path(root)
        self.checkpoint = checkpoint or (lambda step: None)
        self.notes: list[str] = []
        self._lock_fd: int | None = None

    # -- lock and clean-up

    def __enter__(self) -> DataDirectoryWriter:
        if self.root.exists() and not self.root.is_dir():
            raise DataDirectoryError(f"{self.root}: exists and is not a directory")
        self._clean_sibling_staging()
        if self.root.is_dir():
            self._lock()
            self._clean()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _lock(self) -> None:
        if self._lock_fd is not None:
            return
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)  # the directory itself: no lock file to leave
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirectoryBusy(f"{self.root}: another run is writing this data directory") from None
        self._lock_fd = fd

    def _clean_sibling_staging(self) -> None:
        """Staging directories beside DIR, where ingest put them before versions (`.DIR.<hex>.partial`)."""
        parent = self.root.parent
        if not parent.is_dir():
            return
        for path in sorted(parent.glob(f".{self.root.name}.*.partial")):
            _remove(path)
            self.notes.append(f"removed {path.name}, left by an interrupted ingest")

    def _clean(self, *, after_publish: bool = False) -> None:
        """Remove what a killed run left: staging directories, temporary pointers, versions that were never
        made current (or are older than the kept ones), and flat files a finished migration left behind.
        After a publish this retires the versions no longer kept, without a note."""
        versions = self.root / VERSIONS_DIR
        for path in sorted(self.root.glob(f".{POINTER_FILE}.*.tmp")):
            _remove(path)
        pointer = _pointer(self.root)
        keep = set() if pointer is None else {pointer["version"], *pointer["previous"]}
        if versions.is_dir():
            for path in sorted(versions.iterdir()):
                if path.name in keep:
                    continue
                _remove(path)
                if after_publish:
                    log.info("%s: retired version %s", self.root, path.name)
                elif path.name.endswith(".partial"):
                    self.notes.append(f"removed {VERSIONS_DIR}/{path.name}, left by an interrupted run")
                else:
                    self.notes.append(
                        f"removed version {path.name}, never made current by an interrupted run"
                    )
        if pointer is not None:
            current = self.root / VERSIONS_DIR / pointer["version"]
            for name in CANONICAL_FILES:
                flat = self.root / name
                if flat.is_file() and (current / name).exists() and os.path.samefile(flat, current / name):
                    flat.unlink()
                    self.notes.append(f"removed {name} (moved into version {pointer['version']})")

    # -- publishing

    def _write_pointer(self, version: str, previous: list[str]) -> None:
        tmp = self.root / f".{POINTER_FILE}.{uuid.uuid4().hex[:12]}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump({"version": version, "previous": previous}, handle)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.root / POINTER_FILE)
        _fsync_dir(self.root)

    def _stage(self) -> Path:
        versions = self.root / VERSIONS_DIR
        versions.mkdir(exist_ok=True)
        staging = versions / f".{uuid.uuid4().hex[:12]}.partial"
        staging.mkdir()
        return staging

    def _migrate_flat(self) -> None:
        """Move a flat directory's canonical files into a version of their own (linked, then removed)."""
        flat = [name for name in CANONICAL_FILES if (self.root / name).is_file()]
        if not flat or _pointer(self.root) is not None:
            return
        staging = self._stage()
        for name in flat:
            link_or_copy(self.root / name, staging / name)
        _fsync_tree(staging)
        self.checkpoint("migrate-staged")
        version = _new_version_name()
        os.replace(staging, self.root / VERSIONS_DIR / version)
        _fsync_dir(self.root / VERSIONS_DIR)
        self.checkpoint("migrate-renamed")
        self._write_pointer(version, [])
        self.checkpoint("migrate-pointed")
        for name in flat:
            (self.root / name).unlink()
        self.notes.append(
            f"migrated {self.root} to versioned layout: its files ({', '.join(flat)}) are now version {version}"
        )

    def publish(self, write: Callable[[Path, Path | None], None]) -> Publication:
        """Make a new version current: `write(staging, current)` fills the staging directory (reading the
        current version's directory, or None, to carry anything over); then one rename and one pointer
        replace. The previous version is kept (KEEP_PREVIOUS), older ones are removed."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock()
        self._migrate_flat()
        pointer = _pointer(self.root)
        current = None if pointer is None else resolve_data_dir(self.root)
        staging = self._stage()
        try:
            write(staging, current)
            _fsync_tree(staging)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.checkpoint("staged")
        version = _new_version_name()
        os.replace(staging, self.root / VERSIONS_DIR / version)
        _fsync_dir(self.root / VERSIONS_DIR)
        self.checkpoint("renamed")
        previous = [] if pointer is None else [pointer["version"], *pointer["previous"]][:KEEP_PREVIOUS]
        self._write_pointer(version, previous)
        self.checkpoint("pointed")
        self._clean(after_publish=True)
        return Publication(self.root, version, previous[0] if previous else None, self.notes)


__all__ = [
    "CANONICAL_FILES",
    "POINTER_FILE",
    "REJECTS_FILE",
    "STEPS",
    "VERSIONS_DIR",
    "DataDirectoryBusy",
    "DataDirectoryError",
    "DataDirectoryWriter",
    "Publication",
    "current_version",
    "link_or_copy",
    "resolve_data_dir",
]
