"""The model matrix: registry features in registry order, categoricals with fixed category lists.
Training, batch scoring, serving and the tests all build it here, so a column can never move."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

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
