"""Churn and upgrade quality against the simulator's oracle on several simulated worlds, beside the
baselines, through the training job's own pure steps (no MLflow): the table issue 15 asks for.

    .venv/bin/python scripts/quality_table.py --seeds 0 1 2 [--users 5000 --days 365] [--out data/quality]

Seed 0 is the demo world (the one tuned on); report the others as held out. Prints one row per world and
target: the latest test cutoff's ROC AUC, the oracle's, their ratio, logistic, recency and BG/NBD (churn),
then the backtest means, and the spread of the ratio across seeds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import warnings
from pathlib import Path

import numpy as np

from clm.config import load_config
from features.build import LabelParams
from features.registry import FeatureParams, build_registry
from simulation.io import simulate_to_directory
from training.btyd import population_summaries
from training.fit import ModelSpec
from training.train import fit_target, training_frame
from training.truth import latent_stages, read_truth


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--out", type=Path, default=Path("data/quality"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.basicConfig(level=logging.WARNING)

    config = load_config()
    labels = LabelParams.from_config(config.labels)
    params = FeatureParams.from_config(config.features)
    registry = build_registry(params)
    header = (f"{'world':>12} {'target':>8} {'AUC':>6} {'oracle':>6} {'ratio':>6} {'logit':>6} {'recency':>7} "
              f"{'BG/NBD':>6} | backtest: {'AUC':>6} {'ratio':>6} {'logit':>6} {'BG/NBD':>6}")  # fmt: skip
    print(header)
    ratios: dict[str, list[float]] = {"churn": [], "upgrade": []}
    for seed in args.seeds:
        world = args.out / f"seed{seed}"
        simulate_to_directory(world, n_users=args.users, days=args.days, seed=seed, start=dt.date(2025, 1, 1))
        frame, data_end = training_frame(world, config, labels)
        truth = read_truth(world / "truth")
        frame = frame.merge(latent_stages(truth), on=["user_id", "cutoff"], how="left")
        population = population_summaries(
            world, sorted(set(frame["cutoff"])), params=params, labels=labels,
            activity=config.labels.non_contractual_activity,
        )  # fmt: skip
        for target in ("churn", "upgrade"):
            spec = ModelSpec.from_config(target, config.models.propensity(target))
            fit = fit_target(
                frame, spec, registry=registry, horizon_days=labels.horizon_days, scoring_cutoff=data_end,
                training=config.training, truth=truth, progress=lambda message: None,
                transactions=config.labels.non_contractual_activity,
                bgnbd_population=population if target == "churn" else None,
            )  # fmt: skip
            test = fit.final.metrics
            ratio = test["model"]["auc_over_oracle_auc"]
            ratios[target].append(ratio)
            folds = [r.metrics for r in fit.results]
            backtest_ratio = np.mean([m["model"]["auc_over_oracle_auc"] for m in folds])

            def auc(who: str, metrics: dict = test) -> str:
                return f"{metrics[who]['roc_auc']:.3f}" if who in metrics else "—"

            def mean_auc(who: str, folds: list = folds) -> str:
                return f"{np.mean([m[who]['roc_auc'] for m in folds]):.3f}" if who in folds[0] else "—"

            name = f"{'demo ' if seed == 0 else ''}seed {seed}"
            print(f"{name:>12} {target:>8} {auc('model'):>6} {auc('oracle'):>6} {ratio:>6.3f} {auc('logistic'):>6} "
                  f"{auc('recency_rule'):>7} {auc('bgnbd'):>6} | backtest: {mean_auc('model'):>6} "
                  f"{backtest_ratio:>6.3f} {mean_auc('logistic'):>6} {mean_auc('bgnbd'):>6}", flush=True)  # fmt: skip
    for target, values in ratios.items():
        held_out = values[1:] if args.seeds[0] == 0 else values
        print(f"{target}: AUC ÷ oracle over seeds {args.seeds}: mean {np.mean(values):.3f}, min {np.min(values):.3f}, "
              f"max {np.max(values):.3f}; held out only: mean {np.mean(held_out):.3f}, "
              f"spread {np.ptp(held_out) if len(held_out) else float('nan'):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
