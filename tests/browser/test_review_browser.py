"""The reviewer pages in a real headless browser: Debian's chromium driven by Playwright against a real
`clm serve` over the trained world. A reviewer signs in, reads the overview, follows a link to a user,
sees the stage, action, reasons and waterfalls, opens the replay of a logged decision, switches to
Chinese; a key without the review scope is refused and an unknown user gets a readable 404; the session
cookie is not the key, sign-out clears it, and a sign-in posted from another site is refused. Any JavaScript
console error, page error, failed request or Content-Security-Policy violation fails the test. Screenshots
go to the test's temporary directory."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from clm.commands.serve import background_server
from serving.review import SESSION_COOKIE

KEYS = {"score-key": ["score"], "review-key": ["review"]}


@pytest.fixture(scope="module")
def server(served_world, tmp_path_factory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("browser-serve")
    env = {
        "MLFLOW_TRACKING_URI": served_world.tracking_uri,
        "CLM_API_KEYS": json.dumps(KEYS),
        "CLM_ONLINE_STORE": served_world.store_url,
        "CLM_DECISION_LOG": f"sqlite:///{workdir / 'decisions.db'}",
        "CLM_EVENTS_DIR": str(served_world.data),
        "CLM_EXPLORATION": "false",
    }
    with background_server(env, workdir, ready_timeout_seconds=180) as base:
        yield base


# Runs in every page before its own scripts (Playwright injects it, so the page's CSP does not apply to it):
# each Content-Security-Policy violation the browser reports is handed to the test.
REPORT_CSP_VIOLATIONS = """document.addEventListener("securitypolicyviolation", (e) =>
  window.reportCspViolation(`${e.effectiveDirective} blocked ${e.blockedURI || "inline"} at ${e.sourceFile}:${e.lineNumber}`));"""


class Watched:
    """A page whose console errors, page errors, failed requests, unexpected HTTP errors and CSP violations
    are collected."""

    def __init__(self, context, base: str, shots: Path) -> None:
        self.csp_violations: list[str] = []
        context.expose_binding("reportCspViolation", lambda source, text: self.csp_violations.append(text))
        context.add_init_script(REPORT_CSP_VIOLATIONS)
        self.page = context.new_page()
        self.base = base
        self.shots = shots
        self.problems: list[str] = []
        self.expected_status: set[int] = set()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} {r.failure}"))
        self.page.on("response", self._response)

    def _console(self, message) -> None:
        if message.type != "error":
            return
        # chromium reports a page answered with an error status as a console error; expected ones are fine
        refused = re.search(
            r"Failed to load resource: the server responded with a status of (\d+)", message.text
        )
        if refused and int(refused.group(1)) in self.expected_status:
            return
        self.problems.append(f"console: {message.text}")

    def _response(self, response) -> None:
        if not response.url.startswith(self.base):
            self.problems.append(f"request to another origin: {response.url}")
        elif response.status >= 400 and response.status not in self.expected_status:
            self.problems.append(f"HTTP {response.status} for {response.url}")

    def goto(self, path: str, *, status: int = 200):
        self.expected_status = {status} if status >= 400 else set()
        response = self.page.goto(self.base + path)
        assert response is not None and response.status == status, (path, response and response.status)
        return response

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000
        return path


@pytest.fixture
def watched(browser, server, tmp_path) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    page = Watched(context, server, tmp_path)
    yield page
    context.close()
    print(f"screenshots in {tmp_path}: {sorted(p.name for p in tmp_path.glob('*.png'))}")
    assert page.problems == [] and page.csp_violations == []


def sign_in(watched: Watched, key: str, path: str = "/review") -> None:
    watched.goto(path, status=401)
    assert "Sign in" in watched.page.title()
    watched.page.fill("input[name=api_key]", key)
    watched.expected_status = {401, 403}
    watched.page.click("button[type=submit] >> text=Sign in")
    watched.page.wait_for_load_state()


def test_a_reviewer_follows_a_decision_from_the_overview_to_its_replay(watched: Watched, server: str) -> None:
    page = watched.page
    sign_in(watched, "review-key")
    assert page.url == f"{server}/review"
    assert page.title().startswith("Overview")
    for section in ("#stages svg", "#actions svg", "#calibration svg", "#top-table"):
        assert page.locator(section).count() >= 1, section
    watched.shot("01-overview")

    # the table filter narrows the rows
    rows = page.locator("#top-table tbody tr")
    total = rows.count()
    first_user = page.locator("#top-table a.user-link").first.inner_text()
    page.fill("#user-filter", first_user)
    assert page.locator("#top-table tbody tr:visible").count() < total
    page.fill("#user-filter", "")

    page.locator("#top-table a.user-link").first.click()
    page.wait_for_load_state()
    assert page.url.startswith(f"{server}/review/users/{first_user}")
    api = httpx.get(
        f"{server}/v1/users/{first_user}/decision", headers={"X-API-Key": "score-key"}, timeout=30
    ).json()
    assert page.locator("#stage").inner_text() == api["stage"]["name"]
    assert page.locator("#action").inner_text() == api["action"]["name"]
    assert api["stage"]["rule"] in page.locator("#stage-rule").inner_text()
    reasons = page.locator("table.reasons[data-model=churn]").inner_text()
    assert api["explanations"]["churn"]["top"][0]["reason"] in reasons
    for model in ("churn", "upgrade"):
        figure = page.locator(f"#waterfall-{model} svg")
        assert figure.count() == 1 and figure.bounding_box()["height"] > 150
        assert "SHAP waterfall" in figure.text_content()
    assert page.locator("#breakdown tr.chosen").count() == 1
    watched.shot("02-user")

    # the decision the API just made for this user is listed; its replay reproduces
    page.reload()
    link = page.locator(f"a.decision-link[href^='/review/decisions/{api['decision_id']}']")
    assert link.count() == 1
    link.click()
    page.wait_for_load_state()
    assert page.locator("#decision-id").inner_text() == api["decision_id"]
    assert "reproduces" in page.locator("#replay-result").inner_text()
    assert page.locator("#action").inner_text() == api["action"]["name"]
    assert page.locator("#waterfall-churn svg").count() == 1
    watched.shot("03-replay")

    page.click("#lang-toggle")
    page.wait_for_load_state()
    assert "lang=zh" in page.url and page.locator("html").get_attribute("lang") == "zh-CN"
    assert "决策回放" in page.locator("h1").inner_text()
    watched.shot("04-replay-zh")


def test_a_key_without_the_review_scope_is_refused(watched: Watched) -> None:
    sign_in(watched, "score-key")
    assert "lacks the review scope" in watched.page.inner_text("body")
    assert watched.page.context.cookies() == []
    watched.shot("05-forbidden")
    watched.goto("/review", status=401)


def test_an_unknown_user_gets_a_readable_404_page(watched: Watched) -> None:
    sign_in(watched, "review-key")
    watched.goto("/review/users/nobody-here", status=404)
    body = watched.page.inner_text("body")
    assert "Not found" in body and "No user nobody-here" in body
    watched.page.click("text=Back to the overview")
    watched.page.wait_for_load_state()
    assert watched.page.title().startswith("Overview")
    watched.shot("06-not-found")


def test_the_user_search_box_goes_to_the_users_page(watched: Watched, served_world) -> None:
    sign_in(watched, "review-key")
    user = served_world.user_ids[7]
    watched.page.fill("header input[name=user_id]", user)
    watched.page.press("header input[name=user_id]", "Enter")
    watched.page.wait_for_load_state()
    assert watched.page.locator("#user-id").inner_text() == user


def test_every_page_keeps_to_the_content_security_policy(watched: Watched, served_world) -> None:
    """Each kind of page, signed in or not, in both languages: the policy allows no inline script or style and
    the browser reports no violation of it (the overview's filter script and the figures included)."""
    page = watched.page
    policies: dict[str, str] = {}  # every HTML answer's policy, by URL

    def note_policy(response) -> None:
        if response.headers.get("content-type", "").startswith("text/html"):
            policies[response.url] = response.headers.get("content-security-policy", "")

    page.on("response", note_policy)
    sign_in(watched, "review-key")
    user = served_world.user_ids[2]
    api = httpx.get(
        f"{watched.base}/v1/users/{user}/decision", headers={"X-API-Key": "score-key"}, timeout=30
    )
    for path, status in [("/review?lang=zh", 200), (f"/review/users/{user}", 200), ("/review/users/nobody", 404),
                         (f"/review/decisions/{api.json()['decision_id']}", 200), ("/review/login?lang=zh", 200)]:  # fmt: skip
        watched.goto(path, status=status)
        page.wait_for_load_state("load")
        assert watched.csp_violations == [], path
    assert len(policies) >= 6 and all(
        "script-src 'self'" in p and "unsafe-inline" not in p for p in policies.values()
    )


def test_the_session_cookie_is_not_the_key_and_sign_out_clears_it(watched: Watched) -> None:
    sign_in(watched, "review-key")
    (cookie,) = watched.page.context.cookies()
    assert cookie["name"] == SESSION_COOKIE and "review-key" not in cookie["value"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/review"
    assert cookie["expires"] > 0  # not a browser-session cookie: it expires on its own
    assert watched.page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it
    watched.page.click("#logout button")
    watched.page.wait_for_load_state()
    assert watched.page.url.startswith(f"{watched.base}/review/login") and "Sign in" in watched.page.title()
    assert watched.page.context.cookies() == []
    watched.goto("/review", status=401)


def test_a_sign_in_posted_from_another_site_is_refused(browser, server: str) -> None:
    """Login CSRF: a page on another origin posts the sign-in form with its own key; the browser gets 403 and
    no cookie."""
    hostile = f"""<!doctype html><title>elsewhere</title>
<form action="{server}/review/login" method="post"><input name="api_key" value="review-key">
<button type="submit">go</button></form>""".encode()

    class Elsewhere(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(hostile)

        def log_message(self, *args) -> None:
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Elsewhere)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{other.server_address[1]}/")
        with page.expect_response(f"{server}/review/login") as answer:
            page.click("button")
        assert answer.value.status == 403
        assert "another site" in page.inner_text("body")
        assert context.cookies() == []
    finally:
        context.close()
        other.shutdown()
        other.server_close()


def _column(page, index: int) -> list[float]:
    """The sort values of one column over the rows shown now."""
    return page.eval_on_selector_all(
        f"#top-table tbody tr:not([hidden]) td:nth-child({index})",
        "cells => cells.map(c => parseFloat(c.dataset.value))",
    )


def test_the_overview_user_table_sorts_and_pages(watched: Watched) -> None:
    """The highest-risk and highest-value users: ranked by value at stake, 25 a page, any column sorted by a
    click on its heading (again: the other way) over every row, not only the page shown."""
    page = watched.page
    sign_in(watched, "review-key")
    total = page.locator("#top-table tbody tr").count()
    pages = -(-total // 25)
    assert total > 25 and page.locator("#top-table tbody tr:visible").count() == 25
    assert page.locator("#page-info").inner_text() == f"page 1 of {pages}"
    assert page.locator("#page-prev").is_disabled() and not page.locator("#page-next").is_disabled()
    at_stake = _column(page, 3)
    assert at_stake == sorted(at_stake, reverse=True)
    everything = page.eval_on_selector_all(
        "#top-table tbody td:nth-child(3)", "cells => cells.map(c => parseFloat(c.dataset.value))"
    )
    assert at_stake[0] == max(everything)

    page.click("#page-next")
    assert page.locator("#page-info").inner_text() == f"page 2 of {pages}"
    second = _column(page, 3)
    assert len(second) == min(25, total - 25) and second[0] <= at_stake[-1]

    churn = page.locator("#top-table thead th:nth-child(4)")
    churn.click()  # sorts every row by churn, largest first, back on page 1
    assert churn.get_attribute("aria-sort") == "descending"
    assert page.locator("#page-info").inner_text() == f"page 1 of {pages}"
    highest = _column(page, 4)
    all_churn = page.eval_on_selector_all(
        "#top-table tbody td:nth-child(4)", "cells => cells.map(c => parseFloat(c.dataset.value))"
    )
    assert highest == sorted(all_churn, reverse=True)[:25]
    churn.click()
    assert churn.get_attribute("aria-sort") == "ascending"
    assert _column(page, 4) == sorted(all_churn)[:25]

    users = page.locator("#top-table thead th:nth-child(1)")
    users.click()
    names = page.eval_on_selector_all(
        "#top-table tbody tr:not([hidden]) td:nth-child(1)", "c => c.map(x => x.innerText)"
    )
    assert names == sorted(names, key=str.lower, reverse=True)

    # the filter narrows the rows and pages over what it keeps
    page.fill("#user-filter", "high value")
    kept = page.locator("#top-table tbody tr:visible").count()
    assert 0 < kept <= 25 and page.locator("#page-info").inner_text().startswith("page 1 of")
    watched.shot("07-overview-table")


def test_the_gains_and_lift_text_is_at_least_12_px(watched: Watched) -> None:
    """The gains and lift chart on /review: every label rendered at 12 px or more (the wide figure shrunk into
    half the page drew ~6 px). A rotated label's scale is the length of its transform's first column."""
    sign_in(watched, "review-key")
    sizes = watched.page.eval_on_selector_all(
        "#calibration .grid > div:nth-child(2) svg text",
        "texts => texts.filter(t => t.textContent.trim()).map(t => parseFloat(getComputedStyle(t).fontSize) * Math.hypot(t.getScreenCTM().a, t.getScreenCTM().b))",
    )
    assert len(sizes) > 10 and min(sizes) >= 12.0, sorted(sizes)[:5]
