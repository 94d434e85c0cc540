"""The isotonic calibrator keeps the model's order: no two different scores share a probability, so the
calibrated ROC AUC is the model's own, and no probability moves by more than the tie-break."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from models.propensity import TIE_BREAK, Calibrator


def test_calibration_keeps_the_model_order_and_its_auc() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.0, 1.0, 5000)
    y = (rng.uniform(0.0, 1.0, 5000) < p**3).astype(float)
    calibrator = Calibrator.fit(p[:2500], y[:2500])
    plain_isotonic = np.interp(p[2500:], calibrator.x, calibrator.y)

    calibrated = calibrator(p[2500:])

    assert len(np.unique(plain_isotonic)) < 100  # isotonic steps: most rows share a value
    assert len(np.unique(calibrated)) == len(np.unique(p[2500:]))
    assert np.all(np.diff(calibrated[np.argsort(p[2500:])]) > 0)
    assert roc_auc_score(y[2500:], calibrated) == roc_auc_score(y[2500:], p[2500:])
    assert np.max(np.abs(calibrated - plain_isotonic)) <= 2 * TIE_BREAK
    assert 0.0 < calibrated.min() and calibrated.max() < 1.0
