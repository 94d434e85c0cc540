"""Time and peak memory of our feature build against a hand-written DuckDB query, polars and pandas.

Usage: python benchmarks/features.py [--events 3000000] [--users 150000] [--data DIR] [--repeats 3]
                                     [--cases floor,ours_job,ours_build,duckdb_sql,polars,pandas]

A synthetic canonical `events.parquet` (N events for U users over 2025, skewed activity, first-active
days spread over the year) is generated once and cached under --data. Each case then runs in a fresh
process, at one cutoff (2025-12-01) and at 12 monthly cutoffs (monthly:2025-01-01..2025-12-01), and
reports its wall time (engine imports excluded, shown apart) and its own peak RSS:

  floor       one DuckDB scan of the event columns the features read
  ours_job    features.jobs.build_feature_tables: features + labels, Parquet in and out
  ours_build  features.build.build_features alone, executed with con.to_pyarrow
  duckdb_sql  one hand-written DuckDB query, a FILTER aggregate per feature over events ⋈ cutoffs
  polars      the same core set as one polars lazy query
  pandas      the same core set with pandas groupbys, one cutoff at a time

The alternatives compute the ~40 event-derived "core" features (recency, tenure, counts and revenue
per window, 30-day trends, gaps between active days); ours computes those plus the plan, contact and
RFM features. On ~2,000 random (user, cutoff) rows every core column must agree within 1e-9 (absolute,
or relative for large values; nulls equal) across all of them; the script exits non-zero when they do
not. Repeats (--repeats) go round-robin over the cases, so that a busy spell on a shared machine hits
them all alike; the table shows the median and the spread (min–max), the ratios are of medians.
Targets (issue 13): at one cutoff ≤ 1.5 × the hand-written DuckDB query and faster than polars; at 12
cutoffs ≤ the polars time; peak memory ≤ 4 GiB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# This script shares its name with the `features` package: run as `python benchmarks/features.py`,
# Python puts benchmarks/ first on the import path, where `features` would resolve to this file.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from features.cutoffs import parse_cutoffs  # noqa: E402
from features.registry import FeatureParams, build_registry  # noqa: E402

PARAMS = FeatureParams()
CORE_FAMILIES = ("recency", "tenure", "frequency", "service", "monetary", "trend", "cadence")
CORE_COLUMNS: list[str] = [f.name for f in build_registry(PARAMS) if f.family in CORE_FAMILIES]
WINDOWS: list[int | None] = [*sorted(PARAMS.windows_days), None]
TREND = PARAMS.trend_window_days
# bucket edges (days before the cutoff) from which every window and both trend halves are sums
EDGES = [o for o in PARAMS.offsets_days if o > 0]

START = dt.date(2025, 1, 1)
DAYS = 365
EVENT_TYPES = ("login", "feature_use", "purchase", "support_ticket", "upgrade", "downgrade", "cancel")
EVENT_SHARES = (0.45, 0.35, 0.08, 0.03, 0.04, 0.03, 0.02)
GENERATOR_VERSION = 1
MICROS_PER_DAY = 86_400 * 10**6
ONE_CUTOFF = "2025-12-01"
TWELVE_CUTOFFS = "monthly:2025-01-01..2025-12-01"
TOLERANCE = 1e-9


def epoch_day(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)


def _label(window: int | None) -> str:
    return "total" if window is None else f"{window}d"


# ---------------------------------------------------------------------------------------------------
# the event log


def generate_events(n_events: int, n_users: int, *, days: int = DAYS, start: dt.date = START,
                    seed: int = 0) -> pa.Table:  # fmt: skip
    """A canonical events table: every user has a first-active day spread over the period, a lifetime
    after it and a lognormal activity rate; events fall uniformly over each user's active span, the
    first on its first day. Sorted by time, like an event log."""
    if n_events < n_users:
        raise ValueError("need at least one event per user")
    rng = np.random.default_rng(seed)
    first_day = rng.integers(0, days, n_users)
    lifetime_days = np.ceil(rng.exponential(150.0, n_users)).astype(np.int64)
    last_day = np.minimum(first_day + lifetime_days, days - 1)
    span = last_day - first_day + 1
    weights = rng.lognormal(0.0, 1.0, n_users) * span
    per_user = 1 + rng.multinomial(n_events - n_users, weights / weights.sum())
    user = np.repeat(np.arange(n_users), per_user)
    offset = (rng.random(n_events) * span[user]).astype(np.int64)
    offset[np.cumsum(per_user) - per_user] = 0  # each user's first event is on its first day
    day = first_day[user] + offset
    ts = (epoch_day(start) + day) * MICROS_PER_DAY + rng.integers(0, MICROS_PER_DAY, n_events)
    event_type = rng.choice(len(EVENT_TYPES), n_events, p=EVENT_SHARES)
    is_purchase = event_type == EVENT_TYPES.index("purchase")
    amount = np.round(rng.lognormal(3.0, 0.8, n_events), 2)
    order = np.argsort(ts, kind="stable")
    names = pa.array([f"u{index:07d}" for index in range(1, n_users + 1)], pa.string())
    return pa.table(
        {
            "user_id": names.take(pa.array(user[order])),
            "ts": pa.array(ts[order], pa.timestamp("us", tz="UTC")),
            "event_type": pa.array(np.array(EVENT_TYPES, dtype=object)[event_type[order]], pa.string()),
            "amount": pa.array(amount[order], pa.float64(), mask=~is_purchase[order]),
            "properties": pa.nulls(n_events, pa.string()),
        }
    )


def ensure_events(root: Path, n_events: int, n_users: int, seed: int = 0) -> Path:
    """A data directory holding only `events.parquet` for this size, generated unless already cached."""
    data_dir = Path(root) / f"{n_events}-events-{n_users}-users-seed{seed}"
    path = data_dir / "events.parquet"
    key = json.dumps({"events": n_events, "users": n_users, "seed": seed, "version": GENERATOR_VERSION})
    if path.exists():
        metadata = pq.read_schema(path).metadata or {}
        if metadata.get(b"clm.benchmark") == key.encode():
            return data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    table = generate_events(n_events, n_users, seed=seed)
    table = table.replace_schema_metadata({b"clm.benchmark": key.encode()})
    tmp = data_dir / ".events.parquet.tmp"
    pq.write_table(table, tmp, compression="zstd", row_group_size=1_000_000)
    tmp.replace(path)
    print(f"generated {n_events:,} events for {n_users:,} users in {time.perf_counter() - started:.1f} s "
          f"→ {path} ({path.stat().st_size / 2**20:,.0f} MiB)", flush=True)  # fmt: skip
    return data_dir


# ---------------------------------------------------------------------------------------------------
# the core set, written three other ways


def core_features_sql(events_path: str | Path, cutoffs: Sequence[dt.date]) -> str:
    """One DuckDB query: events (marked with the gap to the user's previous active day) joined to the
    cutoffs they precede, then one FILTER aggregate per feature per (user, cutoff)."""
    unique = sorted(set(cutoffs))
    values = ", ".join(f"(DATE '{c}', {epoch_day(c)})" for c in unique)
    path = str(events_path).replace("'", "''")
    in_list = lambda names: ", ".join(f"'{n}'" for n in names)  # noqa: E731
    purchase = f"event_type IN ({in_list(PARAMS.purchase_event_types)})"
    login_like = f"event_type IN ({in_list(PARAMS.login_like_event_types)})"
    aggregates = [
        "min(day) AS first_day",
        "max(day) AS last_day",
        f"max(day) FILTER (WHERE {login_like}) AS last_login_day",
        f"max(day) FILTER (WHERE {purchase}) AS last_purchase_day",
        "avg(gap) AS gap_mean_days",
        "stddev_pop(gap) AS gap_std_days",
        f"count(*) FILTER (WHERE new_day AND ago > {TREND} AND ago <= {2 * TREND}) AS active_before",
        f"coalesce(sum(amount) FILTER (WHERE {purchase} AND ago > {TREND} AND ago <= {2 * TREND}), 0)"
        " AS revenue_before",
    ]
    for window in WINDOWS:
        inside, label = ("TRUE" if window is None else f"ago <= {window}"), _label(window)
        aggregates += [
            f"count(*) FILTER (WHERE {inside}) AS events_count_{label}",
            f"count(*) FILTER (WHERE {inside} AND new_day) AS active_days_{label}",
            *(
                f"count(*) FILTER (WHERE {inside} AND event_type = '{t}') AS {t}_count_{label}"
                for t in PARAMS.count_event_types
            ),
            f"count(*) FILTER (WHERE {inside} AND {purchase}) AS purchases_{label}",
            f"coalesce(sum(amount) FILTER (WHERE {inside} AND {purchase}), 0) AS revenue_sum_{label}",
        ]
    recent_days, recent_revenue = f"active_days_{_label(TREND)}", f"revenue_sum_{_label(TREND)}"
    outputs = {
        "days_since_last_event": "cutoff_day - last_day",
        "days_since_last_login": "cutoff_day - last_login_day",
        "days_since_last_purchase": "cutoff_day - last_purchase_day",
        "tenure_days": "cutoff_day - first_day",
        f"activity_change_pct_{TREND}d": f"100.0 * ({recent_days} - active_before) / greatest(active_before, 1)",
        f"activity_diff_{TREND}d": f"{recent_days} - active_before",
        f"revenue_change_pct_{TREND}d": f"100.0 * ({recent_revenue} - revenue_before) / greatest(revenue_before, 1.0)",
        f"revenue_diff_{TREND}d": f"{recent_revenue} - revenue_before",
        "gap_mean_days": "gap_mean_days",
        "gap_std_days": "gap_std_days",
        "gap_ratio": "(cutoff_day - last_day) / gap_mean_days",
    }
    for window in WINDOWS:
        label = _label(window)
        for name in ("events_count", "active_days", *(f"{t}_count" for t in PARAMS.count_event_types)):
            outputs[f"{name}_{label}"] = f"{name}_{label}"
        outputs[f"revenue_sum_{label}"] = f"revenue_sum_{label}"
        outputs[f"revenue_mean_{label}"] = (
            f"CASE WHEN purchases_{label} > 0 THEN revenue_sum_{label} / purchases_{label} END"
        )
    select = ",\n  ".join(f"CAST({outputs[c]} AS DOUBLE) AS {c}" for c in CORE_COLUMNS)
    aggregate_list = ",\n    ".join(aggregates)
    return f"""
WITH cutoffs(cutoff, cutoff_day) AS (VALUES {values}),
events AS (
  SELECT user_id, event_type, amount, CAST(epoch_us(ts) // {MICROS_PER_DAY} AS BIGINT) AS day
  FROM read_parquet('{path}')
  WHERE ts < TIMESTAMPTZ '{midnight(unique[-1]).isoformat()}'
),
marked AS (
  SELECT *, day - lag(day) OVER (PARTITION BY user_id ORDER BY day) AS step FROM events
),
joined AS (
  SELECT m.user_id, m.event_type, m.amount, m.day, c.cutoff, c.cutoff_day, c.cutoff_day - m.day AS ago,
         m.step IS NULL OR m.step > 0 AS new_day,
         CASE WHEN m.step > 0 THEN m.step END AS gap
  FROM marked m JOIN cutoffs c ON m.day < c.cutoff_day
),
per_user AS (
  SELECT user_id, cutoff, cutoff_day,
    {aggregate_list}
  FROM joined
  GROUP BY user_id, cutoff, cutoff_day
)
SELECT user_id, cutoff,
  {select}
FROM per_user
"""


def _duckdb_sql_arrow(events_path: str | Path, cutoffs: Sequence[dt.date]) -> pa.Table:
    import duckdb

    with duckdb.connect() as con:
        return con.sql(core_features_sql(events_path, cutoffs)).to_arrow_table()


def core_features_duckdb_sql(events_path: str | Path, cutoffs: Sequence[dt.date]) -> Any:
    """The core set per (user_id, cutoff) from one hand-written DuckDB query, as a pandas DataFrame."""
    return _duckdb_sql_arrow(events_path, cutoffs).to_pandas()


def _polars_lazy(events_path: str | Path, cutoffs: Sequence[dt.date]) -> Any:
    import polars as pl

    unique = sorted(set(cutoffs))
    cut = pl.LazyFrame(
        {"cutoff": unique, "cutoff_day": [epoch_day(c) for c in unique]},
        schema={"cutoff": pl.Date, "cutoff_day": pl.Int64},
    )
    col = pl.col
    events = (
        pl.scan_parquet(events_path)
        .select("user_id", "ts", "event_type", "amount")
        .filter(col("ts") < midnight(unique[-1]))
        .with_columns(day=col("ts").dt.epoch("us") // MICROS_PER_DAY)
        .with_columns(step=col("day") - col("day").shift().over("user_id", order_by="day"))
        .with_columns(
            new_day=col("step").is_null() | (col("step") > 0),
            gap=pl.when(col("step") > 0).then(col("step")),
        )
    )
    joined = events.join_where(cut, col("day") < col("cutoff_day")).with_columns(
        ago=col("cutoff_day") - col("day")
    )
    purchase = col("event_type").is_in(PARAMS.purchase_event_types)
    login_like = col("event_type").is_in(PARAMS.login_like_event_types)
    before = (col("ago") > TREND) & (col("ago") <= 2 * TREND)
    count = lambda condition: condition.sum().cast(pl.Int64)  # noqa: E731  (a bool sum is u32)
    aggregates = [
        col("cutoff_day").first(),
        col("day").min().alias("first_day"),
        col("day").max().alias("last_day"),
        col("day").filter(login_like).max().alias("last_login_day"),
        col("day").filter(purchase).max().alias("last_purchase_day"),
        col("gap").mean().alias("gap_mean_days"),
        col("gap").std(ddof=0).alias("gap_std_days"),
        count(before & col("new_day")).alias("active_before"),
        col("amount").filter(before & purchase).sum().alias("revenue_before"),
    ]
    for window in WINDOWS:
        # every joined row is before its cutoff (ago ≥ 1): the total window is `ago > 0`
        inside, label = (col("ago") > 0 if window is None else col("ago") <= window), _label(window)
        aggregates += [
            count(inside).alias(f"events_count_{label}"),
            count(inside & col("new_day")).alias(f"active_days_{label}"),
            *(
                count(inside & (col("event_type") == t)).alias(f"{t}_count_{label}")
                for t in PARAMS.count_event_types
            ),
            count(inside & purchase).alias(f"purchases_{label}"),
            col("amount").filter(inside & purchase).sum().alias(f"revenue_sum_{label}"),
        ]
    per_user = joined.group_by("user_id", "cutoff").agg(aggregates)
    f64 = lambda e: e.cast(pl.Float64)  # noqa: E731
    since = lambda c: f64(col("cutoff_day") - col(c))  # noqa: E731
    recent_days, recent_revenue = col(f"active_days_{_label(TREND)}"), col(f"revenue_sum_{_label(TREND)}")
    outputs = {
        "days_since_last_event": since("last_day"),
        "days_since_last_login": since("last_login_day"),
        "days_since_last_purchase": since("last_purchase_day"),
        "tenure_days": since("first_day"),
        f"activity_change_pct_{TREND}d": 100.0
        * f64(recent_days - col("active_before"))
        / pl.max_horizontal(f64(col("active_before")), 1.0),
        f"activity_diff_{TREND}d": f64(recent_days - col("active_before")),
        f"revenue_change_pct_{TREND}d": 100.0
        * (recent_revenue - col("revenue_before"))
        / pl.max_horizontal(col("revenue_before"), 1.0),
        f"revenue_diff_{TREND}d": recent_revenue - col("revenue_before"),
        "gap_mean_days": col("gap_mean_days"),
        "gap_std_days": col("gap_std_days"),
        "gap_ratio": since("last_day") / col("gap_mean_days"),
    }
    for window in WINDOWS:
        label = _label(window)
        for name in ("events_count", "active_days", *(f"{t}_count" for t in PARAMS.count_event_types)):
            outputs[f"{name}_{label}"] = col(f"{name}_{label}")
        outputs[f"revenue_sum_{label}"] = col(f"revenue_sum_{label}")
        outputs[f"revenue_mean_{label}"] = pl.when(col(f"purchases_{label}") > 0).then(
            col(f"revenue_sum_{label}") / col(f"purchases_{label}")
        )
    return per_user.select("user_id", "cutoff", *(f64(outputs[c]).alias(c) for c in CORE_COLUMNS))


def core_features_polars(events_path: str | Path, cutoffs: Sequence[dt.date]) -> Any:
    """The core set per (user_id, cutoff) from one polars lazy query, as a pandas DataFrame."""
    return _polars_lazy(events_path, cutoffs).collect().to_pandas()


def core_features_pandas(events_path: str | Path, cutoffs: Sequence[dt.date]) -> Any:
    """The core set per (user_id, cutoff) with plain pandas groupbys, one cutoff at a time."""
    import pandas as pd

    unique = sorted(set(cutoffs))
    events = pd.read_parquet(
        events_path,
        columns=["user_id", "ts", "event_type", "amount"],
        filters=[("ts", "<", pd.Timestamp(midnight(unique[-1])))],
    )
    events["day"] = (events["ts"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(days=1)
    active = events[["user_id", "day"]].drop_duplicates().sort_values(["user_id", "day"])
    active["gap"] = active.groupby("user_id")["day"].diff()
    frames = [_pandas_one_cutoff(events, active, cutoff) for cutoff in unique]
    return pd.concat(frames, ignore_index=True)


def _pandas_one_cutoff(events: Any, active: Any, cutoff: dt.date) -> Any:
    import pandas as pd

    cutoff_day = epoch_day(cutoff)
    ev = events[events["day"] < cutoff_day]
    if ev.empty:  # nobody is known yet
        return pd.DataFrame({"user_id": pd.Series(dtype="str"), "cutoff": pd.Series(dtype="object"),
                             **{c: pd.Series(dtype="float64") for c in CORE_COLUMNS}})  # fmt: skip
    is_purchase = ev["event_type"].isin(PARAMS.purchase_event_types)
    per_event = pd.DataFrame(
        {
            "user_id": ev["user_id"],
            "bucket": np.searchsorted(EDGES, cutoff_day - ev["day"].to_numpy()),
            "events_count": 1,
            **{f"{t}_count": (ev["event_type"] == t).astype("int64") for t in PARAMS.count_event_types},
            "purchases": is_purchase.astype("int64"),
            "revenue_sum": ev["amount"].where(is_purchase, 0.0).fillna(0.0),
        }
    )
    days = active[active["day"] < cutoff_day]
    per_day = pd.DataFrame(
        {
            "user_id": days["user_id"],
            "bucket": np.searchsorted(EDGES, cutoff_day - days["day"].to_numpy()),
            "active_days": 1,
        }
    )
    buckets = range(len(EDGES) + 1)

    def cumulative(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Per metric: users × buckets, summed over every bucket up to each (so column i is ago ≤ EDGES[i])."""
        sums = frame.groupby(["user_id", "bucket"]).sum().unstack("bucket", fill_value=0)
        return {
            metric: sums[metric].reindex(columns=buckets, fill_value=0).cumsum(axis=1)
            for metric in sums.columns.get_level_values(0).unique()
        }

    by_bucket = cumulative(per_event) | cumulative(per_day)
    per_user = days.groupby("user_id").agg(
        first_day=("day", "min"), last_day=("day", "max"), gap_mean_days=("gap", "mean")
    )
    per_user["gap_std_days"] = days.groupby("user_id")["gap"].std(ddof=0)
    per_user["last_login_day"] = (
        ev[ev["event_type"].isin(PARAMS.login_like_event_types)].groupby("user_id")["day"].max()
    )
    per_user["last_purchase_day"] = ev[is_purchase].groupby("user_id")["day"].max()
    users = per_user.index

    def window(metric: str, w: int | None) -> pd.Series:
        column = len(EDGES) if w is None else EDGES.index(w)
        return by_bucket[metric][column].reindex(users, fill_value=0).astype("float64")

    out = pd.DataFrame(index=users)
    since = lambda c: (cutoff_day - per_user[c]).astype("float64")  # noqa: E731
    out["days_since_last_event"] = since("last_day")
    out["days_since_last_login"] = since("last_login_day")
    out["days_since_last_purchase"] = since("last_purchase_day")
    out["tenure_days"] = since("first_day")
    for w in WINDOWS:
        label = _label(w)
        for name in ("events_count", "active_days", *(f"{t}_count" for t in PARAMS.count_event_types)):
            out[f"{name}_{label}"] = window(name, w)
        revenue, purchases = window("revenue_sum", w), window("purchases", w)
        out[f"revenue_sum_{label}"] = revenue
        out[f"revenue_mean_{label}"] = (revenue / purchases).where(purchases > 0)
    active_recent, revenue_recent = window("active_days", TREND), window("revenue_sum", TREND)
    active_before = window("active_days", 2 * TREND) - active_recent
    revenue_before = window("revenue_sum", 2 * TREND) - revenue_recent
    out[f"activity_change_pct_{TREND}d"] = (
        100.0 * (active_recent - active_before) / active_before.clip(lower=1)
    )
    out[f"activity_diff_{TREND}d"] = active_recent - active_before
    out[f"revenue_change_pct_{TREND}d"] = (
        100.0 * (revenue_recent - revenue_before) / revenue_before.clip(lower=1)
    )
    out[f"revenue_diff_{TREND}d"] = revenue_recent - revenue_before
    out["gap_mean_days"] = per_user["gap_mean_days"].astype("float64")
    out["gap_std_days"] = per_user["gap_std_days"].astype("float64")
    out["gap_ratio"] = out["days_since_last_event"] / out["gap_mean_days"]
    out = out[CORE_COLUMNS].reset_index()
    out.insert(1, "cutoff", cutoff)
    return out


# ---------------------------------------------------------------------------------------------------
# ours, and the floor


def _ours_build_arrow(events_path: str | Path, cutoffs: Sequence[dt.date]) -> pa.Table:
    import ibis

    from features.build import LabelParams, build_features

    con = ibis.duckdb.connect()
    events = con.read_parquet(events_path, table_name="clm_events")
    expr = build_features(events, cutoffs, PARAMS, labels=LabelParams(keep_churned_users=True))
    return con.to_pyarrow(expr)


def _ours_job(data_dir: Path, cutoffs: Sequence[dt.date], out: Path) -> Path:
    from features.build import LabelParams
    from features.jobs import build_feature_tables

    summary = build_feature_tables(
        data_dir, cutoffs, out, params=PARAMS, label_params=LabelParams(keep_churned_users=True)
    )
    return summary.features_path


def _floor_scan(events_path: str | Path) -> pa.Table:
    import duckdb

    path = str(events_path).replace("'", "''")
    with duckdb.connect() as con:
        return con.sql(
            "SELECT count(*) AS n, sum(epoch_us(ts)) AS ts_sum, count(DISTINCT user_id) AS users, "
            "count(*) FILTER (WHERE event_type = 'purchase') AS purchases, sum(amount) AS revenue "
            f"FROM read_parquet('{path}')"
        ).to_arrow_table()


CASES: dict[str, str] = {
    "floor": "floor: one DuckDB scan",
    "ours_job": "ours: build_feature_tables (job)",
    "ours_build": "ours: build_features → Arrow",
    "duckdb_sql": "DuckDB SQL, one FILTER query",
    "polars": "polars lazy",
    "pandas": "pandas groupby",
}
ENGINE_IMPORTS: dict[str, tuple[str, ...]] = {
    "floor": ("duckdb",),
    # `import ibis` leaves its DuckDB backend to the first connect: import it here, as `duckdb` is for SQL
    "ours_job": ("ibis", "ibis.backends.duckdb", "features.build", "features.jobs"),
    "ours_build": ("ibis", "ibis.backends.duckdb", "features.build"),
    "duckdb_sql": ("duckdb",),
    "polars": ("polars", "pandas"),
    "pandas": ("pandas",),
}


def _sample_rows(result: Any, sample: Any) -> Any:
    """The result's rows at the sampled (user_id, cutoff) keys, as pandas with the core columns."""
    import pandas as pd

    users = sample["user_id"].unique().tolist()
    if isinstance(result, pa.Table):
        frame = result.filter(pc.is_in(result["user_id"], pa.array(users))).to_pandas()
    elif isinstance(result, pd.DataFrame):
        frame = result[result["user_id"].isin(users)]
    else:  # polars
        import polars as pl

        frame = result.filter(pl.col("user_id").is_in(users)).to_pandas()
    frame = frame[["user_id", "cutoff", *CORE_COLUMNS]].copy()
    frame["user_id"] = frame["user_id"].astype(str)
    frame["cutoff"] = pd.to_datetime(frame["cutoff"]).dt.date
    return sample.merge(frame, on=["user_id", "cutoff"], how="inner")


def run_case(case: str, data_dir: Path, cutoffs: Sequence[dt.date], work: Path) -> Any:
    """Run one case; return its result (an Arrow table, a polars or pandas frame, or a Parquet path)."""
    events_path = data_dir / "events.parquet"
    runners: dict[str, Callable[[], Any]] = {
        "floor": lambda: _floor_scan(events_path),
        "ours_job": lambda: _ours_job(data_dir, cutoffs, work),
        "ours_build": lambda: _ours_build_arrow(events_path, cutoffs),
        "duckdb_sql": lambda: _duckdb_sql_arrow(events_path, cutoffs),
        "polars": lambda: _polars_lazy(events_path, cutoffs).collect(),
        "pandas": lambda: core_features_pandas(events_path, cutoffs),
    }
    return runners[case]()


def child(case: str, data_dir: Path, spec: str, work: Path, sample_path: Path | None) -> dict:
    """One timed run in this (fresh) process; peak RSS is read right after the timed part."""
    import importlib

    cutoffs = parse_cutoffs(spec)
    started = time.perf_counter()
    for module in ENGINE_IMPORTS[case]:
        importlib.import_module(module)
    import_s = time.perf_counter() - started
    started = time.perf_counter()
    result = run_case(case, data_dir, cutoffs, work)
    seconds = time.perf_counter() - started
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if isinstance(result, Path):
        result = pq.read_table(result)
    rows = result.num_rows if isinstance(result, pa.Table) else len(result)
    if sample_path is not None and case != "floor":
        import pandas as pd

        sample = pd.read_parquet(sample_path)
        sample["cutoff"] = pd.to_datetime(sample["cutoff"]).dt.date
        _sample_rows(result, sample).to_parquet(work / "sample.parquet", index=False)
    return {"seconds": seconds, "import_s": import_s, "peak_gib": peak_gib, "rows": rows}


# ---------------------------------------------------------------------------------------------------
# the parent: fresh processes, agreement, the table


def disagreements(frames: dict[str, Any], reference: str, limit: int = 10) -> list[str]:
    """Mismatches of every frame against `reference` on the same (user_id, cutoff) rows: a row present
    in one and not the other, or a core column differing by more than TOLERANCE (nulls equal)."""
    problems: list[str] = []
    base = frames[reference].set_index(["user_id", "cutoff"]).sort_index()
    for name, frame in frames.items():
        if name == reference:
            continue
        other = frame.set_index(["user_id", "cutoff"]).sort_index()
        missing, extra = base.index.difference(other.index), other.index.difference(base.index)
        if len(missing) or len(extra):
            problems.append(f"{name}: {len(missing)} rows of {reference} missing, {len(extra)} extra "
                            f"(e.g. {list(missing[:2]) + list(extra[:2])})")  # fmt: skip
            continue
        other = other.loc[base.index]
        for column in CORE_COLUMNS:
            a = base[column].to_numpy(dtype="float64", na_value=np.nan)
            b = other[column].to_numpy(dtype="float64", na_value=np.nan)
            same = (np.isnan(a) & np.isnan(b)) | np.isclose(a, b, rtol=TOLERANCE, atol=TOLERANCE)
            for position in np.flatnonzero(~same)[: max(0, limit - len(problems))]:
                problems.append(f"{name}: {column} at {base.index[position]}: {b[position]!r} vs "
                                f"{reference} {a[position]!r}")  # fmt: skip
            if len(problems) >= limit:
                return problems
    return problems


def _run_child(case: str, data_dir: Path, spec: str, work: Path, sample_path: Path | None) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--child", case, "--spec", spec,
               "--data-dir", str(data_dir), "--work", str(work)]  # fmt: skip
    if sample_path is not None:
        command += ["--sample-path", str(sample_path)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        return {"error": f"exit {done.returncode}: {tail}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _sample_keys(n_users: int, cutoffs: Sequence[dt.date], size: int, seed: int) -> Any:
    import pandas as pd

    rng = np.random.default_rng(seed)
    keys = pd.DataFrame(
        {
            "user_id": [f"u{i:07d}" for i in rng.integers(1, n_users + 1, size)],
            "cutoff": [cutoffs[i] for i in rng.integers(0, len(cutoffs), size)],
        }
    )
    return keys.drop_duplicates().reset_index(drop=True)


def _fmt(value: float | None, spec: str) -> str:
    """`format(value, spec)`, or a dash of the same width when there is no value."""
    return format("—", spec[0] + spec[1:].split(".")[0]) if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--users", type=int, default=150_000)
    parser.add_argument("--data", type=Path, default=_HERE / "out" / "features-data",
                        help="where the generated event log is cached")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--sample", type=int, default=2_000, help="(user, cutoff) rows checked for agreement")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=list(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sample-path", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.data_dir, args.spec, args.work, args.sample_path)))
        return

    import duckdb
    import pandas as pd
    import polars as pl

    cases = [c for c in args.cases.split(",") if c]
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    data_dir = ensure_events(args.data, args.events, args.users, args.seed)
    n_events = pq.ParquetFile(data_dir / "events.parquet").metadata.num_rows
    print(f"events: {n_events:,} rows, {args.users:,} users, {data_dir / 'events.parquet'}")
    print(f"{os.cpu_count()} CPUs; duckdb {duckdb.__version__}, polars {pl.__version__}, pandas {pd.__version__}, "
          f"pyarrow {pa.__version__}; {len(CORE_COLUMNS)} core columns; repeats {args.repeats}", flush=True)  # fmt: skip

    specs = {1: ONE_CUTOFF, 12: TWELVE_CUTOFFS}
    # the scan does not depend on the cutoffs: run it once per round, show it beside both
    plan = [(n, case) for n in specs for case in cases if case != "floor" or n == 1]
    root = Path(tempfile.mkdtemp(prefix="clm-bench-features-"))
    runs: dict[tuple[str, int], list[dict]] = {(case, n): [] for n, case in plan}
    samples: dict[int, dict[str, Any]] = {n: {} for n in specs}
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    try:
        sample_paths = {}
        for n_cutoffs, spec in specs.items():
            keys = _sample_keys(args.users, parse_cutoffs(spec), args.sample, args.seed + n_cutoffs)
            sample_paths[n_cutoffs] = root / f"sample-{n_cutoffs}.parquet"
            keys.to_parquet(sample_paths[n_cutoffs], index=False)
        # round-robin over the cases, so that a busy spell on a shared machine hits them all alike
        for repeat in range(args.repeats):
            for n_cutoffs, case in plan:
                done = runs[(case, n_cutoffs)]
                if done and "error" in done[-1]:
                    continue
                work = root / f"{case}-{n_cutoffs}-{repeat}"
                done.append(_run_child(case, data_dir, specs[n_cutoffs], work, sample_paths[n_cutoffs]))
                if "error" not in done[-1] and (work / "sample.parquet").exists():
                    samples[n_cutoffs][case] = pd.read_parquet(work / "sample.parquet")
                shutil.rmtree(work, ignore_errors=True)
                last = done[-1]
                shown = last.get("error") or (f"{last['seconds']:.1f} s, {last['peak_gib']:.2f} GiB, "
                                              f"{last['rows']:,} rows")  # fmt: skip
                print(f"  run {repeat + 1}: {CASES[case]} × {n_cutoffs} cutoff(s): {shown}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    results: dict[tuple[str, int], dict] = {}
    for (case, n_cutoffs), done in runs.items():
        ok = [r for r in done if "error" not in r]
        results[(case, n_cutoffs)] = {"error": done[-1]["error"]} if len(ok) < len(done) else {
            "seconds": statistics.median(r["seconds"] for r in ok),
            "min_s": min(r["seconds"] for r in ok),
            "max_s": max(r["seconds"] for r in ok),
            "import_s": statistics.median(r["import_s"] for r in ok),
            "peak_gib": statistics.median(r["peak_gib"] for r in ok),
            "rows": ok[-1]["rows"],
        }  # fmt: skip
    if ("floor", 1) in results:
        results[("floor", 12)] = results[("floor", 1)]

    floor = {n: results.get(("floor", n), {}).get("seconds") for n in specs}
    print()
    print(
        f"{'case':<34} {'cutoffs':>7} {'median s':>8} {'min–max s':>11} {'import s':>8} {'peak GiB':>9} "
        f"{'× floor':>8} {'rows':>11}"
    )
    for n_cutoffs in specs:
        for case in cases:
            row = results[(case, n_cutoffs)]
            if "error" in row:
                print(f"{CASES[case]:<34} {n_cutoffs:>7} FAILED: {row['error'].splitlines()[-1]}")
                continue
            times_floor = row["seconds"] / floor[n_cutoffs] if floor[n_cutoffs] else None
            spread = f"{row['min_s']:.1f}–{row['max_s']:.1f}"
            print(f"{CASES[case]:<34} {n_cutoffs:>7} {row['seconds']:>8.1f} {spread:>11} "
                  f"{row['import_s']:>8.1f} {row['peak_gib']:>9.2f} {_fmt(times_floor, '>8.1f')} "
                  f"{row['rows']:>11,}")  # fmt: skip

    def seconds(case: str, n: int) -> float | None:
        return results.get((case, n), {}).get("seconds")

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    print()
    print(f"{'ratio':<34} {'1 cutoff':>9} {'12 cutoffs':>11}   target")

    def verdict(value: float | None, limit: float) -> str:
        return "" if value is None else ("  met" if value <= limit else "  MISSED")

    # (other case, the most ours may take as a multiple of it at one cutoff, and at 12)
    targets: list[tuple[str, float | None, float | None]] = [
        ("duckdb_sql", 1.5, None), ("polars", 1.0, 1.0), ("pandas", None, None),
    ]  # fmt: skip
    for ours in ("ours_build", "ours_job"):
        for other, limit_1, limit_12 in targets:
            r1, r12 = (ratio(seconds(ours, n), seconds(other, n)) for n in specs)
            target = "; ".join(
                f"≤ {limit:.2f} at {n}{verdict(r, limit)}"
                for n, r, limit in ((1, r1, limit_1), (12, r12, limit_12))
                if limit is not None
            )
            print(f"{ours + ' ÷ ' + other:<34} {_fmt(r1, '>9.2f')} {_fmt(r12, '>11.2f')}   {target}")
        growth = ratio(seconds(ours, 12), seconds(ours, 1))
        print(f"{ours + '(12) ÷ ' + ours + '(1)':<34} {_fmt(growth, '>9.2f')} {'':>11}   "
              f"≤ 4.00{verdict(growth, 4.0)}")  # fmt: skip
        peaks = [results.get((ours, n), {}).get("peak_gib") for n in specs]
        peak = max((p for p in peaks if p is not None), default=None)
        print(
            f"{ours + ' peak RSS, GiB (max)':<34} {_fmt(peak, '>9.2f')} {'':>11}   ≤ 4.00{verdict(peak, 4.0)}"
        )

    print()
    all_problems = []
    for n_cutoffs, frames in samples.items():
        reference = "ours_build" if "ours_build" in frames else next(iter(frames), None)
        if reference is None or len(frames) < 2:
            print(f"agreement at {n_cutoffs} cutoff(s): fewer than two implementations ran")
            continue
        problems = disagreements(frames, reference)
        rows_seen = {name: results[(name, n_cutoffs)].get("rows") for name in frames}
        if len(set(rows_seen.values())) > 1:
            problems.append(f"row counts differ: {rows_seen}")
        all_problems += problems
        print(f"agreement at {n_cutoffs} cutoff(s), {len(frames[reference]):,} sampled rows present, "
              f"{', '.join(frames)} vs {reference}: {'yes' if not problems else 'NO'}")  # fmt: skip
        for problem in problems:
            print(f"  {problem}")
    print(f"agree: {'yes' if not all_problems else 'NO'}")
    failed = [key for key, row in results.items() if "error" in row]
    if all_problems or failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
