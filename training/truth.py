"""On simulated data: the simulator's ground truth as an oracle and as latent stages for slicing."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd


def read_truth(truth_dir: Path | None) -> pd.DataFrame | None:
    """`truth/outcomes.parquet` (read once per job), cutoffs as dates; None when there is no truth."""
    if truth_dir is None or not (Path(truth_dir) / "outcomes.parquet").exists():
        return None
    columns = ["user_id", "cutoff", "latent_stage", "p_churn", "p_upgrade"]
    truth = pd.read_parquet(Path(truth_dir) / "outcomes.parquet", columns=columns)
    truth["cutoff"] = pd.to_datetime(truth["cutoff"]).dt.date
    return truth


def truth_oracle(truth: pd.DataFrame | None, target: str) -> Callable[[pd.DataFrame], np.ndarray] | None:
    """The simulator's true probability of `target` for each (user, cutoff) row (reactivation: of not
    churning, i.e. of any activity within the horizon)."""
    if truth is None:
        return None
    indexed = truth.set_index(["user_id", "cutoff"])
    lookup = {"churn": indexed["p_churn"], "reactivation": 1.0 - indexed["p_churn"]}.get(
        target, indexed["p_upgrade"]
    )

    def oracle(rows: pd.DataFrame) -> np.ndarray:
        keys = pd.MultiIndex.from_arrays([rows["user_id"], rows["cutoff"]])
        return lookup.reindex(keys).to_numpy(dtype=float)

    return oracle


def latent_stages(truth: pd.DataFrame | None) -> pd.DataFrame | None:
    return None if truth is None else truth[["user_id", "cutoff", "latent_stage"]]


def read_effects(truth_dir: Path | None, cutoff) -> pd.DataFrame | None:
    """`truth/effects.parquet` at one cutoff (user_id, action, delta_p_churn, delta_p_upgrade); None when
    there is no truth or it has nothing at that cutoff."""
    return _truth_at(truth_dir, "effects.parquet", cutoff)


def read_probabilities(truth_dir: Path | None, cutoff) -> pd.DataFrame | None:
    """`truth/outcomes.parquet` at one cutoff: user_id, the true p_churn and p_upgrade without a contact."""
    return _truth_at(
        truth_dir, "outcomes.parquet", cutoff, columns=["user_id", "cutoff", "p_churn", "p_upgrade"]
    )


def _truth_at(
    truth_dir: Path | None, name: str, cutoff, columns: Sequence[str] | None = None
) -> pd.DataFrame | None:
    """The rows of `truth/<name>` at one cutoff; None when the file is missing or has none there."""
    path = None if truth_dir is None else Path(truth_dir) / name
    if path is None or not path.exists():
        return None
    rows = pd.read_parquet(path, columns=columns, filters=[("cutoff", "==", cutoff)])
    return None if rows.empty else rows


def effect_matrices(
    effects: pd.DataFrame, users: pd.Series, actions: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(n, A) true change in churn and in upgrade probability per user and action, in `actions` order
    (NaN where the truth does not know the user)."""
    out = []
    for column in ("delta_p_churn", "delta_p_upgrade"):
        wide = effects.pivot(index="user_id", columns="action", values=column)
        out.append(wide.reindex(index=users.to_numpy(), columns=list(actions)).to_numpy(dtype=float))
    return out[0], out[1]


def read_latent_product_stages(
    truth_dir: Path | None, cutoff, latent_to_stage: Mapping[str, str]
) -> pd.Series | None:
    """user_id → the product stage of the user's true latent stage at `cutoff` (`latent_to_stage` comes
    from the caller, which knows the simulator); None when there is no truth."""
    truth = _truth_at(truth_dir, "outcomes.parquet", cutoff, columns=["user_id", "cutoff", "latent_stage"])
    if truth is None:
        return None
    return truth.set_index("user_id")["latent_stage"].map(dict(latent_to_stage))


def read_margins(truth_dir: Path | None, cutoff) -> pd.DataFrame | None:
    """`truth/margin.parquet` at one cutoff (user_id, action, incremental_margin, baseline_margin): the
    simulator's true expected discounted margin over its value horizon without a contact and each action's
    increment on it, cost not subtracted. None when there is no margin truth at that cutoff."""
    return _truth_at(truth_dir, "margin.parquet", cutoff)


def margin_matrix(
    margins: pd.DataFrame, users: pd.Series, actions: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(n, A) true incremental margin per user and action in `actions` order, and (n,) the margin without a
    contact (NaN where the truth does not know the user)."""
    wide = margins.pivot(index="user_id", columns="action", values="incremental_margin")
    incremental = wide.reindex(index=users.to_numpy(), columns=list(actions)).to_numpy(dtype=float)
    baseline = margins.drop_duplicates("user_id").set_index("user_id")["baseline_margin"]
    return incremental, baseline.reindex(users.to_numpy()).to_numpy(dtype=float)
