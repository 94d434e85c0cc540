"""`clm evaluate-policy`: what the policy is worth. On simulated data every policy's true incremental value
per 1,000 users is computed from the simulator's true effects (ours, no action, a random eligible action,
the stage playbook, "contact the top-risk decile with retention_discount", and the oracle that knows the
true effects); the offline IPS/DR estimates from the logged campaign are compared with the truth on the
same users. Also: stage agreement with the latent stages, CLV against realised revenue per decile, and a
budgeted campaign against the unconstrained one. Everything is logged to one MLflow run.

The steps are pure functions over frames and `Decisions` (`policy_values`, `oracle_diagnostics`,
`budget_comparison`, `offline_on_logged`, `stage_check`, `clv_deciles`); `evaluate_policy` is the thin job
that reads the data, the truth and the registry, runs them and logs. The simulator's latent-stage map is
passed in by the caller: nothing here imports `simulation`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.datadir import resolve_data_dir
from features.jobs import connect, latest_features, load_inputs
from features.registry import FeatureParams
from models.arbitration import CONTACT_CAP, COOLDOWN, INELIGIBLE_STAGE, SUPPRESSED, expected_values
from models.catalog import NO_ACTION, contact_params
from models.config import ModelsConfig
from models.decision import DecisionModels, load_decision_models, plan_budget, probabilities
from models.policy import Decisions, PolicyBundle
from models.stages import STAGES, stage_agreement
from models.value import ValueParams, monthly_churn, monthly_margin, survival_annuity
from training import tracking
from training.policy import offline_value, policy_frame
from training.truth import (
    effect_matrices,
    margin_matrix,
    read_effects,
    read_latent_product_stages,
    read_margins,
)

log = logging.getLogger(__name__)
Progress = Callable[[str], None]
POLICIES = ("clm", "no_action", "random", "stage_playbook", "top_risk_discount", "oracle")
TOP_RISK_ACTION = "retention_discount"
POLICY_LABELS = {
    "clm": "clm policy (uplift × value − cost)",
    "no_action": "contact nobody",
    "random": "a random eligible action",
    "stage_playbook": "stage playbook (first catalog action per stage)",
    "top_risk_discount": "top-risk decile → retention discount",
    "oracle": "oracle (knows the true effects)",
}


@dataclass
class PolicyEvaluation:
    as_of: dt.date
    policy_version: str
    scoring_models: dict[str, str]
    in_sample: bool
    n_users: int
    value_per_1000: dict[str, float | None]
    contacts_per_1000: dict[str, float | None]
    cost_per_1000: dict[str, float | None]
    offline: dict[str, float | None]
    stage_agreement: dict[str, Any] | None
    clv_check: pd.DataFrame | None
    budget: dict[str, float]
    extra: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    margin: MarginValues | None = None  # every policy valued by the simulator's true margin (primary)

    def goals(self) -> dict[str, float | None]:
        v = self.value_per_1000
        if v.get("oracle") in (None, 0) or v.get("clm") is None:
            return {"share_of_oracle": None, "times_top_risk_discount": None}
        top = v.get("top_risk_discount")
        return {
            "share_of_oracle": v["clm"] / v["oracle"] if v["oracle"] else None,
            "times_top_risk_discount": v["clm"] / top if top and top > 0 else None,
        }

    def as_json(self) -> dict[str, Any]:
        return {
            "as_of": str(self.as_of),
            "policy": self.policy_version,
            "scoring_models": self.scoring_models,
            "in_sample": self.in_sample,
            "users": self.n_users,
            "value_per_1000": self.value_per_1000,
            "contacts_per_1000": self.contacts_per_1000,
            "cost_per_1000": self.cost_per_1000,
            "offline_estimates": self.offline,
            "goals": self.goals(),
            "stage_macro_f1": None if self.stage_agreement is None else self.stage_agreement["macro_f1"],
            "budget": self.budget,
            "diagnostics": self.extra,
            "true_margin": None if self.margin is None else self.margin.as_json(),
            **({"mlflow_run_id": self.run_id} if self.run_id else {}),
        }


def true_values(effects: pd.DataFrame, users: pd.Series, decisions) -> np.ndarray:
    """(n, A) true incremental value of each action for each user: the arbitration's formula with the
    simulator's true effects in place of the estimates, every policy valued with the same CLV (0 where the
    truth does not know the user)."""
    policy = decisions.policy
    d_churn, d_upgrade = effect_matrices(effects, users, policy.actions)
    value = expected_values(
        d_churn,
        d_upgrade,
        decisions.values["clv"],
        decisions.values["upgrade_value"],
        [a.cost for a in policy.catalog],
    )
    return np.where(np.isfinite(value), value, 0.0)


def baseline_choices(
    stage: np.ndarray,
    status: np.ndarray,
    p_churn: np.ndarray,
    actions: tuple[str, ...],
    catalog,
    top_share: float,
) -> dict[str, np.ndarray]:
    """Chosen action index (−1 = none) per user for the deterministic baselines."""
    n = status.shape[0]
    contactable = ~np.isin(status, [INELIGIBLE_STAGE, COOLDOWN, CONTACT_CAP, SUPPRESSED])
    playbook = np.full(n, -1)
    for s in STAGES:
        first = next((i for i, a in enumerate(catalog) if s in a.stages), None)
        if first is None:
            continue
        members = (stage == s) & contactable[:, first]
        playbook[members] = first
    top = np.full(n, -1)
    if TOP_RISK_ACTION in actions:
        candidates = np.flatnonzero(stage != "dormant")
        k = round(top_share * n)
        order = candidates[np.argsort(-p_churn[candidates], kind="stable")][:k]
        top[order] = actions.index(TOP_RISK_ACTION)
    return {"stage_playbook": playbook, "top_risk_discount": top}


def value_of(choice: np.ndarray, true_value: np.ndarray) -> np.ndarray:
    rows = np.arange(len(choice))
    return np.where(choice >= 0, true_value[rows, np.clip(choice, 0, None)], 0.0)


# --------------------------------------------------------------------------------------------------------
# Pure steps: frames and decisions in, numbers out


def contactable_actions(decisions: Decisions) -> np.ndarray:
    """(n, A): the actions a user could be contacted with at all (stage eligible, no cooldown, cap or suppression)."""
    return ~np.isin(decisions.arbitration.status, [INELIGIBLE_STAGE, COOLDOWN, CONTACT_CAP, SUPPRESSED])


@dataclass
class PolicyValues:
    """True value, contacts and cost per 1,000 users of every policy compared, and diagnostics."""

    value_per_1000: dict[str, float | None]
    contacts_per_1000: dict[str, float | None]
    cost_per_1000: dict[str, float | None]
    extra: dict[str, float]


def no_policy_values() -> PolicyValues:
    """What is known without the simulator's truth: nothing."""
    return PolicyValues(dict.fromkeys(POLICIES), dict.fromkeys(POLICIES), dict.fromkeys(POLICIES), {})


def policy_values(
    decisions: Decisions, user_ids: pd.Series, effects: pd.DataFrame, top_risk_share: float
) -> tuple[PolicyValues, np.ndarray, np.ndarray]:
    """Every compared policy valued with the simulator's true effects, on the users the truth knows: the
    values, the (n, A) true value matrix and the mask of known users."""
    policy, arb = decisions.policy, decisions.arbitration
    costs = np.array([a.cost for a in policy.catalog])
    n_users = len(decisions)
    out = no_policy_values()
    known = user_ids.isin(set(effects["user_id"])).to_numpy()
    out.extra["users_without_truth"] = float((~known).sum())
    true_value = true_values(effects, user_ids, decisions)
    contactable = contactable_actions(decisions)
    choices = {"clm": arb.greedy, "no_action": np.full(n_users, -1)}
    choices.update(
        baseline_choices(decisions.stages.stage, arb.status, decisions.churn_probability, policy.actions,
                         policy.catalog, top_risk_share)
    )  # fmt: skip
    oracle_values = np.where(contactable, true_value, -np.inf)
    best = oracle_values.argmax(axis=1)
    choices["oracle"] = np.where(oracle_values[np.arange(n_users), best] > 0, best, -1)
    for name, choice in choices.items():
        out.value_per_1000[name] = 1000.0 * float(value_of(choice, true_value)[known].mean())
        out.contacts_per_1000[name] = 1000.0 * float((choice[known] >= 0).mean())
        out.cost_per_1000[name] = 1000.0 * float(
            np.where(choice >= 0, costs[np.clip(choice, 0, None)], 0.0)[known].mean()
        )
    # random: every contactable action equally likely, its expectation computed exactly
    k = contactable.sum(axis=1)
    mean_value = np.where(k > 0, np.where(contactable, true_value, 0.0).sum(axis=1) / np.maximum(k, 1), 0.0)
    mean_cost = np.where(k > 0, (contactable * costs[None, :]).sum(axis=1) / np.maximum(k, 1), 0.0)
    out.value_per_1000["random"] = 1000.0 * float(mean_value[known].mean())
    out.contacts_per_1000["random"] = 1000.0 * float((k[known] > 0).mean())
    out.cost_per_1000["random"] = 1000.0 * float(mean_cost[known].mean())
    return out, true_value, known


def oracle_diagnostics(
    frame: pd.DataFrame, decisions: Decisions, true_value: np.ndarray, known: np.ndarray
) -> dict[str, float]:
    """Per 1,000 known users: the value reachable from these features when the effects are known (the
    feature oracle), the oracle that ignores stage eligibility, and what the policy predicted for itself."""
    arb = decisions.arbitration
    n_users = len(decisions)
    allowed = contactable_actions(decisions) & known[:, None]
    reachable = value_of(feature_oracle_choice(frame, decisions.policy, true_value, allowed), true_value)
    unconstrained_best = np.where(true_value.max(axis=1) > 0, true_value.max(axis=1), 0.0)
    predicted = np.where(arb.greedy >= 0, arb.value[np.arange(n_users), np.clip(arb.greedy, 0, None)], 0.0)
    return {
        "feature_oracle": 1000.0 * float(reachable[known].mean()),
        "oracle_any_stage": 1000.0 * float(unconstrained_best[known].mean()),
        "clm_predicted": 1000.0 * float(predicted[known].mean()),
    }


def feature_oracle_choice(
    frame: pd.DataFrame, policy: PolicyBundle, true_value: np.ndarray, allowed: np.ndarray, seed: int = 0
) -> np.ndarray:
    """A diagnostic, not a policy: per action, LightGBM regresses the *true* incremental value on the
    features (2-fold cross-fitting, so no user is scored by a model that saw its own truth), and each user
    gets the best predicted allowed action. It is the value reachable from these features when the
    effects are known exactly — the part of the oracle's value that hidden traits do not put out of reach."""
    import lightgbm as lgb

    from models.frame import model_matrix

    matrix = model_matrix(frame, policy.feature_names, policy.uplift.categories_)
    fold = np.random.default_rng(seed).integers(0, 2, len(frame))
    predicted = np.full(true_value.shape, -np.inf)
    params = {"objective": "regression", "num_leaves": 15, "learning_rate": 0.05, "min_data_in_leaf": 50,
              "verbosity": -1, "num_threads": 1, "seed": seed}  # fmt: skip
    for a in range(true_value.shape[1]):
        for f in (0, 1):
            train = (fold != f) & allowed[:, a]
            score = (fold == f) & allowed[:, a]
            if train.sum() < 100 or not score.any():
                continue
            booster = lgb.train(params, lgb.Dataset(matrix[train], true_value[train, a]), num_boost_round=200)
            predicted[score, a] = booster.predict(matrix[score])
    best = predicted.argmax(axis=1)
    return np.where(predicted[np.arange(len(best)), best] > 0, best, -1)


# --------------------------------------------------------------------------------------------------------
# Valued by the simulator's true margin: the truth does not depend on our value model

MARGIN_POLICIES = (*POLICIES, "restricted_oracle")
MARGIN_LABELS = {
    **POLICY_LABELS,
    "oracle": "oracle (argmax of the true incremental margin − cost)",
    "restricted_oracle": "oracle restricted to the features (cross-fitted on the true margins)",
}
CONTACT_STAGES = ("at_risk", "dormant")


@dataclass
class MarginValues:
    """Every policy valued by the simulator's true incremental margin over its value horizon minus the
    contact cost, per user, on the users the truth knows: mean, standard error over users, the standard
    error of clm minus the policy on the same users, contacts and cost; and how well clm's contacts among
    at_risk and dormant users match the oracle's."""

    n_users: int
    mean: dict[str, float]
    se: dict[str, float]
    difference_se: dict[str, float]
    contacts_per_1000: dict[str, float]
    cost_per_user: dict[str, float]
    contact_quality: dict[str, float | None]
    # where clm's value falls short of the restricted oracle's, per stage and kind of difference (value_lost)
    lost: pd.DataFrame | None = None

    def ratio(self, reference: str) -> float | None:
        """clm's value ÷ the reference policy's (None when the reference is worth nothing)."""
        base = self.mean.get(reference)
        return self.mean["clm"] / base if base and base > 0 else None

    def as_json(self) -> dict[str, Any]:
        return {
            "users": self.n_users,
            "mean_per_user": self.mean,
            "se_per_user": self.se,
            "clm_minus_policy_se": self.difference_se,
            "contacts_per_1000": self.contacts_per_1000,
            "cost_per_user": self.cost_per_user,
            "clm_over_oracle": self.ratio("oracle"),
            "clm_over_restricted_oracle": self.ratio("restricted_oracle"),
            "contact_quality": self.contact_quality,
            "value_lost": None if self.lost is None else self.lost.to_dict(orient="records"),
        }


LOSS_KINDS = ("missed", "wasted", "other_action")


def value_lost(
    chosen: np.ndarray, reference: np.ndarray, value: np.ndarray, stage: np.ndarray, known: np.ndarray,
    actions: tuple[str, ...],
) -> pd.DataFrame:  # fmt: skip
    """Where a policy's value falls short of a reference policy's (both valued by `value`, (n, A)), on the
    `known` users, per stage and kind: `missed` (the reference contacts, the policy does not), `wasted` (the
    policy contacts, the reference does not), `other_action` (both contact, with different actions). One row
    per (stage, kind, the policy's action, the reference's action) with users and the value lost per 1,000
    known users (reference − policy; negative where the policy does better), largest loss first; the rows add
    up to the reference's value minus the policy's."""
    value = np.where(np.isfinite(value), value, 0.0)
    ours, theirs = value_of(chosen, value), value_of(reference, value)
    differs = known & (chosen != reference)
    kind = np.where(reference < 0, "wasted", np.where(chosen < 0, "missed", "other_action"))
    names = np.array([*actions, NO_ACTION], dtype=object)  # index −1 → no_action
    frame = pd.DataFrame(
        {"stage": stage[differs], "kind": kind[differs], "action": names[chosen[differs]],
         "reference_action": names[reference[differs]], "lost": (theirs - ours)[differs]}
    )  # fmt: skip
    scale = 1000.0 / max(int(known.sum()), 1)
    out = frame.groupby(["stage", "kind", "action", "reference_action"], observed=True).agg(
        users=("lost", "size"), lost_per_1000=("lost", "sum")
    )
    out["lost_per_1000"] *= scale
    return out.reset_index().sort_values("lost_per_1000", ascending=False, ignore_index=True)


def allowed_actions(contactable: np.ndarray, choices: Mapping[str, np.ndarray]) -> np.ndarray:
    """(n, A): what the oracles may choose from — every contactable action, plus any action a compared
    policy sends that user (the top-risk rule ignores stages), so that the oracle dominates every policy."""
    allowed = contactable.copy()
    rows = np.arange(len(allowed))
    for choice in choices.values():
        sent = choice >= 0
        allowed[rows[sent], choice[sent]] = True
    return allowed


def best_choice(score: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Per user the allowed action with the highest score when it is positive, else −1 (no contact)."""
    masked = np.where(allowed, score, -np.inf)
    best = masked.argmax(axis=1)
    return np.where(masked[np.arange(len(best)), best] > 0, best, -1)


def restricted_oracle_scores(
    matrix: np.ndarray, value: np.ndarray, allowed: np.ndarray, *, folds: int = 5, seed: int = 0,
    min_rows: int = 200,
) -> np.ndarray:  # fmt: skip
    """(n, A) cross-fitted predictions of the true value (incremental margin − cost) from the features: per
    action, LightGBM fitted on the other folds' users for whom the action is allowed, so that no user is
    scored by a model that saw its own truth. With fewer than `min_rows` training users an action is
    predicted by their mean. Its argmax is the best a model of these features could do knowing the truth."""
    import lightgbm as lgb

    fold = np.random.default_rng(seed).integers(0, folds, len(matrix))
    predicted = np.full(value.shape, -np.inf)
    params = {"objective": "regression", "num_leaves": 15, "learning_rate": 0.05, "min_data_in_leaf": 50,
              "verbosity": -1, "num_threads": 1, "seed": seed}  # fmt: skip
    for a in range(value.shape[1]):
        for f in range(folds):
            train = (fold != f) & allowed[:, a] & np.isfinite(value[:, a])
            score = (fold == f) & allowed[:, a]
            if not score.any() or not train.any():
                continue
            if train.sum() < min_rows:
                predicted[score, a] = value[train, a].mean()
                continue
            booster = lgb.train(params, lgb.Dataset(matrix[train], value[train, a]), num_boost_round=200)
            predicted[score, a] = booster.predict(matrix[score])
    return predicted


def contact_precision_recall(
    chosen: np.ndarray, reference: np.ndarray, members: np.ndarray
) -> dict[str, float | None]:
    """Among `members`, precision and recall of "contact" (choice ≥ 0) against the reference's contacts:
    of the users the policy contacts, the share the reference contacts too, and of the users the reference
    contacts, the share the policy contacts. None when there is nothing to divide by."""
    ours, theirs = (chosen >= 0) & members, (reference >= 0) & members
    both = int((ours & theirs).sum())
    return {
        "users": float(members.sum()),
        "contacted": float(ours.sum()),
        "oracle_contacted": float(theirs.sum()),
        "both": float(both),
        "precision": both / int(ours.sum()) if ours.any() else None,
        "recall": both / int(theirs.sum()) if theirs.any() else None,
    }


def margin_policy_values(
    choices: Mapping[str, np.ndarray], value: np.ndarray, costs: np.ndarray, contactable: np.ndarray,
    known: np.ndarray, stage: np.ndarray,
) -> MarginValues:  # fmt: skip
    """Each policy's per-user true value on the `known` users. `choices` holds a chosen action index (−1
    none) per user for every deterministic policy, `oracle` included; "random" is the exact expectation
    of a uniformly drawn contactable action (nobody contacted without one)."""
    value = np.where(np.isfinite(value), value, 0.0)
    per_user, contacts, cost = {}, {}, {}
    for name, choice in choices.items():
        per_user[name] = value_of(choice, value)
        contacts[name] = (choice >= 0).astype(float)
        cost[name] = np.where(choice >= 0, costs[np.clip(choice, 0, None)], 0.0)
    k = contactable.sum(axis=1)
    per_user["random"] = np.where(contactable, value, 0.0).sum(axis=1) / np.maximum(k, 1)
    contacts["random"] = (k > 0).astype(float)
    cost["random"] = (contactable * costs[None, :]).sum(axis=1) / np.maximum(k, 1)
    n = int(known.sum())
    root_n = math.sqrt(max(n, 1))
    ordered = [name for name in MARGIN_POLICIES if name in per_user]
    members = np.isin(stage, CONTACT_STAGES) & known
    quality = {
        f"vs_oracle.{key}": v
        for key, v in contact_precision_recall(choices["clm"], choices["oracle"], members).items()
    }
    if "restricted_oracle" in choices:
        quality.update(
            {f"vs_restricted_oracle.{key}": v for key, v in
             contact_precision_recall(choices["clm"], choices["restricted_oracle"], members).items()}
        )  # fmt: skip
    return MarginValues(
        n_users=n,
        mean={name: float(per_user[name][known].mean()) for name in ordered},
        se={name: float(per_user[name][known].std(ddof=1) / root_n) for name in ordered},
        difference_se={
            name: float((per_user["clm"] - per_user[name])[known].std(ddof=1) / root_n) for name in ordered
        },
        contacts_per_1000={name: 1000.0 * float(contacts[name][known].mean()) for name in ordered},
        cost_per_user={name: float(cost[name][known].mean()) for name in ordered},
        contact_quality=quality,
    )


def evaluate_by_margin(
    frame: pd.DataFrame, decisions: Decisions, incremental: np.ndarray, top_risk_share: float, *, folds: int = 5,
    seed: int = 0,
) -> tuple[MarginValues, np.ndarray]:  # fmt: skip
    """Every compared policy valued by the true incremental margin (n, A, NaN for users the truth does not
    know) minus the contact cost: clm's greedy choice, the baselines, the oracle and the oracle restricted
    to what the features see. Returns the values and the (n, A) true value matrix."""
    from models.frame import model_matrix

    policy, arb = decisions.policy, decisions.arbitration
    costs = np.array([a.cost for a in policy.catalog])
    known = np.isfinite(incremental).all(axis=1)
    value = incremental - costs[None, :]
    contactable = contactable_actions(decisions)
    choices: dict[str, np.ndarray] = {"clm": arb.greedy, "no_action": np.full(len(decisions), -1)}
    choices.update(
        baseline_choices(decisions.stages.stage, arb.status, decisions.churn_probability, policy.actions,
                         policy.catalog, top_risk_share)
    )  # fmt: skip
    allowed = allowed_actions(contactable, choices) & known[:, None]
    choices["oracle"] = best_choice(np.where(np.isfinite(value), value, -np.inf), allowed)
    matrix = model_matrix(frame, policy.feature_names, policy.uplift.categories_)
    scores = restricted_oracle_scores(matrix, value, allowed, folds=folds, seed=seed)
    choices["restricted_oracle"] = best_choice(scores, allowed)
    values = margin_policy_values(choices, value, costs, contactable, known, decisions.stages.stage)
    values.lost = value_lost(
        choices["clm"], choices["restricted_oracle"], value, decisions.stages.stage, known, policy.actions
    )
    return values, value


def margin_on_logged(
    rows: pd.DataFrame, decisions: Decisions, margins: pd.DataFrame
) -> dict[str, float | None]:
    """clm's greedy choices on the logged rows valued by the true incremental margin − cost: the mean per
    1,000 logged users and its standard error, on the same users as the offline estimates."""
    costs = np.array([a.cost for a in decisions.policy.catalog])
    incremental, _ = margin_matrix(margins, rows["user_id"], decisions.policy.actions)
    known = np.isfinite(incremental).all(axis=1)
    if not known.any():
        return {"truth_margin_on_logged": None, "truth_margin_on_logged_se": None}
    per_user = value_of(decisions.arbitration.greedy, np.where(known[:, None], incremental - costs, 0.0))[
        known
    ]
    return {
        "truth_margin_on_logged": 1000.0 * float(per_user.mean()),
        "truth_margin_on_logged_se": 1000.0 * float(per_user.std(ddof=1) / math.sqrt(len(per_user))),
    }


def budget_comparison(
    decisions: Decisions, true_value: np.ndarray | None, share: float, method: str
) -> dict[str, float]:
    """The plan within `share` of the unconstrained spend against the unconstrained choice: predicted (and,
    with the truth, true) value, cost and contacts."""
    arb = decisions.arbitration
    costs = np.array([a.cost for a in decisions.policy.catalog])
    rows = np.arange(len(arb.greedy))
    best = arb.greedy
    unconstrained_cost = float(np.where(best >= 0, costs[np.clip(best, 0, None)], 0.0).sum())
    plan = plan_budget(decisions, share * unconstrained_cost, method)
    out = {
        "budget": share * unconstrained_cost,
        "method_" + method: 1.0,
        "predicted_value": plan.total_value,
        "cost": plan.total_cost,
        "contacts": float(plan.contacts),
        "unconstrained_predicted_value": plan.unconstrained_value,
        "unconstrained_cost": plan.unconstrained_cost,
        "unconstrained_contacts": float(plan.unconstrained_contacts),
    }
    if true_value is not None:
        out["true_value"] = float(
            np.where(plan.chosen >= 0, true_value[rows, np.clip(plan.chosen, 0, None)], 0.0).sum()
        )
        out["unconstrained_true_value"] = float(
            np.where(best >= 0, true_value[rows, np.clip(best, 0, None)], 0.0).sum()
        )
    return out


NO_OFFLINE: dict[str, float | None] = {
    "ips": None, "dr": None, "snips": None, "truth_on_logged": None, "n_logged": 0.0,
}  # fmt: skip


def offline_on_logged(
    rows: pd.DataFrame,
    models: DecisionModels,
    effects: pd.DataFrame | None,
    margins: pd.DataFrame | None = None,
) -> dict[str, float | None]:
    """IPS/DR of the policy's greedy choices on the logged campaign rows with closed outcomes, and
    (simulation) the truth on the same users: CLV-valued with the true effects, and by the true margin."""
    rows = rows[rows["churn"].notna()].reset_index(drop=True)
    if rows.empty:
        return dict(NO_OFFLINE)
    decisions = models.decide(rows).decisions
    assert decisions is not None
    out: dict[str, float | None] = offline_value(models.policy, rows, decisions).as_dict()
    out["truth_on_logged"] = None
    if effects is not None:
        truth = true_values(effects, rows["user_id"], decisions)
        out["truth_on_logged"] = 1000.0 * float(value_of(decisions.arbitration.greedy, truth).mean())
    if margins is not None:
        out.update(margin_on_logged(rows, decisions, margins))
    return out


def stage_check(
    user_ids: pd.Series, stages: np.ndarray, true_stages: pd.Series | None
) -> dict[str, Any] | None:
    """Agreement of the assigned stages with the true product stages (user_id → stage) where known."""
    if true_stages is None or true_stages.empty:
        return None
    latent = user_ids.map(true_stages)
    ok = latent.notna().to_numpy()
    return stage_agreement(stages[ok], latent[ok].to_numpy())


def clv_deciles(
    frame: pd.DataFrame, p_churn: np.ndarray, horizon_days: int, value: ValueParams, realised: np.ndarray,
    *, cutoff: dt.date, months: int,
) -> pd.DataFrame:  # fmt: skip
    """Predicted vs realised discounted margin over `months` months, per decile of the prediction."""
    window = f"revenue_sum_{value.revenue_window_days}d"
    margin = monthly_margin(frame["mrr"].to_numpy(dtype=float), frame[window].to_numpy(dtype=float), value)
    short = dataclasses.replace(value, horizon_months=months)
    predicted = margin * survival_annuity(monthly_churn(p_churn, horizon_days), short)
    table = pd.DataFrame({"predicted": predicted, "realised": realised})
    table["decile"] = pd.qcut(table["predicted"].rank(method="first"), 10, labels=range(1, 11)).astype(int)
    out = table.groupby("decile").agg(users=("predicted", "size"), predicted=("predicted", "mean"),
                                      realised=("realised", "mean")).reset_index()  # fmt: skip
    out["ratio"] = out["predicted"] / out["realised"].replace(0.0, np.nan)
    out.attrs["cutoff"] = str(cutoff)
    out.attrs["months"] = months
    out.attrs["spearman"] = float(table["predicted"].corr(table["realised"], method="spearman"))
    out.attrs["total_ratio"] = float(table["predicted"].sum() / max(table["realised"].sum(), 1e-9))
    return out


# --------------------------------------------------------------------------------------------------------
# The job: reads, runs the steps, logs


def evaluate_policy(
    data_dir: Path,
    *,
    config: ModelsConfig,
    project_root: Path,
    as_of: dt.date | None = None,
    truth_dir: Path | None = None,
    latent_to_stage: Mapping[str, str] | None = None,
    progress: Progress = lambda message: None,
    log_to_mlflow: bool = True,
    alias: str | None = None,
    loaded: DecisionModels | None = None,
) -> PolicyEvaluation:
    """Evaluate the registered policy and the scoring models it decides with (`alias`, default @champion or else
    @challenger; or `loaded`, the decision models a caller already holds) as of `as_of`. `latent_to_stage`
    maps the simulator's latent stages to product stages (the caller knows the simulator; training does
    not) for the stage check."""
    tracking.configure(tracking.resolve_tracking_uri(project_root))
    models = loaded or load_decision_models(config, aliases=(alias,) if alias else ("champion", "challenger"))
    policy, policy_version = models.policy, models.described(models.policy)
    effects_path = None if truth_dir is None else Path(truth_dir) / "effects.parquet"
    has_truth = effects_path is not None and effects_path.exists()
    as_of = as_of or _default_as_of(policy, effects_path if has_truth else None)
    effects = read_effects(truth_dir, as_of) if has_truth else None
    margins = read_margins(truth_dir, as_of) if has_truth else None
    if has_truth and margins is None:
        log.warning("%s has no margin truth at %s: policies are valued with our CLV only", truth_dir, as_of)
    if has_truth and effects is None:
        raise ValueError(f"{effects_path} has no true effects at {as_of}; pick a truth cutoff with --as-of")
    in_sample = str(as_of) in policy.metadata.get("train_waves", [])
    if in_sample:
        log.warning(
            "%s was a training wave of %s: the offline estimates there are in-sample", as_of, policy_version
        )
    params = FeatureParams.from_config(config.features)

    progress(f"scoring every user as of {as_of}")
    contacts = contact_params(config, policy.catalog, policy.contact)
    frame, _ = latest_features(data_dir, params=params, as_of=as_of, contacts=contacts)
    frame = frame.reset_index(drop=True)
    decisions = models.decide(frame).decisions
    assert decisions is not None
    values, true_value = no_policy_values(), None
    if effects is not None:
        values, true_value, known = policy_values(
            decisions, frame["user_id"], effects, config.policy.top_risk_share
        )
        progress("the best a model of these features could do (cross-fitted on the true effects)")
        values.extra.update(oracle_diagnostics(frame, decisions, true_value, known))
    margin = None
    if margins is not None:
        progress("valuing every policy by the true margin (and the oracle restricted to the features)")
        incremental, _ = margin_matrix(margins, frame["user_id"], policy.actions)
        margin, _ = evaluate_by_margin(frame, decisions, incremental, config.policy.top_risk_share)

    progress("budget mode")
    budget = budget_comparison(decisions, true_value, config.policy.evaluation_budget_share,
                               config.policy.budget_method)  # fmt: skip

    progress("offline estimates from the logged campaign")
    try:
        logged, _ = policy_frame(data_dir, config, waves=[as_of], contacts=contacts)
    except Exception as exc:  # no campaign that day: nothing to estimate from
        log.warning("no offline estimate at %s: %s", as_of, exc)
        offline = dict(NO_OFFLINE)
    else:
        offline = offline_on_logged(logged, models, effects, margins)

    true_stages = None
    if latent_to_stage is not None:
        true_stages = read_latent_product_stages(truth_dir, as_of, latent_to_stage)
    agreement = stage_check(frame["user_id"], decisions.stages.stage, true_stages)

    progress("CLV against realised revenue")
    clv_check = clv_against_realised(data_dir, config, models, as_of)

    evaluation = PolicyEvaluation(
        as_of=as_of, policy_version=policy_version, scoring_models=models.scoring_labels(), in_sample=in_sample,
        n_users=len(frame), value_per_1000=values.value_per_1000, contacts_per_1000=values.contacts_per_1000,
        cost_per_1000=values.cost_per_1000, offline=offline, stage_agreement=agreement, clv_check=clv_check,
        budget=budget, extra=values.extra, margin=margin,
    )  # fmt: skip
    if log_to_mlflow:
        evaluation.run_id = _log(evaluation, config, decisions)
    return evaluation


def _default_as_of(policy: PolicyBundle, effects_path: Path | None) -> dt.date:
    """The policy's held-out wave (when the truth covers it), else the latest truth cutoff."""
    test_wave = policy.metadata.get("test_wave")
    if effects_path is None:
        if test_wave is None:
            raise ValueError("give --as-of: the policy records no held-out wave")
        return dt.date.fromisoformat(test_wave)
    cutoffs = sorted(pd.read_parquet(effects_path, columns=["cutoff"])["cutoff"].unique())
    cutoffs = [pd.Timestamp(c).date() for c in cutoffs]
    if test_wave is not None and dt.date.fromisoformat(test_wave) in cutoffs:
        return dt.date.fromisoformat(test_wave)
    return cutoffs[-1]


def clv_against_realised(data_dir: Path, config: ModelsConfig, models: DecisionModels, as_of: dt.date,
                         months: int = 6) -> pd.DataFrame | None:  # fmt: skip
    """Predicted vs realised discounted margin over `months` 30-day months after the latest first-of-month
    cutoff with that much data after it, per decile of the prediction; None when the data is too short."""
    con = connect()
    inputs = load_inputs(con, data_dir)
    cutoff = (inputs.data_end - dt.timedelta(days=30 * months)).replace(day=1)
    first_event = con.to_pyarrow(inputs.events.ts.min()).as_py().date()
    if cutoff < first_event + dt.timedelta(days=60):
        log.warning(
            "no CLV check: less than %d months of data after a cutoff with 60 days of history", months
        )
        return None
    params = FeatureParams.from_config(config.features)
    try:
        frame, _ = latest_features(data_dir, params=params, as_of=cutoff, con=con)
    except Exception as exc:
        log.warning("no CLV check: %s", exc)
        return None
    if frame.empty:
        return None
    p_churn, _ = probabilities(frame, models.churn, models.upgrade)
    value = models.policy.value
    realised = realised_margin(data_dir, frame["user_id"], cutoff, months, value, config)
    return clv_deciles(
        frame, p_churn, models.churn.horizon_days, value, realised, cutoff=cutoff, months=months
    )


def realised_margin(
    data_dir: Path, users: pd.Series, cutoff: dt.date, months: int, value, config
) -> np.ndarray:
    """Discounted margin each user actually produced in the `months` 30-day months after `cutoff`:
    purchases plus subscription revenue (MRR pro rata for the days subscribed)."""
    data_dir = resolve_data_dir(data_dir)
    start = pd.Timestamp(cutoff, tz="UTC")
    purchase_types = list(config.features.purchase_event_types)
    events = pd.read_parquet(
        Path(data_dir) / "events.parquet", columns=["user_id", "ts", "event_type", "amount"]
    )
    events = events[events["event_type"].isin(purchase_types) & (events["ts"] >= start)]
    month = ((events["ts"] - start).dt.total_seconds() // (30 * 86400)).astype(int) + 1
    events = events.assign(month=month)[month <= months]
    revenue = events.groupby(["user_id", "month"])["amount"].sum().unstack(fill_value=0.0)
    revenue = revenue.reindex(index=users.to_numpy(), columns=range(1, months + 1), fill_value=0.0).fillna(
        0.0
    )
    total = revenue.to_numpy(dtype=float, copy=True)
    subs_path = Path(data_dir) / "subscriptions.parquet"
    if subs_path.exists():
        subs = pd.read_parquet(subs_path)
        subs = subs[subs["user_id"].isin(set(users))]
        index = pd.Index(users.to_numpy())
        for t in range(1, months + 1):
            lo = start + pd.Timedelta(days=30 * (t - 1))
            hi = start + pd.Timedelta(days=30 * t)
            begin = subs["start"].where(subs["start"] > lo, lo)
            end = subs["end"].fillna(hi).where(subs["end"].fillna(hi) < hi, hi)
            days = ((end - begin).dt.total_seconds() / 86400).clip(lower=0)
            paid = (subs["mrr"].fillna(0.0) * days / 30.0).groupby(subs["user_id"]).sum()
            total[:, t - 1] += paid.reindex(index, fill_value=0.0).to_numpy()
    discount = (1 + value.monthly_discount_rate) ** -np.arange(1, months + 1)
    return value.margin_share * total @ discount


def _description(evaluation: PolicyEvaluation) -> str:
    """What was evaluated, on what, and the headline figure: the run's description in the MLflow UI."""
    text = (f"Evaluation of {evaluation.policy_version} (scores from {', '.join(evaluation.scoring_models.values())}) "
            f"on {evaluation.n_users:,} users as of {evaluation.as_of}"
            f"{' (in sample)' if evaluation.in_sample else ''}.")  # fmt: skip
    margin = evaluation.margin
    if margin is not None:  # simulated data: the simulator's true incremental margin, the primary figure
        share = margin.ratio("oracle")
        text += f" True incremental margin per user {margin.mean['clm']:,.2f}"
        text += f", {share:.0%} of the oracle's {margin.mean['oracle']:,.2f}." if share is not None else "."
    return text


def _log(evaluation: PolicyEvaluation, config: ModelsConfig, decisions) -> str:
    with tracking.start_training_run(
        config.training.experiment, f"policy-evaluation-{evaluation.as_of}",
        params={"target": "policy_evaluation", "as_of": str(evaluation.as_of), "policy": evaluation.policy_version,
                "scoring_models": evaluation.scoring_models, "in_sample": evaluation.in_sample},
        tags={"clm.target": "policy_evaluation", "clm.as_of": str(evaluation.as_of)},
        description=_description(evaluation),
    ) as run:  # fmt: skip
        tracking.log_metrics_flat(
            {"value_per_1000": evaluation.value_per_1000, "contacts_per_1000": evaluation.contacts_per_1000,
             "cost_per_1000": evaluation.cost_per_1000, "offline": evaluation.offline,
             "goals": {k: v for k, v in evaluation.goals().items() if v is not None},
             "budget": evaluation.budget, "extra": evaluation.extra}
        )  # fmt: skip
        if evaluation.margin is not None:
            m = evaluation.margin
            tracking.log_metrics_flat(
                {"margin": {"mean_per_user": m.mean, "se_per_user": m.se, "clm_minus_policy_se": m.difference_se,
                            "clm_over_oracle": m.ratio("oracle"), "clm_over_restricted_oracle": m.ratio("restricted_oracle"),
                            "contact_quality": m.contact_quality}}
            )  # fmt: skip
        tracking.log_dict(evaluation.as_json(), "policy_evaluation.json")
        tracking.log_frame(policy_table(evaluation), "metrics/policy_values.csv")
        if evaluation.stage_agreement is not None:
            tracking.log_metrics_flat(
                {"stages": {"macro_f1": evaluation.stage_agreement["macro_f1"],
                            "accuracy": evaluation.stage_agreement["accuracy"],
                            "f1": evaluation.stage_agreement["f1"]}}
            )  # fmt: skip
            tracking.log_frame(
                evaluation.stage_agreement["confusion"], "metrics/stage_confusion.csv", index=True
            )
        if evaluation.clv_check is not None:
            tracking.log_frame(evaluation.clv_check, "metrics/clv_deciles.csv")
            tracking.log_metrics_flat(
                {"clv": {"spearman": evaluation.clv_check.attrs["spearman"],
                         "total_ratio": evaluation.clv_check.attrs["total_ratio"]}}
            )  # fmt: skip
        tracking.log_frame(decisions.to_frame().groupby(["stage", "action"]).size().rename("users").reset_index(),
                           "metrics/stage_action_mix.csv")  # fmt: skip
        return run.info.run_id


def policy_table(evaluation: PolicyEvaluation) -> pd.DataFrame:
    rows = []
    for name in POLICIES:
        rows.append(
            {"policy": name, "value_per_1000": evaluation.value_per_1000[name],
             "contacts_per_1000": evaluation.contacts_per_1000[name], "cost_per_1000": evaluation.cost_per_1000[name]}
        )  # fmt: skip
    return pd.DataFrame(rows)


def evaluation_findings(evaluation: PolicyEvaluation) -> list[str]:
    """The evaluation's findings in sentences (goals, budget mode, in-sample warning, stage and CLV checks),
    printed by `clm evaluate-policy` and the demo and shown in the campaign report."""
    goals = evaluation.goals()
    lines = margin_findings(evaluation.margin) if evaluation.margin is not None else []
    v = evaluation.value_per_1000
    if goals["share_of_oracle"] is not None:
        top = v.get("top_risk_discount")
        if goals["times_top_risk_discount"] is not None:
            against_top = f"{goals['times_top_risk_discount']:.2f}× the top-risk-discount rule (goal ≥ 1.5×)"
        else:
            against_top = f"the top-risk-discount rule loses {format_money(-top)} per 1,000 (clm is {format_money(v['clm'] - top)} ahead)"
        line = (
            f"old, valued with our own CLV: clm reaches {goals['share_of_oracle']:.0%} of that oracle's value; "
            f"{against_top}"
        )
        reachable = evaluation.extra.get("feature_oracle")
        if reachable:
            line += f"; {v['clm'] / reachable:.0%} of what the features allow"
        lines.append(line)
    b = evaluation.budget
    if b:
        line = (
            f"budget mode ({format_money(b['budget'])} = {b['budget'] / max(b['unconstrained_cost'], 1e-9):.0%} of the "
            f"unconstrained spend): {int(b['contacts']):,} contacts, predicted value {format_money(b['predicted_value'])} vs "
            f"{format_money(b['unconstrained_predicted_value'])} unconstrained"
        )
        if "true_value" in b:
            line += f"; true value {format_money(b['true_value'])} vs {format_money(b['unconstrained_true_value'])}"
        lines.append(line)
    if evaluation.in_sample:
        lines.append(
            f"{evaluation.as_of} was a training wave of this policy: its offline estimates are in-sample"
        )
    if evaluation.stage_agreement is not None:
        lines.append(
            f"stages vs the latent truth: macro F1 {evaluation.stage_agreement['macro_f1']:.3f}, accuracy "
            f"{evaluation.stage_agreement['accuracy']:.3f}"
        )
    if evaluation.clv_check is not None:
        c = evaluation.clv_check
        lines.append(
            f"CLV check from {c.attrs['cutoff']} over {c.attrs['months']} months: predicted ÷ realised margin "
            f"{c.attrs['total_ratio']:.2f} overall, Spearman {c.attrs['spearman']:.2f}; top decile predicted "
            f"{c['predicted'].iloc[-1]:,.0f} vs realised {c['realised'].iloc[-1]:,.0f}"
        )
    if evaluation.run_id:
        lines.append(f"logged to MLflow run {evaluation.run_id}")
    return lines


def margin_findings(margin: MarginValues) -> list[str]:
    """The margin evaluation in sentences: clm against both oracles, each baseline by how many standard
    errors of the paired difference clm is ahead, and the contact precision and recall in at_risk + dormant."""
    m = margin
    ratios = [
        f"{m.ratio(ref):.2f}" if m.ratio(ref) is not None else "–" for ref in ("oracle", "restricted_oracle")
    ]
    lines = [
        f"by the true margin over the simulator's value horizon (cost subtracted), clm is worth {m.mean['clm']:.2f} "
        f"± {m.se['clm']:.2f} per user: {ratios[0]} × the oracle (goal ≥ 0.6), {ratios[1]} × the oracle restricted "
        "to the features (goal ≥ 0.9)"
    ]
    ahead = []
    for name in ("stage_playbook", "top_risk_discount", "random", "no_action"):
        gap, se = m.mean["clm"] - m.mean[name], m.difference_se[name]
        ahead.append(f"{name} by {gap:+.2f} ({gap / se:+.1f} SE)" if se > 0 else f"{name} by {gap:+.2f}")
    lines.append("clm ahead of " + ", ".join(ahead) + " per user (goal: each > 2 SE)")
    q = m.contact_quality
    precision, recall = q.get("vs_oracle.precision"), q.get("vs_oracle.recall")
    lines.append(
        f"at_risk + dormant ({int(q.get('vs_oracle.users') or 0):,} users): clm contacts {int(q.get('vs_oracle.contacted') or 0):,}, "
        f"the oracle {int(q.get('vs_oracle.oracle_contacted') or 0):,}; precision "
        f"{'–' if precision is None else f'{precision:.2f}'}, recall {'–' if recall is None else f'{recall:.2f}'} "
        "(goal ≥ 0.6 each)"
    )
    return lines


def format_money(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.0f}"


__all__ = [
    "MARGIN_LABELS",
    "MARGIN_POLICIES",
    "NO_ACTION",
    "POLICIES",
    "POLICY_LABELS",
    "MarginValues",
    "PolicyEvaluation",
    "PolicyValues",
    "budget_comparison",
    "clv_deciles",
    "evaluate_by_margin",
    "evaluate_policy",
    "evaluation_findings",
    "margin_findings",
    "offline_on_logged",
    "oracle_diagnostics",
    "policy_table",
    "policy_values",
    "stage_check",
    "value_lost",
]
