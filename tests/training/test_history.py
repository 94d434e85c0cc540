"""Outcomes into training: a decision the service logged becomes a row of the policy's campaign history exactly
once — beside the ingested campaigns file, a repeated request of the same day and a contact the file also
holds counted once — and the data directory itself is left as it was."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from serving.decision_log import DecisionLog, DecisionRecord
from training.history import with_logged_decisions

DAY = dt.datetime(2026, 3, 1, 9, tzinfo=dt.UTC)


def _record(decision_id: str, user: str, action: str, propensity: float, ts: dt.datetime) -> DecisionRecord:
    """A record shaped as the API appends it (serving.service)."""
    return DecisionRecord(
        decision_id=decision_id, ts=ts, user_id=user, request_digest="d", versions={"policy": "clm-policy/1"},
        stage="at_risk", action=action, propensity=propensity, explored=False, expected_value=1.0, candidates=[],
        latency_ms=1.0, payload={"action": {"name": action, "intended_action": action, "control_group": False}},
        inputs={},
    )  # fmt: skip


@pytest.fixture
def data_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pd.DataFrame(
        {"user_id": ["a"], "ts": [pd.Timestamp("2026-01-01", tz="UTC")], "event_type": ["login"]}
    ).to_parquet(data / "events.parquet")
    pd.DataFrame({
        "user_id": ["b", "d"], "ts": pd.to_datetime(["2026-03-01 08:00", "2026-02-01 00:00"], utc=True),
        "action": ["retention_discount", "no_action"], "propensity": [None, 0.8],
    }).to_parquet(data / "campaigns.parquet")  # fmt: skip
    return data


def test_a_logged_decision_becomes_one_campaign_row(data_dir, tmp_path) -> None:
    log = DecisionLog(f"sqlite:///{tmp_path / 'decisions.db'}")
    for record in (
        _record("1", "a", "winback_offer", 0.9, DAY),
        _record("2", "a", "winback_offer", 0.9, DAY + dt.timedelta(hours=2)),  # the same request again
        _record("3", "b", "retention_discount", 0.95, DAY),  # the file holds this contact too
        _record("4", "c", "no_action", 0.05, DAY),  # a holdout, with its propensity
        _record("5", "a", "winback_offer", 0.9, DAY + dt.timedelta(days=40)),  # a later decision: its own row
    ):
        log.append(record)
    log.flush()
    logged = pd.DataFrame(log.read_decisions())
    log.close()
    before = pd.read_parquet(data_dir / "campaigns.parquet")
    with with_logged_decisions(data_dir, logged) as (view, counts):
        history = pd.read_parquet(view / "campaigns.parquet")
        assert (view / "events.parquet").resolve() == (data_dir / "events.parquet").resolve()
    rows = {(r.user_id, r.ts.date()): (r.action, r.propensity) for r in history.itertuples()}
    assert len(history) == len(rows) == 5  # a twice (40 days apart), b, c, d
    assert rows[("a", DAY.date())] == ("winback_offer", 0.9)
    assert rows[("b", DAY.date())] == ("retention_discount", 0.95)  # once, with the logged propensity
    assert rows[("c", DAY.date())] == ("no_action", 0.05)
    assert ("d", dt.date(2026, 2, 1)) in rows
    assert (counts.from_file, counts.from_log, counts.repeated, counts.duplicates, counts.rows) == (
        2,
        5,
        1,
        1,
        5,
    )
    assert pd.read_parquet(data_dir / "campaigns.parquet").equals(before)  # the data directory is untouched
