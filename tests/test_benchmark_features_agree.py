"""The feature benchmark's alternatives (DuckDB SQL, polars, pandas) compute the same core features as
our build, so the benchmark compares like with like."""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import ibis
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features.build import LabelParams, build_features
from features.registry import FeatureParams

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "features.py"
CUTOFFS = [dt.date(2025, 7, 1), dt.date(2025, 12, 1)]


def _load_benchmark() -> ModuleType:
    # benchmarks/ is not a package, and its file shares the `features` package's name: load it by path
    spec = importlib.util.spec_from_file_location("benchmark_features", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _load_benchmark()


def _edge_events() -> pa.Table:
    """Events on the boundaries: at a cutoff's midnight (excluded), on the first and last microsecond of
    window edges, and a purchase with no amount."""
    cutoff = dt.datetime(2025, 12, 1, tzinfo=dt.UTC)
    at = lambda days, micros=0: cutoff - dt.timedelta(days=days) + dt.timedelta(microseconds=micros)  # noqa: E731
    rows = [
        ("u9000001", at(0), "login", None),
        ("u9000001", at(7), "login", None),
        ("u9000001", at(7, -1), "purchase", 12.5),
        ("u9000001", at(30), "feature_use", None),
        ("u9000001", at(60), "purchase", 40.0),
        ("u9000001", at(60, -1), "login", None),
        ("u9000001", at(90, -1), "support_ticket", None),
        ("u9000002", at(1, -1), "purchase", None),
        ("u9000002", at(200), "cancel", None),
        ("u9000003", at(0), "login", None),  # first seen at the cutoff: not a row at that cutoff
    ]
    return pa.table(
        {
            "user_id": pa.array([r[0] for r in rows], pa.string()),
            "ts": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
            "event_type": pa.array([r[2] for r in rows], pa.string()),
            "amount": pa.array([r[3] for r in rows], pa.float64()),
            "properties": pa.nulls(len(rows), pa.string()),
        }
    )


@pytest.fixture(scope="module")
def events_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    table = pa.concat_tables([bench.generate_events(3_000, 200, seed=7), _edge_events()])
    path = tmp_path_factory.mktemp("bench") / "events.parquet"
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="module")
def ours(events_path: Path) -> pd.DataFrame:
    con = ibis.duckdb.connect()
    expr = build_features(
        con.read_parquet(events_path), CUTOFFS, FeatureParams(), labels=LabelParams(keep_churned_users=True)
    )
    return _core(con.to_pyarrow(expr).to_pandas())


def _core(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame[["user_id", "cutoff", *bench.CORE_COLUMNS]].copy()
    frame["user_id"] = frame["user_id"].astype(str)
    frame["cutoff"] = pd.to_datetime(frame["cutoff"]).dt.date
    frame = frame.astype({c: "float64" for c in bench.CORE_COLUMNS})
    return frame.sort_values(["cutoff", "user_id"]).reset_index(drop=True)


def test_core_set_is_the_registry_event_features(ours: pd.DataFrame) -> None:
    assert len(bench.CORE_COLUMNS) == 43
    assert {"days_since_last_login", "revenue_mean_total", "activity_change_pct_30d", "gap_ratio"} <= set(
        bench.CORE_COLUMNS
    )
    # the tiny log exercises what could hide a disagreement: both cutoffs, nulls and non-trivial gaps
    assert set(ours["cutoff"]) == set(CUTOFFS)
    assert len(ours) > 150
    assert ours["days_since_last_purchase"].isna().any() and ours["days_since_last_purchase"].notna().any()
    assert (ours["gap_std_days"] > 0).any() and (ours["revenue_mean_7d"] > 0).any()


@pytest.mark.parametrize(
    "implementation", ["core_features_duckdb_sql", "core_features_polars", "core_features_pandas"]
)
def test_alternative_agrees_with_build_features(
    implementation: str, events_path: Path, ours: pd.DataFrame
) -> None:
    theirs = _core(getattr(bench, implementation)(events_path, CUTOFFS))
    pd.testing.assert_frame_equal(theirs, ours, check_exact=False, rtol=1e-9, atol=1e-9)


def test_boundary_events_fall_on_the_right_side(ours: pd.DataFrame) -> None:
    """Hand-computed: u9000001 is active 7, 8, 30, 60, 61 and 91 days before 2025-12-01 (and at it)."""
    at_cutoff = ours[ours["cutoff"] == dt.date(2025, 12, 1)].set_index("user_id")
    row = at_cutoff.loc["u9000001"]
    counts = [row[f"events_count_{w}"] for w in ("7d", "30d", "90d", "total")]
    assert counts == [1, 3, 5, 6]
    assert row["activity_diff_30d"] == 3 - 1
    assert row["revenue_diff_30d"] == 12.5 - 40.0
    assert row["gap_mean_days"] == pytest.approx((30 + 1 + 30 + 22 + 1) / 5)
    assert at_cutoff.loc["u9000002", "revenue_mean_7d"] == 0.0  # a purchase without an amount
    assert "u9000003" not in at_cutoff.index  # first seen at the cutoff itself
