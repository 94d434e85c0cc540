"""What the reviewer pages keep between requests besides the overview: model sets by exact versions (for
replays) and the SHAP waterfalls already drawn."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any

from features.registry import money_text, number_text
from models import plots
from models.frame import encode_row
from models.scoring import contributions_matrix
from serving.state import ModelSet, RegistryLoader

WATERFALL_TOP_K = 10


class ReplayModels:
    """Model sets by exact versions, for replays (a few kept; the serving set is reused when it matches)."""

    def __init__(self, loader: RegistryLoader, size: int = 3) -> None:
        self.loader = loader
        self.size = size
        self._sets: OrderedDict[tuple, ModelSet] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, labels: dict[str, str], serving: ModelSet | None) -> ModelSet:
        versions = {}
        for role in ("churn_model", "upgrade_model", "reactivation_model", "policy"):
            if labels.get(role) is None:  # an older decision, or a set without a reactivation model
                continue
            name, _, version = str(labels[role]).rpartition("/")
            versions[name] = version
        if serving is not None and serving.versions == versions:
            return serving
        key = tuple(sorted(versions.items()))
        with self._lock:
            if key not in self._sets:
                self._sets[key] = self.loader.load_versions(versions, alias="replay")
                while len(self._sets) > self.size:
                    self._sets.popitem(last=False)
            self._sets.move_to_end(key)
            return self._sets[key]


class WaterfallCache:
    """The SHAP waterfalls already drawn, by (model version, target, encoded row): drawing one costs about
    0.3 s of matplotlib layout, and a reviewer comes back to the same user, or opens the replay of a
    decision whose inputs are the user's current row. Least recently used first out."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._svgs: OrderedDict[tuple[str, str, bytes], str] = OrderedDict()
        self._lock = threading.Lock()

    def svg(self, models: ModelSet, target: str, values: dict[str, Any], lang: str = "en") -> str:
        """The SHAP waterfall of one model for one feature vector (all features; the top 10 drawn), its words
        in `lang`."""
        bundle = getattr(models, target)
        matrix = encode_row(values, bundle.feature_names, bundle.categories)
        currency = models.policy.value.currency
        money = money_features(models)
        labels = [f"{name} = {fmt_value(values.get(name), lang, currency if name in money else None)}"
                  for name in bundle.feature_names]  # fmt: skip
        key = (
            f"{bundle.name}/{models.versions[bundle.name]}/{lang}",
            target,
            matrix.tobytes() + "|".join(labels).encode(),
        )
        with self._lock:
            if key in self._svgs:
                self._svgs.move_to_end(key)
                return self._svgs[key]
        contrib = contributions_matrix(matrix, bundle)[0]
        title = f"{bundle.name}: SHAP waterfall (log-odds)"
        figure = plots.waterfall_figure(contrib[-1], contrib[:-1], labels, top_k=WATERFALL_TOP_K, title=title)
        markup = plots.figure_svg(plots.relabel(figure, lang), f"waterfall-{target}")
        with self._lock:
            self._svgs[key] = markup
            while len(self._svgs) > self.size:
                self._svgs.popitem(last=False)
        return markup


def money_features(models: ModelSet) -> frozenset[str]:
    """The features whose values are amounts of money (shown in the policy's currency)."""
    return frozenset(name for name, feature in models.registry.items() if feature.unit == "currency")


def fmt_value(value: Any, lang: str = "en", currency: str | None = None) -> str:
    """A feature's value as the pages show it: "missing" (缺失) when there is none; an amount of money with
    its two decimals and `currency` (`money_text`); other numbers without trailing zeros."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "缺失" if lang == "zh" else "missing"
    if currency is not None and isinstance(value, int | float):
        return money_text(value, currency)
    if isinstance(value, float):
        return number_text(value).rstrip("0").rstrip(".") if abs(value) < 1e6 else number_text(value, 0)
    return str(value)
