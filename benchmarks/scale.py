"""The scaling curve of the two engines: `features build` at 12 monthly cutoffs, then batch decisions over the
latest snapshot's users, on DuckDB (in process) and on Spark local[N], at growing event counts.

Usage: python benchmarks/scale.py [--events 1000000,10000000,50000000] [--users-per-event 0.05]
                                  [--engines duckdb,spark] [--master local[2]] [--driver-memory 3g] [--tracking-uri URI]
                                  [--data DIR]

The event logs are the feature benchmark's synthetic ones (benchmarks/features.py: N events for
N × users-per-event users over 2025, skewed activity), generated once and cached under --data. Each (size,
engine) runs in a fresh process; the parent samples the resident memory of that process and all of its
children (Spark's JVM included) every 0.2 s and reports the peak. Columns: wall time of the feature job
(features + labels written as Parquet; the engine's start-up shown apart), events per second, the same
for the batch decisions (`models.batch.decision_table` in process; per partition with `mapInPandas` on
Spark), and how each wall time grows from the previous size (×; 10× events → 10× is linear). The batch
decisions need registered @champion models (`--tracking-uri`, e.g. the demo's `sqlite:///…/mlflow.db`);
without one that part is left out, said so. The last lines are the ratios Spark ÷ DuckDB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

CUTOFFS = "monthly:2025-01-01..2025-12-01"
DECISION_DAY = dt.date(2026, 1, 1)


DRIVER_MEMORY_ENV = "CLM_SCALE_SPARK_DRIVER_MEMORY"


def _feature_benchmark() -> Any:
    # benchmarks/ is not a package, and features.py shares the `features` package's name: load it by path
    spec = importlib.util.spec_from_file_location("benchmark_features", _HERE / "features.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def child(
    engine: str, data_dir: Path, work: Path, master: str, tracking_uri: str | None, parts: str
) -> dict[str, Any]:
    """One (size, engine) run in this process: start the engine, build, decide. Prints one JSON line."""
    from clm.config import load_config
    from features.build import LabelParams
    from features.cutoffs import parse_cutoffs
    from features.jobs import build_feature_tables, connect, latest_features
    from features.registry import FeatureParams

    config = load_config()
    params = FeatureParams.from_config(config.features)
    labels = LabelParams.from_config(config.labels)
    started = time.perf_counter()
    if engine == "spark":
        from features.spark import connect as spark_connect

        # local mode runs every task in the driver's JVM: its heap bounds the size (50M events need > 3 GiB)
        con = spark_connect(master, {"spark.driver.memory": os.environ.get(DRIVER_MEMORY_ENV, "3g")})
    else:
        con = connect()
    result: dict[str, Any] = {"start_s": time.perf_counter() - started}
    if "features" in parts:
        started = time.perf_counter()
        summary = build_feature_tables(data_dir, parse_cutoffs(CUTOFFS), work / "features", params=params,
                                       label_params=labels, con=con)  # fmt: skip
        result.update(features_s=time.perf_counter() - started, rows=summary.rows, users=summary.users)
    if tracking_uri and "decisions" in parts:
        from models.batch import decision_table
        from models.decision import load_decision_models
        from training import tracking

        tracking.configure(tracking_uri)
        models = load_decision_models(config, aliases=("champion",), optional=("upgrade", "policy"))
        started = time.perf_counter()
        if engine == "spark":
            from models.spark_scoring import score_on_spark

            scored = score_on_spark(con, data_dir, str(work / "decisions.parquet"), models, as_of=DECISION_DAY,
                                    params=params).users  # fmt: skip
        else:
            frame, _ = latest_features(data_dir, params=params, as_of=DECISION_DAY, con=con)
            table, _ = decision_table(frame, models, as_of=DECISION_DAY)
            table.to_parquet(work / "decisions.parquet", index=False)
            scored = len(table)
        result.update(decisions_s=time.perf_counter() - started, decided_users=scored)
    return result


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
    except psutil.Error:
        return 0


def run_child(
    engine: str, data_dir: Path, master: str, tracking_uri: str | None, parts: str
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"clm-scale-{engine}-") as work:
        command = [sys.executable, __file__, "--child", engine, "--data-dir", str(data_dir), "--work", work,
                   "--master", master, "--parts", parts] + (["--tracking-uri", tracking_uri] if tracking_uri else [])  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        peak = [0]

        def sample() -> None:
            while process.poll() is None:
                peak[0] = max(peak[0], _tree_rss(process.pid))
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        output, _ = process.communicate()
        sampler.join()
        if process.returncode != 0:
            raise SystemExit(f"{engine} on {data_dir} failed (exit {process.returncode})")
        result = json.loads(output.strip().splitlines()[-1])
        result["peak_gib"] = peak[0] / 2**30
        return result


def _growth(now: float | None, before: float | None) -> str:
    return "–" if now is None or not before else f"×{now / before:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", default="1000000,10000000,50000000")
    parser.add_argument("--users-per-event", type=float, default=0.05)
    parser.add_argument("--engines", default="duckdb,spark")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument(
        "--driver-memory", default="3g", help="spark.driver.memory (local mode: all of Spark's heap)"
    )
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"))
    parser.add_argument("--data", type=Path, default=_HERE / "out" / "features-data")
    parser.add_argument("--parts", default="features,decisions", help="features, decisions or both")
    parser.add_argument("--child", choices=["duckdb", "spark"], help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(
            json.dumps(
                child(args.child, args.data_dir, args.work, args.master, args.tracking_uri, args.parts)
            ),
            flush=True,
        )
        return
    bench = _feature_benchmark()
    sizes = [int(n) for n in args.events.split(",")]
    engines = args.engines.split(",")
    if not args.tracking_uri:
        print("no --tracking-uri: batch decisions left out (they need @champion models)")
    rows, previous = [], {}
    header = (f"{'events':>11} {'users':>8} {'engine':>7} {'start s':>8} {'features s':>11} {'events/s':>10} "
              f"{'growth':>7} {'decide s':>9} {'users/s':>9} {'growth':>7} {'peak GiB':>9}")  # fmt: skip
    os.environ[DRIVER_MEMORY_ENV] = args.driver_memory  # read by the Spark children
    print(f"12 monthly cutoffs ({CUTOFFS}), Spark {args.master} (driver memory {args.driver_memory}); "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(header, flush=True)
    for n_events in sizes:
        n_users = int(n_events * args.users_per_event)
        data_dir = bench.ensure_events(args.data, n_events, n_users)
        for engine in engines:
            r = run_child(engine, data_dir, args.master, args.tracking_uri, args.parts)
            before = previous.get(engine, {})
            decide_s, features_s = r.get("decisions_s"), r.get("features_s")
            features_text = "–" if features_s is None else f"{features_s:.1f}"
            events_rate = "–" if features_s is None else f"{n_events / features_s:,.0f}"
            decide_text = "–" if decide_s is None else f"{decide_s:.1f}"
            rate_text = "–" if decide_s is None else f"{r['decided_users'] / decide_s:,.0f}"
            print(f"{n_events:>11,} {n_users:>8,} {engine:>7} {r['start_s']:>8.1f} {features_text:>11} "
                  f"{events_rate:>10} {_growth(features_s, before.get('features_s')):>7} "
                  f"{decide_text:>9} {rate_text:>9} "
                  f"{_growth(decide_s, before.get('decisions_s')):>7} {r['peak_gib']:>9.2f}", flush=True)  # fmt: skip
            previous[engine] = r
            rows.append((n_events, engine, r))
    for n_events in sizes:
        pair = {engine: r for n, engine, r in rows if n == n_events}
        if {"duckdb", "spark"} <= set(pair):
            d, s = pair["duckdb"], pair["spark"]
            ratios = [f"{what} ×{s[key] / d[key]:.1f}" for what, key in
                      (("features", "features_s"), ("decisions", "decisions_s"), ("peak memory", "peak_gib"))
                      if key in d and key in s]  # fmt: skip
            print(f"{n_events:,} events, Spark ÷ DuckDB: {', '.join(ratios)}; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
