"""The decision cache (serving/cache.py): a cached decision is the decision the full path makes, field for
field, for every user of the served world in both languages; a new snapshot and a reload replace it; a
decision logged for a user suppresses its action within the cooldown, across workers, before any new
snapshot."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import shutil
import time
import urllib.request

import orjson
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from clm.config import load_config
from features.online import open_store
from models.decision import load_decision_models
from serving.app import create_app
from serving.cache import PLACEHOLDER, build_cache
from serving.decision_log import DecisionLog
from serving.scorer import Scorer
from serving.settings import ServingSettings
from tests.serving.tests_serving_support import running_server

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SCORE = {"X-API-Key": "score-key"}
ADMIN = {"X-API-Key": "admin-key"}


def same(a: object, b: object) -> bool:
    """Equal, floats up to 1e-12 relative: a vectorised pass over 3,000 rows and a one-row pass may round the
    16th digit differently (seen: an upgrade probability 0.006247258728363255 against …362757)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_a_cached_decision_is_the_full_decision_for_every_user_and_language(
    served_world, monkeypatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", served_world.tracking_uri)
    config = load_config()
    models = load_decision_models(config, aliases=("champion",))
    # exploration on, with a large share, so the hashed draws are part of what must agree
    models = dataclasses.replace(models, policy=dataclasses.replace(models.policy, contact=dataclasses.replace(
        models.policy.contact, exploration_share=0.3)))  # fmt: skip
    scorer = Scorer(config.serving)
    with open_store(served_world.store_url) as store:
        cache = build_cache(models, scorer, store, explore=True, max_users=10**6)
        assert cache is not None and cache.bulk and cache.users() == len(served_world.user_ids)
        rows = store.read_many(served_world.user_ids)
    differences, explored = [], 0
    for user_id in served_world.user_ids:
        row = rows[user_id]
        for lang in ("en", "zh"):
            fresh = scorer.decide(
                models, row.values, user_id=user_id, as_of=row.as_of, lang=lang, explore=True
            )
            expected = fresh.decision.model_dump(mode="json") | {"decision_id": PLACEHOLDER}
            encoded = cache.unpack(cache.entries[(user_id, lang)], PLACEHOLDER)
            cached = orjson.loads(encoded.body)
            if not same(cached, expected):
                differences.append(
                    (user_id, lang, [k for k in expected if not same(cached.get(k), expected[k])])
                )
            if orjson.loads(encoded.candidates) != [
                {k: c[k] for k in cached["alternatives"][0]} for c in fresh.candidates
            ] or orjson.loads(encoded.inputs) != json.loads(json.dumps(fresh.inputs)):
                differences.append((user_id, lang, "log fields"))
            explored += cached["action"]["explored"]
    assert not differences, differences[:5]
    assert explored > 100  # the draws were exercised, not only the greedy choice


@pytest.fixture
def own_store(served_world, tmp_path, monkeypatch):
    """The served world's online store, copied: a test writes a new snapshot into it."""
    shutil.copyfile(served_world.store_url.removeprefix("sqlite:///"), tmp_path / "online.db")
    url = f"sqlite:///{tmp_path / 'online.db'}"
    monkeypatch.setenv("CLM_ONLINE_STORE", url)
    return url


def test_a_new_snapshot_replaces_the_cache_while_the_old_one_serves(
    served_env, own_store, monkeypatch
) -> None:
    monkeypatch.setenv("CLM_SNAPSHOT_CHECK_SECONDS", "0")  # the test calls refresh itself
    monkeypatch.setenv("CLM_DECISION_CACHE_MAX_USERS", str(10**6))  # the bulk build, not on demand
    app = create_app(load_config(), ServingSettings())
    user = served_env.user_ids[7]
    with TestClient(app, raise_server_exceptions=False) as client:
        before = client.get(f"/v1/users/{user}/decision", headers=SCORE).json()
        with open_store(own_store) as store:
            info = store.info()
            rows = store.read_many(store.user_ids())
            frame = pd.DataFrame([row.values for row in rows.values()]).assign(user_id=list(rows))
            frame["cutoff"] = pd.Timestamp(info.as_of + dt.timedelta(days=7))
            frame["days_since_last_event"] = frame["days_since_last_event"] + 45  # everyone went quiet
            store.write_snapshot(
                frame, as_of=info.as_of + dt.timedelta(days=7), feature_version=info.feature_version
            )
        # until the check runs, the old snapshot's cache keeps answering
        assert client.get(f"/v1/users/{user}/decision", headers=SCORE).json()["as_of"] == before["as_of"]
        holder = app.state.holder
        assert app.state.caches.refresh([holder.current, holder.shadow])
        after = client.get(f"/v1/users/{user}/decision", headers=SCORE).json()
    assert after["as_of"] == str(info.as_of + dt.timedelta(days=7)) != before["as_of"]
    assert after["churn"]["probability"] != before["churn"]["probability"]


def test_a_reload_replaces_the_cache(private_served_env, monkeypatch) -> None:
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("CLM_DECISION_CACHE_MAX_USERS", str(10**6))  # the bulk build, not on demand
    app = create_app(load_config(), ServingSettings())
    user = private_served_env.user_ids[3]
    with TestClient(app, raise_server_exceptions=False) as client:
        before = client.get(f"/v1/users/{user}/decision", headers=SCORE).json()
        registry = MlflowClient()
        moved = mlflow.register_model(registry.get_model_version("clm-policy", "1").source, "clm-policy")
        registry.set_registered_model_alias("clm-policy", "champion", str(moved.version))
        assert client.post("/v1/admin/reload", headers=ADMIN).status_code == 200
        after = client.get(f"/v1/users/{user}/decision", headers=SCORE).json()
    assert before["versions"]["policy"] == "clm-policy/1"
    assert after["versions"]["policy"] == f"clm-policy/{moved.version}"


def _contacted_user(client, user_ids) -> tuple[str, dict]:
    """A user whose decision contacts them with an action that has a cooldown."""
    for user in user_ids:
        decision = client(user)
        if decision["action"]["name"] != "no_action":
            return user, decision
    raise AssertionError("no user of the world is contacted")


def test_a_logged_decision_puts_its_action_in_cooldown(served_env, monkeypatch) -> None:
    monkeypatch.setenv("CLM_DECISION_CACHE_MAX_USERS", str(10**6))  # the bulk build, not on demand
    app = create_app(load_config(), ServingSettings())
    with TestClient(app, raise_server_exceptions=False) as client:

        def get(user: str) -> dict:
            response = client.get(f"/v1/users/{user}/decision", headers=SCORE)
            assert response.status_code == 200, response.text
            return response.json()

        user, first = _contacted_user(get, served_env.user_ids[:200])
        app.state.decision_log.flush()
        again = get(user)
    action = first["action"]["name"]
    assert again["action"]["name"] != action
    status = {a["name"]: (a["status"], a["reason"]) for a in again["alternatives"]}
    assert status[action][0] == "cooldown" and "last sent 0 days ago" in status[action][1]
    assert again["as_of"] == first["as_of"]  # the same snapshot


def test_a_decision_made_by_one_worker_suppresses_its_action_on_every_worker(served_world, tmp_path) -> None:
    keys = {"score-key": ["score"]}
    with running_server(served_world, keys, tmp_path, workers=2, cache_max_users=10**6) as (base, log_url):

        def get(user: str) -> dict:
            request = urllib.request.Request(f"{base}/v1/users/{user}/decision", headers=SCORE)
            with urllib.request.urlopen(request, timeout=30) as response:  # a new connection each time
                return json.loads(response.read())

        user, first = _contacted_user(get, served_world.user_ids[:200])
        # at once, not once the log's writer has stored it: the contact ledger is shared by the workers
        later = [get(user) for _ in range(8)]  # new connections: both workers answer some of them
        log = DecisionLog(log_url)
        try:
            deadline = time.monotonic() + 30
            while log.get_decision(first["decision_id"]) is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert log.get_decision(first["decision_id"]) is not None
            pids = {row["payload"]["decision_id"] for row in log.decisions_for_user(user)}
        finally:
            log.close()
    action = first["action"]["name"]
    for decision in later:
        status = {a["name"]: a["status"] for a in decision["alternatives"]}
        assert decision["action"]["name"] != action and status[action] == "cooldown", decision["action"]
    assert first["decision_id"] in pids


def test_past_the_bound_the_cache_fills_on_demand(served_env, monkeypatch) -> None:
    monkeypatch.setenv("CLM_DECISION_CACHE_MAX_USERS", "2")  # the world has 3,000 users: no bulk build
    app = create_app(load_config(), ServingSettings())
    users = served_env.user_ids[10:13]
    with TestClient(app, raise_server_exceptions=False) as client:
        cache = app.state.caches.get(app.state.holder.current)
        assert cache is not None and not cache.bulk and cache.users() == 0
        answers = [client.get(f"/v1/users/{user}/decision", headers=SCORE).json() for user in users]
        assert cache.users() == 2  # bounded: the least recently used user left
        scorer, models, store = app.state.scorer, app.state.holder.current, app.state.store
        for user, answer in zip(users, answers, strict=True):
            row = store.read(user)
            fresh = scorer.decide(models, row.values, user_id=user, as_of=row.as_of, explore=False).decision
            assert answer | {"decision_id": ""} == fresh.model_dump(mode="json") | {"decision_id": ""}
        assert client.get("/v1/users/nobody/decision", headers=SCORE).status_code == 404
