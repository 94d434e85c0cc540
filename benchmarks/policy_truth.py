"""The policy figures of issue 14, valued by the simulator's true margin: per seed, a world is simulated
(30,000 users, 365 days by default), the churn, upgrade and reactivation models and the policy are trained and promoted
as `clm train` / `clm promote` do, and `clm evaluate-policy` runs at the policy's held-out wave. Printed
per seed: clm ÷ oracle, clm ÷ the oracle restricted to the features, every policy's value per user ± 2
standard errors, clm's lead over each baseline ± 2 SE of the paired difference, precision and recall of
"contact" among at_risk and dormant users against the oracle, and the offline IPS/DR estimates of clm's
value beside the truth on the same logged users; then the spread of the ratios across seeds. Also the
time the margin truth adds to the simulation (the same world simulated with and without it).

Usage: nice -n 10 .venv/bin/python benchmarks/policy_truth.py [--users 30000] [--days 365]
       [--seeds 101,202,303] [--out DIR] [--keep]
The seeds are not the demo's (0) nor the tests' (11, 42).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# `python benchmarks/x.py` puts benchmarks/ first on sys.path, where benchmarks/features.py would
# shadow the `features` package.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parents[0]:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import numpy as np

from clm.commands.simulate import value_truth
from clm.config import load_config
from clm.config_schema import ClmConfig
from simulation.engine import simulate_world
from simulation.io import simulate_to_directory
from simulation.params import LATENT_TO_PRODUCT_STAGE
from simulation.truth import MarginParams
from training import tracking
from training.evaluate_policy import MARGIN_POLICIES, evaluate_policy
from training.policy import train_policy
from training.promote import promote_model
from training.train import train

START = dt.date(2025, 1, 1)


def run_seed(root: Path, users: int, days: int, seed: int, config: ClmConfig) -> dict:
    data = root / "world"
    began = time.perf_counter()
    simulate_to_directory(data, n_users=users, days=days, seed=seed, start=START,
                          value_truth=value_truth(config, MarginParams))  # fmt: skip
    simulated = time.perf_counter() - began
    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    tracking.configure(uri)
    train(
        data, ["churn", "upgrade", "reactivation"], config=config, project_root=root, truth_dir=data / "truth"
    )
    for name in ("clm-churn", "clm-upgrade", "clm-reactivation"):
        promote_model(name, metric="backtest.roc_auc.mean", tolerance=0.005)
    train_policy(data, config=config, project_root=root, truth_dir=data / "truth")
    promote_model("clm-policy", metric="test.offline.dr", tolerance=1e9)
    evaluation = evaluate_policy(data, config=config, project_root=root, truth_dir=data / "truth",
                                 latent_to_stage=LATENT_TO_PRODUCT_STAGE, alias="champion")  # fmt: skip
    return {"evaluation": evaluation, "simulate_seconds": simulated, "seconds": time.perf_counter() - began}


def print_seed(seed: int, result: dict) -> None:
    e = result["evaluation"]
    m = e.margin
    print(f"\n== seed {seed}: held-out wave {e.as_of}, {m.n_users:,} users, {e.policy_version}"
          f"{' (IN-SAMPLE)' if e.in_sample else ''}; {result['seconds'] / 60:.1f} min "
          f"(simulation {result['simulate_seconds']:.0f} s)")  # fmt: skip
    print(
        f"clm / oracle = {_ratio(m.ratio('oracle'))}   clm / restricted oracle = {_ratio(m.ratio('restricted_oracle'))}"
    )
    print(
        f"{'policy':<20}{'value/user ± 2 SE':>22}{'clm − policy ± 2 SE':>24}{'contacts/1,000':>16}{'old CLV-valued/user':>21}"
    )
    for name in MARGIN_POLICIES:
        gap = (
            "" if name == "clm" else f"{m.mean['clm'] - m.mean[name]:+.2f} ± {2 * m.difference_se[name]:.2f}"
        )
        clv = e.value_per_1000.get(name)
        print(f"{name:<20}{m.mean[name]:>13.2f} ± {2 * m.se[name]:<6.2f}{gap:>24}{m.contacts_per_1000[name]:>16.0f}"
              f"{'' if clv is None else f'{clv / 1000:.2f}':>21}")  # fmt: skip
    q = m.contact_quality
    print(f"at_risk + dormant: {q['vs_oracle.users']:.0f} users, clm contacts {q['vs_oracle.contacted']:.0f}, oracle "
          f"{q['vs_oracle.oracle_contacted']:.0f}, both {q['vs_oracle.both']:.0f}: precision {_ratio(q['vs_oracle.precision'])}, "
          f"recall {_ratio(q['vs_oracle.recall'])} (vs the restricted oracle: precision "
          f"{_ratio(q.get('vs_restricted_oracle.precision'))}, recall {_ratio(q.get('vs_restricted_oracle.recall'))})")  # fmt: skip
    if m.lost is not None and not m.lost.empty:
        cells = m.lost.groupby(["stage", "kind"])[["users", "lost_per_1000"]].sum()
        cells = cells.sort_values("lost_per_1000", ascending=False).head(6)
        print("value lost against the restricted oracle, per 1,000 users (stage, kind: users, lost): "
              + "; ".join(f"{s} {k}: {int(r.users):,}, {r.lost_per_1000 / 1000:.2f}/user" for (s, k), r in cells.iterrows()))  # fmt: skip
    o = {
        k: (None if v is None else v / 1000.0)
        for k, v in e.offline.items()
        if k not in ("n_logged", "matched")
    }
    print(f"offline on {e.offline.get('n_logged', 0):.0f} logged users, per user: IPS {_money(o.get('ips'))} ± "
          f"{_money(o.get('ips_se'))}, DR {_money(o.get('dr'))} ± {_money(o.get('dr_se'))} (reward: realised 30-day "
          f"outcomes × our CLV); truth by margin {_money(o.get('truth_margin_on_logged'))} ± "
          f"{_money(o.get('truth_margin_on_logged_se'))}; truth by CLV {_money(o.get('truth_on_logged'))}")  # fmt: skip


def margin_truth_time(users: int, days: int, seed: int, repeats: int) -> None:
    """Median time to simulate the same world with and without the margin truth, in this process."""
    with_truth, without = [], []
    for _ in range(repeats):
        for sink, times in ((lambda table: None, with_truth), (None, without)):
            began = time.perf_counter()
            simulate_world(users, days, seed, START, on_margins=sink)
            times.append(time.perf_counter() - began)
    a, b = float(np.median(with_truth)), float(np.median(without))
    print(f"\nsimulating {users:,} users × {days} days: {a:.1f} s with the margin truth, {b:.1f} s without "
          f"(median of {repeats}); the truth adds {a - b:.1f} s ({a / b:.2f}×)")  # fmt: skip


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _money(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=30_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seeds", default="101,202,303")
    parser.add_argument(
        "--out", type=Path, default=None, help="Working directory (default: a temporary one)."
    )
    parser.add_argument("--keep", action="store_true", help="Keep the worlds and MLflow stores.")
    parser.add_argument("--timing-repeats", type=int, default=1, help="0 skips the simulation timing.")
    args = parser.parse_args()
    # MLflow's INFO lines and download bars would bury the figures; its warnings still show
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    config = load_config()
    out = args.out or Path(tempfile.mkdtemp(prefix="clm-policy-truth-"))
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    results = {}
    try:
        for seed in seeds:
            root = out / f"seed-{seed}"
            root.mkdir(parents=True, exist_ok=True)
            results[seed] = run_seed(root, args.users, args.days, seed, config)
            print_seed(seed, results[seed])
            sys.stdout.flush()
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    if len(results) > 1:
        print("\n== across seeds (mean, min–max)")
        for reference in ("oracle", "restricted_oracle"):
            ratios = [r["evaluation"].margin.ratio(reference) for r in results.values()]
            ratios = [x for x in ratios if x is not None]
            if ratios:
                print(f"clm / {reference}: {np.mean(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})")
    if args.timing_repeats > 0:
        margin_truth_time(args.users, args.days, seeds[0], args.timing_repeats)


if __name__ == "__main__":
    main()
