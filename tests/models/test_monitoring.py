"""The treated-vs-predicted lift check (models.monitoring.lift_calibration) against hand-computed values."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from models.monitoring import Z95, lift_calibration


def test_lift_calibration_by_hand() -> None:
    logged = pd.DataFrame({
        "action": ["a"] * 4 + ["b"] * 2 + ["no_action"] * 3,
        "p_churn": [0.5, 0.5, 0.3, 0.3, 0.2, 0.2, 0.9, 0.9, 0.9],
        "predicted_delta_stay": [0.1, 0.1, 0.1, 0.1, 0.5, 0.5, 0.0, 0.0, 0.0],
        "retained": [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0],
    })  # fmt: skip
    got = lift_calibration(logged, min_users=2).set_index("action")
    assert list(got.index) == ["a", "b"]  # no_action is no treatment
    # a: retention 3/4, expected without contact mean(0.5, 0.5, 0.7, 0.7) = 0.6 → measured 0.15
    half = Z95 * math.sqrt(0.75 * 0.25 / 4)
    assert got.loc["a", "measured_lift"] == pytest.approx(0.15)
    assert got.loc["a", "ci_low"] == pytest.approx(0.15 - half) and got.loc["a", "ci_high"] == pytest.approx(
        0.15 + half
    )
    assert got.loc["a", "predicted_lift"] == pytest.approx(0.1) and not got.loc["a", "breach"]
    # b: retention 1, expected 0.8 → measured 0.2 with a degenerate interval; predicted 0.5 lies outside
    assert got.loc["b", "measured_lift"] == pytest.approx(0.2) and got.loc["b", "breach"]
    assert not lift_calibration(logged, min_users=3).set_index("action").loc["b", "breach"]  # too few users
