"""`clm train --tune N`: a seeded random search over the main LightGBM parameters, judged on the
validation cutoff only (the test cutoff is never looked at)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.registry import Feature
from models.metrics import classification_metrics
from training.dataset import Split
from training.fit import ModelSpec, new_model, rows_for

SPACE: dict[str, Sequence[Any]] = {
    "num_leaves": (7, 15, 31, 63),
    "learning_rate": (0.02, 0.05, 0.1),
    "min_data_in_leaf": (20, 50, 100, 200),
    "feature_fraction": (0.6, 0.8, 1.0),
    "lambda_l2": (0.0, 1.0, 10.0),
}


def tune(
    frame: pd.DataFrame,
    split: Split,
    spec: ModelSpec,
    registry: Sequence[Feature],
    *,
    trials: int,
    seed: int = 0,
) -> dict[str, Any]:
    """The best parameters by validation ROC AUC. Inside the training cutoffs, the last one acts as the
    early-stopping set, so the validation cutoff stays unseen until it judges a trial."""
    if len(split.train) < 2:
        raise ValueError("tuning needs at least two training cutoffs (one is held out for early stopping)")
    fit_rows = rows_for(frame, split.train[:-1], spec.target)
    stop_rows = rows_for(frame, [split.train[-1]], spec.target)
    judge_rows = rows_for(frame, [split.valid], spec.target)
    rng = np.random.default_rng(seed)
    best: tuple[float, dict[str, Any]] = (-np.inf, {})
    for _ in range(trials):
        candidate = {name: values[int(rng.integers(len(values)))] for name, values in SPACE.items()}
        model = new_model(spec, registry, fit_rows, seed, params=candidate)
        model.fit(
            fit_rows, fit_rows[spec.target].astype(float), stop_rows, stop_rows[spec.target].astype(float)
        )
        auc = classification_metrics(
            judge_rows[spec.target].astype(float).to_numpy(), model.predict_proba(judge_rows)[:, 1]
        )["roc_auc"]
        if auc > best[0]:
            best = (auc, candidate)
    return best[1]
