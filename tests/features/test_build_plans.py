"""The feature query computes only the totals the registry reads: a builder that reads one no default
feature reads still gets it, on both plans (one pass for few cutoffs, running totals for many)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import ibis
import pandas as pd
import pytest

import features.build as build
from features.registry import FeatureParams, build_registry, by_name


def _with_login_count_60d(params: FeatureParams | None = None) -> tuple:
    """The registry plus a feature over a window nothing else asks logins for (60 days)."""
    login_7d = by_name(build_registry(params))["login_count_7d"]

    def logins_60d(t: Any, p: FeatureParams) -> Any:
        return (t["n_login_at_0"] - t["n_login_at_60"]).cast("float64")

    extra = dataclasses.replace(login_7d, name="login_count_60d_extra", window_days=60, build=logins_60d)
    return (*build_registry(params), extra)


@pytest.mark.parametrize("single_pass_max_cutoffs", [12, 0], ids=["single pass", "running totals"])
def test_a_total_only_a_new_feature_reads_is_computed(
    monkeypatch: pytest.MonkeyPatch, single_pass_max_cutoffs: int
) -> None:
    monkeypatch.setattr(build, "build_registry", _with_login_count_60d)
    monkeypatch.setattr(build, "SINGLE_PASS_MAX_CUTOFFS", single_pass_max_cutoffs)
    # logins 70, 59 and 1 days before the cutoff, and a purchase 3 days before
    events = ibis.memtable(
        pd.DataFrame(
            {
                "user_id": ["a", "a", "a", "a"],
                "ts": pd.to_datetime(
                    ["2024-12-21 09:00", "2025-01-01 12:00", "2025-02-27 09:00", "2025-02-26 09:00"], utc=True
                ),
                "event_type": ["login", "login", "login", "purchase"],
                "amount": [None, None, None, 5.0],
            }
        )
    )
    table = build.build_features(events, [dt.date(2025, 3, 1)]).execute()
    assert table.loc[0, "login_count_60d_extra"] == 2
    assert table.loc[0, "login_count_total"] == 3
    assert table.loc[0, "login_count_7d"] == 1


@pytest.mark.parametrize("single_pass_max_cutoffs", [12, 0], ids=["single pass", "running totals"])
def test_purchase_cycle_features_on_both_plans(
    monkeypatch: pytest.MonkeyPatch, single_pass_max_cutoffs: int
) -> None:
    """Purchases on days 0, 0 (twice that day), 10 and 30 of a user's life, scored 40 days after the first:
    T = 40, span 30, 2 repeat purchase days, mean gap 15, overdue 10 / 15."""
    monkeypatch.setattr(build, "SINGLE_PASS_MAX_CUTOFFS", single_pass_max_cutoffs)
    first = pd.Timestamp("2025-01-01 09:00", tz="UTC")
    days = [0, 0, 10, 30]
    events = ibis.memtable(
        pd.DataFrame(
            {
                "user_id": ["a"] * 4 + ["b", "b"],
                "ts": [first + pd.Timedelta(days=d, hours=i) for i, d in enumerate(days)]
                + [first, first + pd.Timedelta(days=35)],
                "event_type": ["purchase"] * 4 + ["login", "login"],
                "amount": [5.0, 1.0, 5.0, 5.0, None, None],
            }
        )
    )
    table = build.build_features(events, [dt.date(2025, 2, 10)]).execute().set_index("user_id")
    a = table.loc["a"]
    assert a["days_since_first_purchase"] == 40
    assert a["purchase_span_days"] == 30
    assert a["repeat_purchase_days"] == 2
    assert a["purchase_gap_mean_days"] == 15
    assert a["purchase_overdue_ratio"] == pytest.approx(10 / 15)
    assert a["purchase_days_per_30d"] == pytest.approx(30 * 3 / 40)
    assert table.loc["b", ["days_since_first_purchase", "repeat_purchase_days"]].isna().all()
