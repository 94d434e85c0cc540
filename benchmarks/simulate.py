"""Time and peak memory of `clm simulate` at 100k and 1M users × 365 days (each size in a fresh process).

Usage: python benchmarks/simulate.py [--sizes 100000,1000000] [--days 365] [--out DIR]
Target (issue "Foundation"): 1M users in under 10 minutes and 8 GiB on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _one(users: int, days: int, out: Path) -> dict:
    import datetime as dt

    from simulation.io import simulate_to_directory

    started = time.perf_counter()
    world = simulate_to_directory(out, n_users=users, days=days, seed=0, start=dt.date(2025, 1, 1))
    seconds = time.perf_counter() - started
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    size_mib = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1024**2
    return {
        "users": users,
        "days": days,
        "seconds": round(seconds, 1),
        "peak_rss_gib": round(peak_gib, 2),
        "events": world.events.num_rows,
        "output_mib": round(size_mib, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_one(int(args.sizes), args.days, args.out)))
        return
    root = args.out or Path(tempfile.mkdtemp(prefix="clm-bench-sim-"))
    print(
        f"{'users':>10} {'days':>5} {'seconds':>8} {'peak GiB':>9} {'events':>12} {'ev/s':>10} {'output MiB':>11}"
    )
    for users in [int(s) for s in args.sizes.split(",")]:
        out = root / f"world-{users}"
        result = subprocess.run(
            [sys.executable, __file__, "--child", "--sizes", str(users), "--days", str(args.days), "--out", str(out)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        row = json.loads(result.stdout.strip().splitlines()[-1])
        rate = row["events"] / row["seconds"]
        print(
            f"{row['users']:>10,} {row['days']:>5} {row['seconds']:>8.1f} {row['peak_rss_gib']:>9.2f} "
            f"{row['events']:>12,} {rate:>10,.0f} {row['output_mib']:>11.1f}",
            flush=True,
        )
        shutil.rmtree(out, ignore_errors=True)
    print("target: 1,000,000 users x 365 days in < 600 s and < 8 GiB peak")


if __name__ == "__main__":
    main()
