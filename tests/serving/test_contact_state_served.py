"""Per-action contact state as served: the online store holds each user's contact state beside the features,
and the request path adds what was logged since the snapshot — every action's contacts (so a cooldown on A
holds after B was sent later) and the negative outcomes recorded through POST /v1/outcomes (so an action
pauses after N of them, not at N − 1) — for a GET of a stored user and a POST naming one alike; a POST for a
user with nothing logged decides from the stored row as it is."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from fastapi.testclient import TestClient

from clm.config import load_config
from features.contacts import days_since_column
from features.online import open_store
from serving.app import create_app
from serving.decision_log import DecisionRecord
from serving.settings import ServingSettings

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SCORE = {"X-API-Key": "score-key"}
RETENTION = {"at_risk": ("retention_discount", "satisfaction_survey"),
             "mature": ("loyalty_reward", "referral_invite"), "growing": ("recommendation", "education_content")}  # fmt: skip


def contact(user: str, action: str, ts: dt.datetime) -> DecisionRecord:
    """A contact as the API logs it (what another worker, or an earlier request, decided)."""
    return DecisionRecord(
        decision_id=uuid.uuid4().hex, ts=ts, user_id=user, request_digest="d", versions={}, stage="s",
        action=action, propensity=1.0, explored=False, expected_value=0.0, candidates=[], latency_ms=0.0,
        payload={"action": {"name": action}}, inputs={},
    )  # fmt: skip


def statuses(decision: dict) -> dict[str, str]:
    return {a["name"]: a["status"] for a in decision["alternatives"]}


def pick_users(client: TestClient, user_ids: list[str], wanted: int) -> list[tuple[str, dict]]:
    """Users whose decision contacts nobody (so nothing is logged as a contact) at a stage offering two retention
    actions, both eligible: (user, decision)."""
    found = []
    for user in user_ids:
        decision = client.get(f"/v1/users/{user}/decision", headers=SCORE).json()
        pair = RETENTION.get(decision["stage"]["name"])
        if decision["action"]["name"] != "no_action" or decision["action"]["control_group"] or pair is None:
            continue
        if all(statuses(decision)[a] == "eligible" for a in pair):
            found.append((user, decision))
            if len(found) == wanted:
                return found
    pytest.fail(f"fewer than {wanted} users with two eligible retention actions and no contact")


def test_the_store_holds_each_users_contact_state(served_env) -> None:
    with open_store(served_env.store_url) as store:
        info = store.info()
        assert info is not None
        assert days_since_column("retention_discount") in info.features
        assert "contacts_retention_discount_90d" in info.features
        assert "negative_outcomes_winback_offer" in info.features


def test_served_cooldowns_and_suppression_follow_every_logged_action(served_env) -> None:
    config = load_config()
    assert config.policy.negative_outcomes_retention == 2
    app = create_app(config, ServingSettings())
    now = dt.datetime.now(dt.UTC)
    with TestClient(app, raise_server_exceptions=False) as client:
        (cooled, before), (paused, _), (once, _), (quiet, quiet_before) = pick_users(
            client, served_env.user_ids, 4
        )
        log = app.state.service.decision_log
        a, b = RETENTION[before["stage"]["name"]]

        # A 20 days ago, then B 5 days ago: B is the last action, and A's cooldown still holds
        log.append(contact(cooled, a, now - dt.timedelta(days=20)))
        log.append(contact(cooled, b, now - dt.timedelta(days=5)))
        got = client.get(f"/v1/users/{cooled}/decision", headers=SCORE).json()
        assert statuses(got)[a] == "cooldown" and statuses(got)[b] == "cooldown", statuses(got)
        assert "20 days ago" in next(x["reason"] for x in got["alternatives"] if x["name"] == a)
        posted = client.post("/v1/decisions", json={"user_id": cooled, "features": {}}, headers=SCORE)
        assert (
            posted.status_code == 200 and statuses(posted.json())[a] == "cooldown"
        )  # a POST naming the user too

        # negative outcomes recorded through the API pause the action after N (2), not at N − 1
        for user, count in ((paused, 2), (once, 1)):
            action = RETENTION[
                client.get(f"/v1/users/{user}/decision", headers=SCORE).json()["stage"]["name"]
            ][0]
            for k in range(count):  # long enough ago that no cooldown or cap applies
                record = contact(user, action, now - dt.timedelta(days=100 + 10 * k))
                log.append(record)
                answer = client.post("/v1/outcomes", headers=SCORE, json={
                    "decision_id": record.decision_id, "action_taken": action, "outcome": "churned",
                    "ts": (record.ts + dt.timedelta(days=20)).isoformat()})  # fmt: skip
                assert answer.status_code == 200, answer.text
            got = client.get(f"/v1/users/{user}/decision", headers=SCORE).json()
            expected = "suppressed" if count == 2 else "eligible"
            assert statuses(got)[action] == expected, (count, statuses(got))
            if count == 2:
                reason = next(x["reason"] for x in got["alternatives"] if x["name"] == action)
                assert reason == "suppressed: 2 negative outcomes after this action (paused at 2)"
                zh = client.get(f"/v1/users/{user}/decision?lang=zh", headers=SCORE).json()
                assert "已暂停" in next(x["reason"] for x in zh["alternatives"] if x["name"] == action)
                posted = client.post(
                    "/v1/decisions", json={"user_id": user, "features": {}}, headers=SCORE
                ).json()
                assert statuses(posted)[action] == "suppressed"

        # a user with nothing logged since the snapshot: the POST decides from the stored row as it is
        posted = client.post("/v1/decisions", json={"user_id": quiet, "features": {}}, headers=SCORE)
        assert posted.status_code == 200, posted.text
        assert statuses(posted.json()) == statuses(quiet_before)
        assert posted.json()["action"]["name"] == quiet_before["action"]["name"]
