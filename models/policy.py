"""The next-best-action policy as one versioned object: stage rules, value parameters, the action catalog,
the contact policy and the uplift models. `decide` turns feature rows plus the two calibrated scores into
decisions; batch scoring, policy evaluation and serving all call it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from models.arbitration import Arbitration, ContactState, arbitrate
from models.catalog import NO_ACTION, Action, ContactPolicy, catalog_from_dict, catalog_to_dict
from models.config import StagesSection
from models.stages import StageAssignment, StageRules, assign_stages
from models.uplift import UpliftModel
from models.value import ValueParams, value_arrays

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
        "contact": {
            "max_contacts_per_30d": policy.contact.max_contacts_per_30d,
            "harm_tolerance": policy.contact.harm_tolerance,
            "exploration_share": policy.contact.exploration_share,
        },
        "stages": policy.stages_config.as_dict(),
        "value": {
            "margin_share": policy.value.margin_share,
            "discount_rate_annual": policy.value.discount_rate_annual,
            "horizon_months": policy.value.horizon_months,
            "revenue_window_days": policy.value.revenue_window_days,
            "plan_prices": policy.value.plan_prices,
            "plan_order": list(policy.value.plan_order),
            "currency": policy.value.currency,
        },
        "feature_names": policy.feature_names,
        "feature_version": policy.feature_version,
        "metadata": policy.metadata,
    }
    (path / POLICY_FILE).write_text(json.dumps(meta, indent=2, default=str))
    return path


def load_policy(path: Path) -> PolicyBundle:
    """Load a policy directory; raises ValueError naming the file when it is missing or corrupt."""
    path = Path(path)
    try:
        meta = json.loads((path / POLICY_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot load policy at {path}: {exc}") from exc
    uplift = UpliftModel.load(path / UPLIFT_DIR)
    value = meta["value"]
    return PolicyBundle(
        name=meta["name"],
        catalog=catalog_from_dict(meta["catalog"]),
        contact=ContactPolicy(**meta["contact"]),
        stages_config=StagesSection.model_validate(meta["stages"]),
        value=ValueParams(
            margin_share=value["margin_share"],
            discount_rate_annual=value["discount_rate_annual"],
            horizon_months=int(value["horizon_months"]),
            revenue_window_days=int(value["revenue_window_days"]),
            plan_prices=dict(value["plan_prices"]),
            plan_order=tuple(value["plan_order"]),
            currency=value.get("currency", "USD"),
        ),
        uplift=uplift,
        feature_names=list(meta["feature_names"]),
        feature_version=meta["feature_version"],
        metadata=meta.get("metadata", {}),
    )


@dataclass
class Decisions:
    """Decisions for n feature rows: everything a batch file, the evaluation and the API need."""

    policy: PolicyBundle
    stages: StageAssignment
    values: dict[str, np.ndarray]  # margin_month, p_churn_month, clv, upgrade_value
    churn_probability: np.ndarray
    upgrade_probability: np.ndarray
    delta_churn: np.ndarray  # (n, A)
    delta_upgrade: np.ndarray  # (n, A)
    arbitration: Arbitration

    def __len__(self) -> int:
        return len(self.churn_probability)

    def targeted_uplift(self) -> np.ndarray:
        """(n, A): each action's estimated change in the outcome it targets (churn or upgrade probability)."""
        upgrade = np.array([a.outcome == "upgrade" for a in self.policy.catalog])
        return np.where(upgrade[None, :], self.delta_upgrade, self.delta_churn)

    def columns(self, chosen: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Per user: stage, scores, value, the chosen action with its value, uplift, cost and channel,
        whether its uplift came from a model or a prior, and the probability it was chosen with. `chosen`
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
        sources = np.array([self.policy.source(a.name) for a in catalog], dtype=object)
        return {
            "stage": self.stages.stage,
            "stage_rule": self.stages.rule,
            "stage_since_days": self.stages.since_days,
            "p_churn": self.churn_probability,
            "p_upgrade": self.upgrade_probability,
            "clv": self.values["clv"],
            "upgrade_value": self.values["upgrade_value"],
            "action": np.where(contacted, names[picked], NO_ACTION),
            "expected_value": np.where(contacted, arb.value[rows, picked], 0.0),
            "uplift": np.where(contacted, self.targeted_uplift()[rows, picked], 0.0),
            "cost": np.where(contacted, costs[picked], 0.0),
            "channel": np.where(contacted, channels[picked], None),
            "uplift_source": np.where(contacted, sources[picked], None),
            "propensity": np.ones(len(self)) if replaced else arb.propensity,
            "explored": np.zeros(len(self), dtype=bool) if replaced else arb.explored,
        }

    def to_frame(self, chosen: np.ndarray | None = None) -> pd.DataFrame:
        """`columns()` as a frame, one row per user."""
        return pd.DataFrame(self.columns(chosen))

    def row(self, i: int) -> dict[str, Any]:
        """`to_frame()`'s row i as plain Python values, without building a frame (the request path)."""
        return {k: (v[i].item() if isinstance(v[i], np.generic) else v[i]) for k, v in self.columns().items()}

    def candidates(self, i: int, lang: str = "en") -> list[dict[str, Any]]:
        """Every action for user i (catalog order, then no_action) with its value or why it was not chosen."""
        arb = self.arbitration
        uplift = self.targeted_uplift()
        out = []
        for a, action in enumerate(self.policy.catalog):
            out.append(
                {
                    "name": action.name,
                    "status": "chosen" if arb.chosen[i] == a else str(arb.status[i, a]),
                    "expected_value": float(arb.value[i, a]),
                    "uplift": float(uplift[i, a]),
                    "delta_churn": float(self.delta_churn[i, a]),
                    "delta_upgrade": float(self.delta_upgrade[i, a]),
                    "cost": action.cost,
                    "source": self.policy.source(action.name),
                    "reason": arb.candidate_reason(i, a, lang=lang),
                }
            )
        out.append(
            {
                "name": NO_ACTION,
                "status": "chosen" if arb.chosen[i] < 0 else "eligible",
                "expected_value": 0.0,
                "uplift": 0.0,
                "delta_churn": 0.0,
                "delta_upgrade": 0.0,
                "cost": 0.0,
                "source": "definition",
                "reason": "no contact: nothing has a positive expected value"
                if arb.chosen[i] < 0
                else "no contact is worth 0",
            }
        )
        return out


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
) -> Decisions:
    """Stage, value, uplift per action and the arbitrated action for each row of `frame` (registry
    features: a DataFrame, or a mapping of name → equal-length sequences on the request path). `rng`
    enables the configured exploration; without it decisions are deterministic. `uplift_matrix` (from
    `policy.uplift.encode_row`) skips building the uplift input from a frame."""
    churn_probability = np.asarray(churn_probability, dtype=float)
    upgrade_probability = np.asarray(upgrade_probability, dtype=float)
    n = len(churn_probability)
    columns: dict[str, Any] = {}
    for name in policy.stage_rules.names:
        if name in frame:
            column = frame[name]
            columns[name] = (
                column.to_numpy() if isinstance(column, pd.Series) else np.asarray(column, dtype=object)
            )
        else:
            columns[name] = np.full(n, np.nan)
    columns["churn_probability"] = churn_probability
    columns["upgrade_probability"] = upgrade_probability
    stages = assign_stages(columns, policy.stage_rules)
    values = value_arrays(frame, churn_probability, churn_horizon_days, policy.value)
    if uplift_matrix is not None:
        deltas = policy.uplift.predict_encoded(uplift_matrix)
    elif isinstance(frame, pd.DataFrame):
        deltas = policy.uplift.predict(frame)
    else:
        deltas = policy.uplift.predict_encoded(
            np.vstack([policy.uplift.encode_row({k: frame[k][i] for k in frame}) for i in range(n)])
        )
    contacts = ContactState.from_frame(frame, n)
    arb = arbitrate(
        stages.stage,
        deltas["churn"],
        deltas["upgrade"],
        values["clv"],
        values["upgrade_value"],
        contacts,
        policy.catalog,
        contact_policy or policy.contact,
        rng=rng,
    )
    return Decisions(
        policy=policy,
        stages=stages,
        values=values,
        churn_probability=churn_probability,
        upgrade_probability=upgrade_probability,
        delta_churn=deltas["churn"],
        delta_upgrade=deltas["upgrade"],
        arbitration=arb,
    )


__all__ = ["Decisions", "PolicyBundle", "decide", "load_policy", "save_policy"]
