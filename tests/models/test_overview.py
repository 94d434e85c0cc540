"""The population views on hand-made decision tables, and the figures the pages draw from them."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np
import pandas as pd
import pytest

from models import overview as ov
from models import plots

D1, D2 = dt.date(2025, 1, 1), dt.date(2025, 2, 1)


@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["a", "b", "c", "a", "b", "c", "d"],
            "cutoff": [D1, D1, D1, D2, D2, D2, D2],
            "stage": ["new", "growing", "at_risk", "growing", "growing", "dormant", "new"],
            "action": [
                "onboarding_guide",
                "no_action",
                "retention_discount",
                "recommendation",
                "no_action",
                "no_action",
                "onboarding_guide",
            ],
            "expected_value": [1.0, 0.0, 2.5, 0.4, 0.0, 0.0, 0.6],
            "cost": [0.2, 0.0, 6.0, 0.1, 0.0, 0.0, 0.2],
            "delta_stay": [0.01, 0.0, 0.02, 0.03, 0.0, 0.0, 0.02],
            "delta_upgrade": [0.0, 0.0, 0.0, 0.01, 0.0, 0.0, 0.005],
            "value_if_retained": [120.0, 50.0, 425.0, 40.0, 60.0, 0.0, 30.0],
            "upgrade_value": [10.0, 10.0, 0.0, 20.0, 10.0, 0.0, 40.0],
            "p_churn": [0.1, 0.2, 0.9, 0.15, 0.3, 0.99, 0.05],
            "clv": [10.0, 50.0, 5.0, 12.0, 60.0, 0.0, 8.0],
        }
    )


def test_stage_counts_in_lifecycle_order(table) -> None:
    counts = ov.stage_counts(table)
    assert list(counts.columns) == ["new", "growing", "at_risk", "dormant"]
    assert counts.loc[D1].tolist() == [1, 1, 1, 0]
    assert counts.loc[D2].tolist() == [1, 2, 0, 1]


def test_stage_flows_follow_each_user_to_the_next_cutoff(table) -> None:
    flows = ov.stage_flows(table)
    moved = {(r.from_stage, r.to_stage): r.users for r in flows.itertuples()}
    assert moved == {("new", "growing"): 1, ("growing", "growing"): 1, ("at_risk", "dormant"): 1,
                     (ov.NOT_SEEN, "new"): 1}  # fmt: skip
    matrix = ov.flow_matrix(flows, D1, D2)
    assert matrix.loc["at_risk", "dormant"] == 1 and matrix.loc[ov.NOT_SEEN, "new"] == 1
    assert matrix.to_numpy().sum() == 4
    assert list(matrix.index) == ["new", "growing", "at_risk", ov.NOT_SEEN]


def test_action_mix_most_chosen_first_and_no_action_last(table) -> None:
    mix = ov.action_mix(table[table["cutoff"] == D2])
    assert mix["action"].tolist() == ["onboarding_guide", "recommendation", "no_action"]
    assert mix["users"].tolist() == [1, 1, 2]
    assert mix["expected_value"].tolist() == [0.6, 0.4, 0.0]
    assert mix["share"].sum() == pytest.approx(1.0)
    # the terms per action: Σ Δp(stay) × value if retained, Σ Δupgrade × upgrade value, Σ cost
    assert mix["retention_value"].tolist() == pytest.approx([0.02 * 30.0, 0.03 * 40.0, 0.0])
    assert mix["upgrade_gain"].tolist() == pytest.approx([0.005 * 40.0, 0.01 * 20.0, 0.0])
    assert mix["cost"].tolist() == pytest.approx([0.2, 0.1, 0.0])


def test_contacted_by_stage_counts_the_at_risk_and_dormant_users_reached(table) -> None:
    reach = ov.contacted_by_stage(table[table["cutoff"] == D1])
    assert reach.to_dict("records") == [
        {"stage": "at_risk", "users": 1, "contacted": 1},
        {"stage": "dormant", "users": 0, "contacted": 0},
    ]


def test_top_users_leave_lapsed_users_out_of_the_risk_list(table) -> None:
    snapshot = table[table["cutoff"] == D2].reset_index(drop=True)
    top = ov.top_users(snapshot, n=1)
    why = dict(zip(top["user_id"], top["why"], strict=True))
    assert why == {"b": "high risk and high value"}  # c is dormant: gone, not at risk
    top = ov.top_users(snapshot, n=2)
    assert set(top["user_id"]) == {"a", "b"} and "c" not in set(top["user_id"])


def test_top_users_rank_by_value_at_stake_not_churn_alone() -> None:
    snapshot = pd.DataFrame({
        "user_id": ["likely-but-cheap", "valuable-at-some-risk", "safe"], "stage": ["at_risk", "mature", "growing"],
        "p_churn": [0.9, 0.2, 0.01], "value_if_retained": [10.0, 500.0, 20.0],
    })  # fmt: skip
    top = ov.top_users(snapshot, n=2)
    assert top["user_id"].tolist() == ["valuable-at-some-risk", "likely-but-cheap", "safe"]
    assert top["value_at_stake"].tolist() == pytest.approx([100.0, 9.0, 0.2])


def test_the_waterfall_walks_from_the_base_value_to_the_raw_score() -> None:
    contributions = np.array([0.5, -0.2, 0.05, -0.01, 0.3])
    labels = [f"f{i}" for i in range(5)]
    figure = plots.waterfall_figure(-1.0, contributions, labels, top_k=3)
    axes = figure.axes[0]
    bars = axes.patches
    assert len(bars) == 4  # the top 3, then "2 other features"
    ends = [bar.get_x() + bar.get_width() for bar in bars]
    assert ends[-1] == pytest.approx(-1.0 + contributions.sum())
    assert [t.get_text() for t in axes.get_yticklabels()] == ["f0", "f4", "f1", "2 other features"]
    svg = plots.figure_svg(figure)
    assert svg.startswith("<svg") and "2 other features" in svg
    assert not re.search(r"""(?:src|href)=["']https?:""", svg)  # nothing is loaded from elsewhere
    with pytest.raises(ValueError, match="labels"):
        plots.waterfall_figure(0.0, contributions, labels[:2])


def test_mix_and_stage_figures_draw_every_row(table) -> None:
    counts = ov.stage_counts(table)
    figure = plots.stage_share_figure(counts)
    assert len(figure.axes[0].patches) == counts.size
    mix = ov.action_mix(table)
    figure = plots.action_mix_figure(mix)
    assert len(figure.axes[0].patches) == len(mix)
