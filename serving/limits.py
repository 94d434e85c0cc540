"""Limits on what a client can make the server hold or send: request bodies counted by the bytes actually
read (a chunked body has no Content-Length to trust), and error bodies bounded whatever the input."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_ERRORS_SHOWN = 20
MAX_ERROR_TEXT = 120  # characters of one message or location part (a feature name can be a megabyte long)


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a body passes the limit; FastAPI re-raises an HTTPException met while
    reading the body, so it reaches the client as this 413 (not a 400 "error parsing the body")."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body larger than {max_bytes} bytes")


class BodyLimit:
    """ASGI middleware: 413 for a declared Content-Length over `max_bytes` before anything is read, and for
    any body (chunked or not) as soon as the bytes read pass it — the rest is never buffered."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await self._refuse(send)
                return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:  # read outside FastAPI's body parsing (a route reading the stream itself)
            if started:
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = BodyTooLarge(self.max_bytes).detail.encode()
        body = b'{"detail":"' + body + b'"}'
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
