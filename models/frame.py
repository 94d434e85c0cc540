"""The model matrix: registry features in registry order, categoricals with fixed category lists.
Training, batch scoring, serving and the tests all build it here, so a column can never move."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from features.registry import Feature


def category_lists(registry: Sequence[Feature], frame: pd.DataFrame | None = None) -> dict[str, list[str]]:
    """Categories per categorical feature: the registry's list when it has one, else those seen in `frame`."""
    out: dict[str, list[str]] = {}
    for feature in registry:
        if feature.dtype != "category":
            continue
        if feature.categories:
            out[feature.name] = list(feature.categories)
        elif frame is not None and feature.name in frame:
            out[feature.name] = sorted(str(v) for v in frame[feature.name].dropna().unique())
        else:
            out[feature.name] = []
    return out


def model_matrix(
    frame: pd.DataFrame, feature_names: Sequence[str], categories: Mapping[str, Sequence[str]]
) -> pd.DataFrame:
    """Columns in `feature_names` order; numbers as float64; categoricals as pandas categoricals with the
    given categories (an unseen category becomes missing). Missing columns are all-missing."""
    columns: dict[str, pd.Series] = {}
    index = frame.index
    for name in feature_names:
        values = frame[name] if name in frame else pd.Series(np.nan, index=index)
        if name in categories:
            as_text = values.astype("object").where(values.notna(), None)
            columns[name] = pd.Categorical(as_text, categories=list(categories[name]))
        else:
            columns[name] = pd.to_numeric(values, errors="coerce").astype("float64")
    return pd.DataFrame(columns, index=index)


# Features arrive as a DataFrame (batch) or as a mapping of name → equal-length sequence (the request
# path, where building a one-row frame costs more than the decision). These read either.
Columns = pd.DataFrame | Mapping[str, Sequence[Any]]


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def numeric_column(columns: Columns, name: str, n: int, default: float = math.nan) -> np.ndarray:
    """A feature as float64 (unparseable or missing → NaN); `default` everywhere when it is absent."""
    if name not in columns:
        return np.full(n, default, dtype="float64")
    values = columns[name]
    if isinstance(values, pd.Series):
        return pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    out = np.full(n, np.nan)
    for i, value in enumerate(values):
        if not _missing(value):
            with contextlib.suppress(TypeError, ValueError):
                out[i] = float(value)
    return out


def object_column(columns: Columns, name: str, n: int) -> np.ndarray:
    """A feature as an object array with None for missing values (and everywhere when it is absent)."""
    if name not in columns:
        return np.full(n, None, dtype=object)
    return np.array([None if _missing(v) else v for v in columns[name]], dtype=object)


def encode_row(
    values: Mapping[str, Any], feature_names: Sequence[str], categories: Mapping[str, Sequence[Any]]
) -> np.ndarray:
    """One feature vector (name → value) as the 1-row float matrix LightGBM sees for `model_matrix`'s
    frame: numbers as float, categoricals as their index in the category list, anything else missing."""
    row = np.full((1, len(feature_names)), np.nan)
    for j, name in enumerate(feature_names):
        value = values.get(name)
        if _missing(value):
            continue
        if name in categories:
            listed = categories[name]
            if value in listed:
                row[0, j] = list(listed).index(value)
        else:
            with contextlib.suppress(TypeError, ValueError):
                row[0, j] = float(value)
    return row
