"""The reviewer pages' sign-in without trained models (an app whose lifespan never ran: no models are loaded,
so a signed-in request reaches the page's own answer and a refused one gets the sign-in page): the cookie
holds a signed, expiring token and never the API key; expired, forged and revoked sessions are refused; the
logout clears the cookie; a sign-in or sign-out posted from another site is refused and sets nothing; every
answer of the sign-in and every page is `no-store`; the CSP allows no inline script or style, and the pages'
own CSS and JS come from the app; the workers of one `clm serve` accept each other's sessions."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from clm.commands.serve import share_session_secret
from clm.config import load_config
from serving.app import create_app
from serving.dependencies import get_decision_log
from serving.review import CSP, SESSION_COOKIE, ReviewSessions
from serving.settings import ServingSettings

KEYS = {"review-key": ["review"], "score-key": ["score"]}
SECRET = "s" * 40
SAME_SITE = {"Origin": "http://testserver"}
SIGNED_PAGE = "/review/decisions/nope"  # answers 404 once signed in (no such decision), 401/403 before


class EmptyLog:
    """The decision log of a server that has decided nothing."""

    def get_decision(self, decision_id: str) -> None:
        return None

    def flush(self, timeout: float) -> None:
        return None


def review_app(tmp_path, keys=KEYS, secret: str | None = SECRET, base_url: str = "http://testserver"):
    settings = ServingSettings(
        api_keys=keys, data_dir=tmp_path, session_secret=secret, review_session_seconds=600
    )
    app = create_app(load_config(), settings)
    app.dependency_overrides[get_decision_log] = EmptyLog
    return TestClient(app, base_url=base_url, raise_server_exceptions=False)


def sign_in(client: TestClient, key: str = "review-key", headers: dict[str, str] | None = None):
    return client.post(
        "/review/login", data={"api_key": key, "next": "/review"}, headers=SAME_SITE if headers is None else headers,
        follow_redirects=False,
    )  # fmt: skip


def session_of(response) -> str:
    match = re.search(rf"{SESSION_COOKIE}=([^;]*)", response.headers["set-cookie"])
    assert match, response.headers.get("set-cookie")
    return match.group(1)


def test_the_cookie_holds_an_expiring_signed_token_never_the_api_key(tmp_path) -> None:
    client = review_app(tmp_path)
    answer = sign_in(client)
    assert answer.status_code == 303 and answer.headers["location"] == "/review"
    cookie = answer.headers["set-cookie"]
    assert "review-key" not in cookie
    assert f"{SESSION_COOKIE}=v1." in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Max-Age=600" in cookie and "Path=/review" in cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    assert client.get(SIGNED_PAGE).status_code == 404  # the session opens the pages
    over_tls = sign_in(
        review_app(tmp_path, base_url="https://testserver"), headers={"Origin": "https://testserver"}
    )
    assert over_tls.status_code == 303 and "Secure" in over_tls.headers["set-cookie"]
    # the cookie of the old sign-in, the raw key, opens nothing any more
    old = review_app(tmp_path)
    old.cookies.set("clm_review_key", "review-key")
    assert old.get(SIGNED_PAGE).status_code == 401


def test_an_expired_forged_or_revoked_session_is_refused(tmp_path) -> None:
    now = [1_800_000_000.0]
    sessions = ReviewSessions(SECRET, 600, clock=lambda: now[0])
    token = sessions.issue("review-key")
    assert sessions.check(token, KEYS).scopes == {"review"}
    now[0] += 601
    assert sessions.check(token, KEYS).problem == "the session has expired; sign in again"
    now[0] -= 601
    version, expires, key_id, signature = token.split(".")
    later = ".".join((version, str(int(expires) + 10**6), key_id, signature))  # a longer life, same signature
    assert sessions.check(later, KEYS).scopes is None
    other_server = ReviewSessions("t" * 40, 600, clock=lambda: now[0]).issue("review-key")
    assert sessions.check(other_server, KEYS).scopes is None
    assert sessions.check("review-key", KEYS).scopes is None
    # removing (or rotating) the key ends its sessions; taking its scope away closes the pages
    assert "no longer configured" in (sessions.check(token, {"new-key": ["review"]}).problem or "")
    assert sessions.check(token, {"review-key": ["score"]}).scopes == {"score"}

    client = review_app(tmp_path)
    token = session_of(sign_in(client))
    client.cookies.clear()
    for refused in (token[:-2] + "xx", token.replace(".", ".9", 1), "review-key", ""):
        client.cookies.set(SESSION_COOKIE, refused)
        assert client.get(SIGNED_PAGE).status_code == 401, refused
    revoked = review_app(tmp_path, keys={"other-key": ["review"]})  # the same secret, the key rotated
    revoked.cookies.set(SESSION_COOKIE, token)
    page = revoked.get(SIGNED_PAGE)
    assert page.status_code == 401 and "no longer configured" in page.text
    narrowed = review_app(tmp_path, keys={"review-key": ["score"]})
    narrowed.cookies.set(SESSION_COOKIE, token)
    assert narrowed.get(SIGNED_PAGE).status_code == 403


def test_sign_out_clears_the_cookie_and_every_page_offers_it(tmp_path) -> None:
    client = review_app(tmp_path)
    sign_in(client)
    assert client.get(SIGNED_PAGE).status_code == 404
    for page in (client.get(SIGNED_PAGE), client.get("/review/login"), client.get("/review/login?lang=zh")):
        assert 'action="/review/logout" method="post"' in page.text
    answer = client.post("/review/logout", data={"lang": "zh"}, headers=SAME_SITE, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/review/login?lang=zh"
    cookie = answer.headers["set-cookie"]
    assert f'{SESSION_COOKIE}=""' in cookie and "Max-Age=0" in cookie and "Path=/review" in cookie
    assert SESSION_COOKIE not in client.cookies
    assert client.get(SIGNED_PAGE).status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://testserver.evil.example"},
        {"Referer": "https://evil.example/login.html"},
        {},
    ],
    ids=["other-site", "opaque-origin", "lookalike-host", "other-site-referer", "no-origin"],
)
def test_a_sign_in_or_out_from_another_site_is_refused_and_sets_nothing(tmp_path, headers) -> None:
    client = review_app(tmp_path)
    answer = sign_in(client, headers=headers)
    assert answer.status_code == 403 and "set-cookie" not in answer.headers
    assert "Origin" in answer.text or "another site" in answer.text
    assert answer.headers["cache-control"] == "no-store"
    assert client.cookies.get(SESSION_COOKIE) is None
    sign_in(client)
    out = client.post("/review/logout", headers=headers, follow_redirects=False)
    assert out.status_code == 403 and "set-cookie" not in out.headers
    assert client.get(SIGNED_PAGE).status_code == 404  # still signed in


def test_a_same_site_referer_is_enough_without_origin(tmp_path) -> None:
    answer = sign_in(review_app(tmp_path), headers={"Referer": "http://testserver/review/login"})
    assert answer.status_code == 303 and SESSION_COOKIE in answer.headers["set-cookie"]


def test_no_page_or_sign_in_answer_may_be_stored(tmp_path) -> None:
    client = review_app(tmp_path)
    answers = {
        "login form": client.get("/review/login"),
        "not signed in": client.get("/review"),
        "wrong scope": client.get(SIGNED_PAGE, headers={"X-API-Key": "score-key"}),
        "unknown key": sign_in(client, "nope"),
        "key without the scope": sign_in(client, "score-key"),
        "signed in": sign_in(client),
        "a page": client.get(SIGNED_PAGE),
        "search": client.get("/review/search?user_id=u1", follow_redirects=False),
        "sign out": client.post("/review/logout", headers=SAME_SITE, follow_redirects=False),
    }
    assert {name: a.headers.get("cache-control") for name, a in answers.items()} == dict.fromkeys(
        answers, "no-store"
    )


def test_the_csp_allows_no_inline_script_or_style_and_the_pages_own_files_are_served(tmp_path) -> None:
    client = review_app(tmp_path)
    assert "unsafe-inline" not in CSP and "script-src 'self'" in CSP and "style-src 'self'" in CSP
    pages = [client.get("/review/login"), client.get("/review")]  # the sign-in form, the 401 page
    sign_in(client)
    for page in (*pages, client.get(SIGNED_PAGE)):  # and a signed-in page (the figures': test_review.py)
        assert page.headers["content-security-policy"] == CSP
        assert not re.search(r"<script(?![^>]*\bsrc=)", page.text), "an inline script"
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=", page.text), "inline style or an event handler"
        for asset in re.findall(r'(?:src|href)="(/review/static/[^"]+)"', page.text):
            served = client.get(asset)
            assert served.status_code == 200 and served.headers["content-type"].split(";")[0] in (
                "text/css", "text/javascript", "application/javascript",
            ), asset  # fmt: skip
    assert 'getElementById("top-table")' in client.get("/review/static/review.js").text


def test_the_workers_of_one_server_accept_each_others_sessions(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CLM_API_KEYS", '{"review-key": ["review"]}')
    monkeypatch.delenv("CLM_SESSION_SECRET", raising=False)
    alone = [create_app(load_config(), ServingSettings(data_dir=tmp_path)) for _ in range(2)]
    token = alone[0].state.sessions.issue("review-key")
    assert alone[1].state.sessions.check(token, KEYS).scopes is None  # two processes, two secrets

    share_session_secret()  # what `clm serve` does before its workers start
    workers = [create_app(load_config(), ServingSettings(data_dir=tmp_path)) for _ in range(2)]
    token = workers[0].state.sessions.issue("review-key")
    assert workers[1].state.sessions.check(token, KEYS).scopes == {"review"}
    monkeypatch.setenv("CLM_SESSION_SECRET", SECRET)
    share_session_secret()  # a configured secret is kept
    assert ServingSettings().session_secret.get_secret_value() == SECRET


def test_a_short_session_secret_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError, match="session_secret"):
        ServingSettings(session_secret="short")
