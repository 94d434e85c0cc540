"""Measured lift checked against the simulator: a campaign decided by the policy (control group and
exploration holdouts included) gets its outcomes drawn from the simulator's true probabilities given what each
user received, so every action × stage comparison has a known true average effect its interval must cover."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from models.arbitration import HOLDOUT_CONTROL, HOLDOUT_EXPLORATION
from models.catalog import NO_ACTION
from models.lift import OUTCOME_COLUMNS
from training.truth import effect_matrices, margin_matrix, read_effects, read_margins, read_probabilities


def simulated_outcomes(
    rows: pd.DataFrame, truth_dir: Path, cutoff, actions: Sequence[str], seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`rows` (decision rows: user_id, stage, action, intended_action, control_group, holdout, cost) with
    `churned` and `upgraded` drawn from the true probabilities at `cutoff` plus the true effect of the action
    each user received, `margin` the true expected margin given it (NaN without margin truth), `returned`
    unknown; and the truth per action × stage: the average true effect on churn (`true_effect`) and the
    average true incremental margin less cost (`true_margin`) over the users the comparison reads."""
    truth = read_probabilities(truth_dir, cutoff)
    effects = read_effects(truth_dir, cutoff)
    if truth is None or effects is None:
        raise ValueError(f"{truth_dir} has no true probabilities and effects at {cutoff}")
    rows = rows.reset_index(drop=True).copy()
    users = rows["user_id"].astype(str)
    base = truth.assign(user_id=truth["user_id"].astype(str)).set_index("user_id").reindex(users)
    delta_churn, delta_upgrade = effect_matrices(effects, users, actions)
    index = {a: k for k, a in enumerate(actions)}
    received = rows["action"].map(index).fillna(-1).astype(int).to_numpy()
    at = np.arange(len(rows))

    def given(delta: np.ndarray) -> np.ndarray:
        return np.where(received >= 0, np.nan_to_num(delta[at, np.maximum(received, 0)]), 0.0)

    rng = np.random.default_rng(seed)
    p_churn = np.clip(base["p_churn"].to_numpy(float) + given(delta_churn), 0.0, 1.0)
    p_upgrade = np.clip(base["p_upgrade"].to_numpy(float) + given(delta_upgrade), 0.0, 1.0)
    known = ~np.isnan(p_churn)
    rows["churned"] = np.where(known, (rng.random(len(rows)) < p_churn).astype(float), np.nan)
    rows["upgraded"] = np.where(known, (rng.random(len(rows)) < p_upgrade).astype(float), np.nan)
    rows[OUTCOME_COLUMNS["return"]] = np.nan
    margins = read_margins(truth_dir, cutoff)
    incremental = np.full((len(rows), len(actions)), np.nan)
    if margins is not None:
        incremental, baseline = margin_matrix(margins, users, list(actions))
        rows["margin"] = baseline + given(incremental)
    else:
        rows["margin"] = np.nan

    intended = rows["intended_action"].astype(str).to_numpy()
    held = rows["holdout"].isin([HOLDOUT_CONTROL, HOLDOUT_EXPLORATION]).to_numpy()
    compared = held | (rows["action"].astype(str).to_numpy() == intended)
    costs = rows.groupby("intended_action")["cost"].max()
    cells = []
    for (action, stage), members in rows[compared & (intended != NO_ACTION)].groupby(
        ["intended_action", "stage"]
    ):
        k, where = index[action], members.index.to_numpy()
        cells.append({"action": action, "stage": stage, "true_effect": float(np.nanmean(delta_churn[where, k])),
                      "true_margin": float(np.nanmean(incremental[where, k]) - costs.get(action, 0.0))
                      if margins is not None else np.nan})  # fmt: skip
    return rows, pd.DataFrame(cells, columns=["action", "stage", "true_effect", "true_margin"])


def interval_coverage(
    data_dir: Path,
    cutoff,
    config,
    *,
    salts: Sequence[int] = (0, 1, 2),
    control_share: float = 0.3,
    exploration_share: float = 0.2,
    min_users: int = 30,
) -> list[tuple[int, int]]:
    """(covered, cells) per salt: a campaign at `cutoff` decided by the one decision path — the catalogue's
    priors, the simulator's true probabilities as the scores, the control group and exploration drawn with
    the salt — its outcomes drawn from the truth given what each user received (`simulated_outcomes`), and
    how many action × stage intervals with `min_users` a side hold the true average effect on churn."""
    import dataclasses

    from features.jobs import latest_features
    from features.registry import FeatureParams
    from models.arbitration import ExplorationKey
    from models.decision import prior_policy
    from models.lift import LiftParams, coverage, lift_table
    from models.policy import decide

    frame, _ = latest_features(data_dir, params=FeatureParams.from_config(config.features), as_of=cutoff)
    truth = read_probabilities(Path(data_dir) / "truth", cutoff)
    truth = truth.assign(user_id=truth["user_id"].astype(str)).set_index("user_id")
    frame = frame[frame["user_id"].astype(str).isin(truth.index)].reset_index(drop=True)
    p = truth.reindex(frame["user_id"].astype(str))
    base = prior_policy(config)
    out = []
    for salt in salts:
        contact = dataclasses.replace(base.contact, control_share=control_share, control_salt=f"c{salt}",
                                      exploration_share=exploration_share)  # fmt: skip
        policy = dataclasses.replace(base, contact=contact)
        decisions = decide(frame, p["p_churn"].to_numpy(), p["p_upgrade"].to_numpy(), policy, churn_horizon_days=30,
                           exploration=ExplorationKey(str(cutoff), "priors", f"e{salt}"))  # fmt: skip
        rows = pd.concat([frame[["user_id"]], decisions.to_frame()], axis=1)
        rows, true = simulated_outcomes(rows, Path(data_dir) / "truth", cutoff, policy.actions, salt)
        out.append(coverage(lift_table(rows, LiftParams(min_users=min_users)), true))
    return out


__all__ = ["interval_coverage", "simulated_outcomes"]
