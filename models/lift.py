"""Measured lift: what the policy's contacts changed, measured against randomised holdouts — A/B evidence, not
model estimates. Pure functions over one row per decision.

A decision row carries the stage, the action the policy meant (`intended_action`), the action sent (`action`),
whether the user is in the global control group (`control_group`), why a meant contact was not sent
(`holdout`: `control_group` or `exploration`), its `cost`, and what followed: `churned`, `returned`,
`upgraded` (1/0, NaN when unknown) and the realised `margin` (NaN when unknown).

Two comparisons, both randomised by a hash that knows nothing of the outcome:
- **the policy as a whole** (scope `policy`): everyone outside the global control group against the control
  group — what running the policy is worth against contacting nobody;
- **each action** (scope `action`): among the users the policy meant action A for, those who received A
  against those held out of it (the control group, or an exploration draw of no_action).

Per comparison and per stage (and over all stages, `stage = "all"`): the users behind each side, each outcome's
rate on both sides and the difference with a 95 % interval (Newcombe's hybrid score interval, which keeps its
coverage for rare outcomes and small groups), and the incremental margin — mean(margin − cost) treated minus
mean(margin) control — with a Welch interval."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from models.arbitration import HOLDOUT_CONTROL, HOLDOUT_EXPLORATION
from models.catalog import NO_ACTION

# measured outcome → the decision-row column holding it (1/0, NaN unknown)
OUTCOME_COLUMNS = {"churn": "churned", "return": "returned", "upgrade": "upgraded"}
ALL_STAGES = "all"
POLICY = "policy"
ACTION = "action"
ROW_COLUMNS = ("user_id", "stage", "action", "intended_action", "control_group", "holdout", "cost",
               *OUTCOME_COLUMNS.values(), "margin")  # fmt: skip


@dataclass(frozen=True)
class LiftParams:
    confidence: float = 0.95
    min_users: int = 30  # per side: a comparison with fewer is reported, flagged `enough = False`


def wilson_interval(successes: float, n: float, z: float) -> tuple[float, float]:
    """Wilson's score interval for a proportion (NaN, NaN when n = 0)."""
    if n <= 0:
        return (np.nan, np.nan)
    p = successes / n
    denominator = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denominator
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denominator
    return (centre - half, centre + half)


def rate_difference(
    treated: np.ndarray, control: np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float, float, float]:
    """(rate treated, rate control, difference, low, high): Newcombe's hybrid score interval (his method 10)
    for the difference of two independent proportions. NaNs are left out."""
    treated, control = treated[~np.isnan(treated)], control[~np.isnan(control)]
    n1, n2 = len(treated), len(control)
    if not n1 or not n2:
        return (np.nan, np.nan, np.nan, np.nan, np.nan)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p1, p2 = float(treated.mean()), float(control.mean())
    l1, u1 = wilson_interval(treated.sum(), n1, z)
    l2, u2 = wilson_interval(control.sum(), n2, z)
    difference = p1 - p2
    low = difference - np.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = difference + np.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return (p1, p2, difference, float(low), float(high))


def mean_difference(
    treated: np.ndarray, control: np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float, float, float]:
    """(mean treated, mean control, difference, low, high) with Welch's normal interval. NaNs left out."""
    treated, control = treated[~np.isnan(treated)], control[~np.isnan(control)]
    n1, n2 = len(treated), len(control)
    if not n1 or not n2:
        return (np.nan, np.nan, np.nan, np.nan, np.nan)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    m1, m2 = float(treated.mean()), float(control.mean())
    var1 = float(treated.var(ddof=1)) if n1 > 1 else 0.0
    var2 = float(control.var(ddof=1)) if n2 > 1 else 0.0
    se = np.sqrt(var1 / n1 + var2 / n2)
    return (m1, m2, m1 - m2, m1 - m2 - z * se, m1 - m2 + z * se)


def _comparison(rows: pd.DataFrame, treated: np.ndarray, control: np.ndarray, params: LiftParams) -> dict:
    out: dict = {"n_treated": int(treated.sum()), "n_control": int(control.sum())}
    out["enough"] = min(out["n_treated"], out["n_control"]) >= params.min_users
    for outcome, column in OUTCOME_COLUMNS.items():
        values = rows[column].to_numpy(dtype=float) if column in rows else np.full(len(rows), np.nan)
        result = rate_difference(values[treated], values[control], params.confidence)
        for name, value in zip(("treated", "control", "lift", "low", "high"), result, strict=True):
            out[f"{outcome}_{name}"] = value
    margin = rows["margin"].to_numpy(dtype=float) if "margin" in rows else np.full(len(rows), np.nan)
    net = margin - rows["cost"].to_numpy(dtype=float)
    result = mean_difference(net[treated], margin[control], params.confidence)
    for name, value in zip(("treated", "control", "incremental", "low", "high"), result, strict=True):
        out[f"margin_{name}"] = value
    return out


def lift_table(rows: pd.DataFrame, params: LiftParams = LiftParams()) -> pd.DataFrame:
    """One row per comparison × stage: `scope` (policy | action), `action` (the action measured; `policy` for
    the whole), `stage`, the users on each side, and per outcome (churn, return, upgrade) the rates, the
    difference (`*_lift`) with its interval (`*_low`, `*_high`); the incremental margin likewise."""
    missing = [
        c for c in ("stage", "action", "intended_action", "control_group", "holdout", "cost") if c not in rows
    ]
    if missing:
        raise ValueError(f"decision rows lack {missing}")
    rows = rows.reset_index(drop=True)
    stages = [ALL_STAGES, *sorted(rows["stage"].dropna().astype(str).unique())]
    stage = rows["stage"].astype(str).to_numpy()
    in_control = rows["control_group"].fillna(False).to_numpy(dtype=bool)
    intended = rows["intended_action"].astype(str).to_numpy()
    sent = rows["action"].astype(str).to_numpy()
    held = rows["holdout"].isin([HOLDOUT_CONTROL, HOLDOUT_EXPLORATION]).to_numpy()
    out = []
    for s in stages:
        here = np.ones(len(rows), bool) if s == ALL_STAGES else stage == s
        out.append({"scope": POLICY, "action": POLICY, "stage": s,
                    **_comparison(rows, here & ~in_control, here & in_control, params)})  # fmt: skip
    for action in sorted(set(intended) - {NO_ACTION}):
        meant = intended == action
        for s in stages:
            here = meant & (np.ones(len(rows), bool) if s == ALL_STAGES else stage == s)
            if not here.any():
                continue
            out.append({"scope": ACTION, "action": action, "stage": s,
                        **_comparison(rows, here & (sent == action), here & held, params)})  # fmt: skip
    return pd.DataFrame(out)


def decision_rows(
    decisions: pd.DataFrame,
    outcomes: pd.DataFrame,
    *,
    as_of: pd.Timestamp,
    horizon_days: int,
    outcome_names: Mapping[str, Sequence[str]],
) -> pd.DataFrame:
    """Logged decisions and their outcomes → one decision row per user: the user's first decision whose
    horizon has closed by `as_of` (later ones of the same user would compare users already contacted).
    `decisions`: decision_id, ts, user_id, stage, action, intended_action, control_group, holdout, cost;
    `outcomes`: decision_id, outcome, value. An outcome named in `outcome_names[measure]` sets that measure
    to 1, the horizon having closed without one to 0; margin is the sum of the outcomes' values (0 without)."""
    closed = decisions[
        decisions["user_id"].notna()
        & (pd.to_datetime(decisions["ts"], utc=True) + pd.Timedelta(days=horizon_days) <= as_of)
    ]
    first = closed.sort_values(["ts", "decision_id"]).drop_duplicates("user_id").reset_index(drop=True)
    by_decision = outcomes[outcomes["decision_id"].isin(first["decision_id"])]
    for measure, column in OUTCOME_COLUMNS.items():
        names = set(outcome_names.get(measure, ()))
        hit = set(by_decision.loc[by_decision["outcome"].isin(names), "decision_id"])
        first[column] = first["decision_id"].isin(hit).astype(float)
    value = by_decision.groupby("decision_id")["value"].sum(min_count=1)
    first["margin"] = first["decision_id"].map(value).fillna(0.0).astype(float)
    return first


def coverage(table: pd.DataFrame, truth: pd.DataFrame, outcome: str = "churn") -> tuple[int, int]:
    """(covered, cells): of the action × stage comparisons with enough users on both sides, how many
    intervals hold the true average effect (`truth`: action, stage, true_effect)."""
    cells = table[(table["scope"] == ACTION) & (table["stage"] != ALL_STAGES) & table["enough"]]
    merged = cells.merge(truth, on=["action", "stage"], how="inner")
    inside = (merged[f"{outcome}_low"] <= merged["true_effect"]) & (
        merged["true_effect"] <= merged[f"{outcome}_high"]
    )
    return int(inside.sum()), len(merged)


__all__ = ["LiftParams", "coverage", "decision_rows", "lift_table", "mean_difference", "rate_difference"]
