"""Limits on what a client can make the server hold or send: request bodies counted by the bytes actually
read (a chunked body has no Content-Length to trust), and error bodies bounded whatever the input."""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_ERRORS_SHOWN = 20
MAX_ERROR_TEXT = 120  # characters of one message or location part (a feature name can be a megabyte long)


class BodyLimit:
    """ASGI middleware: 413 for a declared Content-Length over `max_bytes` before anything is read; a body
    without one (chunked) is read here up to `max_bytes` and refused with 413 the moment it passes — the
    rest is never read — else handed to the app as read. (A declared length bounds what the server passes
    on, so such a body needs no counting.)"""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await self._refuse(send)
                return
            chunked = chunked or name == b"transfer-encoding"
        if not chunked:
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: the app sees it as it would
                first: Message = message
                break
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": bytes(body), "more_body": False}
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = b'{"detail":"request body larger than %d bytes"}' % self.max_bytes
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})


def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_ERROR_TEXT:
        return value[:MAX_ERROR_TEXT] + f"… ({len(value)} characters)"
    return value


def bounded_errors(errors: list[dict[str, Any]], shown: int = MAX_ERRORS_SHOWN) -> list[dict[str, Any]]:
    """At most `shown` errors, each text cut short, then one entry counting them all: a 422 stays a few
    kilobytes however many bad fields (or how long a field name) the request held."""
    out = [
        {
            "loc": [_short(part) for part in error.get("loc", ())],
            **{key: _short(error[key]) for key in ("msg", "type") if key in error},
        }
        for error in errors[:shown]
    ]
    if len(errors) > shown:
        kinds: dict[str, int] = {}
        for error in errors:
            kinds[str(error.get("type"))] = kinds.get(str(error.get("type")), 0) + 1
        counted = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1])[:5])
        out.append({
            "loc": ["body"],
            "msg": f"{len(errors)} errors in all ({counted}); the first {shown} are shown",
            "type": "too_many_errors",
        })  # fmt: skip
    return out
