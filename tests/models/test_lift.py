"""Measured lift (models/lift.py): the intervals by hand and against a simulated world with known effects,
the comparisons it makes, and logged decisions with their outcomes as decision rows."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from clm.config import load_config
from models.lift import LiftParams, decision_rows, lift_table, mean_difference, rate_difference
from training.lift import interval_coverage

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def test_newcombe_interval_matches_his_worked_example() -> None:
    """Newcombe (1998), Statistics in Medicine 17:873, table II, example (a): 56/70 against 48/80 gives
    0.2000 with the hybrid score interval 0.0524 to 0.3339."""
    treated = np.r_[np.ones(56), np.zeros(14)]
    control = np.r_[np.ones(48), np.zeros(32)]
    p1, p2, difference, low, high = rate_difference(treated, control)
    assert (p1, p2) == pytest.approx((0.8, 0.6))
    assert (difference, low, high) == pytest.approx((0.2, 0.0524, 0.3339), abs=5e-4)


def test_mean_difference_is_welch() -> None:
    treated, control = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 2.0, np.nan])
    m1, m2, difference, low, high = mean_difference(treated, control)
    se = np.sqrt(np.var([1, 2, 3, 4], ddof=1) / 4 + np.var([0, 2], ddof=1) / 2)
    assert (m1, m2, difference) == pytest.approx((2.5, 1.0, 1.5))
    assert (low, high) == pytest.approx((1.5 - 1.959964 * se, 1.5 + 1.959964 * se), rel=1e-6)


def _rows() -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": list("abcdef"), "stage": ["at_risk"] * 4 + ["mature"] * 2,
        "action": ["discount", "no_action", "discount", "no_action", "no_action", "survey"],
        "intended_action": ["discount", "discount", "discount", "discount", "no_action", "survey"],
        "control_group": [False, True, False, False, True, False],
        "holdout": [None, "control_group", None, "exploration", "control_group", None],
        "cost": [1.0, 0.0, 1.0, 0.0, 0.0, 0.5],
        "churned": [0.0, 1.0, 1.0, 1.0, 0.0, 0.0], "upgraded": [0.0] * 6, "returned": [np.nan] * 6,
        "margin": [10.0, 0.0, 4.0, 2.0, 6.0, 3.0],
    })  # fmt: skip


def test_the_comparisons_each_action_against_its_holdouts_and_the_policy_against_the_control_group() -> None:
    table = lift_table(_rows(), LiftParams(min_users=2)).set_index(["scope", "action", "stage"])
    discount = table.loc[("action", "discount", "at_risk")]
    # treated: a, c (received discount); control: b (control group) and d (exploration holdout)
    assert (discount["n_treated"], discount["n_control"]) == (2, 2) and discount["enough"]
    assert (discount["churn_treated"], discount["churn_control"], discount["churn_lift"]) == (0.5, 1.0, -0.5)
    assert discount["margin_incremental"] == pytest.approx((9.0 + 3.0) / 2 - (0.0 + 2.0) / 2)
    whole = table.loc[("policy", "policy", "all")]  # everyone but the control group (b, e) against it
    assert (whole["n_treated"], whole["n_control"]) == (4, 2)
    assert whole["churn_lift"] == pytest.approx(2 / 4 - 1 / 2)
    survey = table.loc[("action", "survey", "mature")]
    assert (survey["n_control"], survey["enough"]) == (0, False) and np.isnan(survey["churn_lift"])


def test_logged_decisions_become_one_row_per_user_once_the_horizon_closed() -> None:
    ts = pd.to_datetime(["2026-01-01", "2026-01-05", "2026-02-20", "2026-01-02"], utc=True)
    decisions = pd.DataFrame({
        "decision_id": ["d1", "d2", "d3", "d4"], "ts": ts, "user_id": ["a", "a", "b", "c"],
        "stage": ["at_risk"] * 4, "action": ["discount", "discount", "no_action", "no_action"],
        "intended_action": ["discount"] * 4, "control_group": [False, False, True, True],
        "holdout": [None, None, "control_group", "control_group"], "cost": [1.0, 1.0, 0.0, 0.0],
    })  # fmt: skip
    outcomes = pd.DataFrame({"decision_id": ["d1", "d1", "d2", "d4"], "outcome": ["upgraded", "churned", "churned", "x"],
                             "value": [12.0, None, None, 3.0]})  # fmt: skip
    rows = decision_rows(decisions, outcomes, as_of=pd.Timestamp("2026-02-15", tz="UTC"), horizon_days=30,
                         outcome_names={"churn": ["churned"], "upgrade": ["upgraded"]})  # fmt: skip
    # a: the first decision only; b: its horizon has not closed; c: no churn recorded, so it stayed
    assert rows["decision_id"].tolist() == ["d1", "d4"]
    assert rows["churned"].tolist() == [1.0, 0.0] and rows["upgraded"].tolist() == [1.0, 0.0]
    assert rows["returned"].tolist() == [0.0, 0.0] and rows["margin"].tolist() == [12.0, 3.0]


def test_intervals_cover_the_true_effects_on_a_simulated_world(small_world) -> None:
    """A campaign decided by the one decision path (the catalogue's priors, the true probabilities as
    scores, a 30 % control group and 20 % exploration so that cells fill), outcomes drawn from the
    simulator's true probabilities plus the true effect of what each user received; over three salts,
    at least 90 % of the action × stage intervals with 30 users a side hold the true average effect."""
    results = interval_coverage(small_world, dt.date(2025, 9, 1), load_config(), salts=(0, 1, 2))
    covered, cells = (sum(r[i] for r in results) for i in (0, 1))
    assert cells >= 15, cells  # enough cells for the share to mean something
    assert covered / cells >= 0.9, (covered, cells)
