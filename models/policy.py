"""The next-best-action policy as one versioned object: stage rules, value parameters, the action catalog,
the contact policy and the uplift models. `decide` turns feature rows plus the two calibrated scores into
decisions; batch scoring, policy evaluation and serving all call it."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.arbitration import (
    INELIGIBLE_STAGE,
    Arbitration,
    ContactState,
    ExplorationKey,
    arbitrate,
    control_group,
    exploration_draws,
)
from models.artifacts import ArtifactRefused, verify_manifest, write_manifest
from models.catalog import (
    NO_ACTION,
    Action,
    ContactPolicy,
    catalog_from_dict,
    catalog_to_dict,
    contact_windows,
)
from models.config import StagesSection
from models.stages import StageAssignment, StageRules, assign_stages
from models.uplift import UpliftModel
from models.value import ValueParams, value_arrays

log = logging.getLogger(__name__)
POLICY_FILE = "policy.json"
UPLIFT_DIR = "uplift"
OUTCOME_OF = {"retention": "churn", "upgrade": "upgrade"}


@dataclass
class PolicyBundle:
    name: str  # registered model name, e.g. clm-policy
    catalog: tuple[Action, ...]
    contact: ContactPolicy
    stages_config: StagesSection
    value: ValueParams
    uplift: UpliftModel
    feature_names: list[str]
    feature_version: str
    metadata: dict[str, Any] = field(default_factory=dict)
    stage_rules: StageRules = field(init=False)

    def __post_init__(self) -> None:
        self.stage_rules = StageRules.from_config(self.stages_config, self.feature_names)

    @property
    def actions(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.catalog)

    def source(self, action: str) -> str:
        """ "model" when the action's uplift on its targeted outcome comes from a fitted model, else "prior"."""
        outcome = OUTCOME_OF[next(a for a in self.catalog if a.name == action).outcome]
        return self.uplift.sources_[action][outcome]


def save_policy(policy: PolicyBundle, path: Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    policy.uplift.save(path / UPLIFT_DIR)
    meta = {
        "name": policy.name,
        "catalog": catalog_to_dict(policy.catalog),
        "contact": policy.contact.to_dict(),
        "stages": policy.stages_config.as_dict(),
        "value": {
            "margin_share": policy.value.margin_share,
            "discount_rate_annual": policy.value.discount_rate_annual,
            "horizon_months": policy.value.horizon_months,
            "revenue_window_days": policy.value.revenue_window_days,
            "plan_prices": policy.value.plan_prices,
            "plan_order": list(policy.value.plan_order),
            "currency": policy.value.currency,
            "retained_churn_month": policy.value.retained_churn_month,
            "retained_churn_by_plan": policy.value.retained_churn_by_plan,
            "retained_churn_by_stage": policy.value.retained_churn_by_stage,
        },
        "feature_names": policy.feature_names,
        "feature_version": policy.feature_version,
        "metadata": policy.metadata,
    }
    (path / POLICY_FILE).write_text(json.dumps(meta, indent=2, default=str))
    write_manifest(path)
    return path


def load_policy(path: Path) -> PolicyBundle:
    """Load a policy directory; raises ValueError naming the file when it is missing, corrupt or differs
    from its checksum manifest."""
    path = Path(path)
    try:
        if not verify_manifest(path):
            log.warning("policy at %s has no checksum manifest (saved before manifests existed)", path)
    except ArtifactRefused as exc:
        raise ArtifactRefused(f"cannot load policy at {path}: {exc}") from exc
    try:
        meta = json.loads((path / POLICY_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load policy at {path}: {exc}") from exc
    uplift = UpliftModel.load(path / UPLIFT_DIR)
    value = meta["value"]
    return PolicyBundle(
        name=meta["name"],
        catalog=catalog_from_dict(meta["catalog"]),
        contact=ContactPolicy.from_dict(meta["contact"]),
        stages_config=StagesSection.model_validate(meta["stages"]),
        value=ValueParams(
            margin_share=value["margin_share"],
            discount_rate_annual=value["discount_rate_annual"],
            horizon_months=int(value["horizon_months"]),
            revenue_window_days=int(value["revenue_window_days"]),
            plan_prices=dict(value["plan_prices"]),
            plan_order=tuple(value["plan_order"]),
            currency=value.get("currency", "USD"),
            retained_churn_month=float(value.get("retained_churn_month", ValueParams.retained_churn_month)),
            retained_churn_by_plan={k: float(v) for k, v in value.get("retained_churn_by_plan", {}).items()},
            retained_churn_by_stage={
                stage: {plan: float(q) for plan, q in plans.items()}
                for stage, plans in value.get("retained_churn_by_stage", {}).items()
            },
        ),
        uplift=uplift,
        feature_names=list(meta["feature_names"]),
        feature_version=meta["feature_version"],
        metadata=meta.get("metadata", {}),
    )


STAY = "churn"  # the alive user's Δp(stay) is −Δchurn
RETURN = "reactivation"  # the lapsed user's Δp(return)
NO_ACTION_SOURCE = "definition"


@dataclass
class Decisions:
    """Decisions for n feature rows: everything a batch file, the evaluation and the API need.

    Each candidate's expected value is, exactly in this order of arithmetic,
    `retention_value + upgrade_gain − cost` with `retention_value = Δp(stay or return) × value_if_retained`
    and `upgrade_gain = Δp(upgrade) × upgrade_value` (models.value). Δp(stay) = −Δchurn for users the
    churn model scores; Δp(return) is the uplift on coming back for lapsed users (`lapsed`), whom the
    reactivation model scores."""

    policy: PolicyBundle
    stages: StageAssignment
    values: dict[str, np.ndarray]  # models.value.value_arrays
    churn_probability: np.ndarray
    upgrade_probability: np.ndarray
    delta_churn: np.ndarray  # (n, A) the uplift models' Δchurn (−Δp(return) for lapsed users)
    delta_upgrade: np.ndarray  # (n, A)
    arbitration: Arbitration
    delta_stay: np.ndarray = None  # type: ignore[assignment]  # (n, A) Δp(stay or return)
    lapsed: np.ndarray = None  # type: ignore[assignment]  # (n,) bool: scored by the reactivation model
    return_probability: np.ndarray | None = None  # (n,) p(return) where lapsed, NaN elsewhere
    stay_se: np.ndarray = None  # type: ignore[assignment]  # (n, A) standard error of Δp(stay or return)
    stay_source: np.ndarray = None  # type: ignore[assignment]  # (n, A) "model" | "prior"
    upgrade_se: np.ndarray = None  # type: ignore[assignment]  # (A,)
    upgrade_source: np.ndarray = None  # type: ignore[assignment]  # (A,)
    scored_by: np.ndarray = None  # type: ignore[assignment]  # (n,) "churn" | "reactivation"

    def __post_init__(self) -> None:
        n, actions = self.delta_churn.shape
        if self.delta_stay is None:
            self.delta_stay = -self.delta_churn
        if self.lapsed is None:
            self.lapsed = np.zeros(n, dtype=bool)
        if self.scored_by is None:
            self.scored_by = np.full(n, "churn", dtype=object)
        uplift = self.policy.uplift
        if self.stay_se is None:
            se = np.array([uplift.standard_error(a, STAY) for a in self.policy.actions])
            self.stay_se = np.broadcast_to(se, (n, actions))
        if self.stay_source is None:
            sources = np.array([uplift.sources_[a][STAY] for a in self.policy.actions], dtype=object)
            self.stay_source = np.broadcast_to(sources, (n, actions))
        if self.upgrade_se is None:
            self.upgrade_se = np.array([uplift.standard_error(a, "upgrade") for a in self.policy.actions])
        if self.upgrade_source is None:
            self.upgrade_source = np.array(
                [uplift.sources_[a]["upgrade"] for a in self.policy.actions], dtype=object
            )

    def __len__(self) -> int:
        return len(self.churn_probability)

    def terms(self) -> dict[str, np.ndarray]:
        """(n, A) each: the parts of every candidate's expected value, which they add up to exactly (computed
        once: `candidates(i)` over every user of a population reads them n times)."""
        cached = self.__dict__.get("_terms")
        if cached is None:
            retention = self.delta_stay * self.values["value_if_retained"][:, None]
            growth = self.delta_upgrade * self.values["upgrade_value"][:, None]
            cached = self.__dict__["_terms"] = {"retention_value": retention, "upgrade_gain": growth}
        return cached

    def columns(self, chosen: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Per user: stage, scores (and which model scored), value, the chosen action with every term of its
        expected value (Δp(stay or return), Δp(upgrade), their standard errors, cost), channel, whether its
        targeted effect came from a model or a prior, and the probability it was chosen with. `chosen`
        (action index per user, −1 = none) replaces the policy's choice, e.g. by a budget plan, which is
        deterministic (propensity 1, not explored)."""
        arb = self.arbitration
        replaced = chosen is not None
        chosen = arb.chosen if chosen is None else np.asarray(chosen)
        rows = np.arange(len(self))
        picked = np.clip(chosen, 0, None)
        contacted = chosen >= 0
        catalog = self.policy.catalog
        names = np.array([a.name for a in catalog], dtype=object)
        costs = np.array([a.cost for a in catalog])
        channels = np.array([a.channel for a in catalog], dtype=object)
        upgrade_targeted = np.array([a.outcome == "upgrade" for a in catalog])
        sources = np.where(upgrade_targeted[None, :], self.upgrade_source[None, :], self.stay_source)

        def at_choice(matrix: np.ndarray, empty: Any = 0.0) -> np.ndarray:
            return np.where(contacted, np.asarray(matrix)[rows, picked], empty)

        return {
            "stage": self.stages.stage,
            "stage_rule": self.stages.rule,
            "stage_since_days": self.stages.since_days,
            "scored_by": self.scored_by,
            "p_churn": self.churn_probability,
            "p_return": self.return_probability
            if self.return_probability is not None
            else np.full(len(self), np.nan),
            "p_upgrade": self.upgrade_probability,
            "clv": self.values["clv"],
            "value_if_retained": self.values["value_if_retained"],
            "upgrade_value": self.values["upgrade_value"],
            "action": np.where(contacted, names[picked], NO_ACTION),
            "expected_value": np.where(contacted, arb.value[rows, picked], 0.0),
            "delta_stay": at_choice(self.delta_stay),
            "delta_stay_se": at_choice(self.stay_se),
            "delta_upgrade": at_choice(self.delta_upgrade),
            "delta_upgrade_se": at_choice(np.broadcast_to(self.upgrade_se, self.delta_upgrade.shape)),
            "cost": np.where(contacted, costs[picked], 0.0),
            "channel": np.where(contacted, channels[picked], None),
            "effect_source": at_choice(sources, None),
            "propensity": np.ones(len(self)) if replaced else arb.propensity,
            "explored": np.zeros(len(self), dtype=bool) if replaced else arb.explored,
            "intended_action": np.where(contacted, names[picked], NO_ACTION) if replaced
            else arb.intended_names(),
            "holdout": np.where(arb.held_out, arb.holdout, None) if replaced else arb.holdout,
            "control_group": arb.held_out,
            "best_offered_value": self.best_offered_value(),
        }  # fmt: skip

    def best_offered_value(self) -> np.ndarray:
        """Per user, the highest expected value among the actions offered at the user's stage, whatever the
        contact rules (cooldown, cap, harm) say; NaN when the stage offers none. At most 0: no action pays."""
        arb = self.arbitration
        offered = (arb.status != INELIGIBLE_STAGE) & ~np.isnan(arb.value)
        values = np.where(offered, arb.value, -np.inf).max(axis=1, initial=-np.inf)
        return np.where(np.isfinite(values), values, np.nan)

    def to_frame(self, chosen: np.ndarray | None = None) -> pd.DataFrame:
        """`columns()` as a frame, one row per user."""
        return pd.DataFrame(self.columns(chosen))

    def row(self, i: int) -> dict[str, Any]:
        """`to_frame()`'s row i as plain Python values, without building a frame (the request path)."""
        return {k: (v[i].item() if isinstance(v[i], np.generic) else v[i]) for k, v in self.columns().items()}

    def candidates(self, i: int, lang: str = "en") -> list[dict[str, Any]]:
        """Every action for user i (catalog order, then no_action) with every term of its expected value —
        `expected_value == retention_value + upgrade_gain − cost` exactly — the deltas' standard errors and
        sources, and why it was or was not chosen (in `lang`, values in the policy's currency)."""
        arb = self.arbitration
        currency = self.policy.value.currency
        terms = self.terms()
        value_if_retained = float(self.values["value_if_retained"][i])
        upgrade_value = float(self.values["upgrade_value"][i])
        stay_outcome = RETURN if self.lapsed[i] else STAY
        out = []
        for a, action in enumerate(self.policy.catalog):
            out.append(
                {
                    "name": action.name,
                    "status": "chosen" if arb.chosen[i] == a else str(arb.status[i, a]),
                    "stay_outcome": stay_outcome,
                    "delta_stay": float(self.delta_stay[i, a]),
                    "delta_stay_se": float(self.stay_se[i, a]),
                    "delta_stay_source": str(self.stay_source[i, a]),
                    "delta_upgrade": float(self.delta_upgrade[i, a]),
                    "delta_upgrade_se": float(self.upgrade_se[a]),
                    "delta_upgrade_source": str(self.upgrade_source[a]),
                    "value_if_retained": value_if_retained,
                    "upgrade_value": upgrade_value,
                    "retention_value": float(terms["retention_value"][i, a]),
                    "upgrade_gain": float(terms["upgrade_gain"][i, a]),
                    "cost": action.cost,
                    "expected_value": float(arb.value[i, a]),
                    "source": str(
                        self.upgrade_source[a] if action.outcome == "upgrade" else self.stay_source[i, a]
                    ),
                    "reason": arb.candidate_reason(i, a, lang=lang, currency=currency),
                }
            )
        out.append(
            {
                "name": NO_ACTION,
                "status": "chosen" if arb.chosen[i] < 0 else "eligible",
                "stay_outcome": stay_outcome,
                "delta_stay": 0.0,
                "delta_stay_se": 0.0,
                "delta_stay_source": NO_ACTION_SOURCE,
                "delta_upgrade": 0.0,
                "delta_upgrade_se": 0.0,
                "delta_upgrade_source": NO_ACTION_SOURCE,
                "value_if_retained": value_if_retained,
                "upgrade_value": upgrade_value,
                "retention_value": 0.0,
                "upgrade_gain": 0.0,
                "cost": 0.0,
                "expected_value": 0.0,
                "source": NO_ACTION_SOURCE,
                "reason": arb.candidate_reason(i, -1, lang=lang, currency=currency),
            }
        )
        return out


def stages_of(
    frame: pd.DataFrame | Mapping[str, Any], churn_probability: np.ndarray, upgrade_probability: np.ndarray,
    rules: StageRules,
) -> StageAssignment:  # fmt: skip
    """Each row's lifecycle stage from its features and its two calibrated scores."""
    n = len(churn_probability)
    columns: dict[str, Any] = {}
    for name in rules.names:
        if name in frame:
            column = frame[name]
            columns[name] = (
                column.to_numpy() if isinstance(column, pd.Series) else np.asarray(column, dtype=object)
            )
        else:
            columns[name] = np.full(n, np.nan)
    columns["churn_probability"] = churn_probability
    columns["upgrade_probability"] = upgrade_probability
    return assign_stages(columns, rules)


def decide(
    frame: pd.DataFrame | Mapping[str, Any],
    churn_probability: np.ndarray,
    upgrade_probability: np.ndarray,
    policy: PolicyBundle,
    *,
    churn_horizon_days: int = 30,
    rng: np.random.Generator | None = None,
    contact_policy: ContactPolicy | None = None,
    uplift_matrix: np.ndarray | None = None,
    return_probability: np.ndarray | None = None,
    lapsed: np.ndarray | None = None,
    exploration: ExplorationKey | None = None,
    user_ids: Any = None,
    held_out: np.ndarray | None = None,
    num_threads: int = 0,
) -> Decisions:
    """Stage, value, uplift per action and the arbitrated action for each row of `frame` (registry
    features: a DataFrame, or a mapping of name → equal-length sequences on the request path). `lapsed`
    marks the users the reactivation model scored (`return_probability`, NaN elsewhere); their
    `churn_probability` is 1 − p(return) and their Δp(stay) the uplift on returning. Exploration:
    `exploration` hashes (user, snapshot, policy version, salt) into each user's draw (`user_ids`, else the
    frame's `user_id`) — deterministic, and then the control group (`models.arbitration.control_group`, a
    hash of user and `control_salt`) is held out from all contact unless `held_out` says otherwise (a
    posted vector without a user); `rng` draws at random; neither: greedy. `uplift_matrix` (from
    `policy.uplift.encode_row`) skips building the uplift input from a frame; `num_threads`: the uplift
    models' LightGBM threads on a frame (0: its default)."""
    churn_probability = np.asarray(churn_probability, dtype=float)
    upgrade_probability = np.asarray(upgrade_probability, dtype=float)
    n = len(churn_probability)
    lapsed = np.zeros(n, dtype=bool) if lapsed is None else np.asarray(lapsed, dtype=bool)
    stages = stages_of(frame, churn_probability, upgrade_probability, policy.stage_rules)
    values = value_arrays(frame, churn_probability, churn_horizon_days, policy.value, stages.stage)
    if uplift_matrix is not None:
        deltas = policy.uplift.predict_encoded(uplift_matrix)
    elif isinstance(frame, pd.DataFrame):
        deltas = policy.uplift.predict(frame, num_threads=num_threads)
    else:
        deltas = policy.uplift.predict_encoded(
            np.vstack([policy.uplift.encode_row({k: frame[k][i] for k in frame}) for i in range(n)])
        )
    uplift, actions = policy.uplift, policy.actions
    stay_se = np.array([uplift.standard_error(a, STAY) for a in actions])
    stay_source = np.array([uplift.sources_[a][STAY] for a in actions], dtype=object)
    if RETURN in deltas:  # a policy fitted with the uplift on returning
        returning = deltas[RETURN]
        return_se = np.array([uplift.standard_error(a, RETURN) for a in actions])
        return_source = np.array([uplift.sources_[a][RETURN] for a in actions], dtype=object)
    else:  # an older policy: coming back is not churning
        returning, return_se, return_source = -deltas["churn"], stay_se, stay_source
    delta_stay = np.where(lapsed[:, None], returning, -deltas["churn"])
    contact = contact_policy or policy.contact
    contacts = ContactState.from_frame(frame, n, policy.actions, contact_windows(contact, policy.catalog))
    draws = None
    if exploration is not None:
        ids = list(np.asarray(user_ids if user_ids is not None else frame["user_id"], dtype=object))
        draws = exploration_draws(ids, exploration)
        if held_out is None:
            held_out = control_group(ids, contact.control_share, contact.control_salt)
    arb = arbitrate(
        stages.stage,
        -delta_stay,
        deltas["upgrade"],
        values["value_if_retained"],
        values["upgrade_value"],
        contacts,
        policy.catalog,
        contact,
        rng=rng,
        draws=draws,
        held_out=held_out,
    )
    return Decisions(
        policy=policy,
        stages=stages,
        values=values,
        churn_probability=churn_probability,
        upgrade_probability=upgrade_probability,
        delta_churn=-delta_stay,
        delta_upgrade=deltas["upgrade"],
        arbitration=arb,
        delta_stay=delta_stay,
        lapsed=lapsed,
        return_probability=return_probability,
        stay_se=np.where(lapsed[:, None], return_se[None, :], stay_se[None, :]),
        stay_source=np.where(lapsed[:, None], return_source[None, :], stay_source[None, :]),
        upgrade_se=np.array([uplift.standard_error(a, "upgrade") for a in actions]),
        upgrade_source=np.array([uplift.sources_[a]["upgrade"] for a in actions], dtype=object),
        scored_by=np.where(lapsed, "reactivation", "churn").astype(object),
    )


__all__ = ["Decisions", "PolicyBundle", "decide", "load_policy", "save_policy", "stages_of"]
