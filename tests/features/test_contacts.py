"""The contact-state table (features.contacts) on a hand-made campaign history: days since each action, the
per-action counts at the edges of their windows, negative outcomes once their window has closed (and not
before), point in time (nothing on or after the cutoff), a contact held twice counted once; and the batch
decision that reads it: a cooldown on A holds after B was sent later, and an action pauses after N negative
outcomes (not at N − 1)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clm.config import load_config, with_overrides
from features.contacts import ContactParams, contacts_column, days_since_column, negative_outcomes_column
from features.jobs import contact_states, latest_features
from features.registry import FeatureParams
from models.arbitration import CONTACT_CAP, COOLDOWN, ELIGIBLE, SUPPRESSED
from models.catalog import contact_params
from models.decision import prior_policy
from models.policy import decide

CUTOFF = dt.date(2026, 6, 1)
PARAMS = ContactParams(actions=(("discount", "retention"), ("survey", "retention"), ("upsell", "upgrade")))


def day(offset: int, hour: int = 9) -> pd.Timestamp:
    """`offset` days after the cutoff (negative: before), at `hour` UTC."""
    return pd.Timestamp(CUTOFF, tz="UTC") + pd.Timedelta(days=offset, hours=hour)


def write(directory: Path, events: list[tuple], campaigns: list[tuple]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({
        "user_id": [e[0] for e in events], "ts": [e[1] for e in events], "event_type": [e[2] for e in events],
        "amount": [float(e[3]) if len(e) > 3 else np.nan for e in events], "properties": ["{}"] * len(events),
    }).to_parquet(directory / "events.parquet")  # fmt: skip
    pd.DataFrame({
        "user_id": [c[0] for c in campaigns], "ts": [c[1] for c in campaigns], "action": [c[2] for c in campaigns],
        "propensity": [1.0] * len(campaigns),
    }).to_parquet(directory / "campaigns.parquet")  # fmt: skip
    return directory


@pytest.fixture
def history(tmp_path: Path) -> Path:
    events = [
        ("a", day(-200), "login"), ("a", day(-1), "login"),  # silent between: every retention contact churned
        ("b", day(-200), "login"), ("b", day(-85), "upgrade"), ("b", day(-1), "login"),
        ("c", day(-200), "login"), ("c", day(-40), "purchase", 150.0), ("c", day(-1), "login"),
        ("a", day(3), "login"),  # after the cutoff: never read
    ]  # fmt: skip
    campaigns = [
        # a: the discount 30 days before the cutoff (the first day of the 30-day window) and 31 days before
        # (just outside it), the survey 90 days before (the 90-day window's first day), 91 (outside)
        ("a", day(-30), "discount"), ("a", day(-31), "discount"), ("a", day(-90), "survey"), ("a", day(-91), "survey"),
        ("a", day(-31, 15), "discount"),  # the same contact again that day (the file and the log): once
        ("a", day(-5), "no_action"),  # a holdout is no contact
        ("a", day(0), "survey"), ("a", day(2), "discount"),  # on and after the cutoff's day: not known yet
        # b: upsell 100 days before, upgraded 15 days later (a success); again 40 days before, no upgrade
        # (the window closed 10 days before the cutoff: a negative); again 10 days before (window still open)
        ("b", day(-100), "upsell"), ("b", day(-40), "upsell"), ("b", day(-10), "upsell"),
        # c: upsell 45 days before, a purchase above the spend threshold 5 days later: an upgrade
        ("c", day(-45), "upsell"), ("c", day(-60), "gift"),  # an action outside the catalogue: no column
    ]  # fmt: skip
    return write(tmp_path / "data", events, campaigns)


def test_contact_state_values_on_a_hand_made_history(history: Path) -> None:
    state = contact_states(history, [CUTOFF], PARAMS).set_index("user_id")
    assert sorted(state.index) == ["a", "b", "c"]
    assert list(state.columns) == ["cutoff", *PARAMS.columns()]
    a, b, c = state.loc["a"], state.loc["b"], state.loc["c"]
    # days since each action's last contact before the cutoff (the contacts on and after its day unseen)
    assert a[days_since_column("discount")] == 30 and a[days_since_column("survey")] == 90
    assert np.isnan(a[days_since_column("upsell")]) and np.isnan(c[days_since_column("discount")])
    # windows: cutoff − W ≤ day < cutoff; the day-31 discount twice the same day is one contact
    assert a[contacts_column("discount", 30)] == 1 and a[contacts_column("discount", 90)] == 2
    assert a[contacts_column("survey", 30)] == 0 and a[contacts_column("survey", 90)] == 1
    # retention: no activity in the 30 days after a contact whose window has closed. The discount at −31
    # (window −31…−2) churned; the one at −30 closes on the cutoff's day but a logged in at −1, inside it; both
    # surveys' windows passed in silence
    assert a[negative_outcomes_column("discount")] == 1 and a[negative_outcomes_column("survey")] == 2
    # upgrade: −100 upgraded (no negative), −40 did not (negative), −10 still open (not counted yet)
    assert (
        b[negative_outcomes_column("upsell")] == 1 and b[contacts_column("upsell", 90)] == 2
    )  # −100: outside 90
    assert b[days_since_column("upsell")] == 10
    assert c[negative_outcomes_column("upsell")] == 0  # a purchase above the threshold is an upgrade
    assert "days_since_gift" not in state.columns


def test_nothing_on_or_after_the_cutoff_is_read(history: Path) -> None:
    earlier = dt.date(2026, 4, 1)  # 61 days before CUTOFF
    state = contact_states(history, [earlier, CUTOFF], PARAMS)
    early = state[pd.to_datetime(state["cutoff"]).dt.date == earlier].set_index("user_id")
    # a's surveys at −91 and −90 are 30 and 29 days before `earlier`: the first one's window closes on that
    # day (counted), the second's is still open (not yet)
    assert early.loc["a", days_since_column("survey")] == 29
    assert early.loc["a", negative_outcomes_column("survey")] == 1
    assert np.isnan(early.loc["a", days_since_column("discount")])  # sent after `earlier`
    assert (
        early.loc["b", contacts_column("upsell", 90)] == 1
        and early.loc["b", negative_outcomes_column("upsell")] == 0
    )
    assert "c" not in early.index  # c's contacts all come later
    # the same history cut at `earlier` by --as-of gives the same row
    cut = contact_states(history, [earlier], PARAMS, as_of=earlier).set_index("user_id")
    assert cut.loc["a", days_since_column("survey")] == 29 and "c" not in cut.index


def test_the_feature_job_joins_the_state_and_fills_users_never_contacted(
    history: Path, tmp_path: Path
) -> None:
    frame, as_of = latest_features(history, as_of=CUTOFF, contacts=PARAMS)
    assert as_of == CUTOFF
    rows = frame.set_index("user_id")
    assert rows.loc["a", days_since_column("discount")] == 30
    plain, _ = latest_features(history, as_of=CUTOFF)
    assert list(frame.columns) == [*plain.columns, *PARAMS.columns()]  # beside the features, not in them
    no_campaigns = write(tmp_path / "quiet", [("d", day(-50), "login"), ("d", day(-1), "login")], [])
    (no_campaigns / "campaigns.parquet").unlink()
    quiet, _ = latest_features(no_campaigns, as_of=CUTOFF, contacts=PARAMS)
    assert quiet.loc[0, contacts_column("discount", 90)] == 0 and np.isnan(
        quiet.loc[0, days_since_column("discount")]
    )
    with pytest.raises(ValueError, match="clash"):
        latest_features(history, as_of=CUTOFF, contacts=ContactParams(actions=(("last_event", "retention"),)))


def test_the_windows_and_the_outcome_window_come_from_the_config() -> None:
    config = with_overrides(
        load_config(), {"policy": {"contact_windows_days": [7, 120], "negative_outcome_days": 14}}
    )
    params = contact_params(config)
    assert params.windows_days == (7, 30, 120)  # the 30 days of max_contacts_per_30d always counted
    assert params.outcome_days == 14
    assert ("upgrade_offer", "upgrade") in params.actions and ("winback_offer", "retention") in params.actions


# ---------------------------------------------------------------------------------------------------------
# The batch decision over the joined frame: at-risk users (an active history, churn probability 0.5), whose
# stage offers retention_discount and satisfaction_survey (both with a 60-day cooldown).

ACTIVE = [
    -200,
    -150,
    -120,
    -65,
    -50,
    -40,
    -20,
    -5,
    -1,
]  # active through the 30–90 days before: not reactivated


def at_risk_world(tmp_path: Path, campaigns: list[tuple], events: list[tuple] = ()) -> Path:
    users = sorted({c[0] for c in campaigns} | {e[0] for e in events})
    base = [(u, day(d), "login") for u in users for d in ACTIVE if not any(e[0] == u for e in events)]
    return write(tmp_path / "world", [*base, *events], campaigns)


def statuses(data: Path, config, *, contacts: bool = True) -> dict[str, dict[str, str]]:
    policy = prior_policy(config)
    params = contact_params(config, policy.catalog, policy.contact) if contacts else None
    frame, _ = latest_features(data, params=FeatureParams.from_config(config.features), as_of=CUTOFF,
                               contacts=params)  # fmt: skip
    n = len(frame)
    decisions = decide(frame, np.full(n, 0.5), np.full(n, 0.01), policy)
    assert set(decisions.stages.stage) == {"at_risk"}
    arb = decisions.arbitration
    return {
        str(user): {a: str(arb.status[i, k]) for k, a in enumerate(arb.actions)}
        for i, user in enumerate(frame["user_id"])
    }


def test_a_cooldown_on_a_is_enforced_when_b_was_sent_later_in_batch(tmp_path: Path) -> None:
    config = with_overrides(load_config(), {"policy": {"max_contacts_per_30d": 5}})
    data = at_risk_world(
        tmp_path, [("u", day(-20), "retention_discount"), ("u", day(-5), "satisfaction_survey")]
    )
    exact = statuses(data, config)["u"]
    assert exact["retention_discount"] == COOLDOWN and exact["satisfaction_survey"] == COOLDOWN
    last_only = statuses(data, config, contacts=False)["u"]  # without the table only the last action is seen
    assert last_only["retention_discount"] == ELIGIBLE and last_only["satisfaction_survey"] == COOLDOWN
    # each action's own cap reads its own window's count
    capped = with_overrides(config, {"actions": {"satisfaction_survey": {"cooldown_days": 1, "max_contacts": 1,
                                                                          "max_contacts_window_days": 90}}})  # fmt: skip
    assert statuses(data, capped)["u"]["satisfaction_survey"] == CONTACT_CAP


def test_an_action_is_suppressed_after_n_negative_outcomes_and_not_at_n_minus_1(tmp_path: Path) -> None:
    config = load_config()  # negative_outcomes_retention = 2
    assert config.policy.negative_outcomes_retention == 2
    silent = [-160, -100]  # retention discounts, each followed by 30 days without activity: churned after it
    events = [(u, day(d), "login") for u in ("two", "one") for d in (-200, -170, -65, -50, -40, -20, -5, -1)]
    data = at_risk_world(tmp_path, [("two", day(d), "retention_discount") for d in silent]
                         + [("one", day(-100), "retention_discount")], events)  # fmt: skip
    found = statuses(data, config)
    assert found["two"]["retention_discount"] == SUPPRESSED
    assert found["one"]["retention_discount"] == ELIGIBLE  # N − 1 negative outcomes: still offered
    assert found["two"]["satisfaction_survey"] == ELIGIBLE  # the pause is per action
    off = with_overrides(config, {"policy": {"negative_outcomes_retention": 0}})
    assert statuses(data, off)["two"]["retention_discount"] == ELIGIBLE
