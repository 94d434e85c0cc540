"""The app's timing layer, in plain ASGI (Starlette's `BaseHTTPMiddleware` costs a task and a memory stream
per request; the body limit, `serving.limits.BodyLimit`, sits outside it): it times every request by its
route template, and answers the hot route — `GET /v1/users/{user_id}/decision` — without the framework's
routing and dependency injection when the request is plainly valid: a known key with the score scope, a
plain user id, no query but `lang=en|zh`. The answer is the route's own (`DecisionService.user_decision_body`,
the same bytes); anything else — a missing key, another parameter, an unknown user, no models, a test's
`dependency_overrides` — goes through the route as usual, which gives every error its documented status
and body."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.decision_log import DecisionNotLogged
from serving.service import NoModelsLoaded, UnknownUser

DECISION_ROUTE = "/v1/users/{user_id}/decision"
PREFIX, SUFFIX = "/v1/users/", "/decision"
MAX_USER_ID = 200  # the route's Path(max_length=…)
LANGS = {b"": "en", b"lang=en": "en", b"lang=zh": "zh"}
SCORE = "score"
JSON_HEADERS = [(b"content-type", b"application/json")]


class Edge:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope["app"].state
        body = decision_body(scope, state)
        if body is not None:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [*JSON_HEADERS, (b"content-length", b"%d" % len(body))]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            state.metrics.latency.labels(DECISION_ROUTE, "GET", "200").observe(time.perf_counter() - started)
            return
        status = 500

        async def timed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, timed)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            state.metrics.latency.labels(path, scope["method"], str(status)).observe(
                time.perf_counter() - started
            )


def decision_body(scope: Scope, state: Any) -> bytes | None:
    """The stored user's decision when the request is plainly valid and decided; None to go the usual way."""
    path: str = scope["path"]
    if scope["method"] != "GET" or not path.startswith(PREFIX) or not path.endswith(SUFFIX):
        return None
    user_id = path[len(PREFIX) : -len(SUFFIX)]
    lang = LANGS.get(scope["query_string"])
    if not user_id or "/" in user_id or len(user_id) > MAX_USER_ID or lang is None:
        return None
    app = scope["app"]
    service = getattr(state, "service", None)
    if service is None or app.dependency_overrides:
        return None
    key = _header(scope, b"x-api-key")
    if not key:
        return None
    scopes = state.settings.scopes_of(key)
    if scopes is None or SCORE not in scopes:
        return None
    try:
        return service.user_decision_body(service.models(), user_id, lang)
    except (NoModelsLoaded, UnknownUser, DecisionNotLogged):
        return None  # the route answers these (503, 404, 503) with their documented bodies


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
