"""A figure drawn in English and relabelled in Chinese (`plots.relabel`): every title, axis label, tick label
set by name, legend entry and annotation of the reviewer pages' figures reads in Chinese; numbers, feature names
and dates stay; an English figure is left as it is."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from models import plots
from models.catalog import ACTION_NAMES_ZH
from models.stages import STAGE_NAMES_ZH

# Latin words a Chinese figure may keep: abbreviations and the currency (feature names, with underscores, and
# registered models' names are not taken for words).
KEPT = {"ECE", "SHAP", "EV", "USD"}


def _texts(figure) -> list[str]:
    svg = plots.figure_svg(figure)
    return [t for t in re.findall(r">([^<]+)</text>", svg) if t.strip()]


def _english(texts: list[str]) -> list[str]:
    words = (w for t in texts for w in re.findall(r"(?<![\w-])[A-Za-z][A-Za-z-]+(?![\w-])", t))
    return [w for w in words if w not in KEPT and not w.startswith("clm-")]  # clm-churn: a model's name


def _figures() -> dict[str, object]:
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 400), rng.random(400)
    counts = pd.DataFrame(
        {"new": [10, 12], "at_risk": [5, 7], "dormant": [3, 2]}, index=["2025-08-01", "2025-09-01"]
    )
    mix = pd.DataFrame(
        {"action": ["retention_discount", "no_action"], "users": [40, 60], "expected_value": [123.0, 0.0]}
    )
    return {
        "stages": plots.stage_share_figure(counts),
        "actions": plots.action_mix_figure(mix, currency="USD"),
        "scores": plots.score_distribution_figure({"churn": p, "upgrade": p / 2}),
        "calibration": plots.calibration_figure(y, None, p, title="Calibration on the 2025-09-01 cutoff (400 users, labels known)"),
        "lift": plots.lift_figure(y, {"churn model": p}),
        "waterfall": plots.waterfall_figure(
            -1.0, np.linspace(-0.3, 0.3, 14), [f"feature_{i} = missing" for i in range(14)],
            title="clm-churn: SHAP waterfall (log-odds)",
        ),
    }  # fmt: skip


@pytest.mark.parametrize("name", ["stages", "actions", "scores", "calibration", "lift", "waterfall"])
def test_a_relabelled_figure_reads_in_chinese(name: str) -> None:
    english = _texts(_figures()[name])
    assert _english(english)  # the English figure has words to translate
    chinese = _texts(plots.relabel(_figures()[name], "zh"))
    assert _english(chinese) == [], chinese
    assert re.search(r"[\u4e00-\u9fff]", " ".join(chinese))


def test_stage_and_action_names_and_money_in_a_chinese_figure() -> None:
    stages = " ".join(_texts(plots.relabel(_figures()["stages"], "zh")))
    assert all(STAGE_NAMES_ZH[s] in stages for s in ("new", "at_risk", "dormant")) and "at_risk" not in stages
    actions = _texts(plots.relabel(_figures()["actions"], "zh"))
    assert ACTION_NAMES_ZH["retention_discount"] in actions and "40 · 期望价值 123 USD" in actions
    waterfall = _texts(plots.relabel(_figures()["waterfall"], "zh"))
    assert "feature_0 = 缺失" in waterfall and "其余 4 个特征" in waterfall


def test_relabelling_in_english_changes_nothing() -> None:
    figure = _figures()["lift"]
    before = _texts(figure)
    assert _texts(plots.relabel(figure, "en")) == before
    assert plots.figure_text("Cumulative gains", "en") == "Cumulative gains"
    assert plots.figure_text("a text nobody translated", "zh") == "a text nobody translated"
