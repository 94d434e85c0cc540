"""The decision log read back for the drift monitor's lift check: every logged decision that has an outcome
(`retained` or `churned`), with what it predicted — the churn probability it was made with and the chosen
action's Δp(stay) — one row per decision (`models.monitoring.lift_calibration` reads it)."""

from __future__ import annotations

import orjson
import pandas as pd
import sqlalchemy as sa

from models.monitoring import CHURNED, RETAINED
from serving.decision_log import DecisionLog

COLUMNS = ["decision_id", "user_id", "action", "propensity", "p_churn", "predicted_delta_stay", "retained"]


def logged_outcomes(log: DecisionLog) -> pd.DataFrame:
    """Decisions joined to their retained / churned outcomes (a decision with both counts as churned)."""
    decisions, outcomes = log.decisions_table, log.outcomes_table
    query = (
        sa.select(
            decisions.c.decision_id,
            decisions.c.user_id,
            decisions.c.action,
            decisions.c.propensity,
            decisions.c.candidates,
            decisions.c.payload,
            outcomes.c.outcome,
        )
        .join(outcomes, outcomes.c.decision_id == decisions.c.decision_id)
        .where(outcomes.c.outcome.in_([RETAINED, CHURNED]))
    )
    with log.engine.connect() as conn:
        rows = conn.execute(query).all()
    found: dict[str, list] = {}
    for decision_id, user_id, action, propensity, candidates, payload, outcome in rows:
        if decision_id in found:
            found[decision_id][-1] = min(found[decision_id][-1], float(outcome == RETAINED))
            continue
        chosen = next((c for c in orjson.loads(candidates) if c.get("name") == action), {})
        p_churn = (orjson.loads(payload).get("churn") or {}).get("probability")
        found[decision_id] = [decision_id, user_id, action, float(propensity),
                              float("nan") if p_churn is None else float(p_churn),
                              float(chosen.get("delta_stay", 0.0) or 0.0), float(outcome == RETAINED)]  # fmt: skip
    return pd.DataFrame(list(found.values()), columns=COLUMNS)


def read_logged_outcomes(url: str, schema: str | None = None) -> pd.DataFrame:
    """`logged_outcomes` of the log at `url` (opened and closed here, its writer never started)."""
    log = DecisionLog(url, schema=schema)
    try:
        return logged_outcomes(log)
    finally:
        log.close()
