"""Every plot returns a drawable Figure; the model card renders every section and the numbers given."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from models.metrics import classification_metrics, slice_metrics, summarize_folds
from models.plots import (
    calibration_figure,
    importance_figure,
    lift_figure,
    save_figure,
    shap_beeswarm_figure,
    shap_dependence_figures,
)
from training.model_card import ORACLE_ABSENT_NOTE, ORACLE_PRESENT_NOTE, render_model_card

ROWS = 80


@pytest.fixture
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, ROWS)
    p = np.clip(0.5 * y + rng.uniform(0, 0.5, ROWS), 0, 1)
    return y, p


@pytest.fixture
def explained() -> tuple[np.ndarray, pd.DataFrame]:
    """pred_contrib-shaped output (features + bias column) for a frame with a categorical column."""
    rng = np.random.default_rng(1)
    X = pd.DataFrame(
        {
            "days_since_last_event": rng.uniform(0, 60, ROWS),
            "plan": pd.Categorical(rng.choice(["free", "basic", "pro", None], ROWS)),
            "logins_30d": rng.integers(0, 9, ROWS).astype("float64"),
            "support_tickets_90d": np.nan,
        }
    )
    contributions = np.column_stack(
        [
            X["days_since_last_event"] / 20.0,  # largest mean |contribution|
            X["plan"].cat.codes * 0.5,
            -X["logins_30d"] * 0.01,  # smallest
            np.zeros(ROWS),
            np.full(ROWS, -1.2),  # the bias column
        ]
    )
    return contributions, X


def assert_drawable(figure: Figure) -> None:
    assert isinstance(figure, Figure)
    assert figure.axes
    figure.canvas.draw()


def test_calibration_figure(scored: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scored
    figure = calibration_figure(y, p, np.full(ROWS, y.mean()))
    assert_drawable(figure)
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert any(label.startswith("before (ECE ") for label in legend)
    assert any(label.startswith("after (ECE ") for label in legend)


def test_lift_figure(scored: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scored
    figure = lift_figure(y, {"model": p, "recency rule": np.arange(ROWS), "random": np.zeros(ROWS)})
    assert_drawable(figure)
    assert len(figure.axes) == 2
    with pytest.raises(ValueError, match="'short'"):
        lift_figure(y, {"short": p[:5]})


def test_shap_beeswarm_figure_drops_the_bias_column(explained: tuple[np.ndarray, pd.DataFrame]) -> None:
    contributions, X = explained
    figure = shap_beeswarm_figure(contributions, X, max_display=3)
    assert_drawable(figure)
    tick_labels = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert set(tick_labels) == {"days_since_last_event", "plan", "logins_30d"}
    with pytest.raises(ValueError, match="columns"):
        shap_beeswarm_figure(contributions[:, :2], X)


def test_shap_dependence_figures_for_the_top_features(explained: tuple[np.ndarray, pd.DataFrame]) -> None:
    contributions, X = explained
    figures = shap_dependence_figures(contributions, X, top_k=2)
    assert list(figures) == ["days_since_last_event", "plan"]
    for figure in figures.values():
        assert_drawable(figure)
    plan_axes = figures["plan"].axes[0]
    assert [label.get_text() for label in plan_axes.get_xticklabels()] == ["basic", "free", "pro"]
    assert "missing not shown" in plan_axes.get_title()


def test_importance_figure_shows_at_most_25_bars_largest_on_top() -> None:
    names = [f"feature_{i}" for i in range(40)]
    figure = importance_figure(names, np.arange(40.0))
    assert_drawable(figure)
    axes = figure.axes[0]
    assert len(axes.patches) == 25
    assert axes.get_yticklabels()[-1].get_text() == "feature_39"


def test_save_figure_writes_a_png(tmp_path: Path, scored: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scored
    target = save_figure(calibration_figure(y, p, p), tmp_path / "plots" / "calibration.png")
    assert target.stat().st_size > 0
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def full_card(scored: tuple[np.ndarray, np.ndarray], *, oracle: bool) -> dict[str, object]:
    y, p = scored
    test_metrics = {
        "model": classification_metrics(y, p),
        "logistic": classification_metrics(y, np.sqrt(p)),
        "recency_rule": classification_metrics(y, np.full(ROWS, 0.5)),
    }
    if oracle:
        test_metrics["oracle"] = classification_metrics(y, np.clip(y * 0.9 + 0.05, 0, 1))
    slices = slice_metrics(
        y, p, {"plan": pd.Series(["free"] * 60 + ["pro"] * 20), "stage": pd.Series(["new"] * ROWS)}
    )
    return {
        "model": {"name": "clm-churn", "version": "7", "target": "churn", "horizon_days": 30},
        "data": {
            "first_cutoff": "2025-02-01",
            "last_cutoff": "2025-09-01",
            "train_cutoffs": ["2025-02-01", "2025-03-01", "2025-04-01", "2025-05-01", "2025-06-01"],
            "valid_cutoffs": ["2025-07-01"],
            "test_cutoffs": ["2025-09-01"],
            "rows": {"train": 48213, "valid": 9120, "test": 9007},
            "positive_rate": {"train": 0.1234, "test": 0.1111},
        },
        "test_metrics": test_metrics,
        "backtest": summarize_folds([{"roc_auc": 0.81, "brier": 0.09}, {"roc_auc": 0.79, "brier": 0.11}]),
        "calibration": {
            "method": "isotonic",
            "brier_before": 0.1532,
            "brier_after": 0.0921,
            "ece_before": 0.0871,
            "ece_after": 0.0123,
        },
        "slices": slices,
        "top_features": {"days_since_last_event": 1500.0, "logins_30d": 500.0, "plan": 0.0},
        "limitations": ["Trained on a simulated world with 15,000 users."],
    }


SECTIONS = (
    "## Model",
    "## Data window",
    "## Metrics",
    "## Calibration",
    "## Slices",
    "## Top features",
    "## Known limitations",
)


def test_model_card_renders_every_section_and_the_numbers(scored: tuple[np.ndarray, np.ndarray]) -> None:
    card = full_card(scored, oracle=True)
    text = render_model_card(card)
    positions = [text.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    model_auc = card["test_metrics"]["model"]["roc_auc"]
    oracle_auc = card["test_metrics"]["oracle"]["roc_auc"]
    for expected in (
        "# Model card: clm-churn v7",
        "churn",
        "30",
        "2025-02-01 … 2025-06-01 (5 cutoffs)",
        "2025-07-01",
        "2025-09-01",
        "train 48,213",
        "test 0.1111",
        "| metric | model | logistic baseline | recency rule | oracle |",
        f"{model_auc:.4f}",
        f"roc_auc ÷ oracle | {model_auc / oracle_auc:.4f}",
        "0.8000 ± 0.0141",
        "0.7900 – 0.8100",
        "isotonic",
        "| brier | 0.1532 | 0.0921 |",
        "| ece | 0.0871 | 0.0123 |",
        "| plan | free | 60 |",
        "| stage | new | 80 |",
        "| 1 | days_since_last_event | 1500.0 | 75.0 % |",
        "Trained on a simulated world with 15,000 users.",
        ORACLE_PRESENT_NOTE,
    ):
        assert expected in text, expected
    assert ORACLE_ABSENT_NOTE not in text
    assert "| rows | 80 | 80 | 80 | 80 |" in text  # counts print as whole numbers


def test_model_card_without_optional_parts(scored: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scored
    text = render_model_card(
        {
            "model": {"name": "clm-upgrade", "target": "upgrade", "horizon_days": 60},
            "test_metrics": {"model": classification_metrics(y, p)},
        }
    )
    for section in ("## Model", "## Data window", "## Metrics", "## Known limitations"):
        assert section in text
    for absent in ("## Calibration", "## Slices", "## Top features", "| oracle", "÷ oracle", "Backtest"):
        assert absent not in text
    assert ORACLE_ABSENT_NOTE in text
    minimal = render_model_card({"model": {"name": "m"}})
    assert "No test-cutoff metrics were recorded." in minimal


def test_model_card_truncates_long_slices_and_shows_nan_as_na(scored: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scored
    many_values = pd.Series([f"country_{i % 12}" for i in range(ROWS)])
    card = {"model": {"name": "m"}, "slices": slice_metrics(y, p, {"country": many_values})}
    text = render_model_card(card)
    assert "Not shown: 4 more value(s) of country." in text
    assert text.count("| country |") == 8
    assert "n/a" in text  # every country has under 20 rows
    assert not math.isnan(card["slices"]["rows"].sum())


def test_model_card_accepts_the_flat_layout(scored: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scored
    model_metrics = classification_metrics(y, p) | {
        "brier_before_calibration": 0.2468,
        "ece_before_calibration": 0.1357,
    }
    text = render_model_card(
        {
            "name": "clm-churn",
            "target": "churn",
            "horizon_days": 30,
            "feature_version": "abc123",
            "train_cutoffs": ["2025-03-01", "2025-04-01"],
            "valid_cutoff": "2025-05-01",
            "test_cutoff": "2025-06-01",
            "test_rows": 1234,
            "test_positive_rate": 0.0875,
            "test_metrics": {"model": model_metrics},
            "top_features": [("days_since_last_event", np.float64(10.0))],
        }
    )
    for expected in (
        "# Model card: clm-churn",
        "- **Feature version:** abc123",
        "- **Validation cutoffs:** 2025-05-01",
        "- **Test cutoffs:** 2025-06-01",
        "- **Rows:** test 1,234",
        "- **Positive rate:** test 0.0875",
        f"| brier | 0.2468 | {model_metrics['brier']:.4f} |",
        f"| ece | 0.1357 | {model_metrics['ece']:.4f} |",
        "| 1 | days_since_last_event | 10.0 | 100.0 % |",
    ):
        assert expected in text, expected
