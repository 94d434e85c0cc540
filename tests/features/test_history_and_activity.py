"""`feature_history` (features at several cutoffs with labels where known) agrees with the online store's
`latest_features` at the same cutoff, and `user_activity` returns one user's latest events and contacts
before a date, newest first."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.jobs import DataDirectoryError, feature_history, latest_features, user_activity
from simulation.io import simulate_to_directory


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("history") / "world"
    simulate_to_directory(out, n_users=600, days=200, seed=5, start=dt.date(2025, 1, 1))
    return out


def test_the_last_cutoff_equals_the_stores_latest_features(world: Path) -> None:
    as_of = dt.date(2025, 7, 1)
    cutoffs = [dt.date(2025, 5, 2), dt.date(2025, 6, 1), as_of]
    history = feature_history(world, cutoffs)
    assert sorted(history["cutoff"].unique()) == cutoffs
    latest, day = latest_features(world, as_of=as_of)
    assert day == as_of
    last = (
        history[history["cutoff"] == as_of]
        .drop(columns=["churn", "upgrade"])
        .set_index("user_id")
        .sort_index()
    )
    latest = latest.set_index("user_id").sort_index()
    assert list(last.index) == list(latest.index)
    for column in latest.columns:
        if column == "cutoff":
            continue
        a, b = last[column], latest[column]
        if pd.api.types.is_numeric_dtype(b):
            np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), equal_nan=True, err_msg=column)
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), column


def test_labels_are_known_only_where_the_horizon_closed_inside_the_data(world: Path) -> None:
    history = feature_history(world, [dt.date(2025, 5, 1), dt.date(2025, 7, 19)])  # data end 2025-07-20
    early = history[history["cutoff"] == dt.date(2025, 5, 1)]
    late = history[history["cutoff"] == dt.date(2025, 7, 19)]
    assert early["churn"].notna().mean() > 0.5 and set(early["churn"].dropna().unique()) <= {0, 1}
    assert late["churn"].isna().all() and late["upgrade"].isna().all()
    # churned users are kept: the same users as the store would hold
    assert len(late) == len(latest_features(world, as_of=dt.date(2025, 7, 19))[0])


def test_a_cutoff_after_the_data_is_refused(world: Path) -> None:
    with pytest.raises(DataDirectoryError, match="after the data's end"):
        feature_history(world, [dt.date(2026, 1, 1)])


def test_user_activity_is_the_users_latest_rows_before_the_date(world: Path) -> None:
    events = pd.read_parquet(world / "events.parquet")
    user = events["user_id"].value_counts().index[0]
    before = dt.date(2025, 6, 1)
    recent, contacts = user_activity(world, user, before=before, limit=7)
    mine = events[(events["user_id"] == user) & (events["ts"] < pd.Timestamp(before, tz="UTC"))]
    expected = mine.sort_values("ts", ascending=False).head(7)
    assert recent["ts"].tolist() == expected["ts"].tolist()
    assert recent["event_type"].tolist() == expected["event_type"].tolist()
    assert list(recent.columns) == ["ts", "event_type", "amount"]
    campaigns = pd.read_parquet(world / "campaigns.parquet")
    theirs = campaigns[(campaigns["user_id"] == user) & (campaigns["ts"] < pd.Timestamp(before, tz="UTC"))]
    assert len(contacts) == min(7, len(theirs))
    assert contacts["ts"].is_monotonic_decreasing
    nobody, none = user_activity(world, "nobody", before=before)
    assert nobody.empty and none.empty
