"""Offline policy evaluation from logged campaigns: inverse propensity scoring (IPS) and doubly robust
(DR) estimates of a new policy's incremental value, per 1,000 logged users, against doing nothing.

A logged row is (features, the action the logging policy took with its probability, what happened). The
reward of a row is the realised value: −churned·CLV + upgraded·upgrade value − the action's cost. A
policy's value is the mean reward it would have earned; its incremental value is that minus the value of
contacting nobody. Both estimators need the logging policy to have given the new policy's action a
positive probability; rows where it did not add nothing to IPS (a bias, reported as `support`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.catalog import NO_ACTION


@dataclass(frozen=True)
class OfflineEstimate:
    ips: float  # incremental value per 1,000 users
    snips: float  # self-normalised IPS
    dr: float
    ips_se: float  # standard errors (per 1,000 users) of the IPS and DR means
    dr_se: float
    direct: float  # the model-only (direct method) part of DR
    n_logged: int
    matched: int  # logged rows whose action equals the policy's
    support: float  # share of the policy's contacts whose action the logging policy also took for someone

    def as_dict(self) -> dict[str, float]:
        return {
            "ips": self.ips,
            "snips": self.snips,
            "dr": self.dr,
            "ips_se": self.ips_se,
            "dr_se": self.dr_se,
            "direct": self.direct,
            "n_logged": float(self.n_logged),
            "matched": float(self.matched),
            "support": self.support,
        }


def realised_rewards(
    logged_action: Sequence[str],
    churned: np.ndarray,
    upgraded: np.ndarray,
    clv: np.ndarray,
    upgrade_value: np.ndarray,
    costs: dict[str, float],
) -> np.ndarray:
    """The value each logged row actually produced under the action it received."""
    cost = np.array([costs.get(a, 0.0) for a in logged_action])
    return -np.asarray(churned, float) * clv + np.asarray(upgraded, float) * upgrade_value - cost


def outcome_model_values(
    control_churn: np.ndarray,
    control_upgrade: np.ndarray,
    delta_churn: np.ndarray,
    delta_upgrade: np.ndarray,
    clv: np.ndarray,
    upgrade_value: np.ndarray,
    costs: Sequence[float],
) -> np.ndarray:
    """q̂(x, a) for no_action (column 0) and every catalog action (columns 1..A): the modelled expected
    reward of taking that action."""
    base = -control_churn * clv + control_upgrade * upgrade_value
    treated = (
        -(control_churn[:, None] + delta_churn) * clv[:, None]
        + (control_upgrade[:, None] + delta_upgrade) * upgrade_value[:, None]
        - np.asarray(costs, float)[None, :]
    )
    return np.column_stack([base, treated])


def estimate(
    policy_action: Sequence[str],
    logged_action: Sequence[str],
    logged_propensity: np.ndarray,
    reward: np.ndarray,
    q_hat: np.ndarray,
    actions: Sequence[str],
) -> OfflineEstimate:
    """IPS, SNIPS and DR estimates of the incremental value (per 1,000 rows) of the deterministic policy
    that takes `policy_action` on each logged row, against no action. `q_hat` columns: no_action, then
    `actions` in order."""
    policy_action = np.asarray(policy_action, dtype=object)
    logged_action = np.asarray(logged_action, dtype=object)
    p = np.asarray(logged_propensity, dtype=float)
    if np.any(~np.isfinite(p)) or np.any(p <= 0):
        raise ValueError("logged propensities must be positive and finite")
    n = len(reward)
    column = {NO_ACTION: 0, **{a: i + 1 for i, a in enumerate(actions)}}
    rows = np.arange(n)
    q_policy = q_hat[rows, [column[a] for a in policy_action]]
    q_logged = q_hat[rows, [column[a] for a in logged_action]]
    q_none = q_hat[:, 0]

    match_pi = logged_action == policy_action
    match_0 = logged_action == NO_ACTION
    weighted = reward / p
    residual = (reward - q_logged) / p
    # per-row contributions: their means are the estimates, their spread the standard errors
    ips_rows = np.where(match_pi, weighted, 0.0) - np.where(match_0, weighted, 0.0)
    dr_rows = q_policy - q_none + np.where(match_pi, residual, 0.0) - np.where(match_0, residual, 0.0)

    def snips(match: np.ndarray) -> float:
        return float(np.sum(np.where(match, weighted, 0.0)) / max(float(np.sum(match / p)), 1e-12))

    def se(values: np.ndarray) -> float:
        return 1000.0 * float(np.std(values, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")

    contacted = policy_action != NO_ACTION
    logged_set = set(logged_action.tolist())
    supported = np.array([a in logged_set for a in policy_action[contacted]], dtype=bool)
    return OfflineEstimate(
        ips=1000.0 * float(ips_rows.mean()),
        snips=1000.0 * (snips(match_pi) - snips(match_0)),
        dr=1000.0 * float(dr_rows.mean()),
        ips_se=se(ips_rows),
        dr_se=se(dr_rows),
        direct=1000.0 * float(np.mean(q_policy - q_none)),
        n_logged=n,
        matched=int(match_pi.sum()),
        support=float(supported.mean()) if contacted.any() else 1.0,
    )
