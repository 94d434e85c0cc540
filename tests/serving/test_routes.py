"""Every route through FastAPI's TestClient against the served world: the decision contract, explanations
that add up, auth (401/403), 404/413/422, outcomes, models, reload, health, readiness and metrics."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from clm.config import load_config
from models.scoring import contributions, score
from serving.app import create_app
from serving.settings import ServingSettings

SCORE = {"X-API-Key": "score-key"}
ADMIN = {"X-API-Key": "admin-key"}
REVIEW = {"X-API-Key": "review-key"}


@pytest.fixture
def client(served_env):
    app = create_app(load_config(), ServingSettings())
    with TestClient(app, raise_server_exceptions=False) as client:
        client.world = served_env
        yield client


def test_a_stored_user_gets_the_full_decision(client) -> None:
    user = client.world.user_ids[0]
    response = client.get(f"/v1/users/{user}/decision", headers=SCORE)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == user and body["as_of"]
    assert body["stage"]["name"] in {"new", "growing", "mature", "at_risk", "dormant", "reactivated"}
    assert body["stage"]["rule"].startswith(body["stage"]["name"])
    assert 0 <= body["churn"]["probability"] <= 1 and body["churn"]["band"] in {"low", "medium", "high"}
    assert 0 <= body["upgrade"]["probability"] <= 1
    assert body["clv"] >= 0
    names = [a["name"] for a in body["alternatives"]]
    assert names[-1] == "no_action" and len(names) == 11
    chosen = [a for a in body["alternatives"] if a["status"] == "chosen"]
    assert len(chosen) == 1 and chosen[0]["name"] == body["action"]["name"]
    assert all(a["reason"] for a in body["alternatives"])
    assert {"churn", "upgrade"} <= set(body["explanations"]) <= {"churn", "upgrade", "reactivation"}
    assert len(body["explanations"]["churn"]["top"]) == 5
    assert set(body["versions"]) == {
        "churn_model",
        "upgrade_model",
        "reactivation_model",
        "policy",
        "features",
    }
    assert body["value"]["currency"] == "USD" and body["churn"]["scored_by"]
    for candidate in [body["action"], *body["alternatives"]]:  # every term is shown and they add up exactly
        assert candidate["retention_value"] == candidate["delta_stay"] * candidate["value_if_retained"]
        assert candidate["upgrade_gain"] == candidate["delta_upgrade"] * candidate["upgrade_value"]
        assert (
            candidate["expected_value"]
            == candidate["retention_value"] + candidate["upgrade_gain"] - candidate["cost"]
        )
        assert candidate["delta_stay_source"] in {"model", "prior", "definition"}
    assert body["versions"]["policy"] == "clm-policy/1"
    assert len(body["decision_id"]) == 32


def test_contributions_plus_base_equal_the_raw_score(client) -> None:
    """The explanation is exact TreeSHAP: all contributions plus the base value give the raw score, which
    is the one the batch scorer computes for the same vector."""
    import pandas as pd

    features = {"days_since_last_event": 9.0, "active_days_30d": 5.0, "tenure_days": 150.0, "current_plan": "basic",
                "mrr": 12.0, "revenue_sum_90d": 40.0}  # fmt: skip
    body = client.post("/v1/decisions", json={"features": features}, headers=SCORE).json()
    holder = client.app.state.holder
    bundle = holder.current.churn
    frame = pd.DataFrame([{name: features.get(name) for name in bundle.feature_names}])
    raw = score(frame, bundle)["raw_score"].iloc[0]
    full = contributions(frame, bundle)[0]
    explanation = body["explanations"]["churn"]
    assert explanation["raw_score"] == pytest.approx(raw, abs=1e-9)
    assert explanation["base_value"] + full[:-1].sum() == pytest.approx(raw, abs=1e-9)
    top = {c["feature"]: c["contribution"] for c in explanation["top"]}
    for name, value in top.items():
        assert value == pytest.approx(full[bundle.feature_names.index(name)], abs=1e-12)
    assert body["churn"]["probability"] == pytest.approx(score(frame, bundle)["probability"].iloc[0])


def test_chinese_reasons(client) -> None:
    user = client.world.user_ids[1]
    body = client.get(f"/v1/users/{user}/decision", params={"lang": "zh"}, headers=SCORE).json()
    reasons = [c["reason"] for c in body["explanations"]["churn"]["top"]]
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in r) for r in reasons), reasons
    assert client.get(f"/v1/users/{user}/decision", params={"lang": "fr"}, headers=SCORE).status_code == 422


def test_a_posted_partial_vector_lists_what_was_missing(client) -> None:
    response = client.post("/v1/decisions", json={"features": {"days_since_last_event": 60}}, headers=SCORE)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "days_since_last_event" not in body["missing_features"]
    assert "tenure_days" in body["missing_features"]
    assert body["user_id"] is None and body["as_of"] is None


def test_a_posted_vector_overrides_a_stored_user(client) -> None:
    user = client.world.user_ids[2]
    stored = client.get(f"/v1/users/{user}/decision", headers=SCORE).json()
    override = client.post("/v1/decisions", json={"user_id": user, "features": {"days_since_last_event": 200}},
                           headers=SCORE).json()  # fmt: skip
    assert override["user_id"] == user and override["as_of"] == stored["as_of"]
    assert override["stage"]["name"] == "dormant"
    assert override["decision_id"] != stored["decision_id"]


def test_batch(client) -> None:
    users = client.world.user_ids[:3]
    items = [{"user_id": u} for u in users] + [{"features": {"tenure_days": 3}}, {"user_id": "nobody"}]
    response = client.post("/v1/decisions/batch", json={"items": items}, headers=SCORE)
    assert response.status_code == 200, response.text
    out = response.json()["items"]
    assert [i["decision"]["user_id"] for i in out[:3]] == users
    assert out[3]["decision"]["stage"]["name"] == "new"
    assert out[4]["decision"] is None and out[4]["error"]["status"] == 404
    bad = client.post("/v1/decisions/batch", json={"items": [{"features": {}}, {"features": {"tenure_days": "x"}}]},
                      headers=SCORE)  # fmt: skip
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "items", 1, "features", "tenure_days"]


def test_auth(client) -> None:
    user = client.world.user_ids[0]
    assert client.get(f"/v1/users/{user}/decision").status_code == 401
    assert client.get(f"/v1/users/{user}/decision", headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get(f"/v1/users/{user}/decision", headers=REVIEW).status_code == 403
    assert client.post("/v1/admin/reload", headers=SCORE).status_code == 403
    assert client.post("/v1/admin/reload").status_code == 401
    for open_route in ("/healthz", "/readyz", "/metrics"):
        assert client.get(open_route).status_code == 200, open_route


def test_errors_name_the_problem(client) -> None:
    missing = client.get("/v1/users/nobody/decision", headers=SCORE)
    assert missing.status_code == 404 and "nobody" in missing.json()["detail"]
    assert "snapshot" in missing.json()["detail"]
    unknown = client.post("/v1/decisions", json={"features": {"days_since_lst_event": 3}}, headers=SCORE)
    assert unknown.status_code == 422 and "days_since_lst_event" in unknown.text
    wrong = client.post("/v1/decisions", json={"features": {"tenure_days": "long", "current_plan": 3}},
                        headers=SCORE)  # fmt: skip
    assert wrong.status_code == 422
    assert "tenure_days" in wrong.text and "current_plan" in wrong.text
    extra = client.post("/v1/decisions", json={"features": {}, "surprise": 1}, headers=SCORE)
    assert extra.status_code == 422 and "surprise" in extra.text
    too_many = client.post("/v1/decisions/batch", json={"items": [{"features": {}}] * 1001}, headers=SCORE)
    assert too_many.status_code == 413
    huge = client.post(
        "/v1/decisions", content=b"x" * 3_000_000, headers={**SCORE, "content-type": "application/json"}
    )
    assert huge.status_code == 413
    assert "Traceback" not in huge.text + too_many.text + wrong.text


def test_outcomes_are_idempotent(client) -> None:
    user = client.world.user_ids[3]
    decision = client.get(f"/v1/users/{user}/decision", headers=SCORE).json()
    client.app.state.decision_log.flush()
    outcome = {"decision_id": decision["decision_id"], "action_taken": decision["action"]["name"],
               "outcome": "retained", "ts": "2026-01-15T10:00:00Z"}  # fmt: skip
    first = client.post("/v1/outcomes", json=outcome, headers=SCORE)
    again = client.post("/v1/outcomes", json=outcome, headers=SCORE)
    assert first.status_code == 200 and first.json()["status"] == "recorded"
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    other = client.post("/v1/outcomes", json={**outcome, "outcome": "upgraded"}, headers=SCORE)
    assert other.json()["status"] == "recorded"
    unknown = client.post("/v1/outcomes", json={**outcome, "decision_id": "f" * 32}, headers=SCORE)
    assert unknown.status_code == 404
    naive = client.post("/v1/outcomes", json={**outcome, "ts": "2026-01-15T10:00:00"}, headers=SCORE)
    assert naive.status_code == 422 and "ts" in naive.text


def test_every_decision_is_logged_with_its_candidates(client) -> None:
    user = client.world.user_ids[4]
    decision = client.get(f"/v1/users/{user}/decision", headers=SCORE).json()
    client.app.state.decision_log.flush()
    row = client.app.state.decision_log.get_decision(decision["decision_id"])
    assert row is not None
    assert row["user_id"] == user and row["action"] == decision["action"]["name"]
    assert len(row["candidates"]) == 11 and row["propensity"] == pytest.approx(1.0)
    assert row["payload"]["decision_id"] == decision["decision_id"]
    assert row["versions"]["policy"] == "clm-policy/1"


def test_models_reload_health_and_metrics(client) -> None:
    models = client.get("/v1/models", headers=SCORE).json()
    assert models["alias"] == "champion" and models["versions"]["churn_model"] == "clm-churn/1"
    assert models["store"]["users"] == len(client.world.user_ids)
    reloaded = client.post("/v1/admin/reload", headers=ADMIN)
    assert reloaded.status_code == 200 and reloaded.json()["versions"] == models["versions"]
    ready = client.get("/readyz").json()
    assert ready["ready"] is True and ready["models"]["policy"] == "clm-policy/1"
    client.get(f"/v1/users/{client.world.user_ids[0]}/decision", headers=SCORE)
    text = client.get("/metrics").text
    assert 'clm_request_seconds_count{method="GET",route="/v1/users/{user_id}/decision",status="200"}' in text
    assert "clm_decisions_total{" in text
    assert 'clm_model_version_info{model="clm-policy",role="served",version="1"} 1.0' in text
    assert "clm_reload_failures_total 0.0" in text


def test_docs_have_examples_for_every_route(client) -> None:
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for route in ("/v1/users/{user_id}/decision", "/v1/decisions", "/v1/decisions/batch", "/v1/outcomes",
                  "/v1/models", "/v1/admin/reload", "/healthz", "/readyz", "/metrics"):  # fmt: skip
        assert route in paths, route
    components = schema["components"]["schemas"]
    for name in ("DecisionRequest", "BatchRequest", "OutcomeRequest"):
        assert components[name].get("examples"), name
    assert client.get("/docs").status_code == 200


def test_not_ready_without_models(served_env, monkeypatch) -> None:
    monkeypatch.setenv("CLM_ALIAS", "nonexistent")
    app = create_app(load_config(), ServingSettings())
    with TestClient(app, raise_server_exceptions=False) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["last_reload_error"]
        decision = client.get(f"/v1/users/{served_env.user_ids[0]}/decision", headers=SCORE)
        assert decision.status_code == 503


def test_shadow_mode_logs_the_challenger_beside_the_served_decision(served_env, monkeypatch) -> None:
    monkeypatch.setenv("CLM_SHADOW_ALIAS", "challenger")
    app = create_app(load_config(), ServingSettings())
    with TestClient(app, raise_server_exceptions=False) as client:
        user = served_env.user_ids[5]
        decision = client.get(f"/v1/users/{user}/decision", headers=SCORE).json()
        assert "shadow" not in decision
        client.app.state.decision_log.flush()
        row = client.app.state.decision_log.get_decision(decision["decision_id"])
        assert row["shadow"]["versions"]["policy"].startswith("clm-policy/")
        assert row["shadow"]["action"] in {a["name"] for a in decision["alternatives"]}
        assert client.get("/v1/models", headers=SCORE).json()["shadow"] is not None


def test_polling_picks_up_a_moved_alias(private_served_env, monkeypatch) -> None:
    import time

    from mlflow import MlflowClient

    client_ml = MlflowClient()
    monkeypatch.setenv("CLM_RELOAD_INTERVAL_SECONDS", "0.5")
    app = create_app(load_config(), ServingSettings())
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/v1/models", headers=SCORE).json()["versions"]["policy"] == "clm-policy/1"
        source = client_ml.get_model_version("clm-policy", "1").source
        import mlflow

        moved = mlflow.register_model(source, "clm-policy")
        client_ml.set_registered_model_alias("clm-policy", "champion", str(moved.version))
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                versions = client.get("/v1/models", headers=SCORE).json()["versions"]
                if versions["policy"] == f"clm-policy/{moved.version}":
                    break
                time.sleep(0.5)
            assert versions["policy"] == f"clm-policy/{moved.version}"
        finally:
            client_ml.set_registered_model_alias("clm-policy", "champion", "1")


def test_the_same_get_twice_gives_the_same_decision_and_propensity(served_env, tmp_path, monkeypatch) -> None:
    """Exploration on (the default): the draw is a hash of (user, snapshot, policy version, salt), not of the
    request, so the same GET under the same contact state returns the same action with the same propensity
    (here: two servers, each with an empty decision log — within one log the first decision's contact puts
    its action in cooldown, tests/serving/test_cache.py; the explored share itself is tested in
    tests/models/test_decision.py)."""
    monkeypatch.setenv("CLM_EXPLORATION", "true")  # the served tests turn it off elsewhere
    assert ServingSettings().exploration
    answers = []
    for name in ("first", "again"):
        monkeypatch.setenv("CLM_DECISION_LOG", f"sqlite:///{tmp_path / name}.db")
        app = create_app(load_config(), ServingSettings())
        with TestClient(app, raise_server_exceptions=False) as client:
            answers.append(
                [
                    client.get(f"/v1/users/{user}/decision", headers=SCORE).json()
                    for user in served_env.user_ids[:40]
                ]
            )
    for user, first, again in zip(served_env.user_ids[:40], *answers, strict=True):
        assert first["action"]["name"] == again["action"]["name"], user
        assert first["action"]["propensity"] == again["action"]["propensity"], user
        assert first["action"]["explored"] == again["action"]["explored"], user
        assert first["decision_id"] != again["decision_id"]
