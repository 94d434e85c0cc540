"""Customer value: hand-computed annuities, margins, churn conversion and upgrade values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from clm.config import load_config, with_overrides
from models.value import (
    ValueParams,
    clv,
    monthly_churn,
    monthly_margin,
    survival_annuity,
    upgrade_value,
    value_inputs,
)

# No discounting and a 3-month horizon keep the sums short enough to write out by hand.
PARAMS = ValueParams(
    margin_share=0.5,
    discount_rate_annual=0.0,
    horizon_months=3,
    revenue_window_days=90,
    plan_prices={"free": 0.0, "basic": 10.0, "pro": 30.0},
    plan_order=("free", "basic", "pro"),
)


def test_annuity_without_discounting_is_the_sum_of_survival() -> None:
    # p = 0.5: 0.5 + 0.25 + 0.125; p = 0: one paying month per month of horizon; p = 1: nothing.
    assert survival_annuity([0.5, 0.0, 1.0], PARAMS) == pytest.approx([0.875, 3.0, 0.0])


def test_annuity_with_discounting_matches_a_hand_sum() -> None:
    params = ValueParams(0.7, 0.10, 2, 90, {"free": 0.0}, ("free",))
    monthly_rate = 1.10 ** (1 / 12) - 1
    assert params.monthly_discount_rate == pytest.approx(monthly_rate)
    assert monthly_rate == pytest.approx(0.0079741404)
    expected = 0.8 / (1 + monthly_rate) + 0.8**2 / (1 + monthly_rate) ** 2
    assert survival_annuity(np.array([0.2]), params) == pytest.approx([expected])


def test_monthly_margin_scales_window_revenue_to_30_days_and_ignores_missing_amounts() -> None:
    # 0.5 × (10 + 90 × 30 / 90); a missing MRR or revenue counts as zero.
    margin = monthly_margin([10.0, np.nan, 10.0], [90.0, 90.0, np.nan], PARAMS)
    assert margin == pytest.approx([20.0, 15.0, 5.0])


def test_clv_is_margin_times_annuity_and_zero_without_margin() -> None:
    assert clv([20.0, 0.0], [0.5, 0.5], PARAMS) == pytest.approx([17.5, 0.0])


@pytest.mark.parametrize(
    ("p_horizon", "horizon_days", "p_month"),
    [
        (0.75, 60, 0.5),  # 1 − 0.25^(30/60)
        (0.2, 30, 0.2),  # already a 30-day probability
        (0.19, 15, 1 - 0.81**2),  # two 15-day periods
        (1.2, 30, 1.0),  # clipped
        (-0.1, 30, 0.0),
    ],
)
def test_monthly_churn_converts_a_horizon_probability(
    p_horizon: float, horizon_days: int, p_month: float
) -> None:
    assert monthly_churn([p_horizon], horizon_days) == pytest.approx([p_month])


def test_monthly_churn_needs_a_positive_horizon() -> None:
    with pytest.raises(ValueError, match="horizon_days"):
        monthly_churn([0.1], 0)


@pytest.mark.parametrize(
    ("plan", "expected"),
    [
        ("free", 0.5 * 10.0 * 0.875),  # free → basic
        ("basic", 0.5 * 20.0 * 0.875),  # basic → pro
        ("pro", 0.0),  # nowhere to go
        ("enterprise", 0.5 * 10.0 * 0.875),  # unknown: treated as the lowest plan
        (None, 0.5 * 10.0 * 0.875),
        (np.nan, 0.5 * 10.0 * 0.875),
    ],
)
def test_upgrade_value_is_the_next_plans_extra_margin(plan: object, expected: float) -> None:
    assert upgrade_value(np.array([plan], dtype=object), [0.5], PARAMS) == pytest.approx([expected])


def test_from_config_reads_the_shipped_value_section() -> None:
    config = load_config()
    params = ValueParams.from_config(config.value, config.features)
    assert params.margin_share == 0.7 and params.horizon_months == 12 and params.revenue_window_days == 90
    assert params.plan_order == ("free", "basic", "pro")
    assert params.plan_prices == {"free": 0.0, "basic": 12.0, "pro": 39.0}
    assert params.currency == "USD"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"margin_share": 1.5}, "value.margin_share"),
        ({"margin_share": -0.1}, "value.margin_share"),
        ({"discount_rate_annual": -0.01}, "value.discount_rate_annual"),
        ({"horizon_months": 0}, "value.horizon_months"),
        ({"revenue_window_days": 0}, "value.revenue_window_days"),
        ({"plan_prices": {"pro": None}}, "pro"),
        ({"plan_prices": {"free": 0.0, "basic": 40.0, "pro": 39.0}}, "value.plan_prices.pro"),
        ({"margin_share": None}, "value.margin_share"),  # None: the key is removed
    ],
)
def test_from_config_rejects_bad_values_naming_the_key(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):  # the schema's ConfigError, or ValueParams' across plans
        config = with_overrides(load_config(), {"value": change})
        ValueParams.from_config(config.value, config.features)


def test_value_inputs_from_a_features_frame() -> None:
    frame = pd.DataFrame(
        {
            "mrr": [10.0, 0.0, np.nan],
            "revenue_sum_30d": [1.0, 1.0, 1.0],
            "revenue_sum_90d": [90.0, 0.0, 0.0],
            "current_plan": pd.Categorical(["basic", "pro", None], categories=["free", "basic", "pro"]),
        },
        index=["u1", "u2", "u3"],
    )
    out = value_inputs(frame, np.array([0.5, 0.0, 0.75]), 30, PARAMS)
    assert list(out.columns) == [
        "margin_month", "p_churn_month", "clv", "margin_if_retained", "retained_churn_month", "value_if_retained",
        "upgrade_value",
    ]  # fmt: skip
    assert list(out.index) == ["u1", "u2", "u3"]
    assert out["margin_month"].tolist() == pytest.approx([20.0, 0.0, 0.0])
    assert out["p_churn_month"].tolist() == pytest.approx([0.5, 0.0, 0.75])
    assert out["clv"].tolist() == pytest.approx([17.5, 0.0, 0.0])
    # an upgrade is valued at the retained users' survival (0.95 a month by default), not the user's own
    retained = 0.95 + 0.95**2 + 0.95**3
    assert out["upgrade_value"].tolist() == pytest.approx([0.5 * 20.0 * retained, 0.0, 0.5 * 10.0 * retained])


def test_value_inputs_converts_the_churn_horizon() -> None:
    frame = pd.DataFrame({"mrr": [10.0], "revenue_sum_90d": [0.0], "current_plan": ["pro"]})
    out = value_inputs(frame, np.array([0.75]), 60, PARAMS)
    assert out["p_churn_month"].iloc[0] == pytest.approx(0.5)
    assert out["clv"].iloc[0] == pytest.approx(5.0 * 0.875)


def test_value_inputs_names_a_missing_revenue_window() -> None:
    frame = pd.DataFrame(
        {"mrr": [1.0], "revenue_sum_7d": [0.0], "revenue_sum_30d": [0.0], "current_plan": ["free"]}
    )
    with pytest.raises(ValueError, match=r"revenue_sum_90d.*\['revenue_sum_30d', 'revenue_sum_7d'\]"):
        value_inputs(frame, np.array([0.1]), 30, PARAMS)


def test_value_inputs_needs_one_probability_per_row() -> None:
    frame = pd.DataFrame({"mrr": [1.0, 2.0], "revenue_sum_90d": [0.0, 0.0], "current_plan": ["free", "pro"]})
    with pytest.raises(ValueError, match="one probability per row"):
        value_inputs(frame, np.array([0.1]), 30, PARAMS)


def test_annuity_of_the_shipped_config_is_below_the_horizon() -> None:
    config = load_config()
    params = ValueParams.from_config(config.value, config.features)
    annuity = survival_annuity([0.0], params)[0]
    undiscounted = sum(1 / (1 + params.monthly_discount_rate) ** t for t in range(1, 13))
    assert annuity == pytest.approx(undiscounted) and annuity < 12


# ---------------------------------------------------------------------------------------------------------
# Value at stake: what a user is worth if retained or won back, apart from how likely that is.

DEFAULT_PARAMS = ValueParams.from_config(load_config().value, load_config().features)


def _lapsed_users() -> pd.DataFrame:
    """u_payer paid 39 a month for a year and cancelled; u_free never paid; both silent for 60 days."""
    return pd.DataFrame(
        {
            "mrr": [0.0, 0.0],
            "last_mrr": [39.0, 0.0],
            "revenue_sum_90d": [0.0, 0.0],
            "revenue_sum_total": [0.0, 0.0],
            "tenure_days": [425.0, 425.0],
            "current_plan": ["free", "free"],
        },
        index=["u_payer", "u_free"],
    )


def test_a_lapsed_payer_is_worth_the_plan_margin_over_the_horizon_and_a_never_payer_nothing() -> None:
    out = value_inputs(_lapsed_users(), np.array([0.99, 0.99]), 30, DEFAULT_PARAMS)
    plan_margin = DEFAULT_PARAMS.margin_share * 39.0
    horizon = DEFAULT_PARAMS.horizon_months
    payer, free = out.loc["u_payer"], out.loc["u_free"]
    assert payer["margin_if_retained"] == pytest.approx(plan_margin)
    # of the order of the plan's margin over the horizon: more than half of the undiscounted, no more than all
    assert 0.5 * plan_margin * horizon < payer["value_if_retained"] <= plan_margin * horizon
    assert free["value_if_retained"] == pytest.approx(0.0, abs=1e-9)
    # the old CLV collapses for the same user: what the value at stake is for
    assert payer["clv"] == pytest.approx(0.0, abs=1e-9)


def test_value_if_retained_is_not_shrunk_by_the_users_own_churn_probability() -> None:
    frame = _lapsed_users()
    low = value_inputs(frame, np.array([0.01, 0.01]), 30, DEFAULT_PARAMS)["value_if_retained"]
    high = value_inputs(frame, np.array([0.99, 0.99]), 30, DEFAULT_PARAMS)["value_if_retained"]
    assert low.tolist() == high.tolist()


def test_similar_users_churn_sets_the_retained_survival_per_plan() -> None:
    params = ValueParams(**{**PARAMS.__dict__, "retained_churn_by_plan": {"pro": 0.5}})
    frame = pd.DataFrame(
        {
            "mrr": [0.0, 10.0],
            "last_mrr": [30.0, 10.0],
            "revenue_sum_90d": [0.0, 0.0],
            "current_plan": ["free", "basic"],
        }
    )
    out = value_inputs(frame, np.array([0.9, 0.9]), 30, params)
    # the cancelled user comes back on the plan priced nearest their last MRR (pro): its learned churn applies
    assert out["retained_churn_month"].tolist() == pytest.approx([0.5, 0.05])
    assert out["value_if_retained"].iloc[0] == pytest.approx(0.5 * 30.0 * (0.5 + 0.25 + 0.125))


def test_retained_churn_of_the_users_stage_comes_before_the_plans() -> None:
    params = ValueParams(
        **{**PARAMS.__dict__, "retained_churn_by_plan": {"basic": 0.2},
           "retained_churn_by_stage": {"mature": {"basic": 0.1}, "at_risk": {"free": 0.4}}}
    )  # fmt: skip
    frame = pd.DataFrame(
        {"mrr": [10.0] * 4, "last_mrr": [10.0] * 4, "revenue_sum_90d": [0.0] * 4, "current_plan": ["basic"] * 4}
    )  # fmt: skip
    stage = np.array(["mature", "at_risk", None, "growing"], dtype=object)
    out = value_inputs(frame, np.full(4, 0.5), 30, params, stage)
    # mature basic has its own rate; at_risk has none for basic, no stage and growing fall back to the plan's
    assert out["retained_churn_month"].tolist() == pytest.approx([0.1, 0.2, 0.2, 0.2])
    assert out["value_if_retained"].iloc[0] == pytest.approx(0.5 * 10.0 * (0.9 + 0.81 + 0.729))
    assert out["upgrade_value"].iloc[0] == pytest.approx(0.5 * 20.0 * (0.9 + 0.81 + 0.729))
    # without stages (an older caller) every user gets the plan's rate
    assert value_inputs(frame, np.full(4, 0.5), 30, params)["retained_churn_month"].tolist() == pytest.approx(
        [0.2] * 4
    )
