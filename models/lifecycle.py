"""Lifecycle analytics over the decision tables (the seed documents' asks): how users move on through the
stages, how many stay and how many come by referral, where the value sits (the 80/20 view by value ×
lifecycle length), and the valuable users no action serves. Pure: frames and parameters in, frames out;
the campaign report and the reviewer overview show them.

Definitions (the tests compute them by hand):
- **conversion** of stage s from one cutoff to the next: of the users in s at the earlier cutoff (and
  known at the later one), the share in one of `next_stages[s]` at the later one;
- **retention** over a step: of the users not lapsed (stage other than `dormant`) at the earlier cutoff,
  the share still not lapsed at the later one;
- **referral rate** over a step: of the users who signed up in (earlier cutoff, later cutoff], the share
  whose acquisition channel is the referral channel;
- **80/20 view**: users above the `value_split_quantile` of value if retained are "high value", above the
  `tenure_split_quantile` of tenure "long lifecycle"; per quadrant its users and value, and their shares;
- **underserved**: value if retained at or above the `underserved_value_quantile` and no action offered at
  the user's stage has a positive expected value (`best_offered_value` ≤ 0 or none offered)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from models.config import AnalyticsSection

LAPSED_STAGES = ("dormant",)
QUADRANTS = (
    ("high", "long"),
    ("high", "short"),
    ("low", "long"),
    ("low", "short"),
)


@dataclass(frozen=True)
class AnalyticsParams:
    next_stages: dict[str, tuple[str, ...]]
    value_split_quantile: float = 0.5
    tenure_split_quantile: float = 0.5
    underserved_value_quantile: float = 0.8
    referral_channel: str = "referral"

    @classmethod
    def from_config(cls, section: AnalyticsSection) -> AnalyticsParams:
        return cls(
            next_stages={stage: tuple(to) for stage, to in section.next_stages.items()},
            value_split_quantile=section.value_split_quantile,
            tenure_split_quantile=section.tenure_split_quantile,
            underserved_value_quantile=section.underserved_value_quantile,
            referral_channel=section.referral_channel,
        )


def _steps(table: pd.DataFrame):
    """(earlier cutoff, later cutoff, the users known at both with their stage at each)."""
    for before, after in itertools.pairwise(sorted(table["cutoff"].unique())):
        earlier = table.loc[table["cutoff"] == before, ["user_id", "stage"]]
        later = table.loc[table["cutoff"] == after, ["user_id", "stage"]]
        yield before, after, earlier.merge(later, on="user_id", suffixes=("_from", "_to"))


def stage_conversion(table: pd.DataFrame, next_stages: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Per step between consecutive cutoffs and per stage of `next_stages`: users, converted, rate (NaN
    when the stage had no users)."""
    rows = []
    for before, after, moved in _steps(table):
        for stage, targets in next_stages.items():
            members = moved[moved["stage_from"] == stage]
            converted = int(members["stage_to"].isin(list(targets)).sum())
            rate = converted / len(members) if len(members) else float("nan")
            rows.append((before, after, stage, "/".join(targets), len(members), converted, rate))
    return pd.DataFrame(
        rows, columns=["from_cutoff", "to_cutoff", "stage", "next_stages", "users", "converted", "rate"]
    )


def retention(table: pd.DataFrame, lapsed: Sequence[str] = LAPSED_STAGES) -> pd.DataFrame:
    """Per step: users not lapsed at the earlier cutoff, how many are still not lapsed, and the rate."""
    rows = []
    for before, after, moved in _steps(table):
        active = moved[~moved["stage_from"].isin(list(lapsed))]
        kept = int((~active["stage_to"].isin(list(lapsed))).sum())
        rows.append((before, after, len(active), kept, kept / len(active) if len(active) else float("nan")))
    return pd.DataFrame(rows, columns=["from_cutoff", "to_cutoff", "active", "retained", "rate"])


def referral_rates(users: pd.DataFrame, cutoffs: Sequence[object], channel: str) -> pd.DataFrame:
    """Per step between consecutive `cutoffs` (dates): signups in (earlier, later], those by `channel`, and
    the rate. `users` has `signup_ts` (UTC) and `channel`; no `channel` column gives an empty frame."""
    columns = ["from_cutoff", "to_cutoff", "signups", "referred", "rate"]
    if "channel" not in users or "signup_ts" not in users:
        return pd.DataFrame(columns=columns)
    signup = pd.to_datetime(users["signup_ts"], utc=True)
    rows = []
    for before, after in itertools.pairwise(sorted(cutoffs)):
        start, end = pd.Timestamp(before, tz="UTC"), pd.Timestamp(after, tz="UTC")
        new = users[((signup >= start) & (signup < end)).to_numpy()]
        referred = int((new["channel"] == channel).sum())
        rows.append((before, after, len(new), referred, referred / len(new) if len(new) else float("nan")))
    return pd.DataFrame(rows, columns=columns)


def value_quadrants(
    table: pd.DataFrame, tenure_days: pd.Series, *, value_quantile: float = 0.5, tenure_quantile: float = 0.5,
    value_column: str = "value_if_retained",
) -> tuple[pd.DataFrame, dict[str, float]]:  # fmt: skip
    """The 80/20 view: users split by value (above the quantile: high) × lifecycle length (tenure above the
    quantile: long); per quadrant users, user_share, value, value_share, mean_value; and the split points."""
    value = table[value_column].to_numpy(dtype=float)
    tenure = np.asarray(tenure_days, dtype=float)
    value = np.where(np.isnan(value), 0.0, value)
    value_split = float(np.quantile(value, value_quantile)) if len(value) else float("nan")
    tenure_split = (
        float(np.nanquantile(tenure, tenure_quantile)) if np.isfinite(tenure).any() else float("nan")
    )
    high = np.where(value > value_split, "high", "low")
    long = np.where(tenure > tenure_split, "long", "short")
    total_users, total_value = len(value), float(value.sum())
    rows = []
    for v, t in QUADRANTS:
        members = (high == v) & (long == t)
        worth = float(value[members].sum())
        rows.append({
            "quadrant": f"{v} value · {t} lifecycle", "value_band": v, "lifecycle": t,
            "users": int(members.sum()), "user_share": members.sum() / total_users if total_users else float("nan"),
            "value": worth, "value_share": worth / total_value if total_value else float("nan"),
            "mean_value": worth / members.sum() if members.any() else float("nan"),
        })  # fmt: skip
    return pd.DataFrame(rows), {"value_split": value_split, "tenure_split": tenure_split}


def underserved(
    table: pd.DataFrame, *, value_quantile: float = 0.8, value_column: str = "value_if_retained"
) -> tuple[pd.DataFrame, dict[str, float]]:
    """The users worth most if retained (at or above the quantile) for whom no action offered at their stage
    pays, most valuable first; and a summary (threshold, users, share of the valuable, value at stake)."""
    value = table[value_column].to_numpy(dtype=float)
    threshold = float(np.nanquantile(value, value_quantile)) if np.isfinite(value).any() else float("nan")
    valuable = value >= threshold
    best = table["best_offered_value"].to_numpy(dtype=float)
    unpaid = np.isnan(best) | (best <= 0.0)
    picked = table[valuable & unpaid].sort_values(value_column, ascending=False, kind="stable")
    summary = {
        "value_threshold": threshold,
        "valuable_users": int(valuable.sum()),
        "users": len(picked),
        "share_of_valuable": len(picked) / valuable.sum() if valuable.any() else float("nan"),
        "value_at_stake": float(picked[value_column].sum()),
    }
    return picked.reset_index(drop=True), summary


@dataclass
class LifecycleAnalytics:
    """What the report and the overview show: the frames above and the underserved summary."""

    conversion: pd.DataFrame
    retention: pd.DataFrame
    referral: pd.DataFrame
    quadrants: pd.DataFrame
    splits: dict[str, float]
    underserved: pd.DataFrame
    underserved_summary: dict[str, float]


def lifecycle_analytics(
    history: pd.DataFrame, snapshot: pd.DataFrame, tenure_days: pd.Series, params: AnalyticsParams,
    users: pd.DataFrame | None = None,
) -> LifecycleAnalytics:  # fmt: skip
    """All of it: `history` the decision table at every cutoff (user_id, cutoff, stage), `snapshot` the
    latest cutoff's (with value_if_retained and best_offered_value), `tenure_days` aligned with `snapshot`,
    `users` the users input (signup_ts, channel) for the referral rates, when there is one."""
    cutoffs = sorted(history["cutoff"].unique())
    quadrants, splits = value_quadrants(
        snapshot, tenure_days, value_quantile=params.value_split_quantile,
        tenure_quantile=params.tenure_split_quantile,
    )  # fmt: skip
    picked, summary = underserved(snapshot, value_quantile=params.underserved_value_quantile)
    return LifecycleAnalytics(
        conversion=stage_conversion(history, params.next_stages),
        retention=retention(history),
        referral=referral_rates(users if users is not None else pd.DataFrame(), cutoffs, params.referral_channel),
        quadrants=quadrants, splits=splits, underserved=picked, underserved_summary=summary,
    )  # fmt: skip


__all__ = [
    "AnalyticsParams",
    "LifecycleAnalytics",
    "lifecycle_analytics",
    "referral_rates",
    "retention",
    "stage_conversion",
    "underserved",
    "value_quadrants",
]
