"""The campaign report's drift and lifecycle-analytics sections: computed from what the report has already
decided (the current snapshot, the stage cutoffs) plus the features at the champion's training cutoffs, and
laid out as the report's tables. The numbers come from models.monitoring and models.lifecycle, the same
the CLI (`clm monitor`) and the reviewer pages show."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from models.decision import DecisionModels
from models.drift import DriftThresholds
from models.lifecycle import AnalyticsParams, LifecycleAnalytics, lifecycle_analytics
from models.monitoring import Monitor, describe_snapshot, monitor, training_cutoffs

UNDERSERVED_LISTED = 20


@dataclass
class MonitorInputs:
    """What the two sections read beyond the report's own inputs."""

    reference: pd.DataFrame | None  # features at the training cutoffs (None: the model records none)
    users: pd.DataFrame | None  # the users input (signup_ts, channel) for the referral rates
    thresholds: DriftThresholds
    analytics: AnalyticsParams
    lift_min_users: int = 30
    logged: pd.DataFrame | None = None  # decision-log rows with outcomes, when the caller read a log


def reference_cutoffs(models: DecisionModels) -> list:
    return training_cutoffs(models)


def monitor_and_analytics(
    extra: MonitorInputs, models: DecisionModels, frame_now: pd.DataFrame, now: pd.DataFrame,
    history: pd.DataFrame, as_of: object,
) -> tuple[Monitor | None, str | None, LifecycleAnalytics]:  # fmt: skip
    """The drift report of the snapshot against the training cutoffs (or why there is none) and the
    lifecycle analytics over the stage cutoffs' decisions `history`."""
    result, note = None, None
    if extra.reference is None or extra.reference.empty:
        note = f"{models.label(models.churn)} records no training cutoffs: no drift to compute"
    else:
        cutoffs = sorted(extra.reference["cutoff"].unique())
        result = monitor(
            extra.reference, frame_now, models, extra.thresholds, current_table=now, logged=extra.logged,
            reference=describe_snapshot(cutoffs, len(extra.reference), f"training cutoffs of {models.label(models.churn)}:"),
            current=describe_snapshot([as_of], len(frame_now), "snapshot"), lift_min_users=extra.lift_min_users,
        )  # fmt: skip
        if extra.logged is None:
            result.lift_note = (
                "the report reads no decision log: `clm monitor` compares predicted and measured lift"
            )
    analytics = lifecycle_analytics(
        history, now, frame_now["tenure_days"], extra.analytics, users=extra.users
    )
    return result, note, analytics


def monitor_tables(result: Monitor | None, analytics: LifecycleAnalytics, currency: str, table) -> dict:
    """The sections' tables in the report's Table shape (`table` is report.Table)."""
    tables = {}
    if result is not None:
        f = result.features
        tables["drift_features"] = table(
            "drift-features",
            [("feature", "text"), ("kind", "text"), ("PSI", "prob"), ("test", "text"), ("p-value", "num"),
             ("missing (training)", "pct"), ("missing (now)", "pct"), ("breach", "text")],
            [[r.feature, r.kind, r.psi, r.test, r.p_value, r.missing_reference, r.missing_current,
              r.why or "–"] for r in f.itertuples()],
        )  # fmt: skip
        tables["drift_scores"] = table(
            "drift-scores",
            [("score", "text"), ("mean (training)", "prob"), ("mean (now)", "prob"), ("PSI", "prob"),
             ("KS p-value", "num"), ("breach", "text")],
            [[r.score, r.mean_reference, r.mean_current, r.psi, r.p_value, r.why or "–"]
             for r in result.scores.itertuples()],
        )  # fmt: skip
        for key, name in (("stages", "stage"), ("actions", "action")):
            frame = getattr(result, key)
            tables[f"drift_{key}"] = table(
                f"drift-{key}",
                [(name, "text"), ("share (training)", "pct"), ("share (now)", "pct"), ("change", "pp"),
                 ("breach", "text")],
                [[getattr(r, name), r.reference_share, r.current_share, r.change, "yes" if r.breach else "–"]
                 for r in frame.itertuples()],
            )  # fmt: skip
        tables["drift_value"] = table(
            "drift-value-by-stage",
            [("stage", "text"), ("users (training)", "int"), (f"mean expected value (training, {currency})", "money2"),
             ("users (now)", "int"), (f"mean expected value (now, {currency})", "money2")],
            [[r.stage, r.users_reference, r.mean_expected_value_reference, r.users_current,
              r.mean_expected_value_current] for r in result.value_by_stage.itertuples()],
        )  # fmt: skip
        if result.lift is not None:
            tables["drift_lift"] = table(
                "drift-lift",
                [("action", "text"), ("users", "int"), ("measured lift", "pp"), ("95 % low", "pp"),
                 ("95 % high", "pp"), ("predicted lift", "pp"), ("breach", "text")],
                [[r.action, r.users, r.measured_lift, r.ci_low, r.ci_high, r.predicted_lift,
                  "yes" if r.breach else "–"] for r in result.lift.itertuples()],
            )  # fmt: skip
    conversion = analytics.conversion
    tables["conversion"] = table(
        "stage-conversion",
        [("from", "text"), ("to", "text"), ("stage", "text"), ("converts to", "text"), ("users", "int"),
         ("converted", "int"), ("rate", "pct")],
        [[str(r.from_cutoff), str(r.to_cutoff), r.stage, r.next_stages, r.users, r.converted, r.rate]
         for r in conversion.itertuples()],
    )  # fmt: skip
    referral = {(r.from_cutoff, r.to_cutoff): r for r in analytics.referral.itertuples()}
    rows = []
    for r in analytics.retention.itertuples():
        ref = referral.get((r.from_cutoff, r.to_cutoff))
        rows.append([str(r.from_cutoff), str(r.to_cutoff), r.active, r.retained, r.rate,
                     *((ref.signups, ref.referred, ref.rate) if ref is not None else (None, None, None))])  # fmt: skip
    tables["retention"] = table(
        "retention-referral",
        [("from", "text"), ("to", "text"), ("active users", "int"), ("still active", "int"), ("retention", "pct"),
         ("signups", "int"), ("by referral", "int"), ("referral rate", "pct")],
        rows,
    )  # fmt: skip
    tables["quadrants"] = table(
        "value-quadrants",
        [("quadrant", "text"), ("users", "int"), ("share of users", "pct"), (f"value if retained ({currency})", "money"),
         ("share of value", "pct"), (f"mean value ({currency})", "money2")],
        [[r.quadrant, r.users, r.user_share, r.value, r.value_share, r.mean_value]
         for r in analytics.quadrants.itertuples()],
    )  # fmt: skip
    top = analytics.underserved.head(UNDERSERVED_LISTED)
    tables["underserved"] = table(
        "underserved",
        [("user", "text"), ("stage", "text"), (f"value if retained ({currency})", "money2"), ("churn probability", "prob"),
         (f"best offered action's value ({currency})", "money2")],
        [[str(r.user_id), r.stage, r.value_if_retained, r.p_churn, r.best_offered_value] for r in top.itertuples()],
    )  # fmt: skip
    return tables
