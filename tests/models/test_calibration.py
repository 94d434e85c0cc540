"""Bounded calibration: isotonic blocks shrunk towards the base rate never say exactly 0 or 1, stay monotone,
and cost little calibration error against plain isotonic regression on held-out rows."""

from __future__ import annotations

import numpy as np
import pytest

from clm.config import load_config
from models.metrics import expected_calibration_error
from models.propensity import Calibrator


def _sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.beta(0.6, 2.0, n)  # many near-0 scores: isotonic's lowest block is all negatives
    return p, (rng.random(n) < p**1.5).astype(float)


def test_no_calibrated_probability_is_exactly_0_or_1_and_the_map_stays_monotone() -> None:
    p, y = _sample(4000, 0)
    grid = np.linspace(0.0, 1.0, 10_001)
    plain = Calibrator.fit(p, y)(grid)
    # what the bounded fit is for: plain isotonic's end blocks say 0 and 1 (up to the order-keeping tie-break)
    assert plain.min() < 1e-5 and plain.max() > 1 - 1e-5
    bounded = Calibrator.fit(p, y, prior_rows=2.0)(grid)
    assert bounded.min() > 0.0 and bounded.max() < 1.0
    assert np.all(np.diff(bounded) >= 0)


def test_bounded_calibration_is_within_the_configured_tolerance_of_plain_isotonic_on_held_out_rows() -> None:
    tolerance = load_config().training.calibration_tolerance
    prior_rows = load_config().models.churn.calibration_prior_rows
    gaps = []
    for seed in range(5):
        p_valid, y_valid = _sample(3000, seed)
        p_test, y_test = _sample(3000, 100 + seed)
        plain = expected_calibration_error(y_test, Calibrator.fit(p_valid, y_valid)(p_test))
        bounded = expected_calibration_error(y_test, Calibrator.fit(p_valid, y_valid, prior_rows)(p_test))
        gaps.append(bounded - plain)
    assert max(gaps) <= tolerance, gaps


def test_zero_prior_rows_is_plain_isotonic() -> None:
    p, y = _sample(1000, 3)
    grid = np.linspace(0, 1, 501)
    assert Calibrator.fit(p, y, prior_rows=0.0)(grid) == pytest.approx(Calibrator.fit(p, y)(grid))
