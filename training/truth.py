"""On simulated data: the simulator's ground truth as an oracle and as latent stages for slicing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd


def truth_oracle(truth_dir: Path | None, target: str) -> Callable[[pd.DataFrame], np.ndarray | None] | None:
    """On simulated data: the simulator's true probability for each (user, cutoff) row."""
    if truth_dir is None or not (truth_dir / "outcomes.parquet").exists():
        return None
    column = "p_churn" if target == "churn" else "p_upgrade"
    truth = pd.read_parquet(truth_dir / "outcomes.parquet", columns=["user_id", "cutoff", column])
    truth["cutoff"] = pd.to_datetime(truth["cutoff"]).dt.date
    lookup = truth.set_index(["user_id", "cutoff"])[column]

    def oracle(rows: pd.DataFrame) -> np.ndarray:
        keys = pd.MultiIndex.from_arrays([rows["user_id"], rows["cutoff"]])
        return lookup.reindex(keys).to_numpy(dtype=float)

    return oracle


def latent_stages(truth_dir: Path | None) -> pd.DataFrame | None:
    if truth_dir is None or not (truth_dir / "outcomes.parquet").exists():
        return None
    stages = pd.read_parquet(truth_dir / "outcomes.parquet", columns=["user_id", "cutoff", "latent_stage"])
    stages["cutoff"] = pd.to_datetime(stages["cutoff"]).dt.date
    return stages
