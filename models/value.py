"""Customer value as a discounted cash flow (DESIGN.md §1).

Value at stake — what the decision uses — keeps what a user is worth *if retained or won back* apart from
how likely that is:

    value_if_retained = margin_if_retained × Σ_{t=1..H} (1 − q)^t / (1 + r)^t
    margin_if_retained = margin_share × (max(MRR, latest subscription's MRR)
                                         + max(window purchases, lifetime purchases) per 30 days)
    upgrade_value = margin_share × (next plan's price − current price) × the same annuity

with q the monthly churn of *retained users in the same stage on the same plan* (similar users: learned
by the policy job from the holdouts' churn labels; the plan's rate where a stage has too few, and
`value.retained_churn_month` when the data give none), not the user's own current
churn probability — that probability enters the decision through the models' deltas, never twice. An
action's expected value is Δp(stay or return) × value_if_retained + Δp(upgrade) × upgrade_value − cost.

`clv` (margin now × the user's own survival annuity, S(t) = (1 − p)^t) is still reported as the expected
value of the user as they are; it is no term of an action's value."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from features.config import FeaturesSection
from models.config import ValueSection
from models.frame import Columns, numeric_column, object_column

DAYS_PER_MONTH = 30


@dataclass(frozen=True)
class ValueParams:
    """The config's `[value]` table plus the plan order from `[features]`."""

    margin_share: float
    discount_rate_annual: float
    horizon_months: int
    revenue_window_days: int
    plan_prices: dict[str, float]
    plan_order: tuple[str, ...]
    currency: str = "USD"
    # Monthly churn of a retained user when no plan rate was learned ("similar users" fallback).
    retained_churn_month: float = 0.05
    # Plan → monthly churn of alive users on that plan, from the churn labels (the policy job).
    retained_churn_by_plan: dict[str, float] = field(default_factory=dict)
    # Stage → plan → monthly churn of alive users in that stage on that plan (the policy job); preferred
    # over the plan's rate when the decision knows the user's stage.
    retained_churn_by_stage: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, value_section: ValueSection, features_section: FeaturesSection) -> ValueParams:
        """The config's `[value]` table and `[features].plan_order`, checked across plans."""
        params = cls(
            margin_share=value_section.margin_share,
            discount_rate_annual=value_section.discount_rate_annual,
            horizon_months=value_section.horizon_months,
            revenue_window_days=value_section.revenue_window_days,
            plan_prices=dict(value_section.plan_prices),
            plan_order=tuple(features_section.plan_order),
            currency=value_section.currency,
            retained_churn_month=value_section.retained_churn_month,
        )
        params.validate()
        return params

    def validate(self) -> None:
        if not 0.0 <= self.margin_share <= 1.0:
            raise ValueError(f"value.margin_share must be in [0, 1], got {self.margin_share}")
        if not self.discount_rate_annual >= 0.0:
            raise ValueError(f"value.discount_rate_annual must be ≥ 0, got {self.discount_rate_annual}")
        if self.horizon_months < 1:
            raise ValueError(f"value.horizon_months must be ≥ 1, got {self.horizon_months}")
        if not 0.0 <= self.retained_churn_month < 1.0:
            raise ValueError(f"value.retained_churn_month must be in [0, 1), got {self.retained_churn_month}")
        if self.revenue_window_days < 1:
            raise ValueError(f"value.revenue_window_days must be ≥ 1, got {self.revenue_window_days}")
        if not self.plan_order:
            raise ValueError("features.plan_order must list at least one plan")
        missing = [plan for plan in self.plan_order if plan not in self.plan_prices]
        if missing:
            raise ValueError(
                f"value.plan_prices has no price for plan(s) {missing} listed in features.plan_order"
            )
        # An upgrade (a move to the right in plan_order) must never be worth a negative amount.
        for lower, higher in zip(self.plan_order, self.plan_order[1:], strict=False):
            if self.plan_prices[higher] < self.plan_prices[lower]:
                raise ValueError(
                    f"value.plan_prices.{higher} ({self.plan_prices[higher]}) is below value.plan_prices.{lower} "
                    f"({self.plan_prices[lower]}); prices must not decrease along features.plan_order"
                )

    @property
    def monthly_discount_rate(self) -> float:
        """The monthly rate equivalent to the annual one: (1 + annual)^(1/12) − 1."""
        return (1.0 + self.discount_rate_annual) ** (1.0 / 12.0) - 1.0

    @property
    def revenue_column(self) -> str:
        """The feature holding purchase revenue over the configured window."""
        return f"revenue_sum_{self.revenue_window_days}d"


def monthly_margin(mrr: Any, revenue_in_window: Any, params: ValueParams) -> np.ndarray:
    """margin_share × (MRR + window revenue scaled to 30 days); missing amounts count as zero."""
    recurring = np.nan_to_num(np.asarray(mrr, dtype="float64"), nan=0.0)
    purchases = np.nan_to_num(np.asarray(revenue_in_window, dtype="float64"), nan=0.0)
    return params.margin_share * (recurring + purchases * DAYS_PER_MONTH / params.revenue_window_days)


def monthly_churn(p_churn: Any, horizon_days: int) -> np.ndarray:
    """A churn probability over `horizon_days` as a 30-day one, assuming a constant hazard."""
    if horizon_days <= 0:
        raise ValueError(f"horizon_days must be positive, got {horizon_days}")
    probability = np.clip(np.asarray(p_churn, dtype="float64"), 0.0, 1.0)
    return np.clip(1.0 - (1.0 - probability) ** (DAYS_PER_MONTH / horizon_days), 0.0, 1.0)


def survival_annuity(p_churn_month: Any, params: ValueParams) -> np.ndarray:
    """Σ_{t=1..H} (1 − p)^t / (1 + r)^t: the discounted expected number of paying months ahead."""
    ratio = (1.0 - np.clip(np.asarray(p_churn_month, dtype="float64"), 0.0, 1.0)) / (
        1.0 + params.monthly_discount_rate
    )
    # A short loop over the horizon is exact where the closed form q(1 − q^H)/(1 − q) loses digits at q ≈ 1.
    total = np.zeros_like(ratio)
    term = np.ones_like(ratio)
    for _ in range(params.horizon_months):
        term = term * ratio
        total = total + term
    return total


def clv(margin_month: Any, p_churn_month: Any, params: ValueParams) -> np.ndarray:
    """Discounted value of the expected future margin: margin × survival annuity."""
    return np.asarray(margin_month, dtype="float64") * survival_annuity(p_churn_month, params)


def plan_rank(current_plan: Any, plan_order: Sequence[str]) -> np.ndarray:
    """Position of each plan in `plan_order`; unknown or missing plans rank lowest (0)."""
    ranks = {plan: i for i, plan in enumerate(plan_order)}
    plans = np.asarray(current_plan, dtype=object).ravel()
    if len(plans) <= 64:  # the request path: a dict lookup beats building a Series
        return np.array([ranks.get(p, 0) if isinstance(p, str) else 0 for p in plans], dtype="int64")
    return pd.Series(plans).map(ranks).fillna(0).to_numpy(dtype="int64")


def upgrade_value(current_plan: Any, p_churn_month: Any, params: ValueParams) -> np.ndarray:
    """margin_share × (next plan's price − current price) × survival annuity at `p_churn_month` (the
    decision passes the retained users' churn); zero on the top plan."""
    prices = np.array([params.plan_prices[plan] for plan in params.plan_order], dtype="float64")
    next_prices = np.append(prices[1:], prices[-1])  # the top plan has nowhere to go
    rank = plan_rank(current_plan, params.plan_order)
    step = next_prices[rank] - prices[rank]
    return params.margin_share * step * survival_annuity(p_churn_month, params)


LIFETIME_REVENUE_COLUMN = "revenue_sum_total"


def margin_if_retained(columns: Columns, n: int, params: ValueParams) -> np.ndarray:
    """margin_share × (the larger of the current and the latest subscription's MRR + the larger of the
    window's and the lifetime's purchase revenue per 30 days): what the user paid while they were paying,
    so a cancelled subscriber keeps the value of the plan they left."""
    current = np.nan_to_num(numeric_column(columns, "mrr", n), nan=0.0)
    latest = np.nan_to_num(numeric_column(columns, "last_mrr", n), nan=0.0)
    window = np.nan_to_num(numeric_column(columns, params.revenue_column, n), nan=0.0)
    lifetime = np.nan_to_num(numeric_column(columns, LIFETIME_REVENUE_COLUMN, n), nan=0.0)
    tenure = np.nan_to_num(numeric_column(columns, "tenure_days", n), nan=0.0)
    per_month = np.maximum(
        window * DAYS_PER_MONTH / params.revenue_window_days,
        lifetime * DAYS_PER_MONTH / np.maximum(tenure, 30.0),
    )
    return params.margin_share * (np.maximum(current, latest) + per_month)


def retained_plan(columns: Columns, n: int, params: ValueParams) -> np.ndarray:
    """The plan a retained user pays for: the current one while a subscription pays, else the plan priced
    nearest the latest subscription's MRR (a cancelled `pro` user comes back as `pro`), else the current."""
    plans = object_column(columns, "current_plan", n)
    current = np.nan_to_num(numeric_column(columns, "mrr", n), nan=0.0)
    latest = np.nan_to_num(numeric_column(columns, "last_mrr", n), nan=0.0)
    names = np.array(params.plan_order, dtype=object)
    prices = np.array([params.plan_prices[p] for p in params.plan_order], dtype="float64")
    nearest = names[np.argmin(np.abs(latest[:, None] - prices[None, :]), axis=1)] if n else names[:0]
    lapsed_payer = (current <= 0) & (latest > 0)
    return np.where(lapsed_payer, nearest, plans)


def retained_churn_month(plans: Any, params: ValueParams, stages: Any = None) -> np.ndarray:
    """The monthly churn of retained users in each user's stage on their plan (similar users), else on the
    plan, else the configured rate."""
    plans = pd.Series(np.asarray(plans, dtype=object).ravel(), dtype=object)
    out = plans.map(params.retained_churn_by_plan).astype("float64").fillna(params.retained_churn_month)
    if stages is not None and params.retained_churn_by_stage:
        stages = np.asarray(stages, dtype=object).ravel()
        for stage, table in params.retained_churn_by_stage.items():
            members = stages == stage
            if members.any():
                out[members] = plans[members].map(table).astype("float64").fillna(out[members])
    return out.to_numpy(dtype="float64")


def value_arrays(
    columns: Columns, p_churn: Any, horizon_days: int, params: ValueParams, stage: Any = None
) -> dict[str, np.ndarray]:
    """Per row of the features (a frame, or a mapping of columns on the request path), given the calibrated
    churn probability over `horizon_days` (and, when known, each user's `stage`): margin now, 30-day churn
    and CLV (the user as they are), and the value at stake — margin and churn if retained, value if
    retained, upgrade value."""
    revenue = params.revenue_column
    if revenue not in columns:
        available = sorted(str(c) for c in columns if str(c).startswith("revenue_sum_"))
        raise ValueError(
            f"value needs the feature {revenue!r} (value.revenue_window_days = {params.revenue_window_days}); "
            f"the frame has revenue columns {available}"
        )
    missing = [column for column in ("mrr", "current_plan") if column not in columns]
    if missing:
        raise ValueError(f"value needs the feature(s) {missing}, absent from the frame")
    n = len(columns[revenue])
    p_month = monthly_churn(p_churn, horizon_days)
    if p_month.shape != (n,):
        raise ValueError(f"p_churn has shape {np.shape(p_churn)}, expected one probability per row ({n})")
    margin = monthly_margin(numeric_column(columns, "mrr", n), numeric_column(columns, revenue, n), params)
    retained_margin = margin_if_retained(columns, n, params)
    retained_churn = retained_churn_month(retained_plan(columns, n, params), params, stage)
    return {
        "margin_month": margin,
        "p_churn_month": p_month,
        "clv": clv(margin, p_month, params),
        "margin_if_retained": retained_margin,
        "retained_churn_month": retained_churn,
        "value_if_retained": clv(retained_margin, retained_churn, params),
        "upgrade_value": upgrade_value(object_column(columns, "current_plan", n), retained_churn, params),
    }


def value_inputs(
    frame: pd.DataFrame, p_churn: Any, horizon_days: int, params: ValueParams, stage: Any = None
) -> pd.DataFrame:
    """`value_arrays` as a frame on the features frame's index."""
    return pd.DataFrame(value_arrays(frame, p_churn, horizon_days, params, stage), index=frame.index)
