"""The reviewer pages' sign-in: a signed session token in the cookie instead of the API key, and the checks
on the forms that set or clear it.

A token is `v1.<expires>.<key id>.<signature>`: `expires` in Unix seconds, `key id` an HMAC of the API key
under the server's session secret (it names the key without revealing it, and without the secret cannot be
tested against guessed keys), `signature` an HMAC-SHA256 of the rest under the same secret. A token is
accepted until it expires while a configured key still has that id, with that key's scopes *now*: removing
or rotating a key in `CLM_API_KEYS` (and restarting) ends its sessions, changing its scopes changes what its
sessions open, and changing the secret ends every session.

The secret is `CLM_SESSION_SECRET` when set. Otherwise `clm serve` generates one at start and hands it to its
workers through their environment, so a token any worker issued is accepted by all of them (and every
session ends when the server restarts); an app built without either (tests, an embedding) makes its own."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

SESSION_COOKIE = "clm_review_session"
TOKEN_VERSION = "v1"


def _mac(secret: bytes, *parts: str) -> str:
    digest = hmac.new(secret, "\0".join(parts).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class SessionCheck:
    """What a session cookie opens: the scopes of its key, or why it opens nothing."""

    scopes: frozenset[str] | None
    problem: str | None = None


class ReviewSessions:
    """Issues and checks the session tokens of the reviewer pages (see the module's docstring)."""

    def __init__(self, secret: str, lifetime_seconds: int, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret.encode()
        self.lifetime_seconds = lifetime_seconds
        self._clock = clock

    @classmethod
    def from_secret(cls, secret: str | None, lifetime_seconds: int) -> ReviewSessions:
        """Sessions under `secret`, or under a secret made for this process alone when none is configured."""
        return cls(secret or secrets.token_urlsafe(32), lifetime_seconds)

    def key_id(self, api_key: str) -> str:
        return _mac(self._secret, "key", api_key)[:22]  # 128 bits

    def issue(self, api_key: str) -> str:
        """A token for a key already checked to have the review scope, valid for `lifetime_seconds`."""
        expires = str(int(self._clock()) + self.lifetime_seconds)
        key_id = self.key_id(api_key)
        return ".".join((TOKEN_VERSION, expires, key_id, _mac(self._secret, TOKEN_VERSION, expires, key_id)))

    def check(self, token: str, api_keys: Mapping[str, Sequence[str]]) -> SessionCheck:
        """The scopes a token opens under the keys configured now (constant-time comparisons throughout)."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != TOKEN_VERSION or not parts[1].isdigit():
            return SessionCheck(None, "not a session of this server; sign in again")
        version, expires, key_id, signature = parts
        if not hmac.compare_digest(signature.encode(), _mac(self._secret, version, expires, key_id).encode()):
            return SessionCheck(None, "not a session of this server; sign in again")
        if int(expires) <= self._clock():
            return SessionCheck(None, "the session has expired; sign in again")
        found: frozenset[str] | None = None
        for known, scopes in api_keys.items():
            if hmac.compare_digest(self.key_id(known).encode(), key_id.encode()):
                found = frozenset(scopes)
        if found is None:
            return SessionCheck(None, "the API key of this session is no longer configured; sign in again")
        return SessionCheck(found)


def cross_origin(request: Request) -> str | None:
    """Why a form post did not come from this site's own pages, None when it did: its Origin (else its
    Referer) must name the host the request was sent to. Browsers send Origin with every form POST; a post
    naming neither is refused too. Host and port are compared, not the scheme, so that a TLS-terminating
    proxy that does not forward the scheme still passes; a different host can never match."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if not source:
        return "the form post names no Origin or Referer"
    host = (request.headers.get("host") or "").lower()
    if not host or urlsplit(source).netloc.lower() != host:
        return f"a form post from another site ({source[:100]}) is refused"
    return None
