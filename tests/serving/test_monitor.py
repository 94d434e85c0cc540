"""The drift monitor served: /review/monitor over the trained world (the store's snapshot against the champion's
training cutoffs), its gauges in /metrics, a breach as a warning in both, the lift check from outcomes posted
to the log, and the lifecycle analytics on the overview."""

from __future__ import annotations

import contextlib
import json
import re

import pytest
from fastapi.testclient import TestClient

from clm.config import load_config, with_overrides
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import mlflow_store

REVIEW = {"X-API-Key": "review-key"}
SCORE = {"X-API-Key": "score-key"}


@contextlib.contextmanager
def client_for(world, log_dir, config):
    with pytest.MonkeyPatch.context() as mp:
        yield from _client(mp, world, log_dir, config)


def _client(mp, world, log_dir, config):
    mp.setenv("CLM_API_KEYS", json.dumps({"score-key": ["score"], "review-key": ["review"]}))
    mp.setenv("CLM_ONLINE_STORE", world.store_url)
    mp.setenv("CLM_DECISION_LOG", f"sqlite:///{log_dir / 'decisions.db'}")
    mp.setenv("CLM_EVENTS_DIR", str(world.data))
    mp.setenv("CLM_EXPLORATION", "false")
    mp.setenv("CLM_DECISION_CACHE_MAX_USERS", "50")
    with TestClient(create_app(config, ServingSettings()), raise_server_exceptions=False) as client:
        client.world = world
        yield client


@pytest.fixture(scope="module")
def strict_client(served_world, tmp_path_factory):
    """Thresholds every tested feature crosses (PSI ≥ 0 and p < 1): the breaches must show everywhere."""
    config = with_overrides(load_config(), {"monitor": {"psi": 0.0, "p_value": 1.0, "lift_min_users": 1}})
    log_dir = tmp_path_factory.mktemp("monitor-log")
    with mlflow_store(served_world.tracking_uri), client_for(served_world, log_dir, config) as client:
        yield client


def gauge_values(text: str, name: str) -> dict[str, float]:
    """label text → value of every sample of gauge `name` in a Prometheus exposition."""
    return {
        m.group(1) or "": float(m.group(2))
        for m in re.finditer(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.M)
    }


def test_the_page_and_metrics_show_the_same_breaches(strict_client) -> None:
    page = strict_client.get("/review/monitor", headers=REVIEW)
    assert page.status_code == 200, page.text[:500]
    html = page.text
    assert 'id="drift-breaches" role="alert"' in html and "Drift breach" in html
    assert "training cutoffs of clm-churn/" in html and "online store snapshot" in html
    breached = re.findall(r"<li>feature ([a-z0-9_]+):", html)
    assert breached  # every feature with enough rows is tested and crosses PSI ≥ 0 with p < 1
    metrics = strict_client.get("/metrics").text
    psi = gauge_values(metrics, "clm_drift_feature_psi")
    flags = gauge_values(metrics, "clm_drift_feature_breach")
    assert psi and all(value >= 0 for value in psi.values())
    assert {k for k, v in flags.items() if v == 1.0} == {f'{{feature="{name}"}}' for name in breached}
    total = gauge_values(metrics, "clm_drift_breaches")[""]
    assert total == len(re.findall(r"<li>(?:feature|score|stage|action|lift) ", html)) > 0
    assert set(gauge_values(metrics, "clm_drift_score_psi")) == {'{score="p_churn"}', '{score="p_upgrade"}'}


def test_outcomes_posted_to_the_log_reach_the_lift_check(strict_client) -> None:
    before = strict_client.get("/review/monitor", headers=REVIEW).text
    assert "no logged decision has an outcome" in before
    contacted = {}
    for user_id in strict_client.world.user_ids:
        decision = strict_client.get(f"/v1/users/{user_id}/decision", headers=SCORE).json()
        if decision["action"]["name"] != "no_action":
            contacted[decision["decision_id"]] = decision["action"]["name"]
        if len(contacted) == 12:
            break
    for k, (decision_id, action) in enumerate(contacted.items()):
        body = {"decision_id": decision_id, "action_taken": action, "outcome": "retained" if k % 4 else "churned",
                "ts": "2025-10-01T00:00:00Z"}  # fmt: skip
        assert strict_client.post("/v1/outcomes", json=body, headers=SCORE).status_code == 200
    html = strict_client.get("/review/monitor", headers=REVIEW).text
    assert f"{len(contacted)} logged decisions with an outcome" in html
    rows = re.findall(
        r"<tr[^>]*><td>([a-z_]+)</td><td class=\"n\">(\d+)</td>", html.split('id="drift-lift"')[1]
    )
    assert {a for a, _ in rows} == set(contacted.values())
    assert sum(int(n) for _, n in rows) == len(contacted)


def test_the_overview_links_the_monitor_and_shows_the_lifecycle_analytics(strict_client) -> None:
    html = strict_client.get("/review", headers=REVIEW).text
    assert 'id="monitor-link" href="/review/monitor' in html
    section = html.split('id="lifecycle"', 1)[1].split("</section>", 1)[0]
    quadrants = section.split('id="value-quadrants"', 1)[1].split("</table>", 1)[0]
    users = [
        int(n.replace(",", "")) for n in re.findall(r"lifecycle</td><td class=\"n\">([\d,]+)</td>", quadrants)
    ]
    assert len(users) == 4 and sum(users) == len(strict_client.world.user_ids)
    assert 'id="stage-conversion"' in section and 'id="retention-referral"' in section
    assert 'id="underserved-summary"' in section
    zh = strict_client.get("/review/monitor?lang=zh", headers=REVIEW).text
    assert "漂移告警" in zh


def test_without_event_data_the_page_says_what_is_missing(served_env, monkeypatch) -> None:
    monkeypatch.delenv("CLM_EVENTS_DIR", raising=False)
    monkeypatch.setenv("CLM_API_KEYS", json.dumps({"review-key": ["review"]}))
    with TestClient(create_app(load_config(), ServingSettings())) as client:
        html = client.get("/review/monitor", headers=REVIEW).text
        assert 'id="monitor-note"' in html and "CLM_EVENTS_DIR" in html
        metrics = client.get("/metrics").text
        assert "clm_drift_breaches" not in metrics and "clm_drift_feature_psi{" not in metrics
