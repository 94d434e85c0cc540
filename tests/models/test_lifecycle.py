"""Lifecycle analytics (models.lifecycle) on a hand-made table, against values computed by hand."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from models.lifecycle import referral_rates, retention, stage_conversion, underserved, value_quadrants

C1, C2, C3 = dt.date(2025, 1, 1), dt.date(2025, 2, 1), dt.date(2025, 3, 1)
NEXT = {"new": ["growing", "mature"], "growing": ["mature"], "dormant": ["reactivated"]}


def history() -> pd.DataFrame:
    stages = {  # user: stage at C1, C2, C3 (None: not yet seen)
        "u1": ("new", "growing", "mature"),
        "u2": ("new", "new", "dormant"),
        "u3": ("growing", "mature", "mature"),
        "u4": ("growing", "growing", "dormant"),
        "u5": ("dormant", "reactivated", "growing"),
        "u6": ("dormant", "dormant", "dormant"),
        "u7": (None, "new", "growing"),
    }
    rows = [(u, c, s) for u, path in stages.items() for c, s in zip((C1, C2, C3), path, strict=True) if s]
    return pd.DataFrame(rows, columns=["user_id", "cutoff", "stage"])


def test_stage_conversion_by_hand() -> None:
    got = stage_conversion(history(), NEXT).set_index(["from_cutoff", "stage"])
    # C1 → C2: new {u1→growing, u2→new} 1/2; growing {u3→mature, u4→growing} 1/2; dormant {u5→reactivated, u6} 1/2
    assert got.loc[(C1, "new"), ["users", "converted"]].tolist() == [2, 1]
    assert got.loc[(C1, "growing"), "rate"] == 0.5 and got.loc[(C1, "dormant"), "rate"] == 0.5
    # C2 → C3: new {u2→dormant, u7→growing} 1/2; growing {u1→mature, u4→dormant} 1/2; dormant {u6} 0/1
    assert got.loc[(C2, "new"), ["users", "converted"]].tolist() == [2, 1]
    assert got.loc[(C2, "growing"), ["users", "converted"]].tolist() == [2, 1]
    assert got.loc[(C2, "dormant"), ["users", "converted", "rate"]].tolist() == [1, 0, 0.0]


def test_retention_by_hand() -> None:
    got = retention(history()).set_index("from_cutoff")
    # C1 → C2: active u1–u4, all still active: 4/4. C2 → C3: active u1,u2,u3,u4,u5,u7 (6); u2 and u4 lapse: 4/6
    assert got.loc[C1, ["active", "retained", "rate"]].tolist() == [4, 4, 1.0]
    assert got.loc[C2, ["active", "retained"]].tolist() == [6, 4]
    assert got.loc[C2, "rate"] == pytest.approx(4 / 6)


def test_referral_rates_by_hand() -> None:
    users = pd.DataFrame({
        "user_id": ["a", "b", "c", "d", "e"],
        "signup_ts": pd.to_datetime(["2024-12-31", "2025-01-01", "2025-01-20", "2025-02-01", "2025-02-28 23:00:00"], format="ISO8601",
                                    utc=True),
        "channel": ["referral", "referral", "organic", "referral", "paid_search"],
    })  # fmt: skip
    got = referral_rates(users, [C1, C2, C3], "referral")
    # [C1, C2): b (referral), c → 1/2; [C2, C3): d (referral), e → 1/2
    assert got[["signups", "referred"]].to_numpy().tolist() == [[2, 1], [2, 1]]
    assert got["rate"].tolist() == [0.5, 0.5]
    assert referral_rates(users.drop(columns="channel"), [C1, C2], "referral").empty


def test_value_quadrants_by_hand() -> None:
    table = pd.DataFrame({"value_if_retained": [100.0, 80.0, 10.0, 5.0, 60.0, 0.0, 2.0, 3.0]})
    tenure = pd.Series([400.0, 30.0, 500.0, 20.0, 300.0, 10.0, 200.0, 5.0])
    # value median 7.5: high = 100, 80, 10, 60; tenure median 115: long = 400, 500, 300, 200
    got, splits = value_quadrants(table, tenure)
    assert splits == {"value_split": 7.5, "tenure_split": 115.0}
    got = got.set_index("quadrant")
    total = 260.0
    assert got.loc["high value · long lifecycle", ["users", "value"]].tolist() == [3, 170.0]  # 100, 10, 60
    assert got.loc["high value · short lifecycle", ["users", "value"]].tolist() == [1, 80.0]
    assert got.loc["low value · long lifecycle", ["users", "value"]].tolist() == [1, 2.0]
    assert got.loc["low value · short lifecycle", ["users", "value"]].tolist() == [3, 8.0]  # 5, 0, 3
    assert got["user_share"].sum() == pytest.approx(1.0)
    assert got.loc["high value · long lifecycle", "value_share"] == pytest.approx(170 / total)
    assert got.loc["high value · long lifecycle", "user_share"] == pytest.approx(3 / 8)


def test_underserved_by_hand() -> None:
    table = pd.DataFrame({
        "user_id": list("abcdefghij"),
        "value_if_retained": [10.0, 20, 30, 40, 50, 60, 70, 80, 90, 100],
        "best_offered_value": [5.0, -1, 2, 3, 4, -2, 1, -0.5, np.nan, 0.0],
    })  # fmt: skip
    # 80th percentile of 10..100 = 82: valuable i (90), j (100); i has no action offered, j's best pays 0
    picked, summary = underserved(table, value_quantile=0.8)
    assert picked["user_id"].tolist() == ["j", "i"]
    assert summary["value_threshold"] == pytest.approx(82.0)
    assert summary["users"] == 2 and summary["valuable_users"] == 2 and summary["value_at_stake"] == 190.0
    picked, summary = underserved(table, value_quantile=0.5)  # ≥ 55: f, g, h, i, j; f, h, i, j unpaid
    assert picked["user_id"].tolist() == ["j", "i", "h", "f"]
    assert summary["share_of_valuable"] == pytest.approx(4 / 5)
