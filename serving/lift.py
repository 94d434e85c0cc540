"""Measured lift from the decision log: its decisions and outcomes as decision rows (models.lift), what
`clm lift`, the campaign report, the demo and the reviewer lift page read."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from models.config import LiftSection
from models.lift import ROW_COLUMNS, LiftParams, decision_rows, lift_table
from serving.decision_log import DecisionLog

DECISION_COLUMNS = ("decision_id", "ts", "user_id", "stage", "action", "propensity", "explored", "policy",
                    "intended_action", "control_group", "holdout", "cost")  # fmt: skip


def logged_rows(log: DecisionLog, section: LiftSection, as_of: dt.datetime | None = None) -> pd.DataFrame:
    """One decision row per user from the log: each user's first decision whose `[lift] horizon_days` closed
    by `as_of` (default now), with the outcomes recorded against it."""
    as_of = as_of or dt.datetime.now(dt.UTC)
    decisions = pd.DataFrame(log.read_decisions(), columns=list(DECISION_COLUMNS))
    outcomes = pd.DataFrame(
        log.read_outcomes(), columns=["decision_id", "outcome", "action_taken", "ts", "value"]
    )
    rows = decision_rows(decisions, outcomes, as_of=pd.Timestamp(as_of), horizon_days=section.horizon_days,
                         outcome_names=section.outcome_names())  # fmt: skip
    return rows[[c for c in (*ROW_COLUMNS, "decision_id", "ts", "policy") if c in rows]]


def logged_lift(log: DecisionLog, section: LiftSection, as_of: dt.datetime | None = None) -> pd.DataFrame:
    """`models.lift.lift_table` over the log's decision rows."""
    rows = logged_rows(log, section, as_of)
    return lift_table(rows, LiftParams(confidence=section.confidence, min_users=section.min_users))
