"""Point-in-time features and labels on a tiny hand-computed event log."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.build import LabelParams
from features.jobs import build_feature_tables, latest_features
from features.online import open_store
from features.registry import FeatureParams, build_registry, feature_names

CUTOFF = dt.date(2025, 3, 1)
UTC = "UTC"


def in_key_order(frame: pd.DataFrame) -> pd.DataFrame:
    """A built feature table (a relation, without an order) by (cutoff, user_id), as the jobs write it."""
    return frame.sort_values(["cutoff", "user_id"], kind="stable").reset_index(drop=True)


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz=UTC)


def tiny_events() -> pd.DataFrame:
    rows = [
        ("a", "2025-01-01 10:00", "login", None),
        ("a", "2025-01-01 10:30", "feature_use", None),
        ("a", "2025-01-10 09:00", "login", None),
        ("a", "2025-01-10 09:10", "purchase", 20.0),
        ("a", "2025-02-20 12:00", "login", None),
        ("a", "2025-02-25 08:00", "support_ticket", None),
        (
            "a",
            "2025-03-01 00:00",
            "login",
            None,
        ),  # exactly at the cutoff: a label-window event, not a feature
        ("a", "2025-03-15 12:00", "purchase", 150.0),
        ("b", "2025-02-27 18:00", "login", None),
        ("c", "2025-03-01 00:00", "login", None),  # first seen at the cutoff: not in that cutoff's rows
        ("d", "2025-02-01 08:00", "login", None),
        ("d", "2025-02-28 23:59", "login", None),
        ("d", "2025-03-31 00:00", "login", None),  # exactly at the horizon's end: outside the label window
        ("z", "2025-04-10 00:00", "login", None),
        # window edges: [Feb 22, Mar 1) is the 7-day window, [Jan 30, Mar 1) the 30-day one
        ("e", "2025-01-29 23:59", "login", None),
        ("e", "2025-01-30 00:00", "login", None),
        ("e", "2025-02-21 23:59", "feature_use", None),
        ("e", "2025-02-22 00:00", "login", None),
    ]
    return pd.DataFrame(
        {
            "user_id": [r[0] for r in rows],
            "ts": pd.to_datetime([r[1] for r in rows]).tz_localize(UTC).astype("datetime64[us, UTC]"),
            "event_type": [r[2] for r in rows],
            "amount": [r[3] for r in rows],
            "properties": pd.Series([None] * len(rows), dtype="string"),
        }
    )


def write_world(root: Path, events: pd.DataFrame) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    events.to_parquet(root / "events.parquet", index=False)
    pd.DataFrame(
        {"user_id": ["a"], "signup_ts": [ts("2025-01-01 09:00")], "plan": ["free"], "channel": ["organic"],
         "country": ["US"]}
    ).astype({"signup_ts": "datetime64[us, UTC]"}).to_parquet(root / "users.parquet", index=False)  # fmt: skip
    pd.DataFrame(
        {"user_id": ["a", "b"], "plan": ["basic", "pro"],
         "start": pd.Series([ts("2025-01-05 00:00"), ts("2025-01-15 00:00")], dtype="datetime64[us, UTC]"),
         "end": pd.Series([pd.NaT, ts("2025-02-10 00:00")], dtype="datetime64[us, UTC]"), "mrr": [12.0, 39.0]}
    ).to_parquet(root / "subscriptions.parquet", index=False)  # fmt: skip
    pd.DataFrame(
        {"user_id": ["a", "a"], "ts": [ts("2025-02-01 09:00"), ts("2025-02-15 09:00")],
         "action": ["retention_discount", "no_action"], "propensity": [0.1, 0.8]}
    ).astype({"ts": "datetime64[us, UTC]"}).to_parquet(root / "campaigns.parquet", index=False)  # fmt: skip
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    root = tmp_path_factory.mktemp("tiny")
    data = write_world(root / "data", tiny_events())
    build_feature_tables(data, [CUTOFF], root / "out", label_params=LabelParams(keep_churned_users=True))
    features = pd.read_parquet(root / "out" / "features.parquet").set_index("user_id")
    labels = pd.read_parquet(root / "out" / "labels.parquet").set_index("user_id")
    return features, labels


EXPECTED_A = {
    # recency and tenure
    "days_since_last_event": 4, "days_since_last_login": 9, "days_since_last_purchase": 50, "tenure_days": 59,
    # frequency and monetary per window: [Feb 22, Mar 1), [Jan 30, Mar 1), [Dec 1, Mar 1), ever
    "events_count_7d": 1, "active_days_7d": 1, "support_ticket_count_7d": 1, "login_count_7d": 0,
    "events_count_30d": 2, "active_days_30d": 2, "login_count_30d": 1, "revenue_sum_30d": 0.0,
    "events_count_90d": 6, "active_days_90d": 4, "login_count_90d": 3, "feature_use_count_90d": 1,
    "purchase_count_90d": 1, "revenue_sum_90d": 20.0, "revenue_mean_90d": 20.0,
    "events_count_total": 6, "active_days_total": 4, "revenue_sum_total": 20.0, "support_ticket_count_total": 1,
    # trend: active days 2 vs 2; revenue 0 vs 20
    "activity_change_pct_30d": 0.0, "activity_diff_30d": 0.0, "revenue_change_pct_30d": -100.0,
    "revenue_diff_30d": -20.0,
    # cadence: gaps 9, 41, 5 days
    "gap_mean_days": 55 / 3, "gap_std_days": math.sqrt((81 + 1681 + 25) / 3 - (55 / 3) ** 2),
    "gap_ratio": 4 / (55 / 3),
    # plan: basic since Jan 5 (55 days: renews in 5)
    "current_plan": "basic", "plan_rank": 1.0, "mrr": 12.0, "subscription_periods": 1.0, "bill_period_days": 30.0,
    "days_to_renewal": 5.0, "plan_changes_total": 0.0,
    # contacts: one real contact on Feb 1; the Feb 15 holdout is not a contact
    "contacts_count_7d": 0, "contacts_count_30d": 1, "contacts_count_total": 1, "days_since_last_contact": 28,
    "last_action": "retention_discount",
    # RFM: the only buyer
    "rfm_recency_score": 5, "rfm_frequency_score": 1, "rfm_monetary_score": 1, "rfm_segment": "New Customers",
}  # fmt: skip


@pytest.mark.parametrize("name", list(EXPECTED_A))
def test_hand_computed_feature_values(built: tuple[pd.DataFrame, pd.DataFrame], name: str) -> None:
    features, _ = built
    value = features.loc["a", name]
    expected = EXPECTED_A[name]
    if isinstance(expected, str):
        assert value == expected
    else:
        assert value == pytest.approx(expected, abs=1e-9)


def test_rows_are_users_first_seen_before_the_cutoff_with_every_registry_column(built) -> None:
    features, _ = built
    assert sorted(features.index) == ["a", "b", "d", "e"]  # c starts exactly at the cutoff, z after it
    assert list(features.columns) == ["cutoff", *feature_names(build_registry(FeatureParams()))]
    assert features.loc["b", "rfm_segment"] == "No Purchase Yet"
    # b's pro subscription ended on Feb 10: one period so far, none active
    assert features.loc["b", "current_plan"] == "free"
    assert (features.loc["b", "subscription_periods"], features.loc["b", "mrr"]) == (1.0, 0.0)
    assert pd.isna(features.loc["b", "bill_period_days"])
    assert pd.isna(features.loc["b", "days_since_last_purchase"])
    assert features.loc["b", "tenure_days"] == 2  # first event Feb 27, no signup row


def test_window_edges_are_inclusive_at_the_start_and_exclusive_at_the_cutoff(built) -> None:
    features, _ = built
    assert features.loc["e", "events_count_7d"] == 1
    assert features.loc["e", "events_count_30d"] == 3
    assert features.loc["e", "events_count_90d"] == 4
    assert features.loc["e", "active_days_30d"] == 3
    assert features.loc["e", "days_since_last_event"] == 7


def test_labels_edge_cases(built) -> None:
    _, labels = built
    assert (labels["horizon_days"] == 30).all()
    # a: subscriber, no cancel and still subscribed at the horizon's end; spent 150 > 100 within it
    assert not labels.loc["a", "churn"] and labels.loc["a", "upgrade"]
    # b: no activity in [Mar 1, Mar 31)
    assert labels.loc["b", "churn"] and not labels.loc["b", "upgrade"]
    # d: its only later event is exactly at the horizon's end, which is outside the window
    assert labels.loc["d", "churn"]


def test_labels_are_unknown_when_the_horizon_runs_past_the_data(tmp_path: Path) -> None:
    data = write_world(tmp_path / "data", tiny_events())
    summary = build_feature_tables(data, [CUTOFF], tmp_path / "out", as_of=dt.date(2025, 3, 20))
    labels = pd.read_parquet(tmp_path / "out" / "labels.parquet")
    assert summary.label_rows_known == 0
    assert labels["churn"].isna().all() and labels["upgrade"].isna().all()


def test_as_of_reads_nothing_at_or_after_it(tmp_path: Path) -> None:
    data = write_world(tmp_path / "data", tiny_events())
    build_feature_tables(data, [CUTOFF], tmp_path / "full")
    build_feature_tables(data, [CUTOFF], tmp_path / "asof", as_of=CUTOFF)
    full = pd.read_parquet(tmp_path / "full" / "features.parquet")
    as_of = pd.read_parquet(tmp_path / "asof" / "features.parquet")
    pd.testing.assert_frame_equal(full, as_of)
    with pytest.raises(ValueError, match="after the data's end"):
        build_feature_tables(data, [dt.date(2025, 4, 1)], tmp_path / "late", as_of=CUTOFF)


def test_already_churned_users_are_dropped_when_the_setting_says_so(tmp_path: Path) -> None:
    events = tiny_events()
    data = write_world(tmp_path / "data", events)
    later = dt.date(2025, 4, 5)  # b has been silent since Feb 27
    build_feature_tables(data, [later], tmp_path / "drop", label_params=LabelParams(keep_churned_users=False))
    build_feature_tables(data, [later], tmp_path / "keep", label_params=LabelParams(keep_churned_users=True))
    dropped = set(pd.read_parquet(tmp_path / "drop" / "features.parquet")["user_id"])
    kept = set(pd.read_parquet(tmp_path / "keep" / "features.parquet")["user_id"])
    assert "b" in kept and "b" not in dropped
    assert "a" in dropped  # a still subscribes


def test_a_cutoff_alone_equals_the_same_cutoff_in_a_multi_cutoff_build(
    tmp_path: Path, small_world: Path
) -> None:
    alone = dt.date(2025, 6, 1)
    build_feature_tables(small_world, [alone], tmp_path / "one")
    build_feature_tables(small_world, [dt.date(2025, 4, 1), alone, dt.date(2025, 8, 1)], tmp_path / "many")
    one = pd.read_parquet(tmp_path / "one" / "features.parquet")
    many = pd.read_parquet(tmp_path / "many" / "features.parquet")
    many = many[many["cutoff"] == alone].reset_index(drop=True)
    assert len(one) > 1000
    pd.testing.assert_frame_equal(one, many)
    labels_one = pd.read_parquet(tmp_path / "one" / "labels.parquet")
    labels_many = pd.read_parquet(tmp_path / "many" / "labels.parquet")
    pd.testing.assert_frame_equal(
        labels_one, labels_many[labels_many["cutoff"] == alone].reset_index(drop=True)
    )


late_events = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "d", "new"]),
        st.integers(min_value=0, max_value=90 * 24 * 3600),
        st.sampled_from(["login", "purchase", "support_ticket", "upgrade", "cancel", "feature_use"]),
        st.floats(min_value=0, max_value=1000, allow_nan=False),
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(extra=late_events)
def test_events_at_or_after_the_cutoff_never_change_its_features(
    tmp_path_factory: pytest.TempPathFactory, built, extra
) -> None:
    features, _ = built
    root = tmp_path_factory.mktemp("late")
    start = pd.Timestamp(CUTOFF, tz=UTC)
    appended = pd.DataFrame(
        {
            "user_id": [u for u, *_ in extra],
            "ts": [start + pd.Timedelta(seconds=s) for _, s, _, _ in extra],
            "event_type": [t for *_, t, _ in extra],
            "amount": [a if t == "purchase" else None for *_, t, a in extra],
            "properties": pd.Series([None] * len(extra), dtype="string"),
        }
    ).astype({"ts": "datetime64[us, UTC]"})
    data = write_world(root / "data", pd.concat([tiny_events(), appended], ignore_index=True))
    build_feature_tables(data, [CUTOFF], root / "out", label_params=LabelParams(keep_churned_users=True))
    again = pd.read_parquet(root / "out" / "features.parquet").set_index("user_id")
    pd.testing.assert_frame_equal(features, again)


def test_materialize_then_read_back_equals_the_latest_row(tmp_path: Path) -> None:
    data = write_world(tmp_path / "data", tiny_events())
    frame, as_of = latest_features(data)
    assert as_of == dt.date(2025, 4, 11)  # the day after the last event
    with open_store(f"sqlite:///{tmp_path / 'online.db'}") as store:
        store.write_snapshot(frame, as_of=as_of, feature_version="test")
        for _, row in frame.iterrows():
            stored = store.read(row["user_id"])
            assert stored is not None and stored.as_of == as_of
            for name in feature_names(build_registry(FeatureParams())):
                expected = row[name]
                if pd.isna(expected):
                    assert stored.values[name] is None
                else:
                    assert stored.values[name] == expected, name
    assert set(frame["user_id"]) == {"a", "b", "c", "d", "e", "z"}


def test_materialized_snapshot_of_a_simulated_world_reads_back_exactly(
    tmp_path: Path, small_world: Path
) -> None:
    frame, as_of = latest_features(small_world)
    names = feature_names(build_registry(FeatureParams()))
    sample = frame.sample(400, random_state=1)
    with open_store(f"sqlite:///{tmp_path / 'online.db'}") as store:
        info = store.write_snapshot(frame, as_of=as_of, feature_version="test")
        assert info.n_users == len(frame) == frame["user_id"].nunique()
        stored = store.read_many(list(sample["user_id"]))
    assert set(stored) == set(sample["user_id"])
    for _, row in sample.iterrows():
        values = stored[row["user_id"]].values
        for name in names:
            expected = row[name]
            assert (values[name] is None) if pd.isna(expected) else (values[name] == expected), (
                row["user_id"],
                name,
            )


def test_a_window_added_in_the_parameters_appears_in_the_table(tmp_path: Path) -> None:
    data = write_world(tmp_path / "data", tiny_events())
    params = FeatureParams(windows_days=(7, 14, 30, 90))
    build_feature_tables(data, [CUTOFF], tmp_path / "out", params=params)
    features = pd.read_parquet(tmp_path / "out" / "features.parquet").set_index("user_id")
    assert list(features.columns) == ["cutoff", *feature_names(build_registry(params))]
    assert features.loc["e", "events_count_14d"] == 2  # Feb 21 23:59 and Feb 22 00:00 fall in [Feb 15, Mar 1)


def test_plan_changes_keep_their_own_window_when_90_days_is_not_configured(tmp_path: Path) -> None:
    events = tiny_events()
    events.loc[len(events)] = ["a", ts("2025-02-10 10:00"), "upgrade", None, None]
    data = write_world(tmp_path / "data", events)
    build_feature_tables(data, [CUTOFF], tmp_path / "out", params=FeatureParams(windows_days=(7, 30)))
    features = pd.read_parquet(tmp_path / "out" / "features.parquet").set_index("user_id")
    assert "events_count_90d" not in features.columns
    assert features.loc["a", "plan_changes_90d"] == 1.0
    assert features.loc["b", "plan_changes_90d"] == 0.0


def test_churn_observed_a_window_later_with_an_offset(tmp_path: Path) -> None:
    events = tiny_events()
    filler = events.iloc[[0]].assign(user_id="y", ts=ts("2025-05-05 00:00"))  # extends the data past Apr 30
    data = write_world(tmp_path / "data", pd.concat([events, filler], ignore_index=True))
    build_feature_tables(data, [CUTOFF], tmp_path / "now", label_params=LabelParams(keep_churned_users=True))
    later = LabelParams(keep_churned_users=True, churn_offset_days=30)
    build_feature_tables(data, [CUTOFF], tmp_path / "later", label_params=later)
    now = pd.read_parquet(tmp_path / "now" / "labels.parquet").set_index("user_id")
    shifted = pd.read_parquet(tmp_path / "later" / "labels.parquet").set_index("user_id")
    # d is silent in [Mar 1, Mar 31) but logs in on Mar 31, inside [Mar 31, Apr 30)
    assert now.loc["d", "churn"] and not shifted.loc["d", "churn"]
    # b is silent in both windows; a still subscribes at Apr 30
    assert shifted.loc["b", "churn"] and not shifted.loc["a", "churn"]
    # the upgrade label keeps its own window: a spent 150 on Mar 15
    assert shifted.loc["a", "upgrade"]
    # unknown until the later window has closed
    early = build_feature_tables(
        data, [CUTOFF], tmp_path / "early", label_params=later, as_of=dt.date(2025, 4, 20)
    )
    assert early.label_rows_known == 0
    with pytest.raises(ValueError, match="churn_offset_days"):
        LabelParams(churn_offset_days=-1)


def test_the_compiled_query_is_reused_and_bound_to_each_call_s_own_inputs(tmp_path: Path) -> None:
    """Compiled once per key, the SQL must still read each call's own data: a second world with the same
    schemas reuses the compilation and gets exactly what a fresh, uncompiled build gives."""
    import ibis

    from features.build import build_features, compiled_features, compiled_labels
    from features.jobs import connect, load_inputs

    con = connect()  # one connection for both: a binding must not outlive its call
    first = write_world(tmp_path / "first", tiny_events())
    build_feature_tables(first, [CUTOFF], tmp_path / "out-first", con=con)
    misses = compiled_features.cache_info().misses, compiled_labels.cache_info().misses
    events = tiny_events()
    events.loc[events["user_id"] == "b", ["event_type", "amount"]] = ["purchase", 70.0]  # on Feb 27
    second = write_world(tmp_path / "second", events)
    build_feature_tables(second, [CUTOFF], tmp_path / "out-second", con=con)
    assert (compiled_features.cache_info().misses, compiled_labels.cache_info().misses) == misses
    reused = pd.read_parquet(tmp_path / "out-second" / "features.parquet")
    assert reused.set_index("user_id").loc["b", "revenue_sum_7d"] == 70.0
    inputs = load_inputs(con, second)
    fresh = build_features(
        inputs.events, [CUTOFF], users=inputs.users, subscriptions=inputs.subscriptions,
        campaigns=inputs.campaigns,
    )  # fmt: skip
    expected = con.to_pyarrow(fresh).to_pandas()  # a relation: its rows in no particular order
    pd.testing.assert_frame_equal(reused, in_key_order(expected))
    assert isinstance(fresh, ibis.expr.types.Table)


def test_the_single_pass_and_the_running_totals_plans_agree(
    monkeypatch: pytest.MonkeyPatch, small_world: Path
) -> None:
    """Few cutoffs take one FILTER pass, many take running totals: the same table either way."""
    import features.build as build
    from features.jobs import connect, load_inputs

    con = connect()
    inputs = load_inputs(con, small_world)
    cutoffs = [dt.date(2025, 4, 1), dt.date(2025, 6, 1), dt.date(2025, 8, 1)]
    tables = []
    for limit in (len(cutoffs), len(cutoffs) - 1):
        monkeypatch.setattr(build, "SINGLE_PASS_MAX_CUTOFFS", limit)
        expr = build.build_features(
            inputs.events, cutoffs, users=inputs.users, subscriptions=inputs.subscriptions,
            campaigns=inputs.campaigns, labels=LabelParams(keep_churned_users=True),
        )  # fmt: skip
        tables.append(in_key_order(con.to_pandas(expr)))
    single, running = tables
    assert len(single) > 1000
    pd.testing.assert_frame_equal(single, running, check_exact=False, rtol=1e-9, atol=1e-9)
