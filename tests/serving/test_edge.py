"""The app's edge (serving/edge.py): a plainly valid GET of a stored user's decision is answered without the
framework's routing — the same answer as the route's, for many users and both languages — and every other
request goes through the route, with the route's errors."""

from __future__ import annotations

import orjson
import pytest
from fastapi.testclient import TestClient

from clm.config import load_config
from serving import edge
from serving.app import create_app
from serving.dependencies import get_settings
from serving.settings import ServingSettings

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SCORE = {"X-API-Key": "score-key"}


@pytest.fixture
def app_and_client(served_env, monkeypatch):
    monkeypatch.setenv("CLM_DECISION_CACHE_MAX_USERS", str(10**6))  # the bulk build: what serving does
    app = create_app(load_config(), ServingSettings())
    with TestClient(app, raise_server_exceptions=False) as client:
        yield app, client


def counted(app, route: str, status: str) -> float:
    return (
        app.state.metrics.registry.get_sample_value(
            "clm_request_seconds_count", {"route": route, "method": "GET", "status": status}
        )
        or 0.0
    )


def test_the_edge_answers_what_the_route_answers(app_and_client, served_env, tmp_path, monkeypatch) -> None:
    app, client = app_and_client
    taken = []
    real = edge.decision_body
    monkeypatch.setattr(edge, "decision_body", lambda scope, state: taken.append(1) or real(scope, state))
    users = served_env.user_ids[:40]
    requests = [(user, query) for user in users for query in ("", "?lang=zh")]
    by_edge = {}
    for user, query in requests:
        response = client.get(f"/v1/users/{user}/decision{query}", headers=SCORE)
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        by_edge[user, query] = orjson.loads(response.content)
    assert counted(app, edge.DECISION_ROUTE, "200") == len(requests)
    assert len(taken) == len(requests)
    # The same requests through the route, in an app with a log of its own (a logged contact changes the
    # user's next decision): any dependency override sends them the usual way.
    monkeypatch.setenv("CLM_DECISION_LOG", f"sqlite:///{tmp_path / 'other.db'}")
    other = create_app(load_config(), ServingSettings())
    other.dependency_overrides[get_settings] = lambda: other.state.settings
    with TestClient(other, raise_server_exceptions=False) as routed_client:
        for user, query in requests:
            response = routed_client.get(f"/v1/users/{user}/decision{query}", headers=SCORE)
            assert response.status_code == 200 and response.headers["content-type"] == "application/json"
            routed = orjson.loads(response.content)
            ours = by_edge[user, query]
            assert routed["decision_id"] != ours["decision_id"]
            assert routed | {"decision_id": ""} == ours | {"decision_id": ""}, (user, query)
        assert counted(other, edge.DECISION_ROUTE, "200") == len(requests)
    assert len(taken) == 2 * len(requests), "the edge was asked, and declined (overrides)"


@pytest.mark.parametrize(
    ("path", "headers", "status", "names"),
    [
        ("/v1/users/u000001/decision?lang=fr", SCORE, 422, "lang"),
        ("/v1/users/u000001/decision", {}, 401, "API key"),
        ("/v1/users/u000001/decision", {"X-API-Key": "nope"}, 401, "unknown API key"),
        ("/v1/users/nobody/decision", SCORE, 404, "nobody"),
        ("/v1/users/" + "u" * 201 + "/decision", SCORE, 422, "user_id"),
    ],
)
def test_anything_but_a_plain_request_gets_the_routes_answer(
    app_and_client, path, headers, status, names
) -> None:
    _, client = app_and_client
    response = client.get(path, headers=headers)
    assert response.status_code == status, response.text
    assert names in response.text


def test_other_query_parameters_go_through_the_route(app_and_client, served_env) -> None:
    app, client = app_and_client
    user = served_env.user_ids[3]
    before = counted(app, edge.DECISION_ROUTE, "200")
    response = client.get(f"/v1/users/{user}/decision?lang=en&lang=en", headers=SCORE)
    assert response.status_code == 200 and response.json()["user_id"] == user
    assert counted(app, edge.DECISION_ROUTE, "200") == before + 1  # timed under its route either way


def test_a_declared_body_over_the_limit_is_refused(app_and_client) -> None:
    app, client = app_and_client
    limit = app.state.settings.max_body_bytes
    response = client.post(
        "/v1/decisions", content=b"{}", headers={**SCORE, "Content-Length": str(limit + 1)}
    )
    assert response.status_code == 413 and str(limit) in response.json()["detail"]
