"""Measures of a simulated world against the calibration it promises (see SimulationParams)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from simulation.params import STAGES

ALIVE_LATENT = [s for s in STAGES if s != "churned"]

# The ranges the default world is tuned to land in (issue "Foundation", DESIGN.md §6).
TARGETS: dict[str, tuple[float, float]] = {
    "monthly_churn_rate": (0.03, 0.08),
    "monthly_upgrade_rate": (0.01, 0.04),
    "oracle_churn_auc": (0.80, 0.92),
    "campaign_reach": (0.15, 0.25),
    "best_action_relative_churn_cut": (0.20, 0.50),
    "share_harmed_by_any_contact": (0.03, 0.30),
}


@dataclass(frozen=True)
class Calibration:
    monthly_churn_rate: float
    monthly_upgrade_rate: float
    oracle_churn_auc: float
    campaign_reach: float
    best_action_relative_churn_cut: float
    share_harmed_by_any_contact: float
    rows: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def out_of_range(self) -> dict[str, tuple[float, tuple[float, float]]]:
        values = self.as_dict()
        return {k: (values[k], r) for k, r in TARGETS.items() if not r[0] <= values[k] <= r[1]}


def measure(outcomes: pd.DataFrame, effects: pd.DataFrame, campaigns: pd.DataFrame) -> Calibration:
    """Churn/upgrade rates, oracle AUC, campaign reach and effect sizes of a simulated world."""
    closed = outcomes[outcomes["churned"].notna()]
    alive = closed[closed["latent_stage"].isin(ALIVE_LATENT)]
    untreated = alive[alive["campaign_action"].isna() | (alive["campaign_action"] == "no_action")]
    can_upgrade = alive[alive["p_upgrade"] > 0]

    eligible = campaigns.groupby(campaigns["ts"].dt.date)["action"].agg(
        lambda a: float((a != "no_action").mean())
    )

    wide = effects.pivot_table(index=["user_id", "cutoff"], columns="action", values="delta_p_churn")
    base = outcomes.set_index(["user_id", "cutoff"])
    base = base[base["latent_stage"].isin(ALIVE_LATENT)]
    joined = wide.join(base[["p_churn"]], how="inner")
    deltas = joined.drop(columns="p_churn").to_numpy()
    relative_best = -deltas.min(axis=1) / np.maximum(joined["p_churn"].to_numpy(), 1e-9)
    weights = joined["p_churn"].to_numpy()
    harmed_by_all = (deltas > 0).all(axis=1)

    return Calibration(
        monthly_churn_rate=float(alive["churned"].astype(bool).mean()),
        monthly_upgrade_rate=float(can_upgrade["upgraded"].astype(bool).mean()),
        oracle_churn_auc=float(roc_auc_score(untreated["churned"].astype(bool), untreated["p_churn"])),
        campaign_reach=float(eligible.mean()) if len(eligible) else float("nan"),
        best_action_relative_churn_cut=float(np.average(np.clip(relative_best, 0, 1), weights=weights)),
        share_harmed_by_any_contact=float(harmed_by_all.mean()),
        rows=len(alive),
    )
