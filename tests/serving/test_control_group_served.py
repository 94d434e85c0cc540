"""The global control group as served: every user the hash holds out gets no contact from the API, in every
call, before and after a new snapshot, from the decision cache and from the full decision path alike, and
`clm score`'s population decision holds out the same users; the Decision and the log say so."""

from __future__ import annotations

import datetime as dt
import shutil

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from clm.config import load_config
from features.online import open_store
from models.arbitration import control_group
from models.decision import load_decision_models
from serving.app import create_app
from serving.decision_log import DecisionLog
from serving.settings import ServingSettings

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SCORE = {"X-API-Key": "score-key"}


def test_the_control_group_is_held_out_across_calls_snapshots_and_paths(
    served_env, tmp_path, monkeypatch
) -> None:
    shutil.copyfile(served_env.store_url.removeprefix("sqlite:///"), tmp_path / "online.db")
    store_url = f"sqlite:///{tmp_path / 'online.db'}"
    monkeypatch.setenv("CLM_ONLINE_STORE", store_url)
    monkeypatch.setenv("CLM_EXPLORATION", "true")
    monkeypatch.setenv("CLM_SNAPSHOT_CHECK_SECONDS", "0")  # the test refreshes itself
    monkeypatch.setenv("CLM_DECISION_CACHE_MAX_USERS", str(10**6))  # the bulk cache
    config = load_config()
    models = load_decision_models(config, aliases=("champion",))
    contact = models.policy.contact
    assert contact.control_share == config.policy.control_share == 0.05
    users = served_env.user_ids
    expected = dict(
        zip(users, control_group(users, contact.control_share, contact.control_salt), strict=True)
    )
    share = np.mean(list(expected.values()))
    assert abs(share - 0.05) < 4 * np.sqrt(0.05 * 0.95 / len(users)), share

    app = create_app(config, ServingSettings())
    sample = users[::10]
    with TestClient(app, raise_server_exceptions=False) as client:

        def served(user: str, lang: str = "en") -> dict:
            response = client.get(f"/v1/users/{user}/decision?lang={lang}", headers=SCORE)
            assert response.status_code == 200, response.text
            return response.json()["action"]

        first = {user: served(user) for user in users}
        assert {u: a["control_group"] for u, a in first.items()} == expected
        held = [u for u in users if expected[u]]
        assert all(first[u]["name"] == "no_action" and first[u]["holdout"] == "control_group" for u in held)
        assert any(
            first[u]["intended_action"] != "no_action" for u in held
        )  # the policy meant to contact some
        assert all(first[u]["holdout"] != "control_group" for u in users if not expected[u])
        assert {u: served(u, "zh")["control_group"] for u in sample} == {u: expected[u] for u in sample}
        # a posted vector over a stored user's features decides in full, off the cache: the same group
        posted = [
            client.post("/v1/decisions", json={"user_id": u}, headers=SCORE).json()["action"] for u in sample
        ]
        assert [a["control_group"] for a in posted] == [expected[u] for u in sample]

        with open_store(store_url) as store:  # a week later, everyone quieter: a new snapshot
            info = store.info()
            rows = store.read_many(store.user_ids())
            frame = pd.DataFrame([row.values for row in rows.values()]).assign(user_id=list(rows))
            later = info.as_of + dt.timedelta(days=7)
            frame["cutoff"] = pd.Timestamp(later)
            frame["days_since_last_event"] = frame["days_since_last_event"] + 7
            store.write_snapshot(frame, as_of=later, feature_version=info.feature_version)
        holder = app.state.holder
        assert app.state.caches.refresh([holder.current, holder.shadow])
        after = {user: served(user) for user in sample}
        assert {u: a["control_group"] for u, a in after.items()} == {u: expected[u] for u in sample}
        app.state.decision_log.flush()

    log = DecisionLog(ServingSettings().decision_log)
    try:
        logged = log.decisions_for_user(held[0], limit=5)
        assert logged and all(r["payload"]["action"]["control_group"] for r in logged)
        assert all(r["action"] == "no_action" and 0 < r["propensity"] <= 1 for r in logged)
    finally:
        log.close()

    # `clm score`'s population decision (the hashed draws, as the API): the same users held out
    from features.jobs import latest_features
    from features.registry import FeatureParams

    frame, _ = latest_features(served_env.data, params=FeatureParams.from_config(config.features))
    table = models.decide(frame, explore=True).table
    assert dict(zip(table["user_id"], table["control_group"], strict=True)) == {
        u: expected[u] for u in table["user_id"]
    }
    assert (table.loc[table["control_group"], "action"] == "no_action").all()
