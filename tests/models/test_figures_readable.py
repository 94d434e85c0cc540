"""Figures that can be read and do not mislead: every calibration bin shows its users and a bin of too few
users is hollow; the axes of reliability diagrams and score histograms follow the scores' own range; the
gains and lift chart for a page column is drawn at a readable size."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import PathCollection

from models import plots
from models.metrics import expected_calibration_error, reliability_table, score_axis_range


@pytest.fixture
def small_scores() -> tuple[np.ndarray, np.ndarray]:
    """Upgrade-like scores, all below 0.1, and one lone user near 0.45 who upgraded."""
    rng = np.random.default_rng(3)
    p = np.concatenate([rng.uniform(0.0, 0.09, 3000), [0.45]])
    y = np.concatenate([(rng.uniform(size=3000) < p[:3000]).astype(float), [1.0]])
    return y, p


def test_reliability_table_counts_every_user_once_and_marks_small_bins(small_scores) -> None:
    y, p = small_scores
    bins = reliability_table(y, p, n_bins=10, min_users=30)
    assert bins["users"].sum() == p.size and bins["positives"].sum() == y.sum()
    lone = bins.iloc[-1]
    assert lone["users"] == 1 and lone["observed_rate"] == 1.0 and not lone["reliable"]
    assert bins.iloc[0]["reliable"] and bins["bin_high"].iloc[-1] <= 1.0
    # the bins span the scores' own range: 0 to just past 0.45, not 0–1
    assert bins["bin_low"].iloc[0] == pytest.approx(0.0, abs=0.02) and bins["bin_high"].iloc[-1] < 0.5
    expected = [
        ((p >= lo) & (p < hi)).sum() for lo, hi in zip(bins["bin_low"], bins["bin_high"], strict=True)
    ]
    assert list(bins["users"])[:-1] == expected[:-1]  # the last bin also holds its upper edge


def test_calibration_figure_annotates_users_per_bin_and_draws_small_bins_hollow(small_scores) -> None:
    y, p = small_scores
    figure = plots.calibration_figure(y, None, p, title="upgrade")
    curve = figure.axes[0]
    bins = reliability_table(y, p)
    annotations = [text.get_text() for text in curve.texts]
    assert annotations == [f"{n:,}" for n in bins["users"]]
    filled, hollow = [c for c in curve.collections if isinstance(c, PathCollection) and len(c.get_offsets())]
    assert len(filled.get_offsets()) == int(bins["reliable"].sum())
    assert len(hollow.get_offsets()) == int((~bins["reliable"]).sum()) == 1
    assert filled.get_facecolors()[:, 3].min() > 0 and hollow.get_facecolors().size == 0  # no fill: hollow
    assert tuple(hollow.get_offsets()[0]) == pytest.approx((0.45, 1.0))
    legend = [text.get_text() for text in curve.get_legend().get_texts()]
    drawn = (bins["users"] * (bins["observed_rate"] - bins["mean_predicted"]).abs()).sum() / y.size
    assert f"calibrated (ECE {expected_calibration_error(y, p):.3f}; {drawn:.3f} on these bins)" in legend
    assert "bin of < 30 users: unreliable" in legend


def test_axes_follow_the_scores_own_range() -> None:
    rng = np.random.default_rng(0)
    upgrade = rng.uniform(0.001, 0.08, 2000)
    y = (rng.uniform(size=2000) < upgrade).astype(float)
    low, high = score_axis_range(upgrade)
    assert 0.0 <= low < 0.005 and 0.08 < high < 0.09
    figure = plots.calibration_figure(y, None, upgrade)
    assert figure.axes[0].get_xlim() == pytest.approx((low, high))
    assert len(reliability_table(y, upgrade)) == 10  # ten bins with users, not one dot
    histogram = plots.score_distribution_figure({"churn": rng.uniform(0, 1, 500), "upgrade": upgrade})
    churn_axes, upgrade_axes = histogram.axes
    assert upgrade_axes.get_xlim()[1] < 0.1
    bars = [patch for patch in upgrade_axes.patches if patch.get_height() > 0]
    assert len(bars) >= 15  # the scores spread over the bars, not one bar at 0
    assert churn_axes.get_xlim()[1] > 0.95
    assert score_axis_range(np.array([0.3, 0.3])) == pytest.approx((0.29, 0.31))


def test_the_stacked_lift_chart_is_drawn_to_be_read_in_a_page_column() -> None:
    rng = np.random.default_rng(1)
    p = rng.uniform(size=1000)
    y = (rng.uniform(size=1000) < p).astype(float)
    wide = plots.lift_figure(y, {"model": p})
    stacked = plots.lift_figure(y, {"model": p}, stacked=True, font_size=12)
    assert wide.get_size_inches()[0] == 11.0 and stacked.get_size_inches()[0] == 6.0
    gains, lift = stacked.axes
    assert gains.get_position().y0 > lift.get_position().y1  # one above the other
    sizes = [label.get_fontsize() for axes in stacked.axes for label in axes.get_xticklabels()]
    assert min(sizes) >= 10.0  # 12 pt text shrinks less than 6 pt → at least 12 px in a 560 px column
    # at 6 in (576 px at 96 dpi) shown in a ≥ 540 px column, 10 pt (13.3 px) text stays above 12 px
    assert min(sizes) * 96 / 72 * 540 / (6.0 * 96) >= 12.0
