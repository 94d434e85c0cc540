"""The Spark engine (local mode, one session for the run): the same feature and label definitions give the
same tables as DuckDB, batch decisions on Spark equal `clm score` in process for every user and column,
and a missing Java or an unreachable master is a clear error naming what to do."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import features.build
from clm.cli import app
from clm.config import load_config
from features.jobs import build_feature_tables, connect
from features.spark import JAVA_PACKAGE, JAVA_SCRIPT, SparkUnavailable, spark_session
from models.catalog import contact_params
from simulation.io import simulate_to_directory
from tests.conftest import ServedWorld, mlflow_store

runner = CliRunner()
CUTOFFS = [dt.date(2025, 4, 1), dt.date(2025, 7, 1), dt.date(2025, 9, 1)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few hundred users over 300 days: every feature family, subscriptions and campaigns included."""
    directory = tmp_path_factory.mktemp("spark-world")
    simulate_to_directory(directory, n_users=300, days=300, seed=5, start=dt.date(2025, 1, 1))
    return directory


def assert_same_table(spark: pd.DataFrame, duckdb: pd.DataFrame, what: str) -> None:
    """Same rows, columns and nulls; integral columns (counts, days, dates, flags) exactly equal, other
    floats within 1e-9 relative."""
    keys = ["cutoff", "user_id"]
    spark = spark.sort_values(keys).reset_index(drop=True)
    duckdb = duckdb.sort_values(keys).reset_index(drop=True)
    assert list(spark.columns) == list(duckdb.columns), what
    assert len(spark) == len(duckdb) > 0, what
    for column in duckdb.columns:
        left, right = spark[column], duckdb[column]
        assert (left.isna() == right.isna()).all(), f"{what}.{column}: nulls differ"
        known = right.notna()
        expected, got = right[known], left[known]
        if expected.dtype.kind == "f" and not (expected == expected.round()).all():
            np.testing.assert_allclose(got.to_numpy(float), expected.to_numpy(float), rtol=1e-9, atol=0,
                                       err_msg=f"{what}.{column}")  # fmt: skip
        else:
            assert got.astype(str).tolist() == expected.astype(str).tolist(), f"{what}.{column}"


def _read(out: Path, name: str) -> pd.DataFrame:
    frame = pd.read_parquet(out / name)
    frame["cutoff"] = pd.to_datetime(frame["cutoff"]).dt.date
    return frame


@pytest.mark.parametrize("plan", ["single_pass", "running_totals"])
def test_features_and_labels_on_spark_equal_duckdb(
    plan: str, world: Path, spark_engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both plans of the one definition (one FILTER pass for few cutoffs, per-day running totals beyond)."""
    if plan == "running_totals":
        monkeypatch.setattr(features.build, "SINGLE_PASS_MAX_CUTOFFS", 1)
    on_spark = build_feature_tables(world, CUTOFFS, tmp_path / "spark", con=spark_engine)
    on_duckdb = build_feature_tables(world, CUTOFFS, tmp_path / "duckdb", con=connect())
    assert (on_spark.rows, on_spark.users, on_spark.label_rows_known) == (
        on_duckdb.rows, on_duckdb.users, on_duckdb.label_rows_known,
    )  # fmt: skip
    assert on_spark.feature_version == on_duckdb.feature_version
    for name in ("features.parquet", "labels.parquet"):
        assert_same_table(_read(tmp_path / "spark", name), _read(tmp_path / "duckdb", name), name)


def test_contact_state_on_spark_equals_duckdb(world: Path, spark_engine) -> None:
    """The per-action contact state (features.contacts) is one definition on both engines: the same days since,
    window counts and negative outcomes at every cutoff, as a table and joined by the Spark expression."""
    from features.jobs import contact_states, latest_feature_table, latest_features

    contacts = contact_params(load_config())
    on_spark = contact_states(world, CUTOFFS, contacts, con=spark_engine)
    on_duckdb = contact_states(world, CUTOFFS, contacts, con=connect())
    for frame in (on_spark, on_duckdb):
        frame["cutoff"] = pd.to_datetime(frame["cutoff"]).dt.date
    assert on_duckdb[contacts.count_columns()].to_numpy().sum() > 0  # the world's campaigns show up
    assert_same_table(on_spark, on_duckdb, "contact state")
    expr, _ = latest_feature_table(spark_engine, world, contacts=contacts)
    joined = expr.to_pandas()
    expected, _ = latest_features(world, contacts=contacts)
    for frame in (joined, expected):
        frame["cutoff"] = pd.to_datetime(frame["cutoff"]).dt.date
    assert_same_table(joined[["user_id", "cutoff", *contacts.columns()]],
                      expected[["user_id", "cutoff", *contacts.columns()]], "joined contact state")  # fmt: skip


def test_score_on_spark_equals_score_in_process(
    served_world: ServedWorld, spark_engine, tmp_path: Path
) -> None:
    """Every user and every column of `clm score --engine spark` equals `clm score` (exploration on: the
    draw is a hash of the user, the same on any partition)."""
    common = ["score", "--data", str(served_world.data), "--as-of", "2025-09-01"]
    with mlflow_store(served_world.tracking_uri):
        local = runner.invoke(app, [*common, "--out", str(tmp_path / "local.parquet")])
        assert local.exit_code == 0, local.output
        on_spark = runner.invoke(
            app, [*common, "--out", str(tmp_path / "spark.parquet"), "--engine", "spark"]
        )
        assert on_spark.exit_code == 0, on_spark.output
    expected = pd.read_parquet(tmp_path / "local.parquet").sort_values("user_id").reset_index(drop=True)
    got = pd.read_parquet(tmp_path / "spark.parquet").sort_values("user_id").reset_index(drop=True)
    assert len(expected) > 1000 and list(got.columns) == list(expected.columns)
    assert got["user_id"].tolist() == expected["user_id"].tolist()
    for column in expected.columns:
        left, right = got[column], expected[column]
        assert (left.isna() == right.isna()).all(), column
        known = right.notna()
        if right.dtype.kind == "f":
            np.testing.assert_allclose(left[known].to_numpy(float), right[known].to_numpy(float), rtol=1e-12,
                                       atol=0, err_msg=column)  # fmt: skip
        else:
            assert left[known].astype(str).tolist() == right[known].astype(str).tolist(), column
    assert f"scored {len(expected):,} users" in on_spark.output


def test_missing_java_names_the_package_and_the_script(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-java"))
    with pytest.raises(SparkUnavailable, match=f"{JAVA_PACKAGE}.*{JAVA_SCRIPT}"):
        spark_session("local[1]")
    result = runner.invoke(
        app, ["features", "build", "--data", str(tmp_path), "--cutoffs", "2025-03-01", "--out", str(tmp_path / "o"),
              "--engine", "spark"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert JAVA_PACKAGE in result.output and "Traceback" not in result.output


def test_unreachable_master_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    master = f"spark://127.0.0.1:{port}"
    monkeypatch.setenv("CLM_SPARK_MASTER", master)
    result = runner.invoke(
        app, ["features", "build", "--data", str(tmp_path), "--cutoffs", "2025-03-01", "--out", str(tmp_path / "o"),
              "--engine", "spark"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert (
        f"the Spark master {master} is unreachable" in result.output and "CLM_SPARK_MASTER" in result.output
    )


def test_materialize_from_spark_equals_duckdb(world: Path, spark_engine, tmp_path: Path) -> None:
    """The online store's snapshot from the Spark engine holds the same vectors as from DuckDB."""
    from features.jobs import materialize_latest
    from features.online import open_store

    contacts = contact_params(load_config())  # each user's contact state stored beside the features too
    spark_info, _ = materialize_latest(world, f"sqlite:///{tmp_path / 'spark.db'}", con=spark_engine,
                                       contacts=contacts)  # fmt: skip
    duckdb_info, _ = materialize_latest(world, f"sqlite:///{tmp_path / 'duckdb.db'}", contacts=contacts)
    assert set(contacts.columns()) <= set(duckdb_info.features)
    assert (spark_info.n_users, spark_info.as_of, spark_info.feature_version) == (
        duckdb_info.n_users, duckdb_info.as_of, duckdb_info.feature_version,
    )  # fmt: skip
    with (
        open_store(f"sqlite:///{tmp_path / 'spark.db'}") as spark,
        open_store(f"sqlite:///{tmp_path / 'duckdb.db'}") as duckdb,
    ):
        users = duckdb.user_ids()
        assert spark.user_ids() == users
        got, expected = spark.read_many(users), duckdb.read_many(users)
    for user in users:
        left, right = got[user], expected[user]
        assert (left.cutoff, left.values.keys()) == (right.cutoff, right.values.keys()), user
        for name, value in right.values.items():
            if isinstance(value, float) and value == value:
                assert left.values[name] == pytest.approx(value, rel=1e-9, abs=0), (user, name)
            else:
                assert left.values[name] == value or (
                    value != value and left.values[name] != left.values[name]
                )
