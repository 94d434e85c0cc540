"""Do BG/NBD's P(alive) and expected purchases help the churn model? Issue 15 asks to use them as
candidate features "where they help on the backtest"; this measures it, through the training job's own
pure steps (no MLflow), on simulated worlds and on a short purchases-only log.

    .venv/bin/python benchmarks/btyd_features.py --seeds 1 2 [--users 5000 --days 365] [--out data/btyd]

For each world: BG/NBD is fitted (unsupervised: x, t_x, T of every user known at each cutoff, no labels)
and its P(alive) and expected transactions over the label horizon are added to the frame as two extra
features; the churn model is fitted with and without them on the same backtest folds. Prints the mean
backtest ROC AUC of both, the latest fold's, and the difference.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

# `python benchmarks/btyd_features.py` puts benchmarks/ first on sys.path, where benchmarks/features.py would
# shadow the features package
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from clm.config import load_config
from features.build import LabelParams
from features.registry import FeatureParams, build_registry
from models.btyd import fit_bgnbd, rfm_summary
from simulation.io import simulate_to_directory
from training.btyd import population_summaries
from training.fit import ModelSpec
from training.train import fit_target, training_frame


def with_bgnbd_features(frame: pd.DataFrame, population: pd.DataFrame, horizon_days: int, activity: str):
    """The frame with `bgnbd_p_alive` and `bgnbd_expected` from BG/NBD fitted on `population`."""
    model = fit_bgnbd(population["x"], population["t_x"], population["T"])
    rows = rfm_summary(frame, activity)
    out = frame.copy()
    out["bgnbd_p_alive"] = model.p_alive(rows["x"], rows["t_x"], rows["T"])
    out["bgnbd_expected"] = model.expected_transactions(rows["x"], rows["t_x"], rows["T"], horizon_days)
    return out


def extra_features(registry: list) -> list:
    template = next(f for f in registry if f.name == "days_since_last_event")
    return [
        dataclasses.replace(template, name="bgnbd_p_alive", description="BG/NBD P(alive)", risk_direction=-1,
                            window_days=None, build=None),
        dataclasses.replace(template, name="bgnbd_expected", description="BG/NBD expected transactions",
                            risk_direction=-1, window_days=None, build=None),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--out", type=Path, default=Path("data/btyd"))
    parser.add_argument("--data", type=Path, nargs="*", default=[], help="ingested data directories to add")
    parser.add_argument("--horizon-days", type=int, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)

    config = load_config()
    if args.horizon_days:
        config = config.model_copy(
            update={"labels": config.labels.model_copy(update={"horizon_days": args.horizon_days})}
        )
    labels = LabelParams.from_config(config.labels)
    params = FeatureParams.from_config(config.features)
    registry = list(build_registry(params))
    activity = config.labels.non_contractual_activity
    worlds = []
    for seed in args.seeds:
        world = args.out / f"seed{seed}"
        if not (world / "events.parquet").exists() and not any(world.glob("versions/*")):
            simulate_to_directory(
                world, n_users=args.users, days=args.days, seed=seed, start=dt.date(2025, 1, 1)
            )
        worlds.append((f"seed {seed}", world))
    worlds += [(str(path), path) for path in args.data]
    print(f"{'world':>24} {'folds':>5} {'AUC without':>11} {'AUC with':>9} {'Δ mean':>7} {'latest without':>14} "
          f"{'latest with':>11}")  # fmt: skip
    spec = ModelSpec.from_config("churn", config.models.propensity("churn"))
    for name, world in worlds:
        frame, data_end = training_frame(world, config, labels)
        population = population_summaries(
            world, sorted(set(frame["cutoff"])), params=params, labels=labels, activity=activity
        )
        results = {}
        for label, rows, features in (
            ("without", frame, registry),
            ("with", with_bgnbd_features(frame, population, labels.horizon_days, activity),
             registry + extra_features(registry)),
        ):  # fmt: skip
            fit = fit_target(
                rows, spec, registry=features, horizon_days=labels.horizon_days, scoring_cutoff=data_end,
                training=config.training, truth=None, progress=lambda message: None, transactions=activity,
                bgnbd_population=population,
            )  # fmt: skip
            folds = [r.metrics["model"]["roc_auc"] for r in fit.results]
            results[label] = (np.mean(folds), fit.final.metrics["model"]["roc_auc"], len(folds))
        (m0, l0, n), (m1, l1, _) = results["without"], results["with"]
        print(
            f"{name[-24:]:>24} {n:>5} {m0:>11.4f} {m1:>9.4f} {m1 - m0:>+7.4f} {l0:>14.4f} {l1:>11.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
