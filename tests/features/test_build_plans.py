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
