"""Write time and single-user read latency of the online feature store, against the plain alternative.

Usage: python benchmarks/online_store.py [--users 1000000] [--reads 20000] [--redis] [--redis-url URL]

Writes N users × 45 features (42 numbers, 3 strings) to a SQLite store in a temp dir (and, with
--redis, to Redis under a temporary prefix that is deleted afterwards), then times single-user reads
of random users. The plain alternative runs in the same process on the same data, interleaved with
our reads: a bare `sqlite3` primary-key SELECT of the stored blob (and a bare Redis GET of it), with
no decoding. Target (issue "online feature store"): SQLite p99 < 1 ms with 1M users stored.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import resource
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

# `python benchmarks/online_store.py` puts benchmarks/ first on sys.path, where benchmarks/features.py
# would shadow the `features` package: resolve our imports from the repository root instead.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from features.online import OnlineStore, SnapshotInfo, _Codec, open_store

AS_OF = dt.date(2025, 6, 1)  # of the snapshot read; the first write is a day earlier, as are all cutoffs
N_NUMBERS = 42


def feature_frame(n_users: int, seed: int = 0) -> pd.DataFrame:
    """A frame shaped like the offline build's: counts, amounts, ratios (10 % missing), three categories."""
    rng = np.random.default_rng(seed)
    columns: dict[str, object] = {
        "user_id": [f"user-{index:08d}" for index in rng.permutation(n_users)],
        "cutoff": pd.Series([AS_OF - dt.timedelta(days=1)] * n_users),
    }
    for index in range(N_NUMBERS):
        kind = index % 3
        if kind == 0:
            values = rng.poisson(3.0, n_users).astype(np.float64)  # counts
        elif kind == 1:
            values = rng.lognormal(3.0, 1.0, n_users)  # amounts
        else:
            values = rng.random(n_users)  # ratios
        values[rng.random(n_users) < 0.1] = np.nan
        columns[f"feature_{index:02d}"] = values
    columns["current_plan"] = pd.Series(
        np.array(["free", "basic", "pro", "team", None], dtype=object)[rng.integers(0, 5, n_users)]
    )
    segments = ["champions", "loyal", "potential", "new", "promising", "attention", "sleeping", "at risk",
                "cannot lose", "hibernating", "lost"]  # fmt: skip
    columns["rfm_segment"] = pd.Categorical(np.array(segments, dtype=object)[rng.integers(0, 11, n_users)])
    actions = np.array(
        ["onboarding_guide", "welcome_offer", "retention_discount", "win_back_offer", None], dtype=object
    )
    columns["last_action"] = pd.Series(actions[rng.integers(0, 5, n_users)])
    return pd.DataFrame(columns)


def time_writes(backend: str, store: OnlineStore, frame: pd.DataFrame) -> SnapshotInfo:
    """Time a first write and a second one that replaces it (the steady state: old rows go too)."""
    for label, as_of in (("first write", AS_OF - dt.timedelta(days=1)), ("replacing write", AS_OF)):
        started = time.perf_counter()
        info = store.write_snapshot(frame, as_of=as_of, feature_version=f"bench-{as_of}")
        seconds = time.perf_counter() - started
        print(f"{backend:<7} {label} of {info.n_users:,} users × {len(info.features)} features: {seconds:.1f} s "
              f"({info.n_users / seconds:,.0f} users/s)")  # fmt: skip
    return info


def percentiles_us(nanoseconds: list[int]) -> tuple[float, float, float]:
    micro = np.asarray(nanoseconds) / 1000
    return float(np.median(micro)), float(np.percentile(micro, 99)), float(np.percentile(micro, 99.9))


def time_interleaved(
    ids: list[str], ours: Callable[[str], object], plain: Callable[[str], object]
) -> tuple[list[int], list[int]]:
    """Per-read nanoseconds of both readers, alternating which goes first, after a warm-up."""
    for user_id in ids[:1000]:
        ours(user_id)
        plain(user_id)
    ours_ns, plain_ns = [], []
    clock = time.perf_counter_ns
    for index, user_id in enumerate(ids):
        pair = ((ours, ours_ns), (plain, plain_ns)) if index % 2 else ((plain, plain_ns), (ours, ours_ns))
        for read, sink in pair:
            started = clock()
            result = read(user_id)
            sink.append(clock() - started)
            if result is None:
                raise RuntimeError(f"{user_id} not found")
    return ours_ns, plain_ns


def report(name: str, ours_ns: list[int], plain_name: str, plain_ns: list[int]) -> None:
    ours, plain = percentiles_us(ours_ns), percentiles_us(plain_ns)
    print(f"  {'reader':<34} {'median µs':>10} {'p99 µs':>10} {'p99.9 µs':>10}")
    print(f"  {name:<34} {ours[0]:>10.1f} {ours[1]:>10.1f} {ours[2]:>10.1f}")
    print(f"  {plain_name:<34} {plain[0]:>10.1f} {plain[1]:>10.1f} {plain[2]:>10.1f}")
    ratios = [a / b for a, b in zip(ours, plain, strict=True)]
    print(f"  {'ratio ours / plain':<34} {ratios[0]:>10.2f} {ratios[1]:>10.2f} {ratios[2]:>10.2f}")


def bench_sqlite(frame: pd.DataFrame, ids: list[str], directory: Path) -> None:
    path = directory / "online.db"
    with open_store(f"sqlite:///{path}") as store:
        info = time_writes("SQLite", store, frame)
        database_mib, wal_mib = (path.stat().st_size / 2**20, Path(f"{path}-wal").stat().st_size / 2**20)
        print(f"  database file {database_mib:,.0f} MiB (room for two snapshots: the new one is loaded "
              f"beside the old), WAL {wal_mib:,.0f} MiB")  # fmt: skip
        plain = sqlite3.connect(path, isolation_level=None)
        select = "SELECT vector FROM features WHERE user_id = ?"

        def plain_read(user_id: str) -> bytes | None:
            row = plain.execute(select, (user_id,)).fetchone()
            return None if row is None else row[0]

        ours_ns, plain_ns = time_interleaved(ids, store.read, plain_read)
        stored = [(user_id, plain_read(user_id)) for user_id in ids]
        plain.close()
        print(f"SQLite  single-user reads ({len(ids):,} random users):")
        report("store.read (decoded FeatureRow)", ours_ns, "bare sqlite3 PK SELECT of the blob", plain_ns)
        p99 = percentiles_us(ours_ns)[1]
        print(f"  target p99 < 1000 µs: {'met' if p99 < 1000 else 'MISSED'} ({p99:.0f} µs)")
        compare_encodings(info, stored)
        time_read_many(store, ids)


def compare_encodings(info: SnapshotInfo, stored: list[tuple[str, bytes]]) -> None:
    """Our packed encoding against the obvious one, a JSON array of all values (repr floats, null)."""
    codec = _Codec(info)
    started = time.perf_counter()
    rows = [codec.decode(user_id, blob) for user_id, blob in stored]
    packed_us = (time.perf_counter() - started) / len(stored) * 1e6
    names = list(info.features)
    as_json = [json.dumps(list(row.values.values())) for row in rows]
    started = time.perf_counter()
    decoded = [dict(zip(names, json.loads(text), strict=True)) for text in as_json]
    json_us = (time.perf_counter() - started) / len(stored) * 1e6
    assert decoded == [row.values for row in rows]
    packed_bytes = np.mean([len(blob) for _, blob in stored])
    json_bytes = np.mean([len(text.encode()) for text in as_json])
    print(f"  encoding: packed float64 + JSON strings {packed_bytes:.0f} B/user, decode {packed_us:.1f} µs; "
          f"JSON array {json_bytes:.0f} B/user, decode to a dict {json_us:.1f} µs")  # fmt: skip


def time_read_many(store: object, ids: list[str], batch: int = 100, rounds: int = 200) -> None:
    batches = [ids[index * batch : (index + 1) * batch] for index in range(rounds)]
    started = time.perf_counter()
    for users in batches:
        store.read_many(users)
    seconds = time.perf_counter() - started
    print(f"  read_many of {batch} users: {seconds / rounds * 1000:.2f} ms per call "
          f"({rounds * batch / seconds:,.0f} users/s)")  # fmt: skip


def bench_redis(frame: pd.DataFrame, ids: list[str], url: str) -> None:
    import redis

    prefix = f"clmbench-{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in url else "?"
    raw = redis.Redis.from_url(url)
    try:
        with open_store(f"{url}{separator}prefix={prefix}") as store:
            memory_before = raw.info("memory")["used_memory"]
            info = time_writes("Redis", store, frame)
            memory_mib = (raw.info("memory")["used_memory"] - memory_before) / 2**20
            print(f"  Redis memory for the snapshot: +{memory_mib:,.0f} MiB")
            root = f"{prefix}:snap:{info.snapshot_id}:u:"
            ours_ns, plain_ns = time_interleaved(ids, store.read, lambda user_id: raw.get(root + user_id))
            print(f"Redis   single-user reads ({len(ids):,} random users):")
            report("store.read (decoded FeatureRow)", ours_ns, "bare redis GET of the blob", plain_ns)
            time_read_many(store, ids)
    finally:
        removed = 0
        batch = []
        for key in raw.scan_iter(match=f"{prefix}:*", count=10_000):
            batch.append(key)
            if len(batch) == 10_000:
                removed += raw.unlink(*batch)
                batch = []
        if batch:
            removed += raw.unlink(*batch)
        left = sum(1 for _ in raw.scan_iter(match=f"{prefix}:*", count=10_000))
        print(f"Redis   clean-up: {removed:,} keys under {prefix}: removed, {left} left")
        raw.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--reads", type=int, default=20_000)
    parser.add_argument("--redis", action="store_true", help="also benchmark Redis")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()

    started = time.perf_counter()
    frame = feature_frame(args.users)
    print(f"frame: {len(frame):,} users × {frame.shape[1] - 2} features, generated in "
          f"{time.perf_counter() - started:.1f} s; {os.cpu_count()} CPUs, SQLite {sqlite3.sqlite_version}")  # fmt: skip
    ids = random.Random(1).choices(frame["user_id"].tolist(), k=args.reads)
    with tempfile.TemporaryDirectory(prefix="clm-bench-online-") as directory:
        bench_sqlite(frame, ids, Path(directory))
    if args.redis:
        bench_redis(frame, ids, args.redis_url)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {peak_gib:.2f} GiB")


if __name__ == "__main__":
    main()
