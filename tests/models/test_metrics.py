"""Hand-computed checks of the evaluation metrics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from models.metrics import (
    TENURE_BAND_LABELS,
    classification_metrics,
    expected_calibration_error,
    recall_at_top,
    slice_metrics,
    summarize_folds,
    tenure_band,
    top_fraction_lift,
)
from training.model_card import METRIC_ORDER


def perfect_ranker(rows: int = 100, positives: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Positives first, all scored above every negative."""
    y = np.r_[np.ones(positives), np.zeros(rows - positives)]
    p = np.linspace(0.99, 0.01, rows)
    return y, p


def test_ece_of_a_perfectly_calibrated_set_is_zero() -> None:
    # Bin [0.2, 0.3): five rows at 0.2 with one positive; bin [0.8, 0.9): five rows at 0.8, four positive.
    y = np.array([1, 0, 0, 0, 0, 1, 1, 1, 1, 0])
    p = np.array([0.2] * 5 + [0.8] * 5)
    assert expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_constant_point_nine_on_half_positives_is_point_four() -> None:
    y = np.array([1, 0] * 50)
    assert expected_calibration_error(y, np.full(100, 0.9)) == pytest.approx(0.4)


def test_ece_weights_bins_by_size() -> None:
    # Bin [0.1, 0.2): 2 rows, mean score 0.1, observed 0.5, gap 0.4.
    # Bin [0.9, 1.0]: 8 rows (1.0 falls in the last bin), mean score 0.9125, observed 1.0, gap 0.0875.
    # (2 · 0.4 + 8 · 0.0875) / 10 = 0.15.
    y = np.array([1, 0] + [1] * 8)
    p = np.array([0.1, 0.1] + [0.9] * 7 + [1.0])
    assert expected_calibration_error(y, p) == pytest.approx(0.15)


def test_lift_and_recall_of_a_perfect_ranker() -> None:
    y, p = perfect_ranker()
    assert top_fraction_lift(y, p, 0.1) == pytest.approx(10.0)
    assert recall_at_top(y, p, 0.1) == pytest.approx(1.0)
    # Top 20 % holds all 10 positives among 20 rows: rate 0.5 over 0.1 overall.
    assert top_fraction_lift(y, p, 0.2) == pytest.approx(5.0)


def test_lift_of_a_reversed_ranker_is_zero_and_undefined_without_positives() -> None:
    y, p = perfect_ranker()
    assert top_fraction_lift(y, -p, 0.1) == 0.0
    assert recall_at_top(y, -p, 0.1) == 0.0
    assert math.isnan(top_fraction_lift(np.zeros(10), np.linspace(0, 1, 10)))
    assert math.isnan(recall_at_top(np.zeros(10), np.linspace(0, 1, 10)))


def test_classification_metrics_keys_and_values() -> None:
    y, p = perfect_ranker()
    result = classification_metrics(y, p)
    # every metric the model card orders is computed, and nothing else
    assert set(result) == set(METRIC_ORDER)
    assert result["roc_auc"] == pytest.approx(1.0)
    assert result["pr_auc"] == pytest.approx(1.0)
    assert result["brier"] == pytest.approx(np.mean((p - y) ** 2))
    assert (result["positives"], result["rows"], result["positive_rate"]) == (10, 100, pytest.approx(0.1))


def test_classification_metrics_with_one_class_gives_nan_aucs_not_an_error() -> None:
    result = classification_metrics(np.zeros(30), np.full(30, 0.2))
    assert math.isnan(result["roc_auc"]) and math.isnan(result["pr_auc"])
    assert result["brier"] == pytest.approx(0.04)
    assert result["positives"] == 0 and result["rows"] == 30


def test_bad_inputs_are_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="rows"):
        classification_metrics([0, 1], [0.5])
    with pytest.raises(ValueError, match="0 and 1"):
        classification_metrics([0, 2], [0.5, 0.5])
    with pytest.raises(ValueError, match="fraction"):
        top_fraction_lift([0, 1], [0.1, 0.9], fraction=0.0)


def test_slice_metrics_is_tidy_with_nan_for_tiny_and_one_class_slices() -> None:
    rng = np.random.default_rng(0)
    rows = 120
    y = np.r_[np.ones(40), np.zeros(80)]
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, rows), 0, 1)
    plan = pd.Series(["pro"] * 10 + ["basic"] * 110)  # "pro" is tiny: 10 rows
    stage = pd.Series(["at_risk"] * 40 + ["mature"] * 80)  # each stage has one class only
    frame = slice_metrics(y, p, {"plan": plan, "stage": stage})

    assert list(frame.columns) == ["slice", "value", "rows", "positives", "roc_auc", "pr_auc", "brier", "ece"]
    assert frame.shape == (4, 8)
    by_key = frame.set_index(["slice", "value"])
    assert by_key.loc[("plan", "pro"), ["rows", "positives"]].tolist() == [10, 10]
    assert by_key.loc[("plan", "basic"), ["rows", "positives"]].tolist() == [110, 30]
    assert by_key.loc[("plan", "pro"), ["roc_auc", "pr_auc", "brier", "ece"]].isna().all()
    assert by_key.loc[("stage", "mature"), ["roc_auc", "brier"]].isna().all()
    assert by_key.loc[("plan", "basic"), ["roc_auc", "pr_auc", "brier", "ece"]].notna().all()
    assert by_key.loc[("plan", "basic"), "roc_auc"] == pytest.approx(
        classification_metrics(y[10:], p[10:])["roc_auc"]
    )
    assert frame.groupby("slice")["rows"].sum().tolist() == [rows, rows]


def test_slice_metrics_keeps_category_order_and_reports_missing_values() -> None:
    y = np.tile([0, 1], 50)
    p = np.linspace(0, 1, 100)
    tenure = tenure_band(pd.Series([400.0] * 50 + [10.0] * 49 + [np.nan]))
    frame = slice_metrics(y, p, {"tenure_band": tenure})
    assert frame["value"].tolist() == ["0-30d", "365d+", "(missing)"]
    assert frame["rows"].tolist() == [49, 50, 1]


def test_slice_metrics_refuses_misaligned_slices() -> None:
    with pytest.raises(ValueError, match="slice 'plan'"):
        slice_metrics([0, 1], [0.1, 0.9], {"plan": pd.Series(["a"])})


@pytest.mark.parametrize(
    ("days", "band"),
    [
        (0, "0-30d"),
        (30, "0-30d"),
        (30.5, "31-90d"),
        (90, "31-90d"),
        (91, "91-180d"),
        (180, "91-180d"),
        (181, "181-365d"),
        (365, "181-365d"),
        (366, "365d+"),
        (5000, "365d+"),
    ],
)
def test_tenure_band_edges(days: float, band: str) -> None:
    assert tenure_band(pd.Series([days]))[0] == band


def test_tenure_band_is_ordered_and_missing_or_negative_is_nan() -> None:
    bands = tenure_band(pd.Series([np.nan, -3.0, 100.0], name="tenure_days"))
    assert list(bands.cat.categories) == list(TENURE_BAND_LABELS)
    assert bands.cat.ordered
    assert bands.isna().tolist() == [True, True, False]
    assert bands.name == "tenure_days"


def test_summarize_folds() -> None:
    folds = [
        {"roc_auc": 0.7, "brier": 0.1},
        {"roc_auc": 0.8, "brier": 0.2},
        {"roc_auc": math.nan, "brier": 0.3},
    ]
    summary = summarize_folds(folds)
    assert list(summary) == ["roc_auc", "brier"]
    assert summary["roc_auc"] == {
        "mean": pytest.approx(0.75),
        "std": pytest.approx(math.sqrt(0.005)),
        "min": 0.7,
        "max": 0.8,
        "n": 2,
    }
    assert summary["brier"]["mean"] == pytest.approx(0.2)
    assert summary["brier"]["std"] == pytest.approx(0.1)
    assert summary["brier"]["n"] == 3


def test_summarize_a_single_fold_has_no_std() -> None:
    summary = summarize_folds([{"roc_auc": 0.7}])
    assert summary["roc_auc"]["mean"] == 0.7 and summary["roc_auc"]["n"] == 1
    assert math.isnan(summary["roc_auc"]["std"])
