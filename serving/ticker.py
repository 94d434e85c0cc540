"""A step run every few seconds on a daemon thread, off the request path: the alias poll, the snapshot check
of the decision cache and the workers' run-directory sync all tick this way."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Ticker:
    """Calls `step` every `interval_seconds` until `stop`; a step that raises is logged (as `what` failed) and
    the next tick tries again, so a passing error never ends the thread."""

    def __init__(self, name: str, step: Callable[[], object], what: str) -> None:
        self.name, self.step, self.what = name, step, what
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self, interval_seconds: float) -> None:
        """Start ticking (once; an interval ≤ 0 means never)."""
        if interval_seconds <= 0 or self._thread is not None:
            return

        def run() -> None:
            while not self._stop.wait(interval_seconds):
                try:
                    self.step()
                except Exception:
                    log.exception("%s failed; trying again at the next tick", self.what)

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
