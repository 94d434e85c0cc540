"""Population views of the decisions: every user's decision at one or more cutoffs, the stage mix and the
flows between stages, the action mix, the highest-risk and highest-value users, global SHAP drivers. Pure:
frames and bundles in, frames out. The reviewer pages and the campaign report render these."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from models.bundle import ModelBundle
from models.catalog import NO_ACTION
from models.decision import decide_population
from models.policy import PolicyBundle
from models.scoring import contributions
from models.stages import STAGES

NOT_SEEN = "not yet seen"


def population_decisions(
    frame: pd.DataFrame,
    churn: ModelBundle,
    upgrade: ModelBundle,
    policy: PolicyBundle,
    *,
    rng: np.random.Generator | None = None,
    reactivation: ModelBundle | None = None,
) -> pd.DataFrame:
    """One row per row of `frame` (registry features; `cutoff` optional): user_id, cutoff, then the
    policy's decision columns (stage, stage_rule, p_churn, p_upgrade, clv, action, expected_value, …) —
    the table of `models.decision.decide_population`, the one population decision."""
    return decide_population(frame, churn, upgrade, policy, rng=rng, reactivation=reactivation).table


def stage_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Users per stage (columns, in lifecycle order) at each cutoff (rows)."""
    counts = pd.crosstab(table["cutoff"], table["stage"])
    return counts.reindex(columns=[s for s in STAGES if s in counts.columns] + sorted(
        set(counts.columns) - set(STAGES)), fill_value=0)  # fmt: skip


def stage_flows(table: pd.DataFrame) -> pd.DataFrame:
    """Users moving between stages from each cutoff to the next: from_cutoff, to_cutoff, from_stage,
    to_stage, users. A user absent at the earlier cutoff comes from `not yet seen`."""
    cutoffs = sorted(table["cutoff"].unique())
    rows = []
    for before, after in itertools.pairwise(cutoffs):
        earlier = table.loc[table["cutoff"] == before, ["user_id", "stage"]]
        later = table.loc[table["cutoff"] == after, ["user_id", "stage"]]
        moved = later.merge(earlier, on="user_id", how="left", suffixes=("_to", "_from"))
        moved["stage_from"] = moved["stage_from"].fillna(NOT_SEEN)
        counts = moved.groupby(["stage_from", "stage_to"]).size()
        for (from_stage, to_stage), users in counts.items():
            rows.append((before, after, from_stage, to_stage, int(users)))
    return pd.DataFrame(rows, columns=["from_cutoff", "to_cutoff", "from_stage", "to_stage", "users"])


def flow_matrix(flows: pd.DataFrame, from_cutoff: object, to_cutoff: object) -> pd.DataFrame:
    """The flows between two cutoffs as a from-stage × to-stage table of users."""
    part = flows[(flows["from_cutoff"] == from_cutoff) & (flows["to_cutoff"] == to_cutoff)]
    matrix = part.pivot_table(
        index="from_stage", columns="to_stage", values="users", aggfunc="sum", fill_value=0
    )
    order = [s for s in (*STAGES, NOT_SEEN) if s in matrix.index]
    return matrix.reindex(index=order, columns=[s for s in STAGES if s in matrix.columns], fill_value=0)


MIX_COLUMNS = ("action", "users", "share", "retention_value", "upgrade_gain", "cost", "expected_value",
               "mean_delta_stay", "mean_delta_upgrade", "mean_value_if_retained")  # fmt: skip


def action_mix(table: pd.DataFrame) -> pd.DataFrame:
    """Per action: users, share of users, and the terms of the expected value summed over its users —
    retention value (Δp(stay or return) × value if retained), upgrade gain (Δupgrade × upgrade value),
    cost, expected value = retention value + upgrade gain − cost — with the mean deltas and value if
    retained they come from; most chosen first, `no_action` last."""
    contacted = (table["action"] != NO_ACTION).to_numpy()
    terms = table.assign(
        retention_value=np.where(contacted, table["delta_stay"] * table["value_if_retained"], 0.0),
        upgrade_gain=np.where(contacted, table["delta_upgrade"] * table["upgrade_value"], 0.0),
    )
    grouped = terms.groupby("action", sort=False).agg(
        users=("action", "size"),
        retention_value=("retention_value", "sum"),
        upgrade_gain=("upgrade_gain", "sum"),
        cost=("cost", "sum"),
        expected_value=("expected_value", "sum"),
        mean_delta_stay=("delta_stay", "mean"),
        mean_delta_upgrade=("delta_upgrade", "mean"),
        mean_value_if_retained=("value_if_retained", "mean"),
    )
    grouped["share"] = grouped["users"] / max(len(table), 1)
    grouped = grouped.reset_index()
    grouped["_last"] = grouped["action"] == NO_ACTION
    grouped = grouped.sort_values(["_last", "users", "action"], ascending=[True, False, True], kind="stable")
    return grouped.drop(columns="_last").reset_index(drop=True)[list(MIX_COLUMNS)]


def contacted_by_stage(table: pd.DataFrame, stages: tuple[str, ...] = ("at_risk", "dormant")) -> pd.DataFrame:
    """Per stage: users and how many the policy contacts (the at-risk and dormant users by default)."""
    rows = []
    for stage in stages:
        members = table["stage"] == stage
        rows.append((stage, int(members.sum()), int((members & (table["action"] != NO_ACTION)).sum())))
    return pd.DataFrame(rows, columns=["stage", "users", "contacted"])


def top_users(table: pd.DataFrame, *, n: int = 50, lapsed: tuple[str, ...] = ("dormant",)) -> pd.DataFrame:
    """The `n` highest-risk users still active (stages other than `lapsed`, who have already gone) and the
    `n` highest-value users (value if retained), one row each, with a `why` column (high risk / high value /
    both) and their `value_at_stake` — churn probability × value if retained, what the user's leaving costs
    in expectation — largest first (a likely leaver worth little ranks below a valuable user at some risk)."""
    risky = table[~table["stage"].isin(lapsed)].nlargest(n, "p_churn").index
    valuable = table.nlargest(n, "value_if_retained").index
    picked = table.loc[risky.union(valuable)].copy()
    in_risk = picked.index.isin(risky)
    in_value = picked.index.isin(valuable)
    picked["why"] = np.where(
        in_risk & in_value, "high risk and high value", np.where(in_risk, "high risk", "high value")
    )
    picked["value_at_stake"] = picked["p_churn"] * picked["value_if_retained"]
    return picked.sort_values(["value_at_stake", "p_churn"], ascending=False, kind="stable").reset_index(
        drop=True
    )


def global_drivers(frame: pd.DataFrame, bundle: ModelBundle, *, sample: int = 2000, seed: int = 0) -> tuple[
    np.ndarray, pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Exact TreeSHAP on a random sample of `frame`: the contributions (rows × features, no bias column),
    the sampled feature values, and the features ranked by mean |contribution|."""
    rows = frame.sample(min(sample, len(frame)), random_state=seed) if len(frame) > sample else frame
    values = contributions(rows, bundle)[:, :-1]
    features = rows[bundle.feature_names].reset_index(drop=True)
    ranking = pd.DataFrame(
        {"feature": bundle.feature_names, "mean_abs_contribution": np.abs(values).mean(axis=0)}
    ).sort_values("mean_abs_contribution", ascending=False, kind="stable")
    return values, features, ranking.reset_index(drop=True)
