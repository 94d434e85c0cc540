"""Uplift learners on synthetic campaign logs with known effects: ranking by the true effect, the size of
a harmful and a null effect, priors for thin history, inverse-propensity weighting, and save/load."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from clm.config import load_config
from models.uplift import UpliftModel, UpliftParams, priors_from_catalog
from models.uplift_metrics import qini_coefficient

THREADS = 2
ASSIGNMENT = {"no_action": 0.6, "strong": 0.13, "null": 0.13, "harmful": 0.13, "rare": 0.01}
PRIORS = {
    "strong": {"churn": -0.01, "upgrade": 0.0},
    "null": {"churn": -0.01, "upgrade": 0.0},
    "harmful": {"churn": -0.01, "upgrade": 0.0},
    "rare": {"churn": -0.02, "upgrade": 0.005},
}
PARAMS = UpliftParams()  # trains on one thread (the model's default); THREADS is for batch predictions


@dataclass
class CampaignLog:
    X: pd.DataFrame
    action: np.ndarray
    propensity: np.ndarray
    outcomes: dict[str, np.ndarray]
    true_effect: dict[str, np.ndarray]  # action → per-user change in churn probability

    def rows(self, mask: np.ndarray) -> CampaignLog:
        return CampaignLog(
            self.X[mask].reset_index(drop=True),
            self.action[mask],
            self.propensity[mask],
            {k: v[mask] for k, v in self.outcomes.items()},
            {k: v[mask] for k, v in self.true_effect.items()},
        )


def campaign_log(n: int = 20000, seed: int = 0, assignment: dict[str, float] = ASSIGNMENT) -> CampaignLog:
    """Random assignment (by default control 60 %); churn base rate 0.27–0.82 from x1, x2; "strong" lowers
    churn by 0.25·x0, "null" does nothing, "harmful" adds 0.08, "rare" has too few rows. Upgrade is
    unaffected and unknown for 5 % of rows."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, 4))
    X = pd.DataFrame({f"x{i}": x[:, i] for i in range(4)})
    X["plan"] = pd.Categorical(rng.choice(["free", "basic", "pro"], n), categories=["free", "basic", "pro"])
    names = list(assignment)
    chosen = rng.choice(len(names), size=n, p=list(assignment.values()))
    action = np.array(names, dtype=object)[chosen]
    propensity = np.array(list(assignment.values()))[chosen]
    effect = {
        "strong": -0.25 * x[:, 0],
        "null": np.zeros(n),
        "harmful": np.full(n, 0.08),
        "rare": np.full(n, -0.1),
    }
    p_churn = 1.0 / (1.0 + np.exp(-(1.5 * x[:, 1] - 1.0 * x[:, 2])))
    for name, delta in effect.items():
        p_churn = np.where(action == name, p_churn + delta, p_churn)
    churn = (rng.uniform(size=n) < p_churn).astype(float)
    upgrade = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(2.0 - x[:, 2]))).astype(float)
    upgrade[rng.uniform(size=n) < 0.05] = np.nan
    return CampaignLog(X, action, propensity, {"churn": churn, "upgrade": upgrade}, effect)


def fit(log: CampaignLog, params: UpliftParams = PARAMS, priors=PRIORS) -> UpliftModel:
    return UpliftModel(params, priors).fit(log.X, log.action, log.propensity, log.outcomes)


@pytest.fixture(scope="module")
def split() -> tuple[CampaignLog, CampaignLog]:
    """The training log, and a held-out log from the same world with half the users contacted with
    "strong" — enough treated users for the Qini to separate a good ranking from a random one."""
    held_out = campaign_log(seed=1, assignment={"no_action": 0.5, "strong": 0.5})
    return campaign_log(seed=0), held_out


@pytest.fixture(scope="module", params=["t", "x"])
def fitted(request: pytest.FixtureRequest, split) -> UpliftModel:
    return fit(split[0], replace(PARAMS, learner=request.param))


@pytest.fixture(scope="module")
def held_out_effects(fitted: UpliftModel, split) -> dict[str, pd.DataFrame]:
    """Outcome → predicted effects on the held-out users, one column per action."""
    effects = fitted.predict(split[1].X, num_threads=THREADS)
    return {outcome: pd.DataFrame(values, columns=fitted.actions_) for outcome, values in effects.items()}


def test_strong_action_ranks_users_by_their_true_effect(held_out_effects, split) -> None:
    held_out = split[1]
    predicted = held_out_effects["churn"]["strong"].to_numpy()
    assert spearmanr(predicted, held_out.true_effect["strong"]).statistic > 0.3

    treated = held_out.action == "strong"
    retained = 1.0 - held_out.outcomes["churn"]
    model_qini = qini_coefficient(-predicted, treated, retained)
    random_qini = qini_coefficient(np.random.default_rng(7).uniform(size=treated.size), treated, retained)
    assert model_qini > random_qini


def test_harmful_action_is_seen_to_raise_churn(held_out_effects) -> None:
    assert held_out_effects["churn"]["harmful"].mean() > 0.03  # truth: +0.08


def test_null_action_effect_is_small(held_out_effects, split) -> None:
    null_size = held_out_effects["churn"]["null"].abs().mean()
    assert null_size < np.abs(split[1].true_effect["strong"]).mean()  # 0.125


def test_upgrade_is_estimated_as_unaffected(held_out_effects) -> None:
    assert held_out_effects["upgrade"][["strong", "null", "harmful"]].mean().abs().max() < 0.03


def test_action_with_thin_history_uses_its_prior(fitted: UpliftModel, split) -> None:
    assert fitted.sources_["rare"] == {"churn": "prior", "upgrade": "prior"}
    assert fitted.diagnostics_["rare"]["churn"]["rows"] < PARAMS.min_treated_rows
    assert fitted.diagnostics_["rare"]["churn"]["source"] == "prior"
    assert {fitted.sources_[a]["churn"] for a in ("strong", "null", "harmful")} == {"model"}
    effects = fitted.predict(split[1].X.head(50))
    rare = fitted.actions_.index("rare")
    assert (effects["churn"][:, rare] == PRIORS["rare"]["churn"]).all()
    assert (effects["upgrade"][:, rare] == PRIORS["rare"]["upgrade"]).all()


def test_too_few_positives_fall_back_to_the_prior(split) -> None:
    train = split[0]
    strong = train.action == "strong"
    upgrades = int(np.nansum(train.outcomes["upgrade"][strong]))
    churned = int(np.nansum(train.outcomes["churn"][strong]))
    threshold = upgrades + 1  # above strong's upgrades, below its churners and stayers (checked next)
    assert min(churned, int(strong.sum()) - churned) >= threshold
    model = fit(train, replace(PARAMS, learner="t", min_treated_positives=threshold))
    assert model.sources_["strong"] == {"churn": "model", "upgrade": "prior"}
    assert model.diagnostics_["strong"]["upgrade"]["positives"] == upgrades


def test_a_thin_control_group_sends_every_action_to_its_prior() -> None:
    rng = np.random.default_rng(5)
    n = 1000
    action = np.where(np.arange(n) < 100, "no_action", "strong").astype(object)
    propensity = np.where(action == "no_action", 0.1, 0.9)
    churn = (rng.uniform(size=n) < 0.4).astype(float)
    X = pd.DataFrame({"x0": rng.uniform(size=n)})
    model = UpliftModel(PARAMS, {"strong": {"churn": -0.01}}).fit(X, action, propensity, {"churn": churn})
    assert model.sources_["strong"]["churn"] == "prior"
    assert model.diagnostics_["no_action"]["churn"]["source"] == "rate"
    np.testing.assert_array_equal(model.predict(X.head(3))["churn"], np.full((3, 1), -0.01))
    np.testing.assert_allclose(model.predict_control(X.head(3))["churn"], churn[:100].mean())


def test_diagnostics_count_known_outcomes_and_weights(fitted: UpliftModel, split) -> None:
    train = split[0]
    control = train.action == "no_action"
    known_upgrade = control & ~np.isnan(train.outcomes["upgrade"])
    diagnostics = fitted.diagnostics_["no_action"]
    assert diagnostics["churn"]["rows"] == control.sum()
    assert diagnostics["upgrade"]["rows"] == known_upgrade.sum() < control.sum()
    assert diagnostics["churn"]["positives"] == train.outcomes["churn"][control].sum()
    assert diagnostics["churn"]["mean_inverse_propensity"] == pytest.approx(1 / 0.6)
    assert fitted.diagnostics_["strong"]["churn"]["mean_inverse_propensity"] == pytest.approx(1 / 0.13)


def test_learner_choice_changes_the_estimate(split) -> None:
    small = split[0].rows(np.arange(len(split[0].X)) < 4000)
    t_model = fit(small, replace(PARAMS, learner="t"))
    x_model = fit(small, replace(PARAMS, learner="x"))
    assert {role for _, role, _ in t_model.boosters_} == {"m0", "m1"}
    assert {role for _, role, _ in x_model.boosters_} == {"m0", "tau0", "tau1"}
    assert not np.allclose(t_model.predict(small.X)["churn"], x_model.predict(small.X)["churn"])
    with pytest.raises(ValueError, match="learner"):
        UpliftParams(learner="s")


def test_refits_are_reproducible(split) -> None:
    small = split[0].rows(np.arange(len(split[0].X)) < 3000)
    first, second = fit(small), fit(small)
    np.testing.assert_array_equal(first.predict(small.X)["churn"], second.predict(small.X)["churn"])


def test_save_load_round_trip_predicts_identically(fitted: UpliftModel, split, tmp_path: Path) -> None:
    X = split[1].X.head(3000)
    loaded = UpliftModel.load(fitted.save(tmp_path / "uplift"))
    for predict in ("predict", "predict_control"):
        before = getattr(fitted, predict)(X, num_threads=THREADS)
        after = getattr(loaded, predict)(X, num_threads=THREADS)
        assert before.keys() == after.keys()
        for outcome in before:
            np.testing.assert_array_equal(before[outcome], after[outcome])
    assert loaded.actions_ == fitted.actions_ and loaded.sources_ == fitted.sources_
    assert loaded.diagnostics_ == fitted.diagnostics_


def test_predict_reads_frames_the_way_serving_sends_them(fitted: UpliftModel, split) -> None:
    X = split[1].X.head(200)
    expected = fitted.predict(X)
    as_served = X.assign(plan=X["plan"].astype(object), unrelated=1.0)[["unrelated", *reversed(X.columns)]]
    for outcome, effects in fitted.predict(as_served).items():
        np.testing.assert_array_equal(effects, expected[outcome])
    row = X.iloc[3].to_dict()
    one = fitted.predict_one(row)
    for outcome in fitted.outcomes_:
        np.testing.assert_allclose(one[outcome], expected[outcome][3], rtol=0, atol=1e-12)


def test_encode_row_matches_encode_on_odd_values(fitted: UpliftModel) -> None:
    rows = [
        {"x0": 0.3, "x1": None, "x2": "0.25", "x3": np.nan, "plan": "pro"},
        {"x0": 1, "x1": True, "x2": "abc", "plan": "enterprise"},  # unseen category, no x3
        {"x0": np.float32(0.5), "x1": pd.NA, "x2": 2.0, "x3": 0.1, "plan": None},
    ]
    frame = pd.DataFrame(rows)
    for i, row in enumerate(rows):
        np.testing.assert_array_equal(fitted.encode_row(row)[0], fitted.encode(frame)[i])


def test_load_names_the_missing_or_corrupt_file(fitted: UpliftModel, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"uplift\.json"):
        UpliftModel.load(tmp_path / "nowhere")
    path = fitted.save(tmp_path / "uplift")
    booster_file = sorted(path.glob("*.txt"))[0]
    booster_file.write_text("not a model")
    with pytest.raises(ValueError, match=re.escape(booster_file.name)):
        UpliftModel.load(path)


def confounded_log(n: int = 12000, seed: int = 1) -> tuple[CampaignLog, float]:
    """The logging policy targeted high-risk users: an unobserved risk u raises both churn and the chance
    of a contact. Only the logged propensity carries u; the true effect is −0.1 for everyone."""
    rng = np.random.default_rng(seed)
    u = rng.uniform(size=n)
    X = pd.DataFrame({f"x{i}": rng.uniform(size=n) for i in range(3)})
    p_contact = 0.1 + 0.7 * u
    contacted = rng.uniform(size=n) < p_contact
    action = np.where(contacted, "offer", "no_action").astype(object)
    propensity = np.where(contacted, p_contact, 1.0 - p_contact)
    churn = (rng.uniform(size=n) < 0.2 + 0.5 * u - 0.1 * contacted).astype(float)
    return CampaignLog(X, action, propensity, {"churn": churn}, {"offer": np.full(n, -0.1)}), -0.1


@pytest.mark.parametrize("learner", ["t", "x"])
def test_inverse_propensity_weights_remove_the_targeting_bias(learner: str) -> None:
    log, true_effect = confounded_log()
    params = replace(PARAMS, learner=learner)
    priors = {"offer": {"churn": 0.0}}
    weighted = UpliftModel(params, priors).fit(log.X, log.action, log.propensity, log.outcomes)
    unweighted = UpliftModel(params, priors).fit(log.X, log.action, None, log.outcomes)
    weighted_bias = abs(weighted.predict(log.X, num_threads=THREADS)["churn"].mean() - true_effect)
    unweighted_bias = abs(unweighted.predict(log.X, num_threads=THREADS)["churn"].mean() - true_effect)
    assert unweighted_bias > 0.08  # ≈ 0.5 · (E[u | contacted] − E[u | not]) ≈ 0.12
    assert weighted_bias < 0.04
    assert weighted_bias < unweighted_bias


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"propensity": np.zeros(4)}, "propensity"),
        ({"outcomes": {"churn": np.array([0.0, 1.0, 2.0, 0.0])}}, "churn"),
        ({"outcomes": {"churn": np.zeros(3)}}, "rows"),
        ({"outcomes": {"retained": np.zeros(4)}}, "no prior"),
    ],
)
def test_bad_input_is_refused(change: dict, message: str) -> None:
    args = {
        "X": pd.DataFrame({"x0": [0.1, 0.2, 0.3, 0.4]}),
        "action": ["no_action", "strong", "no_action", "strong"],
        "propensity": np.full(4, 0.5),
        "outcomes": {"churn": np.array([0.0, 1.0, 1.0, 0.0])},
    }
    with pytest.raises(ValueError, match=message):
        UpliftModel(PARAMS, {"strong": {"churn": 0.0}}).fit(**{**args, **change})


def test_params_and_priors_come_from_the_shipped_config() -> None:
    config = load_config()
    params = UpliftParams.from_config(config.policy)
    assert params.learner == config.policy.learner
    assert params.num_boost_round == config.policy.lightgbm["num_boost_round"]
    assert "num_boost_round" not in params.lightgbm and params.lightgbm["objective"] == "binary"
    priors = priors_from_catalog(config.actions)
    assert list(priors) == list(config.actions)
    assert priors["retention_discount"] == {
        "churn": config.actions["retention_discount"].prior_delta_churn,
        "upgrade": config.actions["retention_discount"].prior_delta_upgrade,
    }


def test_baseline_share_spreads_the_shrunk_average_by_each_users_own_baseline() -> None:
    # "relative" multiplies each user's churn probability by 0.6: the true effect is −0.4 × baseline, which
    # the trees see only through noise; with baseline_share 1 the effect is the shrunk average × m0(x) / m̄0
    rng = np.random.default_rng(5)
    n = 20000
    x = rng.uniform(size=(n, 3))
    X = pd.DataFrame({f"x{i}": x[:, i] for i in range(3)})
    base = 1.0 / (1.0 + np.exp(-(3.0 * x[:, 0] - 2.0)))
    treated = rng.uniform(size=n) < 0.3
    churn = (rng.uniform(size=n) < np.where(treated, 0.6 * base, base)).astype(float)
    action = np.where(treated, "relative", "no_action")
    priors = {"relative": {"churn": -0.05}}

    def model(share: float) -> UpliftModel:
        params = replace(PARAMS, baseline_share=share)
        return UpliftModel(params, priors).fit(X, action, np.where(treated, 0.3, 0.7), {"churn": churn})

    proportional, trees = model(1.0), model(0.0)
    effect = proportional.predict(X)["churn"][:, 0]
    m0 = proportional.predict_control(X)["churn"]
    shrink = proportional.shrink_["relative"]["churn"]
    assert effect == pytest.approx(shrink["center"] * m0 / shrink["baseline_mean"])
    assert np.average(m0[treated]) == pytest.approx(shrink["baseline_mean"], rel=1e-6)
    true_effect = -0.4 * base
    by_baseline = spearmanr(effect, true_effect).statistic
    by_trees = spearmanr(trees.predict(X)["churn"][:, 0], true_effect).statistic
    assert by_baseline > 0.95 and by_baseline > by_trees
    # the average effect over the contacted is kept: only how it is spread over users changes
    assert effect[treated].mean() == pytest.approx(shrink["center"], rel=1e-6)
