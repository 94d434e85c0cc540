"""The one scoring function: batch scoring, the API and the tests all call `score`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.registry import Feature
from models.arbitration import LAST_ACTION
from models.bundle import ModelBundle
from models.catalog import action_label
from models.frame import model_matrix


def matrix_for(frame: pd.DataFrame, bundle: ModelBundle) -> pd.DataFrame:
    return model_matrix(frame, bundle.feature_names, bundle.categories)


def raw_scores(frame: pd.DataFrame, bundle: ModelBundle, *, num_threads: int = 0) -> np.ndarray:
    return bundle.booster.predict(matrix_for(frame, bundle), raw_score=True, num_threads=num_threads)


def score(frame: pd.DataFrame, bundle: ModelBundle, *, num_threads: int = 0) -> pd.DataFrame:
    """Calibrated probability, uncalibrated probability and raw score (log-odds) per row of `frame`."""
    raw = raw_scores(frame, bundle, num_threads=num_threads)
    uncalibrated = 1.0 / (1.0 + np.exp(-raw))
    return pd.DataFrame(
        {"probability": bundle.calibrator(uncalibrated), "uncalibrated": uncalibrated, "raw_score": raw},
        index=frame.index,
    )


def contributions(frame: pd.DataFrame, bundle: ModelBundle, *, num_threads: int = 0) -> np.ndarray:
    """Exact TreeSHAP (LightGBM pred_contrib): one column per feature, then the base value; each row sums
    to the raw score."""
    return bundle.booster.predict(matrix_for(frame, bundle), pred_contrib=True, num_threads=num_threads)


def score_matrix(matrix: np.ndarray, bundle: ModelBundle) -> tuple[float, float]:
    """Calibrated probability and raw score of one encoded row, on one thread."""
    raw = float(bundle.booster.predict(matrix, raw_score=True, num_threads=1)[0])
    return float(bundle.calibrator(np.array([1.0 / (1.0 + math.exp(-raw))]))[0]), raw


def contributions_matrix(matrix: np.ndarray, bundle: ModelBundle) -> np.ndarray:
    """Exact TreeSHAP of encoded rows on one thread: one column per feature, then the base value."""
    return bundle.booster.predict(matrix, pred_contrib=True, num_threads=1)


def top_order(contributions: np.ndarray, top_k: int) -> np.ndarray:
    """Per row of (n, features) contributions (without the base value), the `top_k` feature indices by
    |contribution|, ties in feature order: the order `top_reasons` lists, for a whole population at once."""
    return np.argsort(-np.abs(np.atleast_2d(contributions)), axis=1, kind="stable")[:, :top_k]


def feature_reason(
    feature: Feature | None, name: str, value: Any, lang: str = "en", currency: str | None = None
) -> str:
    """The plain-language reason for one feature's value (its name when the registry does not know it): money
    in `currency`, and an action the user last received by its name in `lang`."""
    if feature is None:
        return name
    if name == LAST_ACTION and isinstance(value, str):
        value = action_label(value, lang)
    return feature.reason(value, lang, currency)


def reasons_at(
    order: Sequence[int],
    feature_contributions: np.ndarray,
    names: Sequence[str],
    values: Mapping[str, Any],
    registry: Mapping[str, Feature],
    lang: str = "en",
    currency: str | None = None,
) -> list[dict[str, Any]]:
    """The features at `order` (from `top_order`) with their values and plain-language reasons."""
    top = []
    for j in order:
        name = names[j]
        value = values.get(name)
        top.append(
            {
                "feature": name,
                "value": value,
                "contribution": float(feature_contributions[j]),
                "reason": feature_reason(registry.get(name), name, value, lang, currency),
            }
        )
    return top


def top_reasons(
    feature_contributions: np.ndarray,
    names: Sequence[str],
    values: Mapping[str, Any],
    registry: Mapping[str, Feature],
    top_k: int,
    lang: str = "en",
    currency: str | None = None,
) -> list[dict[str, Any]]:
    """The `top_k` features by |contribution| (ties in feature order) with their values and plain-language
    reasons: what the API's explanation, the reviewer pages and the notebooks show. `feature_contributions`
    holds one entry per feature, without the base value."""
    order = top_order(feature_contributions, top_k)[0]
    return reasons_at(order, feature_contributions, names, values, registry, lang, currency)
