"""Evaluation metrics for binary risk scores: discrimination, calibration, targeting, slices, folds.

Everything here is a pure function of arrays (or pandas objects) and returns plain numbers or frames,
so the training job, the notebooks and the tests compute every reported figure the same way.
Undefined values (an AUC with one class present, a lift with no positives) are NaN, never an error:
a backtest over many cutoffs must not die on one quiet cutoff.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

TENURE_BAND_LABELS: tuple[str, ...] = ("0-30d", "31-90d", "91-180d", "181-365d", "365d+")
_TENURE_BAND_EDGES_DAYS: tuple[float, ...] = (0.0, 30.0, 90.0, 180.0, 365.0, math.inf)

SLICE_METRIC_COLUMNS: tuple[str, ...] = ("rows", "positives", "roc_auc", "pr_auc", "brier", "ece")
MIN_SLICE_ROWS = 20


def _as_arrays(y_true: object, p: object) -> tuple[np.ndarray, np.ndarray]:
    """Validate and flatten labels (0/1) and scores into float arrays of equal length."""
    y = np.asarray(y_true, dtype="float64").ravel()
    scores = np.asarray(p, dtype="float64").ravel()
    if y.shape != scores.shape:
        raise ValueError(f"y_true has {y.size} rows but p has {scores.size}")
    if np.isnan(y).any() or not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("y_true must contain only 0 and 1 (no missing labels)")
    if np.isnan(scores).any():
        raise ValueError("p contains NaN; score every row before evaluating")
    return y, scores


def _top_count(n_rows: int, fraction: float) -> int:
    """How many rows the top `fraction` holds: rounded up, at least one."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    # The small tolerance keeps 0.1 × 100 at 10 even when the product lands a hair above it.
    return max(1, math.ceil(n_rows * fraction - 1e-9))


def _top_mask(scores: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the highest-scored `fraction` of rows (ties broken by original order)."""
    order = np.argsort(-scores, kind="stable")
    mask = np.zeros(scores.size, dtype=bool)
    mask[order[: _top_count(scores.size, fraction)]] = True
    return mask


MIN_RELIABLE_BIN_USERS = 30  # a calibration bin with fewer users is drawn hollow and marked unreliable
RELIABILITY_COLUMNS = (
    "bin_low",
    "bin_high",
    "users",
    "positives",
    "mean_predicted",
    "observed_rate",
    "reliable",
)


def score_axis_range(*scores: object, pad_share: float = 0.03) -> tuple[float, float]:
    """The scores' own range (all arrays together, NaN ignored), padded by `pad_share` of its span and kept
    inside [0, 1]: the axis of a histogram or reliability diagram whose scores all sit below 0.1 is 0–0.1,
    not 0–1 with one bar."""
    values = (
        np.concatenate([np.asarray(s, dtype="float64").ravel() for s in scores]) if scores else np.array([])
    )
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    pad = pad_share * (high - low) if high > low else 0.01
    return max(0.0, low - pad), min(1.0, high + pad)


def reliability_table(
    y_true: object,
    p: object,
    n_bins: int = 10,
    *,
    score_range: tuple[float, float] | None = None,
    min_users: int = MIN_RELIABLE_BIN_USERS,
) -> pd.DataFrame:
    """Per non-empty equal-width bin over `score_range` (default: the scores' own range): its edges, users,
    positives, mean predicted score, observed positive rate, and whether it holds at least `min_users` users
    (fewer: the observed rate is too noisy to read — one user observed at 1.0 says nothing)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    y, scores = _as_arrays(y_true, p)
    low, high = score_range if score_range is not None else score_axis_range(scores)
    edges = np.linspace(low, high, n_bins + 1)
    bins = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, n_bins - 1)
    users = np.bincount(bins, minlength=n_bins)
    positives = np.bincount(bins, weights=y, minlength=n_bins)
    predicted = np.bincount(bins, weights=scores, minlength=n_bins)
    filled = users > 0
    table = pd.DataFrame(
        {
            "bin_low": edges[:-1][filled],
            "bin_high": edges[1:][filled],
            "users": users[filled].astype(int),
            "positives": positives[filled].astype(int),
            "mean_predicted": predicted[filled] / users[filled],
            "observed_rate": positives[filled] / users[filled],
        }
    )
    table["reliable"] = table["users"] >= min_users
    return table[list(RELIABILITY_COLUMNS)]


def expected_calibration_error(y_true: object, p: object, n_bins: int = 10) -> float:
    """Expected calibration error: the bin-size-weighted mean |observed rate − mean score|.

    Bins are equal-width on [0, 1]; a score of exactly 1.0 falls in the last bin. NaN for no rows.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    y, scores = _as_arrays(y_true, p)
    if y.size == 0:
        return math.nan
    if scores.min() < 0.0 or scores.max() > 1.0:
        raise ValueError("calibration needs probabilities in [0, 1]")
    bins = np.minimum((scores * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    observed = np.bincount(bins, weights=y, minlength=n_bins)
    predicted = np.bincount(bins, weights=scores, minlength=n_bins)
    filled = counts > 0
    gaps = np.abs(observed[filled] - predicted[filled]) / counts[filled]
    return float(np.sum(gaps * counts[filled]) / y.size)


def top_fraction_lift(y_true: object, p: object, fraction: float = 0.1) -> float:
    """Positive rate among the top `fraction` of rows by score ÷ the overall positive rate.

    The top holds ceil(fraction × rows) rows; ties at the boundary are broken by row order.
    NaN when there are no rows or no positives.
    """
    y, scores = _as_arrays(y_true, p)
    if y.size == 0 or y.sum() == 0:
        return math.nan
    top = _top_mask(scores, fraction)
    return float(y[top].mean() / y.mean())


def recall_at_top(y_true: object, p: object, fraction: float = 0.1) -> float:
    """Share of all positives found in the top `fraction` of rows by score. NaN with no positives."""
    y, scores = _as_arrays(y_true, p)
    if y.size == 0 or y.sum() == 0:
        return math.nan
    top = _top_mask(scores, fraction)
    return float(y[top].sum() / y.sum())


def _auc_pair(y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """ROC AUC and average precision, both NaN unless both classes are present."""
    if y.size == 0 or y.min() == y.max():
        return math.nan, math.nan
    return float(roc_auc_score(y, scores)), float(average_precision_score(y, scores))


def classification_metrics(y_true: object, p: object, *, fraction: float = 0.1) -> dict[str, float]:
    """The standard set reported for every model, baseline and slice.

    Keys: roc_auc, pr_auc (average precision), brier, ece, top_decile_lift, recall_at_top10 (both at
    `fraction`), positives, rows, positive_rate. AUCs are NaN when only one class is present.
    """
    y, scores = _as_arrays(y_true, p)
    rows = int(y.size)
    positives = int(y.sum())
    roc_auc, pr_auc = _auc_pair(y, scores)
    return {
        "roc_auc": roc_auc,
        "pr_auc": pr_auc,
        "brier": float(np.mean((scores - y) ** 2)) if rows else math.nan,
        "ece": expected_calibration_error(y, scores),
        "top_decile_lift": top_fraction_lift(y, scores, fraction),
        "recall_at_top10": recall_at_top(y, scores, fraction),
        "positives": float(positives),
        "rows": float(rows),
        "positive_rate": positives / rows if rows else math.nan,
    }


def _slice_row(y: np.ndarray, scores: np.ndarray, min_rows: int) -> dict[str, float]:
    rows = int(y.size)
    positives = int(y.sum())
    measurable = rows >= min_rows and 0 < positives < rows
    if not measurable:
        return {"rows": rows, "positives": positives} | dict.fromkeys(SLICE_METRIC_COLUMNS[2:], math.nan)
    roc_auc, pr_auc = _auc_pair(y, scores)
    return {
        "rows": rows,
        "positives": positives,
        "roc_auc": roc_auc,
        "pr_auc": pr_auc,
        "brier": float(np.mean((scores - y) ** 2)),
        "ece": expected_calibration_error(y, scores),
    }


def slice_metrics(
    y_true: object,
    p: object,
    slices: Mapping[str, pd.Series],
    *,
    min_rows: int = MIN_SLICE_ROWS,
) -> pd.DataFrame:
    """Metrics per value of each slicing column, as a tidy frame.

    Columns: slice, value, rows, positives, roc_auc, pr_auc, brier, ece — one row per (slice, value).
    Slices align with `y_true` and `p` by position. Values keep the slice's own order (categorical
    order when it has one, else sorted); a missing value is reported as "(missing)". A slice value with
    fewer than `min_rows` rows or a single class keeps its rows and positives and has NaN metrics, so a
    reader sees the slice exists without trusting a number measured on a handful of users.
    """
    y, scores = _as_arrays(y_true, p)
    records: list[dict[str, object]] = []
    for slice_name, values in slices.items():
        values = pd.Series(values)
        if len(values) != y.size:
            raise ValueError(f"slice {slice_name!r} has {len(values)} rows but y_true has {y.size}")
        positions = pd.Series(np.arange(y.size), index=pd.RangeIndex(y.size))
        keys = values.reset_index(drop=True)
        for value, members in positions.groupby(keys, sort=True, observed=True, dropna=False):
            index = members.to_numpy()
            label = "(missing)" if pd.isna(value) else str(value)
            records.append(
                {"slice": slice_name, "value": label} | _slice_row(y[index], scores[index], min_rows)
            )
    frame = pd.DataFrame.from_records(records, columns=["slice", "value", *SLICE_METRIC_COLUMNS])
    return frame.astype({"rows": "int64", "positives": "int64"})


def tenure_band(tenure_days: pd.Series) -> pd.Series:
    """Ordered tenure bands: 0-30d, 31-90d, 91-180d, 181-365d, 365d+ (365 itself is in 181-365d).

    Bands close on the right, so 30.5 days is in 31-90d. Missing or negative tenure gives NaN.
    """
    bands = pd.cut(
        pd.Series(tenure_days, dtype="float64"),
        bins=list(_TENURE_BAND_EDGES_DAYS),
        labels=list(TENURE_BAND_LABELS),
        right=True,
        include_lowest=True,
        ordered=True,
    )
    return bands.rename(getattr(tenure_days, "name", None))


def summarize_folds(fold_metrics: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Per metric across backtest folds: mean, std (sample, ddof=1), min, max and n.

    NaN values (e.g. an AUC on a fold with one class) are left out, and `n` counts the folds that had a
    value; std is NaN with fewer than two. Metrics keep the order they first appear in.
    """
    names: dict[str, None] = {}
    for fold in fold_metrics:
        names.update(dict.fromkeys(fold))
    summary: dict[str, dict[str, float]] = {}
    for name in names:
        values = np.array([float(fold[name]) for fold in fold_metrics if name in fold], dtype="float64")
        values = values[~np.isnan(values)]
        n = int(values.size)
        summary[name] = {
            "mean": float(values.mean()) if n else math.nan,
            "std": float(values.std(ddof=1)) if n >= 2 else math.nan,
            "min": float(values.min()) if n else math.nan,
            "max": float(values.max()) if n else math.nan,
            "n": float(n),
        }
    return summary
