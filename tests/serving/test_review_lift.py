"""The reviewer lift page (/review/lift): the measured lift of the decision log's decisions with the users
behind each comparison, in both languages, linked from the overview; review scope only."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from clm.commands.lift import log_campaign
from clm.config import load_config
from serving.app import create_app
from serving.decision_log import DecisionLog
from serving.settings import ServingSettings

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")
SENT = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


@pytest.fixture
def logged(tmp_path, monkeypatch, api_keys):
    n = 80
    table = pd.DataFrame({
        "user_id": [f"u{i}" for i in range(n)], "stage": "dormant", "intended_action": "winback_offer",
        "action": ["winback_offer"] * 40 + ["no_action"] * 40, "control_group": [False] * 40 + [True] * 40,
        "holdout": [None] * 40 + ["control_group"] * 40, "cost": [2.0] * 40 + [0.0] * 40,
        "propensity": 0.9, "explored": False, "expected_value": 2.0,
    })  # fmt: skip
    url = f"sqlite:///{tmp_path / 'decisions.db'}"
    log = DecisionLog(url)
    log_campaign(log, table, ts=SENT, versions={"policy": "clm-policy/1"})
    ids = {d["user_id"]: d["decision_id"] for d in log.read_decisions()}
    for i in list(range(10)) + list(range(40, 70)):  # 10 of 40 treated churned, 30 of 40 held out
        log.record_outcome(ids[f"u{i}"], "churned", "x", SENT + dt.timedelta(days=5))
    log.close()
    monkeypatch.setenv("CLM_API_KEYS", json.dumps(api_keys))
    monkeypatch.setenv("CLM_DECISION_LOG", url)
    monkeypatch.setenv(
        "MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}"
    )  # no models: the page needs none
    monkeypatch.setenv("CLM_ONLINE_STORE", f"sqlite:///{tmp_path / 'online.db'}")
    return url


def test_the_lift_page_shows_each_comparison_and_its_users(logged) -> None:
    app = create_app(load_config(), ServingSettings())
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.get("/review/lift").status_code == 401
        assert client.get("/review/lift", headers={"X-API-Key": "score-key"}).status_code == 403
        page = client.get("/review/lift", headers={"X-API-Key": "review-key"})
        zh = client.get("/review/lift?lang=zh", headers={"X-API-Key": "review-key"})
    assert page.status_code == 200, page.text
    html = page.text
    assert 'id="lift-users">80<' in html and 'id="lift-control">40<' in html
    row = html[html.index('data-action="winback_offer" data-stage="dormant"') :]
    row = row[: row.index("</tr>")]
    assert "40 / 40" in row and "25.0% vs 75.0%: -50.0" in row  # 10 of 40 churned against 30 of 40
    assert "实测提升" in zh.text


def test_the_overview_links_to_the_lift_page() -> None:
    from pathlib import Path

    template = Path("serving/templates/overview.html.j2").read_text()
    assert 'href="/review/lift?lang={{ lang }}"' in template
