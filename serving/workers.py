"""The worker processes of one `clm serve --workers N` kept on the same versions, through a run directory
they share (`CLM_RUN_DIR`, made by `clm serve`):

- `reload-generation`: a counter the admin reload bumps after its own worker swapped; every worker reads it
  every `poll_seconds` (one small file read) and, when it moved, reloads the aliases (loading only if they
  moved), so an admin reload reaches every worker within a poll interval;
- `workers/<pid>.json`: what each worker serves (versions, shadow, load time, last reload error), rewritten
  whenever its model set changes; `/v1/models` and `/readyz` list the live ones.

Without a run directory (an app built in a test, one process) the worker is alone: `bump` does nothing and
`workers()` lists this process only. The swap itself stays in `ModelHolder`."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serving.state import ModelHolder
from serving.ticker import Ticker

log = logging.getLogger(__name__)

GENERATION_FILE = "reload-generation"
WORKERS_DIR = "workers"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


class WorkerSync:
    """One worker's side of the run directory: follow the reload generation, publish what it serves."""

    def __init__(
        self,
        run_dir: Path | None,
        holder: ModelHolder,
        *,
        poll_seconds: float = 0.25,
        on_reload: Callable[[], None] = lambda: None,
    ) -> None:
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.holder = holder
        self.poll_seconds = poll_seconds
        self.on_reload = on_reload
        self.pid = os.getpid()
        self._seen = 0
        self._published: tuple[Any, ...] | None = None
        self._ticker = Ticker("clm-worker-sync", self._tick, "following the run directory")
        if self.run_dir is not None:
            (self.run_dir / WORKERS_DIR).mkdir(parents=True, exist_ok=True)

    # --- the reload generation ---------------------------------------------------------------------

    def generation(self) -> int:
        if self.run_dir is None:
            return self._seen
        try:
            return int((self.run_dir / GENERATION_FILE).read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def bump(self) -> int:
        """Tell every other worker to reload (after this one did); the new generation."""
        if self.run_dir is None:
            return self._seen
        with (self.run_dir / "reload.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            generation = self.generation() + 1
            _write_atomically(self.run_dir / GENERATION_FILE, str(generation))
        self._seen = generation
        self.publish()
        return generation

    def follow(self) -> bool:
        """Reload when another worker bumped the generation since we looked; whether it did."""
        generation = self.generation()
        if generation == self._seen:
            return False
        self._seen = generation
        with contextlib.suppress(Exception):  # logged and counted by the holder; the old set keeps serving
            self.holder.reload(force=False)
        self.on_reload()
        return True

    # --- what each worker serves -------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """What this worker serves now."""
        current, shadow, status = self.holder.current, self.holder.shadow, self.holder.status
        return {
            "pid": self.pid,
            "versions": current.version_labels() if current else None,
            "shadow": shadow.version_labels() if shadow else None,
            "loaded_at": dt.datetime.fromtimestamp(current.loaded_at, dt.UTC).isoformat()
            if current
            else None,
            "reload_generation": self._seen,
            "last_reload_error": status.last_error,
            "reload_failures": status.failures,
        }

    def publish(self) -> None:
        """Write this worker's state file if what it serves changed since the last write."""
        if self.run_dir is None:
            return
        status = self.holder.status
        key = (
            id(self.holder.current),
            id(self.holder.shadow),
            self._seen,
            status.last_error,
            status.failures,
        )
        if key == self._published:
            return
        _write_atomically(self.run_dir / WORKERS_DIR / f"{self.pid}.json", json.dumps(self.state()))
        self._published = key

    def workers(self) -> list[dict[str, Any]]:
        """Every live worker's state, by pid (this one's read fresh); files of dead workers are removed."""
        if self.run_dir is None:
            return [self.state()]
        found = {}
        for path in (self.run_dir / WORKERS_DIR).glob("*.json"):
            with contextlib.suppress(ValueError):
                pid = int(path.stem)
                if pid == self.pid:
                    continue
                if not _alive(pid):
                    path.unlink(missing_ok=True)
                    continue
                with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                    found[pid] = json.loads(path.read_text())
        found[self.pid] = self.state()
        return [found[pid] for pid in sorted(found)]

    # --- the thread --------------------------------------------------------------------------------

    def start(self) -> None:
        """Take the current generation as seen (the lifespan just loaded the aliases), publish, then poll."""
        self._seen = self.generation()
        self.publish()
        if self.run_dir is not None:
            self._ticker.start(self.poll_seconds)

    def _tick(self) -> None:
        self.follow()
        self.publish()

    def stop(self) -> None:
        self._ticker.stop()
        if self.run_dir is not None:
            (self.run_dir / WORKERS_DIR / f"{self.pid}.json").unlink(missing_ok=True)
