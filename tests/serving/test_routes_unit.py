"""The API's routes without a trained world: `create_app` with its lifespan never entered, and every
dependency the routes read (`serving.dependencies`) replaced by a stub through `app.dependency_overrides`.
Auth (401/403), 404, 413, 422, 503 without models, a decision through a stub service, outcomes, models,
readyz, the review pages' refusals, and the shadow-and-log step of the real `DecisionService` over a stub
scorer and log."""

from __future__ import annotations

import contextlib
import datetime as dt
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from clm.config import load_config
from serving import dependencies as deps
from serving.app import create_app
from serving.decision_log import UnknownDecision
from serving.schemas import Decision, DecisionRequest
from serving.scorer import Decided
from serving.service import DecisionService, Metrics, UnknownUser
from serving.settings import ServingSettings
from serving.state import ModelHolder

SCORE = {"X-API-Key": "score-key"}
ADMIN = {"X-API-Key": "admin-key"}
REVIEW = {"X-API-Key": "review-key"}
KEYS = {"score-key": ["score"], "admin-key": ["score", "admin"], "review-key": ["review"]}
AS_OF = dt.date(2025, 9, 1)
VERSIONS = {"clm-churn": "3", "clm-upgrade": "2", "clm-policy": "1"}


def fixed_decision(user_id: str | None, as_of: dt.date | None = AS_OF) -> Decision:
    return Decision.model_validate({
        "user_id": user_id, "as_of": as_of, "stage": {"name": "mature", "rule": "mature: tenure ≥ 90"},
        "churn": {"probability": 0.1, "band": "low", "scored_by": "clm-churn/3"},
        "upgrade": {"probability": 0.2, "value": 30.0}, "clv": 120.0,
        "value": {"currency": "USD", "value_if_retained": 150.0, "margin_if_retained_month": 14.0,
                  "retained_churn_month": 0.05, "upgrade_value": 30.0, "clv": 120.0},
        "action": {"name": "no_action", "stay_outcome": "churn", "delta_stay": 0.0, "delta_stay_se": 0.0,
                   "delta_stay_source": "definition", "delta_upgrade": 0.0, "delta_upgrade_se": 0.0,
                   "delta_upgrade_source": "definition", "value_if_retained": 150.0, "upgrade_value": 30.0,
                   "retention_value": 0.0, "upgrade_gain": 0.0, "expected_value": 0.0, "cost": 0.0,
                   "channel": None, "source": "definition", "propensity": 1.0, "explored": False},
        "alternatives": [], "explanations": {},
        "versions": {"churn_model": "clm-churn/3", "upgrade_model": "clm-upgrade/2", "policy": "clm-policy/1",
                     "features": "f1"},
        "decision_id": "d" * 32,
    })  # fmt: skip


class StubModels:
    """What the routes read of a ModelSet: the feature registry (for 422s), versions, alias, load time."""

    def __init__(self, registry: dict) -> None:
        self.registry, self.versions, self.alias, self.loaded_at = registry, VERSIONS, "champion", 0.0

    def version_labels(self) -> dict[str, str]:
        return fixed_decision(None).versions.model_dump()


class StubService:
    """A DecisionService that decides nothing: a fixed decision for known users and any vector."""

    models = DecisionService.models  # the real 503 check, over `self.holder`

    def __init__(self, holder: ModelHolder, users: set[str]) -> None:
        self.holder, self.users, self.requests = holder, users, []

    def decide_user(self, models: Any, user_id: str, lang: str) -> Decision:
        if user_id not in self.users:
            raise UnknownUser(f"user {user_id!r} has no features as of the store's snapshot {AS_OF}")
        self.requests.append((user_id, {}, lang))
        return fixed_decision(user_id)

    def decide_request(self, body: DecisionRequest, models: Any, lang: str) -> Decision:
        if body.user_id is not None and body.user_id not in self.users:
            raise UnknownUser(f"user {body.user_id!r} has no features")
        self.requests.append((body.user_id, body.features, lang))
        return fixed_decision(body.user_id, AS_OF if body.user_id else None)

    def user_decision_body(self, models: Any, user_id: str, lang: str) -> bytes:  # the route's encoded form
        return self.decide_user(models, user_id, lang).model_dump_json().encode()

    def decide_request_encoded(self, body: DecisionRequest, models: Any, lang: str) -> tuple[Decision, bytes]:
        decision = self.decide_request(body, models, lang)
        return decision, decision.model_dump_json().encode()


class StubLog:
    def __init__(self) -> None:
        self.outcomes: set[tuple[str, str]] = set()
        self.records: list = []

    def record_outcome(self, decision_id, outcome, action_taken, ts, value) -> str:
        if decision_id != "d" * 32:
            raise UnknownDecision(decision_id)
        status = "duplicate" if (decision_id, outcome) in self.outcomes else "recorded"
        self.outcomes.add((decision_id, outcome))
        return status

    def append(self, record) -> None:
        self.records.append(record)

    def contacts_since(self, user_id, since) -> list:
        return []  # nothing logged since the snapshot: the stored row decides as it is

    def outcomes_since(self, user_id, since) -> list:
        return []

    def stats(self) -> dict[str, int]:
        return {"written": len(self.records), "queued": 0, "failed": 0}


def holder_of(models: StubModels | None) -> ModelHolder:
    """A real ModelHolder whose load gives `models` (or fails, as a missing alias does)."""

    def load(alias: str) -> StubModels:
        if models is None:
            raise LookupError(f"no version of clm-churn has the alias {alias!r}")
        return models

    holder = ModelHolder(load, lambda alias: VERSIONS, alias="champion")
    with contextlib.suppress(LookupError):  # not loaded: the holder keeps the error, as the lifespan does
        holder.reload()
    return holder


@pytest.fixture(scope="module")
def config() -> dict:
    return load_config()


def stub_app(config: dict, *, loaded: bool = True, snapshot: bool = True) -> tuple[TestClient, StubService]:
    app = create_app(config, ServingSettings(api_keys=KEYS, events_dir=None, max_batch=3))
    models = StubModels(app.state.loader.registry) if loaded else None
    holder = holder_of(models)
    service = StubService(holder, users={"u1", "u2"})
    info = SimpleNamespace(as_of=AS_OF, n_users=2, feature_version="f1") if snapshot else None
    store = SimpleNamespace(info=lambda: info, read=lambda user_id: None)
    log = StubLog()
    app.dependency_overrides.update({
        deps.get_service: lambda: service, deps.get_holder: lambda: holder, deps.get_store: lambda: store,
        deps.get_decision_log: lambda: log,
    })  # fmt: skip
    return TestClient(app, raise_server_exceptions=False), service  # the lifespan never runs


def test_a_decision_route_answers_what_the_service_decides(config) -> None:
    client, service = stub_app(config)
    response = client.get("/v1/users/u1/decision", params={"lang": "zh"}, headers=SCORE)
    assert response.status_code == 200, response.text
    assert response.json() == fixed_decision("u1").model_dump(mode="json")
    assert service.requests == [("u1", {}, "zh")]
    posted = client.post("/v1/decisions", json={"features": {"tenure_days": 3}}, headers=SCORE)
    assert posted.status_code == 200 and posted.json()["user_id"] is None
    assert service.requests[-1] == (None, {"tenure_days": 3}, "en")


def test_keys_and_scopes(config) -> None:
    client, service = stub_app(config)
    missing = client.get("/v1/users/u1/decision")
    assert missing.status_code == 401 and missing.json() == {"detail": "missing API key (header X-API-Key)"}
    unknown = client.get("/v1/users/u1/decision", headers={"X-API-Key": "wrong"})
    assert unknown.status_code == 401 and unknown.json() == {"detail": "unknown API key"}
    forbidden = client.get("/v1/users/u1/decision", headers=REVIEW)
    assert forbidden.status_code == 403 and forbidden.json() == {
        "detail": "this API key lacks the 'score' scope"
    }
    assert client.post("/v1/outcomes", json={}, headers=REVIEW).status_code == 403
    assert client.post("/v1/admin/reload", headers=SCORE).status_code == 403
    assert client.post("/v1/admin/reload").status_code == 401
    assert client.get("/healthz").json() == {"status": "ok"}
    assert service.requests == []


def test_404_413_and_422_name_the_problem(config) -> None:
    client, service = stub_app(config)
    nobody = client.get("/v1/users/nobody/decision", headers=SCORE)
    assert nobody.status_code == 404 and "nobody" in nobody.json()["detail"]
    unknown = client.post("/v1/decisions", json={"features": {"days_since_lst_event": 3}}, headers=SCORE)
    assert unknown.status_code == 422
    assert unknown.json()["detail"] == [{"loc": ["body", "features", "days_since_lst_event"],
                                         "msg": "unknown feature 'days_since_lst_event'", "type": "unknown_feature"}]  # fmt: skip
    wrong = client.post(
        "/v1/decisions", json={"features": {"tenure_days": "long", "current_plan": 3}}, headers=SCORE
    )
    assert [e["loc"][-1] for e in wrong.json()["detail"]] == ["tenure_days", "current_plan"]
    extra = client.post("/v1/decisions", json={"features": {}, "surprise": 1}, headers=SCORE)
    assert extra.status_code == 422 and extra.json()["detail"][0]["loc"] == ["body", "surprise"]
    lang = client.get("/v1/users/u1/decision", params={"lang": "fr"}, headers=SCORE)
    assert lang.status_code == 422 and lang.json()["detail"][0]["loc"] == ["query", "lang"]
    too_many = client.post("/v1/decisions/batch", json={"items": [{"features": {}}] * 4}, headers=SCORE)
    assert too_many.status_code == 413 and too_many.json() == {"detail": "4 items; the batch limit is 3"}
    huge = client.post(
        "/v1/decisions", content=b"x" * 3_000_000, headers={**SCORE, "content-type": "application/json"}
    )
    assert huge.status_code == 413 and huge.json() == {"detail": "request body larger than 2000000 bytes"}
    assert service.requests == []  # nothing invalid reaches the service


def test_a_batch_item_carries_its_own_404(config) -> None:
    client, _ = stub_app(config)
    items = [{"user_id": "u1"}, {"user_id": "nobody"}, {"features": {"tenure_days": 3}}]
    out = client.post("/v1/decisions/batch", json={"items": items}, headers=SCORE).json()["items"]
    assert out[0]["decision"]["user_id"] == "u1" and out[2]["decision"]["user_id"] is None
    assert out[1] == {"decision": None, "error": {"status": 404, "detail": "user 'nobody' has no features"}}
    bad = client.post("/v1/decisions/batch", json={"items": [{"features": {}}, {"features": {"tenure_days": "x"}}]},
                      headers=SCORE)  # fmt: skip
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == [
        "body",
        "items",
        1,
        "features",
        "tenure_days",
    ]


def test_without_models_decisions_and_models_answer_503_and_readyz_says_why(config) -> None:
    client, service = stub_app(config, loaded=False)
    for response in (
        client.get("/v1/users/u1/decision", headers=SCORE),
        client.post("/v1/decisions", json={"features": {}}, headers=SCORE),
        client.post("/v1/decisions/batch", json={"items": [{"features": {}}]}, headers=SCORE),
        client.get("/v1/models", headers=SCORE),
    ):
        assert response.status_code == 503, response.text
        assert response.json()["detail"].startswith("no models loaded: LookupError: no version of clm-churn")
    invalid = client.post("/v1/decisions", json={"features": {}, "surprise": 1}, headers=SCORE)
    assert invalid.status_code == 422  # an invalid request is named before the missing models
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["ready"] is False and ready.json()["models"] is None
    assert (
        ready.json()["last_reload_error"].startswith("LookupError") and ready.json()["reload_failures"] == 1
    )
    assert service.requests == []


def test_readyz_needs_the_stores_snapshot_too(config) -> None:
    ready, _ = stub_app(config)
    body = ready.get("/readyz").json()
    assert body["ready"] is True and body["store"] == {"as_of": str(AS_OF), "users": 2}
    assert body["models"]["policy"] == "clm-policy/1"
    empty, _ = stub_app(config, snapshot=False)
    assert empty.get("/readyz").status_code == 503 and empty.get("/readyz").json()["store"] is None


def test_models_and_outcomes(config) -> None:
    client, _ = stub_app(config)
    models = client.get("/v1/models", headers=SCORE).json()
    assert models["alias"] == "champion" and models["versions"]["churn_model"] == "clm-churn/3"
    assert models["shadow"] is None and models["store"] == {
        "as_of": str(AS_OF),
        "users": 2,
        "feature_version": "f1",
    }
    outcome = {"decision_id": "d" * 32, "action_taken": "no_action", "outcome": "retained",
               "ts": "2026-01-15T10:00:00Z"}  # fmt: skip
    assert client.post("/v1/outcomes", json=outcome, headers=SCORE).json()["status"] == "recorded"
    assert client.post("/v1/outcomes", json=outcome, headers=SCORE).json()["status"] == "duplicate"
    unknown = client.post("/v1/outcomes", json={**outcome, "decision_id": "f" * 32}, headers=SCORE)
    assert unknown.status_code == 404 and unknown.json() == {
        "detail": f"no decision {'f' * 32!r} in the decision log"
    }
    naive = client.post("/v1/outcomes", json={**outcome, "ts": "2026-01-15T10:00:00"}, headers=SCORE)
    assert naive.status_code == 422 and naive.json()["detail"][0]["loc"] == ["body", "ts"]


def test_metrics_time_requests_by_route_template(config) -> None:
    client, _ = stub_app(config)
    client.get("/v1/users/u1/decision", headers=SCORE)
    text = client.get("/metrics").text
    assert (
        'clm_request_seconds_count{method="GET",route="/v1/users/{user_id}/decision",status="200"} 1.0'
        in text
    )


class StubScorer:
    """Decides a fixed decision per model set, recording what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, dict, Any]] = []

    def decide(
        self, models, values, *, user_id, as_of, lang="en", explore=False, request_key=None
    ) -> Decided:
        self.calls.append((models, dict(values), explore))
        decision = fixed_decision(user_id, as_of)
        if models == "shadow":
            decision = decision.model_copy(update={"clv": 99.0})
            decision.action.name = "discount"
        return Decided(decision, dict(values), [{"name": "no_action"}], 1.0, False)


def test_the_service_decides_shadows_counts_and_logs(config) -> None:
    scorer, log, metrics = StubScorer(), StubLog(), Metrics()
    row = SimpleNamespace(values={"tenure_days": 100.0, "mrr": 12.0}, as_of=AS_OF)
    store = SimpleNamespace(read=lambda user_id: row if user_id == "u1" else None, info=lambda: None)
    holder = SimpleNamespace(current="served", shadow="shadow", status=None)
    service = DecisionService(scorer, holder, store, log, metrics, explore=False)
    decision = service.decide_request(DecisionRequest(user_id="u1", features={"mrr": 20.0}), "served", "en")
    assert decision == fixed_decision("u1")
    assert [(m, v) for m, v, _ in scorer.calls] == [("served", {"tenure_days": 100.0, "mrr": 20.0})] * 1 + [
        ("shadow", {"tenure_days": 100.0, "mrr": 20.0})
    ]
    (record,) = log.records
    assert record.decision_id == decision.decision_id and record.user_id == "u1"
    assert record.shadow == {"versions": decision.versions.model_dump(), "action": "discount",
                             "expected_value": 0.0, "stage": "mature", "churn": 0.1}  # fmt: skip
    # payload and inputs come pre-encoded (orjson.Fragment): the log writes them as they are
    stored = orjson.loads(orjson.dumps({"payload": record.payload, "inputs": record.inputs}))
    assert stored["payload"] == decision.model_dump(mode="json")
    assert stored["inputs"] == {"tenure_days": 100.0, "mrr": 20.0}
    assert metrics.decisions.labels("mature", "no_action")._value.get() == 1.0
    with pytest.raises(UnknownUser, match="'nobody' has no features \\(the store has no snapshot yet\\)"):
        service.user_decision_body("served", "nobody", "en")
    assert len(log.records) == 1


def test_review_pages_refuse_with_a_page(config) -> None:
    client, _ = stub_app(config, loaded=False)
    missing = client.get("/review")
    assert missing.status_code == 401 and 'action="/review/login"' in missing.text
    assert missing.headers["content-security-policy"].startswith("default-src 'none'")
    assert client.get("/review", headers=SCORE).status_code == 403
    none = client.get("/review/users/u1", headers=REVIEW)
    assert none.status_code == 503 and "text/html" in none.headers["content-type"]
    assert "no models loaded: LookupError" in none.text
