"""The batch decision table: what `clm score` writes per user — in process over the whole population, and on
Spark over each partition (`mapInPandas`), through this one function."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from models.decision import DecisionModels, PopulationDecision


def decision_table(
    frame: pd.DataFrame,
    models: DecisionModels,
    *,
    as_of: dt.date,
    explore: bool = True,
    budget: float | None = None,
    budget_method: str = "lagrangian",
    explain_top_k: int | None = None,
    num_threads: int = 0,
) -> tuple[pd.DataFrame, PopulationDecision]:
    """Per row of `frame` (registry features of one snapshot): `user_id, as_of`, the decision columns, the
    policy's label and, with `explain_top_k`, each model's top features and reasons — with the decision
    behind it (its budget plan). Every column depends on the user's own row only (exploration is a hash of
    the user), so any split of the users gives the same rows; a budget plans the whole frame at once."""
    decided = models.decide(
        frame, budget=budget, budget_method=budget_method,
        explore=explore,  # a budget plan does not explore; `explore` still holds the control group out
        num_threads=num_threads,
    )  # fmt: skip
    table = decided.table.drop(columns=["user_id", "cutoff"], errors="ignore")
    keys = pd.DataFrame({"user_id": frame["user_id"].to_numpy(), "as_of": as_of})
    result = pd.concat([keys, table], axis=1)
    result["policy"] = models.label(models.policy)
    if explain_top_k is not None:
        from models.explain import population_contributions, reason_columns

        assert decided.decisions is not None  # one snapshot: the frame of one --as-of
        frame = frame.reset_index(drop=True)
        explained = population_contributions(
            frame, models, decided.decisions, explain_top_k, num_threads=num_threads
        )
        for name, column in reason_columns(
            frame, explained, models.registry, currency=models.policy.value.currency
        ).items():
            result[name] = column
    return result, decided
