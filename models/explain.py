"""Explanations for a whole population: one TreeSHAP pass per model (LightGBM pred_contrib) and each user's
top features by |contribution| — the ones the API's one-row explanation lists (`models.scoring.top_reasons`,
whose order `top_order` is). The decision cache (serving/cache.py) and `clm score --explain` both explain
through `population_contributions`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from features.registry import Feature
from models.bundle import ModelBundle
from models.decision import DecisionModels
from models.policy import Decisions
from models.scoring import contributions, feature_reason, top_order


@dataclass(frozen=True)
class Contributions:
    """One model's TreeSHAP over the `rows` of a frame it scored: (len(rows), features + 1) with the base
    value last, and each row's top features (`order`, (len(rows), top_k))."""

    bundle: ModelBundle
    rows: np.ndarray
    values: np.ndarray
    order: np.ndarray

    def position(self) -> dict[int, int]:
        """Frame row → row of `values`."""
        return {int(r): k for k, r in enumerate(self.rows)}


def population_contributions(
    frame: pd.DataFrame, models: DecisionModels, decisions: Decisions, top_k: int, *, num_threads: int = 0
) -> dict[str, Contributions]:
    """Per model the decision shows (its key order is the API's): the reactivation model over the users it
    scored, then the churn and upgrade models over everyone."""
    out: dict[str, Contributions] = {}
    scored_lapsed = np.flatnonzero(decisions.lapsed)
    if len(scored_lapsed) and models.reactivation is not None:
        values = contributions(frame.iloc[scored_lapsed], models.reactivation, num_threads=num_threads)
        out["reactivation"] = Contributions(
            models.reactivation, scored_lapsed, values, top_order(values[:, :-1], top_k)
        )
    everyone = np.arange(len(frame))
    for target in ("churn", "upgrade"):
        bundle = getattr(models, target)
        if bundle is None:
            continue
        values = contributions(frame, bundle, num_threads=num_threads)
        out[target] = Contributions(bundle, everyone, values, top_order(values[:, :-1], top_k))
    return out


def reason_columns(
    frame: pd.DataFrame,
    explained: Mapping[str, Contributions],
    registry: Mapping[str, Feature],
    langs: Sequence[str] = ("en", "zh"),
    currency: str | None = None,
) -> dict[str, list[Any]]:
    """Columns for a batch file: per model, `<target>_top_features` (names, `;`-separated) and
    `<target>_reasons_<lang>` (the plain-language reasons, ` | `-separated); None where the model did not
    score the user, money in `currency`. A reason is formatted once per (feature, value, language)."""
    n = len(frame)
    said: dict[tuple[str, Any, str], str] = {}
    columns: dict[str, list[Any]] = {}
    for target, part in explained.items():
        names = part.bundle.feature_names
        values = {name: frame[name].to_numpy(dtype=object) for name in names if name in frame}
        tops: list[Any] = [None] * n
        reasons = {lang: [None] * n for lang in langs}
        for k, row in enumerate(part.rows.tolist()):
            picked = [names[j] for j in part.order[k].tolist()]
            tops[row] = ";".join(picked)
            for lang in langs:
                texts = []
                for name in picked:
                    value = values[name][row] if name in values else None
                    key = (name, value, lang)
                    text = said.get(key)
                    if text is None:
                        text = said[key] = feature_reason(registry.get(name), name, value, lang, currency)
                    texts.append(text)
                reasons[lang][row] = " | ".join(texts)
        columns[f"{target}_top_features"] = tops
        for lang in langs:
            columns[f"{target}_reasons_{lang}"] = reasons[lang]
    return columns


__all__ = ["Contributions", "population_contributions", "reason_columns"]
