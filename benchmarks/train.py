"""Training overhead: our training step (model matrix, LightGBM with early stopping, isotonic calibration,
test metrics, baselines excluded, one MLflow run with the model registered) against a bare
`lightgbm.train` on the same matrix with the same parameters and the same number of rounds, in one process.

Usage: python benchmarks/train.py [--rows 1000000] [--no-mlflow]
Target (issue "Training jobs"): our overhead ≤ 1.5× the bare fit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import tempfile
import time
from pathlib import Path

# `python benchmarks/train.py` puts benchmarks/ first on sys.path, where benchmarks/features.py would
# shadow the `features` package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import lightgbm as lgb
import numpy as np
import pandas as pd

from clm.config import load_config
from features.registry import FeatureParams, build_registry
from models.frame import category_lists, model_matrix
from models.metrics import classification_metrics
from training.fit import ModelSpec, new_model


def synthetic_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    """Registry-shaped rows with a learnable churn label (recency, activity trend and tickets drive it)."""
    rng = np.random.default_rng(seed)
    registry = build_registry()
    data: dict[str, object] = {}
    for feature in registry:
        if feature.dtype == "category":
            choices = list(feature.categories) or ["retention_discount", "recommendation", "winback_offer"]
            data[feature.name] = pd.Categorical(rng.choice(choices, rows), categories=choices)
        else:
            values = rng.gamma(1.5, 10.0, rows)
            values[rng.random(rows) < 0.05] = np.nan
            data[feature.name] = values
    frame = pd.DataFrame(data)
    logit = (
        0.05 * np.nan_to_num(frame["days_since_last_event"], nan=30.0)
        - 0.04 * np.nan_to_num(frame["active_days_30d"], nan=0.0)
        + 0.03 * np.nan_to_num(frame["support_ticket_count_30d"], nan=0.0)
        - 2.5
        + rng.normal(0, 1, rows)
    )
    frame["churn"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(float)
    frame["cutoff"] = np.where(rng.random(rows) < 0.8, dt.date(2025, 10, 1), dt.date(2025, 11, 1))
    frame["user_id"] = [f"u{i}" for i in range(rows)]
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--no-mlflow", action="store_true")
    args = parser.parse_args()
    config = load_config()
    registry = build_registry(FeatureParams.from_config(config.features))
    spec = ModelSpec.from_config("churn", config.models.churn)
    frame = synthetic_frame(args.rows)
    train = frame[frame["cutoff"] == dt.date(2025, 10, 1)]
    valid = frame[frame["cutoff"] == dt.date(2025, 11, 1)]
    print(f"rows: {len(train):,} train, {len(valid):,} validation, {len(registry)} features", flush=True)

    # ours: matrix assembly + early-stopped fit + calibration + metrics (+ MLflow run and registration)
    started = time.perf_counter()
    model = new_model(spec, registry, train, seed=0)
    model.fit(train, train["churn"].to_numpy(), valid, valid["churn"].to_numpy())
    p = model.predict_proba(valid)[:, 1]
    metrics = classification_metrics(valid["churn"].to_numpy(), p)
    fit_seconds = time.perf_counter() - started
    logged_seconds = 0.0
    if not args.no_mlflow:
        from models.bundle import bundle_from_model
        from training import tracking
        from training.train import register_bundle

        with tempfile.TemporaryDirectory() as tmp:
            tracking.configure(f"sqlite:///{tmp}/mlflow.db")
            bundle = bundle_from_model(
                model, name="bench-churn", target="churn", feature_version="bench", horizon_days=30
            )
            log_started = time.perf_counter()
            with tracking.start_training_run("bench", "train-bench", params={"rows": len(train)}, tags={}):
                tracking.log_metrics_flat({"test": metrics})
                register_bundle(bundle, valid.head(5), tags={})
            logged_seconds = time.perf_counter() - log_started
    ours = fit_seconds + logged_seconds
    rounds = model.booster_.current_iteration()

    # bare: the same matrix and parameters, the same number of rounds, nothing else
    X = model_matrix(train, model.feature_names, category_lists(registry, train))
    params = model.lgb_params(train["churn"].to_numpy())
    started = time.perf_counter()
    lgb.train(params, lgb.Dataset(X, label=train["churn"].to_numpy()), num_boost_round=rounds)
    bare = time.perf_counter() - started

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"{'case':<44} {'seconds':>8}")
    print(f"{'bare lightgbm.train (' + str(rounds) + ' rounds)':<44} {bare:>8.1f}")
    print(f"{'ours: assemble + fit + calibrate + metrics':<44} {fit_seconds:>8.1f}")
    print(f"{'ours: MLflow run + model registration':<44} {logged_seconds:>8.1f}")
    print(f"{'ours: total':<44} {ours:>8.1f}")
    print(f"ratio ours ÷ bare: {ours / bare:.2f} (target ≤ 1.5); peak RSS {peak:.2f} GiB; "
          f"validation ROC AUC {metrics['roc_auc']:.3f}, best iteration {model.best_iteration_}")  # fmt: skip


if __name__ == "__main__":
    main()
