"""Which model scores a user. The churn model is trained on users still alive at a cutoff
(`labels.keep_churned_users = false`): those with activity within the label horizon before it or an active
subscription. The others — lapsed: silent for the whole horizon and without an active subscription — are
scored by the reactivation model ("will they come back within the horizon"). One definition, the same as
the feature builder's filter (features.build), used by training, batch scoring and serving."""

from __future__ import annotations

import numpy as np

from models.frame import Columns, numeric_column

CHURN_POPULATION = "alive"
REACTIVATION_POPULATION = "lapsed"
ALL_USERS = "all"


def lapsed(columns: Columns, horizon_days: int) -> np.ndarray:
    """(n,) bool: no event for `horizon_days` or more and no active subscription. `bill_period_days` is set
    exactly when a subscription is active at the cutoff; a user with no event at all is not lapsed."""
    if "days_since_last_event" not in columns:
        raise ValueError("the lapsed population needs the feature 'days_since_last_event'")
    n = len(columns["days_since_last_event"])
    silent = numeric_column(columns, "days_since_last_event", n)
    billed = numeric_column(columns, "bill_period_days", n)
    with np.errstate(invalid="ignore"):
        return (silent >= float(horizon_days)) & np.isnan(billed)


def in_population(columns: Columns, population: str, horizon_days: int) -> np.ndarray:
    """(n,) bool: the rows a model with this `population` (bundle metadata) was trained on and scores."""
    if "days_since_last_event" not in columns:
        raise ValueError("a model population needs the feature 'days_since_last_event'")
    if population == ALL_USERS:
        return np.ones(len(columns["days_since_last_event"]), dtype=bool)
    gone = lapsed(columns, horizon_days)
    if population == REACTIVATION_POPULATION:
        return gone
    if population == CHURN_POPULATION:
        return ~gone
    raise ValueError(f"unknown model population {population!r}: expected alive, lapsed or all")
