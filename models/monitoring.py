"""`clm monitor`'s content, shared by the CLI, the campaign report and the reviewer page: the training snapshot
(the features at the champion churn model's training cutoffs, recorded in its bundle) against the current
one — per-feature drift, score drift, stage and action mix, expected value by stage — and, once outcomes
arrive in the decision log, predicted against measured lift per action. Pure: frames and models in.

The lift check here is the simple treated-vs-predicted comparison: for the users an action was logged for
and an outcome (`retained` / `churned`) came back, the measured lift is their retention rate minus what the
churn model predicted for them without a contact (mean 1 − p_churn), with a 95 % binomial interval; the
predicted lift is the mean Δp(stay) the decision logged for that action. It leans on the churn model's
calibration; the measured lift against randomised controls (issue 18, items 1–2) replaces it once built."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from models.catalog import NO_ACTION
from models.decision import DecisionModels
from models.drift import (
    CATEGORICAL,
    NUMERIC,
    DriftThresholds,
    feature_drift,
    score_drift,
    share_drift,
    value_by_stage,
)
from models.population import ALL_USERS, in_population

RETAINED, CHURNED = "retained", "churned"
Z95 = 1.959963984540054


def training_cutoffs(models: DecisionModels) -> list[dt.date]:
    """The cutoffs the champion churn model was fitted on (its bundle's `train_cutoffs`)."""
    return sorted(dt.date.fromisoformat(c) for c in models.churn.metadata.get("train_cutoffs", []))


def feature_kinds(models: DecisionModels) -> dict[str, str]:
    """Every feature a scoring model reads, in model order: numeric or categorical (the registry's dtype)."""
    names: list[str] = []
    for bundle in (models.churn, models.upgrade, models.reactivation):
        if bundle is not None:
            names += [n for n in bundle.feature_names if n not in names]
    return {
        n: CATEGORICAL if (f := models.registry.get(n)) is not None and f.dtype == "category" else NUMERIC
        for n in names
    }


def lift_calibration(logged: pd.DataFrame, min_users: int) -> pd.DataFrame:
    """Per action in `logged` (one row per logged decision with an outcome: action, p_churn,
    predicted_delta_stay, retained 0/1): treated users, their retention rate, the churn model's expected
    retention without contact, measured lift with its 95 % interval, the predicted lift, and a breach when
    the predicted lift lies outside the interval (with at least `min_users` treated)."""
    columns = ["action", "users", "retention_rate", "expected_without_contact", "measured_lift", "ci_low",
               "ci_high", "predicted_lift", "breach"]  # fmt: skip
    rows = []
    treated = logged[logged["action"] != NO_ACTION]
    for action, part in treated.groupby("action", sort=True):
        n = len(part)
        rate = float(part["retained"].mean())
        expected = float((1.0 - part["p_churn"]).mean())
        measured = rate - expected
        half = Z95 * math.sqrt(max(rate * (1.0 - rate), 1e-12) / n)
        predicted = float(part["predicted_delta_stay"].mean())
        breach = n >= min_users and not (measured - half <= predicted <= measured + half)
        rows.append(
            [action, n, rate, expected, measured, measured - half, measured + half, predicted, breach]
        )
    return pd.DataFrame(rows, columns=columns)


@dataclass
class Monitor:
    """The drift report: what was compared, the frames, and every breach as a sentence."""

    reference: str
    current: str
    features: pd.DataFrame
    scores: pd.DataFrame
    stages: pd.DataFrame
    actions: pd.DataFrame
    value_by_stage: pd.DataFrame
    lift: pd.DataFrame | None = None
    lift_note: str | None = None
    notes: list[str] = field(default_factory=list)

    def breaches(self) -> list[str]:
        """One sentence per breach: features, scores, stage and action shares, lift."""
        out = [f"feature {r.feature}: {r.why}" for r in self.features[self.features["breach"]].itertuples()]
        out += [f"score {r.score}: {r.why}" for r in self.scores[self.scores["breach"]].itertuples()] if len(
            self.scores) else []  # fmt: skip
        for frame, key, what in ((self.stages, "stage", "stage"), (self.actions, "action", "action")):
            for r in frame[frame["breach"]].itertuples():
                out.append(f"{what} {getattr(r, key)}: share {r.reference_share:.1%} → {r.current_share:.1%}")
        if self.lift is not None:
            for r in self.lift[self.lift["breach"]].itertuples():
                out.append(f"lift {r.action}: predicted {r.predicted_lift:+.3f} outside the measured "
                           f"[{r.ci_low:+.3f}, {r.ci_high:+.3f}] ({r.users} users)")  # fmt: skip
        return out

    def summary_lines(self) -> list[str]:
        """A few lines for a terminal: what was compared, the counts, then every breach as a WARNING."""
        breaches = self.breaches()
        n_breach = int(self.features["breach"].sum())
        lines = [
            f"reference: {self.reference}",
            f"current:   {self.current}",
            f"features: {len(self.features)} compared, {n_breach} drifted (PSI ≥ threshold and test rejects, "
            "or missing rate moved)",
        ]
        for r in self.scores.itertuples():
            lines.append(
                f"score {r.score}: mean {r.mean_reference:.3f} → {r.mean_current:.3f}, PSI {r.psi:.3f}"
            )
        lines += [f"note: {n}" for n in self.notes]
        if self.lift_note:
            lines.append(f"lift: {self.lift_note}")
        lines += [f"WARNING drift breach — {b}" for b in breaches] or ["no drift breach"]
        return lines

    def as_json(self) -> dict[str, Any]:
        def records(frame: pd.DataFrame | None) -> list[dict[str, Any]] | None:
            if frame is None:
                return None
            return [{k: _plain(v) for k, v in row.items()} for row in frame.to_dict("records")]

        return {
            "reference": self.reference, "current": self.current, "breaches": self.breaches(),
            "features": records(self.features), "scores": records(self.scores), "stages": records(self.stages),
            "actions": records(self.actions), "value_by_stage": records(self.value_by_stage),
            "lift": records(self.lift), "lift_note": self.lift_note, "notes": self.notes,
        }  # fmt: skip


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def monitor(
    reference_frame: pd.DataFrame,
    current_frame: pd.DataFrame,
    models: DecisionModels,
    thresholds: DriftThresholds,
    *,
    reference: str,
    current: str,
    reference_table: pd.DataFrame | None = None,
    current_table: pd.DataFrame | None = None,
    logged: pd.DataFrame | None = None,
    lift_min_users: int = 30,
    kinds: dict[str, str] | None = None,
) -> Monitor:
    """Compare the two feature frames and the decisions over them (decided here unless the caller has the
    tables, e.g. the report); `logged` (decision-log rows with outcomes) adds the lift check."""
    kinds = kinds if kinds is not None else feature_kinds(models)
    ref_table = reference_table if reference_table is not None else models.decide(reference_frame).table
    cur_table = current_table if current_table is not None else models.decide(current_frame).table
    # features and scores over the population the churn model was trained on and scores (alive users)
    population = models.churn.metadata.get("population", ALL_USERS)
    ref_in = in_population(reference_frame, population, models.churn.horizon_days)
    cur_in = in_population(current_frame, population, models.churn.horizon_days)
    notes = [
        f"features and scores compared over the churn model's population ({population} users: "
        f"{int(ref_in.sum()):,} training rows, {int(cur_in.sum()):,} now); stage and action mix over everyone"
    ]
    lift, lift_note = None, None
    if logged is None:
        lift_note = "no decision log read"
    elif logged.empty:
        lift_note = "no logged decision has an outcome (retained / churned) yet"
    else:
        lift = lift_calibration(logged, lift_min_users)
        lift_note = (f"{len(logged):,} logged decisions with an outcome; measured = retention of the treated − "
                     "the churn model's expected retention without contact (95 % interval)")  # fmt: skip
    return Monitor(
        reference=reference, current=current,
        features=feature_drift(reference_frame[ref_in], current_frame[cur_in], kinds, thresholds),
        scores=score_drift(ref_table[ref_in], cur_table[cur_in], thresholds),
        stages=share_drift(ref_table["stage"], cur_table["stage"], thresholds.stage_share_change, name="stage"),
        actions=share_drift(ref_table["action"], cur_table["action"], thresholds.action_share_change, name="action"),
        value_by_stage=value_by_stage(ref_table, cur_table), lift=lift, lift_note=lift_note, notes=notes,
    )  # fmt: skip


def describe_snapshot(cutoffs: Sequence[dt.date], rows: int, label: str) -> str:
    """`training cutoffs 2025-03-01 … 2025-09-01 (7 cutoffs, 31,200 rows) of clm-churn/3`."""
    if not cutoffs:
        return f"{label} ({rows:,} rows)"
    span = str(cutoffs[0]) if len(cutoffs) == 1 else f"{cutoffs[0]} … {cutoffs[-1]} ({len(cutoffs)} cutoffs)"
    return f"{label} {span}, {rows:,} rows"


def gauges(result: Monitor) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The values /metrics exports: per feature PSI and breach, per score PSI, and the breach count."""
    return {
        "feature_psi": [({"feature": r.feature}, float(r.psi)) for r in result.features.itertuples()
                        if not math.isnan(r.psi)],
        "feature_breach": [({"feature": r.feature}, float(r.breach)) for r in result.features.itertuples()],
        "score_psi": [({"score": r.score}, float(r.psi)) for r in result.scores.itertuples()
                      if not math.isnan(r.psi)],
        "breaches": [({}, float(len(result.breaches())))],
    }  # fmt: skip


__all__ = [
    "CHURNED",
    "RETAINED",
    "Monitor",
    "describe_snapshot",
    "feature_kinds",
    "gauges",
    "lift_calibration",
    "monitor",
    "training_cutoffs",
]
