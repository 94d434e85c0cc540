"""The uvicorn process `clm serve` becomes: uvicorn with httptools and uvloop, N workers, and an HTTP
protocol with a header-read timeout — uvicorn has none, so a client that opens connections and sends a
request line and headers one byte at a time (slowloris) would hold each connection for ever.

Run as `python -m serving.server --host H --port P --workers N --log-level L` (a spawned worker re-imports
this small module, not the whole CLI). The timeouts come from `ServingSettings` (`CLM_HEADER_TIMEOUT_SECONDS`,
`CLM_KEEP_ALIVE_TIMEOUT_SECONDS`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from functools import cache

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)
APP = "clm.commands.serve:app_factory"


@cache
def header_timeout_seconds() -> float:
    from serving.settings import ServingSettings

    return ServingSettings().header_timeout_seconds


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """httptools' protocol, closing a connection whose request line and headers are not complete within
    `header_timeout_seconds` of the connection opening or of the request's first byte."""

    _header_timer: asyncio.TimerHandle | None = None

    def _arm_header_timer(self) -> None:
        self._disarm_header_timer()
        self._header_timer = self.loop.call_later(header_timeout_seconds(), self._header_timeout)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.warning(
                "closing %s: request headers not received within %.0f s",
                self.client,
                header_timeout_seconds(),
            )
            self.transport.close()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    from serving.settings import ServingSettings

    parser = argparse.ArgumentParser(prog="python -m serving.server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    settings = ServingSettings()
    uvicorn.run(
        APP, factory=True, host=args.host, port=args.port, workers=args.workers, loop="uvloop",
        http=HeaderTimeoutProtocol, log_level=args.log_level, access_log=False,
        timeout_keep_alive=settings.keep_alive_timeout_seconds, timeout_worker_healthcheck=60,
    )  # fmt: skip


if __name__ == "__main__":  # through the module, so the protocol class pickles as serving.server's
    from serving.server import main as run

    run()
