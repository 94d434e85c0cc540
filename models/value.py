"""Customer value as a discounted cash flow (DESIGN.md §1): CLV = Σ_{t=1..H} margin · S(t) / (1+r)^t with
monthly steps and S(t) = (1 − p)^t, p the calibrated churn probability converted to 30 days. An upgrade is
worth the margin on the next plan's extra price over the same survival-discounted horizon."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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
    """margin_share × (next plan's price − current price) × survival annuity; zero on the top plan."""
    prices = np.array([params.plan_prices[plan] for plan in params.plan_order], dtype="float64")
    next_prices = np.append(prices[1:], prices[-1])  # the top plan has nowhere to go
    rank = plan_rank(current_plan, params.plan_order)
    step = next_prices[rank] - prices[rank]
    return params.margin_share * step * survival_annuity(p_churn_month, params)


def value_arrays(
    columns: Columns, p_churn: Any, horizon_days: int, params: ValueParams
) -> dict[str, np.ndarray]:
    """Margin, 30-day churn, CLV and upgrade value per row of the features (a frame, or a mapping of
    columns on the request path), given the calibrated churn probability over `horizon_days`."""
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
    return {
        "margin_month": margin,
        "p_churn_month": p_month,
        "clv": clv(margin, p_month, params),
        "upgrade_value": upgrade_value(object_column(columns, "current_plan", n), p_month, params),
    }


def value_inputs(frame: pd.DataFrame, p_churn: Any, horizon_days: int, params: ValueParams) -> pd.DataFrame:
    """`value_arrays` as a frame on the features frame's index."""
    return pd.DataFrame(value_arrays(frame, p_churn, horizon_days, params), index=frame.index)
