"""/docs with the network blocked: Debian's chromium (Playwright) against a real `clm serve`, every request
that leaves 127.0.0.1 aborted. Swagger UI must render every operation of the API from the app's own assets,
with the Authorize button of the API key, and no request may have tried to leave loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from clm.commands.serve import background_server

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
OPERATIONS = 9  # the routes of serving/routers in the OpenAPI document (the reviewer pages are not in it)


@pytest.fixture(scope="module")
def server(served_world, tmp_path_factory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("docs-serve")
    env = {
        "MLFLOW_TRACKING_URI": served_world.tracking_uri,
        "CLM_API_KEYS": json.dumps({"score-key": ["score"]}),
        "CLM_ONLINE_STORE": served_world.store_url,
        "CLM_DECISION_LOG": f"sqlite:///{workdir / 'decisions.db'}",
    }
    with background_server(env, workdir, ready_timeout_seconds=180) as base:
        yield base


def test_docs_render_with_the_network_blocked(browser, server: str, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    left_loopback: list[str] = []
    requested: list[str] = []
    problems: list[str] = []

    def only_loopback(route) -> None:
        url = route.request.url
        requested.append(url)
        if urlsplit(url).hostname in LOOPBACK or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            left_loopback.append(url)
            route.abort()

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    try:
        response = page.goto(server + "/docs")
        assert response is not None and response.status == 200
        page.wait_for_selector(".opblock", timeout=30_000)
        page.wait_for_load_state("networkidle")
        assert page.locator(".opblock").count() == OPERATIONS
        assert page.locator("button.authorize").is_visible()
        text = page.inner_text("#swagger-ui")
        assert "/v1/users/{user_id}/decision" in text and "/v1/admin/reload" in text
        page.screenshot(path=str(tmp_path / "docs.png"), full_page=False)
    finally:
        context.close()
    assert any(url.endswith("/openapi.json") for url in requested)
    assert left_loopback == [], left_loopback
    assert problems == [], problems
