"""How often the measured-lift intervals hold the true effect: per simulated world (seed) and salt, a campaign
decided by the one decision path with the control group and exploration, outcomes drawn from the simulator's
truth (training.lift.interval_coverage); prints covered / cells per world and overall against the nominal 95 %.

    python benchmarks/lift_coverage.py --seeds 0 1 2 --users 15000
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

# `python benchmarks/lift_coverage.py` puts benchmarks/ first on sys.path, where benchmarks/features.py would
# shadow the features package: put the project root there instead
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from clm.config import load_config
from simulation.io import simulate_to_directory
from training.lift import interval_coverage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--users", type=int, default=15_000)
    parser.add_argument("--salts", type=int, default=3)
    parser.add_argument("--control-share", type=float, default=0.3)
    args = parser.parse_args()
    config = load_config()
    total_covered = total_cells = 0
    with tempfile.TemporaryDirectory(prefix="clm-lift-coverage-") as tmp:
        for seed in args.seeds:
            started = time.perf_counter()
            world = Path(tmp) / f"world-{seed}"
            simulate_to_directory(world, n_users=args.users, days=300, seed=seed, start=dt.date(2025, 1, 1))
            results = interval_coverage(world, dt.date(2025, 9, 1), config, salts=range(args.salts),
                                        control_share=args.control_share)  # fmt: skip
            covered, cells = sum(r[0] for r in results), sum(r[1] for r in results)
            total_covered, total_cells = total_covered + covered, total_cells + cells
            print(f"seed {seed}: {covered}/{cells} action × stage intervals hold the true effect on churn "
                  f"({covered / max(cells, 1):.1%}; per salt {results}) in {time.perf_counter() - started:.0f} s")  # fmt: skip
    print(f"overall: {total_covered}/{total_cells} = {total_covered / max(total_cells, 1):.1%} (nominal 95 %; "
          f"{args.users:,} users per world, control share {args.control_share}, ≥ 30 users a side)")  # fmt: skip


if __name__ == "__main__":
    main()
