"""Staleness is visible: every stored user's Decision carries its snapshot's date and age on the day it is
served, with a warning once the age passes `[serving] stale_after_days` (not at it), in the cached bodies
the edge answers with, in the decision log's payload and on the reviewer pages that show a decision."""

from __future__ import annotations

import datetime as dt
import html as html_lib
import json

import pytest
from fastapi.testclient import TestClient

from clm.config import ConfigError, load_config, with_overrides
from models.snapshot import snapshot_age
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import mlflow_store

SCORE = {"X-API-Key": "score-key"}
REVIEW = {"X-API-Key": "review-key"}
LIMIT_DAYS = 30  # not the default 45: the configured value is the one applied


@pytest.fixture(scope="module")
def client(served_world, tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("snapshot-age")
    with pytest.MonkeyPatch.context() as mp, mlflow_store(served_world.tracking_uri):
        mp.setenv("CLM_API_KEYS", json.dumps({"score-key": ["score"], "review-key": ["review"]}))
        mp.setenv("CLM_ONLINE_STORE", served_world.store_url)
        mp.setenv("CLM_DECISION_LOG", f"sqlite:///{log_dir / 'decisions.db'}")
        mp.setenv("CLM_EXPLORATION", "false")
        mp.setenv("CLM_DECISION_CACHE_MAX_USERS", str(10**6))  # the bulk cache, whose bodies the edge sends
        config = with_overrides(load_config(), {"serving": {"stale_after_days": LIMIT_DAYS}})
        with TestClient(create_app(config, ServingSettings()), raise_server_exceptions=False) as client:
            client.world = served_world
            yield client


def served_on(client, day: dt.date) -> None:
    client.app.state.scorer.today = lambda: day


@pytest.fixture
def snapshot_date(client) -> dt.date:
    info = client.app.state.store.info()
    yield info.as_of
    client.app.state.scorer.today = lambda: dt.datetime.now(dt.UTC).date()


def test_the_snapshot_is_stale_past_the_configured_age_and_not_at_it(client, snapshot_date) -> None:
    user = client.world.user_ids[5]
    served_on(client, snapshot_date + dt.timedelta(days=LIMIT_DAYS))
    fresh = client.get(f"/v1/users/{user}/decision", headers=SCORE).json()
    assert fresh["snapshot"] == {"date": str(snapshot_date), "age_days": LIMIT_DAYS,
                                 "stale_after_days": LIMIT_DAYS, "stale": False, "warning": None}  # fmt: skip
    # the same cached entry a day later: its age is the day's, not the day the cache was built
    served_on(client, snapshot_date + dt.timedelta(days=LIMIT_DAYS + 1))
    for _ in range(2):  # the second GET meets the contact the first one logged (another cached entry)
        stale = client.get(f"/v1/users/{user}/decision", headers=SCORE).json()
        assert stale["snapshot"]["age_days"] == LIMIT_DAYS + 1 and stale["snapshot"]["stale"] is True
        assert f"from the {snapshot_date} snapshot, {LIMIT_DAYS + 1} days old" in stale["snapshot"]["warning"]
        assert stale["as_of"] == str(snapshot_date)
    chinese = client.get(f"/v1/users/{user}/decision?lang=zh", headers=SCORE).json()
    assert "快照" in chinese["snapshot"]["warning"] and chinese["snapshot"]["stale"]
    posted = client.post("/v1/decisions", json={"user_id": user}, headers=SCORE).json()
    assert posted["snapshot"] == stale["snapshot"]
    vector = client.post("/v1/decisions", json={"features": {"tenure_days": 40}}, headers=SCORE).json()
    assert vector["snapshot"] is None  # a posted vector has no snapshot
    # the log keeps the age the decision was made with
    client.app.state.decision_log.flush(timeout=5.0)
    logged = client.app.state.decision_log.get_decision(stale["decision_id"])
    assert logged["payload"]["snapshot"] == stale["snapshot"]


def test_the_reviewer_pages_show_the_age_and_the_warning(client, snapshot_date) -> None:
    user = client.world.user_ids[6]
    served_on(client, snapshot_date + dt.timedelta(days=LIMIT_DAYS))
    overview = html_lib.unescape(client.get("/review", headers=REVIEW).text)
    assert f"{LIMIT_DAYS} days old (stale after {LIMIT_DAYS} days)" in overview
    assert 'id="stale-warning"' not in overview
    served_on(client, snapshot_date + dt.timedelta(days=200))
    decided = client.get(f"/v1/users/{user}/decision", headers=SCORE).json()
    for path in ("/review", f"/review/users/{user}", f"/review/decisions/{decided['decision_id']}"):
        page = html_lib.unescape(client.get(path, headers=REVIEW).text)
        assert f"200 days old (stale after {LIMIT_DAYS} days)" in page, path
        warning = page.split('id="stale-warning"', 1)[1].split("</div>", 1)[0]
        assert f"from the {snapshot_date} snapshot, 200 days old" in warning, path
    # the logged decision keeps the age it was made with, whatever the day it is read
    served_on(client, snapshot_date + dt.timedelta(days=300))
    replay = html_lib.unescape(client.get(f"/review/decisions/{decided['decision_id']}", headers=REVIEW).text)
    assert "200 days old" in replay and "300 days old" not in replay
    user_page = html_lib.unescape(client.get(f"/review/users/{user}", headers=REVIEW).text)
    assert "300 days old" in user_page  # the page's own decision is made today


def test_a_decision_logged_before_decisions_carried_their_age_is_aged_from_its_log_time() -> None:
    from serving.review.replay import logged_snapshot

    logged = {"payload": {"as_of": "2026-01-01"}, "ts": dt.datetime(2026, 12, 3, 9, tzinfo=dt.UTC)}
    aged = logged_snapshot(logged, 45)
    assert aged["age_days"] == 336 and aged["stale"] and "2026-01-01" in aged["warning"]
    assert logged_snapshot({"payload": {"as_of": None}, "ts": logged["ts"]}, 45) is None


@pytest.mark.parametrize(
    ("age_days", "stale"), [(0, False), (44, False), (45, False), (46, True), (336, True), (-1, False)]
)
def test_snapshot_age_is_stale_only_past_the_limit(age_days: int, stale: bool) -> None:
    date = dt.date(2026, 1, 1)
    aged = snapshot_age(date, date + dt.timedelta(days=age_days), 45)
    assert aged.age_days == age_days and aged.stale is stale
    assert (aged.warning is not None) is stale


@pytest.mark.parametrize("value", [0, -3, "soon"])
def test_the_limit_is_validated_naming_the_key(value) -> None:
    with pytest.raises(ConfigError, match=r"serving\.stale_after_days"):
        with_overrides(load_config(), {"serving": {"stale_after_days": value}})
