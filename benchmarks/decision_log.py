"""The decision log's cost on a request: how long `append` holds the caller, durable (group commit: it
returns once its batch is committed), journaled (what the API uses: it returns once the record is in the
local journal file, which survives kill -9, and the writer stores it later) and queued (it returns at once;
records still queued are lost on kill -9), on SQLite and PostgreSQL, with 1 and 16 threads appending at once (16 = the live benchmark's
connections). Also: records per commit, and how many appends per second the log sustains.

Usage: python benchmarks/decision_log.py [--seconds 3] [--postgres postgresql://postgres@127.0.0.1:5432/test]
       [--no-postgres]

Prints one table; nothing is asserted. The record is a real-sized one (a decision payload of ~6 kB).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import sqlalchemy as sa

from serving.decision_log import DecisionLog, DecisionRecord


def record() -> DecisionRecord:
    candidates = [
        {"name": f"action_{i}", "status": "eligible", "expected_value": 1.5 * i, "delta_churn": -0.01 * i,
         "delta_upgrade": 0.002 * i, "reason": "eligible; lower value than the chosen action"}
        for i in range(11)
    ]  # fmt: skip
    payload = {"stage": {"name": "mature", "rule": "mature: tenure_days >= 90 and active_days_90d >= 4"},
               "alternatives": candidates, "explanations": {"churn": {"top": [
                   {"feature": f"feature_{i}", "value": i, "contribution": 0.1 * i, "reason": "x" * 60}
                   for i in range(5)]}}}  # fmt: skip
    return DecisionRecord(
        decision_id=uuid.uuid4().hex, ts=dt.datetime.now(dt.UTC), user_id="u000042",
        request_digest="ab" * 32, versions={"churn_model": "clm-churn/1", "policy": "clm-policy/1"},
        stage="mature", action="recommendation", propensity=0.96, explored=False, expected_value=0.18,
        candidates=candidates, latency_ms=2.5, payload=payload, inputs={f"f{i}": float(i) for i in range(61)},
    )  # fmt: skip


def run(
    url: str, schema: str | None, *, durable: bool, threads: int, seconds: float, journal: Path | None = None
) -> dict[str, float]:
    log = DecisionLog(url, schema=schema, durable=durable, journal_dir=journal)
    log.start()
    latencies: list[list[float]] = [[] for _ in range(threads)]
    stop = threading.Event()

    def append(mine: list[float]) -> None:
        while not stop.is_set():
            rec = record()
            started = time.perf_counter()
            log.append(rec)
            mine.append(1000 * (time.perf_counter() - started))

    workers = [threading.Thread(target=append, args=(mine,)) for mine in latencies]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    time.sleep(seconds)
    stop.set()
    for worker in workers:
        worker.join()
    log.flush(timeout=120)
    elapsed = time.perf_counter() - started  # until everything appended is stored
    log.close()
    every = sorted(t for mine in latencies for t in mine)
    return {
        "appends": len(every),
        "p50_ms": statistics.median(every),
        "p99_ms": every[int(0.99 * (len(every) - 1))],
        "stored_per_s": len(every) / elapsed,
        "per_commit": len(every) / max(log.stats()["commits"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stores = [("sqlite", f"sqlite:///{tmp}/decisions.db", None)]
        schema = f"clm_bench_{uuid.uuid4().hex[:8]}"
        if not args.no_postgres:
            stores.append(("postgresql", args.postgres, schema))
        print(f"{'store':<11}{'threads':>8}{'mode':>9}{'appends':>9}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'stored/s':>10}{'per commit':>11}{'p50 ÷ queued':>14}")  # fmt: skip
        try:
            for name, url, store_schema in stores:
                for threads in (1, 16):
                    queued = run(url, store_schema, durable=False, threads=threads, seconds=args.seconds)
                    durable = run(url, store_schema, durable=True, threads=threads, seconds=args.seconds)
                    journaled = run(url, store_schema, durable=True, threads=threads, seconds=args.seconds,
                                    journal=Path(tmp) / f"journal-{name}-{threads}")  # fmt: skip
                    for mode, row in (("queued", queued), ("durable", durable), ("journal", journaled)):
                        ratio = row["p50_ms"] / queued["p50_ms"]
                        print(f"{name:<11}{threads:>8}{mode:>9}{row['appends']:>9}{row['p50_ms']:>9.3f}"
                              f"{row['p99_ms']:>9.2f}{row['stored_per_s']:>10.0f}{row['per_commit']:>11.1f}"
                              f"{ratio:>14.1f}")  # fmt: skip
        finally:
            if not args.no_postgres:
                engine = sa.create_engine(args.postgres.replace("postgresql://", "postgresql+psycopg://"))
                with engine.begin() as conn:
                    conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
                engine.dispose()


if __name__ == "__main__":
    main()
