"""Qini, AUUC and uplift by decile on hand-computed examples, and their ordering on a known effect."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models.uplift_metrics import auuc, qini_coefficient, qini_curve, uplift_by_decile, uplift_curve

# Six users; 0.8 is a tie, so the curves have points at k = 1, 3, 4, 5, 6 of N = 6 (worked out in the tests).
SCORE = [0.9, 0.8, 0.8, 0.5, 0.3, 0.1]
TREATED = [1, 1, 0, 0, 1, 0]
OUTCOME = [1, 0, 0, 1, 1, 0]


def test_qini_curve_by_hand() -> None:
    # k=1: 1 − 0 = 1; k=3: n_t1=1, n_c1=0 → 1; k=4: 1 − 1·2/2 = 0; k=5: 2 − 1·3/2 = 0.5; k=6: 2 − 1·3/3 = 1
    x, y = qini_curve(SCORE, TREATED, OUTCOME)
    np.testing.assert_allclose(x, [0, 1 / 6, 3 / 6, 4 / 6, 5 / 6, 1])
    np.testing.assert_allclose(y, [0, 1 / 6, 1 / 6, 0, 1 / 12, 1 / 6])


def test_qini_coefficient_by_hand() -> None:
    # area under the curve 1/9; random line to (1, 1/6): 1/12; the perfect ranking (treated-with-outcome
    # first, control-with-outcome last) has points (2/6, 1/3), (5/6, 1/3), (1, 1/6) and area 19/72:
    # (1/9 − 1/12) / (19/72 − 1/12) = 2/13
    assert qini_coefficient(SCORE, TREATED, OUTCOME) == pytest.approx(2 / 13)


def test_perfect_and_reversed_ranking_by_hand() -> None:
    score, treated, outcome = [4, 3, 2, 1], [1, 0, 1, 0], [1, 0, 0, 1]
    x, y = qini_curve(score, treated, outcome)
    np.testing.assert_allclose(x, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(y, [0, 0.25, 0.25, 0.25, 0])
    assert qini_coefficient(score, treated, outcome) == pytest.approx(1.0)
    # reversed: k=2: 0 − 1·1/1 = −1; k=3: 0 − 1·1/2 = −0.5 → y = [0, 0, −.25, −.125, 0], area −3/32
    _, y_rev = qini_curve([-s for s in score], treated, outcome)
    np.testing.assert_allclose(y_rev, [0, 0, -0.25, -0.125, 0])
    assert qini_coefficient([-s for s in score], treated, outcome) == pytest.approx(-0.5)
    # uplift curve: (1−0)·¼, (1−0)·½, (½−0)·¾, (½−½)·1 → area 9/32; reversed is its mirror
    assert auuc(score, treated, outcome) == pytest.approx(9 / 32)
    assert auuc([-s for s in score], treated, outcome) == pytest.approx(-9 / 32)


def test_uplift_curve_and_auuc_by_hand() -> None:
    # rate_t − rate_c at k = 1, 3, 4, 5, 6: 1 − 0, ½ − 0, ½ − ½, ⅔ − ½, ⅔ − ⅓; times x
    x, u = uplift_curve(SCORE, TREATED, OUTCOME)
    np.testing.assert_allclose(x, [0, 1 / 6, 1 / 2, 2 / 3, 5 / 6, 1])
    np.testing.assert_allclose(u, [0, 1 / 6, 1 / 4, 0, 5 / 36, 1 / 3])
    assert auuc(SCORE, TREATED, OUTCOME) == pytest.approx(67 / 432)


def test_tied_scores_do_not_depend_on_row_order() -> None:
    order = [0, 2, 1, 3, 4, 5]  # swap the two users tied at 0.8
    permuted = [np.asarray(v)[order] for v in (SCORE, TREATED, OUTCOME)]
    np.testing.assert_allclose(qini_curve(*permuted)[1], qini_curve(SCORE, TREATED, OUTCOME)[1])
    assert auuc(*permuted) == pytest.approx(auuc(SCORE, TREATED, OUTCOME))


def test_a_constant_score_is_exactly_random() -> None:
    x, y = qini_curve(np.zeros(6), TREATED, OUTCOME)
    np.testing.assert_allclose(x, [0, 1])
    np.testing.assert_allclose(y, [0, 1 / 6])
    assert qini_coefficient(np.zeros(6), TREATED, OUTCOME) == pytest.approx(0.0)


def test_unit_weights_equal_unweighted_and_integer_weights_equal_repeated_rows() -> None:
    ones = np.ones(len(SCORE))
    for metric in (qini_coefficient, auuc):
        assert metric(SCORE, TREATED, OUTCOME, ones) == metric(SCORE, TREATED, OUTCOME)
    np.testing.assert_array_equal(
        qini_curve(SCORE, TREATED, OUTCOME, ones)[1], qini_curve(SCORE, TREATED, OUTCOME)[1]
    )

    weights = np.array([2, 1, 3, 1, 2, 1])
    repeated = [np.repeat(v, weights) for v in (SCORE, TREATED, OUTCOME)]
    np.testing.assert_allclose(qini_curve(SCORE, TREATED, OUTCOME, weights)[1], qini_curve(*repeated)[1])
    assert qini_coefficient(SCORE, TREATED, OUTCOME, weights) == pytest.approx(qini_coefficient(*repeated))
    assert auuc(SCORE, TREATED, OUTCOME, weights) == pytest.approx(auuc(*repeated))


def test_perfect_ranking_beats_random_beats_reversed() -> None:
    rng = np.random.default_rng(3)
    n = 20000
    true_benefit = rng.uniform(-0.1, 0.3, n)
    treated = rng.uniform(size=n) < 0.5
    outcome = (rng.uniform(size=n) < 0.3 + treated * true_benefit).astype(float)
    random_score = rng.uniform(size=n)
    for metric in (qini_coefficient, auuc):
        perfect = metric(true_benefit, treated, outcome)
        random = metric(random_score, treated, outcome)
        reversed_ = metric(-true_benefit, treated, outcome)
        assert perfect > random > reversed_, metric.__name__


def test_uplift_by_decile() -> None:
    # 20 users, scores 20..1: decile 1 holds the two highest; even positions treated
    score = np.arange(20, 0, -1)
    treated = np.tile([1, 0], 10)
    outcome = np.r_[[1, 0] * 5, [0, 0] * 5]  # the top half: treated succeed, control fail
    table = uplift_by_decile(score, treated, outcome)
    assert list(table.columns) == [
        "decile",
        "n_treated",
        "n_control",
        "rate_treated",
        "rate_control",
        "uplift",
    ]
    assert table["decile"].tolist() == list(range(1, 11))
    assert (table["n_treated"] == 1).all() and (table["n_control"] == 1).all()
    np.testing.assert_allclose(table["uplift"], [1.0] * 5 + [0.0] * 5)
    # shuffled input gives the same table: deciles follow the score, not the row order
    order = np.random.default_rng(0).permutation(20)
    pd.testing.assert_frame_equal(uplift_by_decile(score[order], treated[order], outcome[order]), table)


def test_uplift_by_decile_marks_a_missing_group_as_nan() -> None:
    table = uplift_by_decile([3, 2, 1], [1, 1, 0], [1, 0, 0])
    assert len(table) == 3
    assert np.isnan(table.loc[0, "rate_control"]) and np.isnan(table.loc[0, "uplift"])
    assert table.loc[2, "n_control"] == 1 and table.loc[2, "rate_control"] == 0.0


@pytest.mark.parametrize(
    ("score", "treated", "outcome", "message"),
    [
        ([1, 2], [1], [0, 1], "lengths"),
        ([1, 2], [1, 2], [0, 1], "treated"),
        ([1, 2], [1, 0], [0, 0.5], "outcome"),
        ([1, np.nan], [1, 0], [0, 1], "missing"),
    ],
)
def test_bad_input_is_refused(score, treated, outcome, message) -> None:
    with pytest.raises(ValueError, match=message):
        qini_coefficient(score, treated, outcome)
