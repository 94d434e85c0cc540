"""The action catalog and the contact policy (DESIGN.md §4), read from the config's `[actions.*]` and
`[policy]` tables. `no_action` is not in the catalog: arbitration always adds it, with value 0."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NO_ACTION = "no_action"
OUTCOMES = ("retention", "upgrade")
STAGES = ("new", "growing", "mature", "at_risk", "dormant", "reactivated")
ACTION_KEYS = (
    "stages",
    "cost",
    "channel",
    "cooldown_days",
    "outcome",
    "prior_delta_churn",
    "prior_delta_upgrade",
)
# Optional: the assumed change in the probability that a lapsed user comes back within the horizon (the
# reactivation model's outcome); when absent, the opposite of `prior_delta_churn`.
OPTIONAL_ACTION_KEYS = ("prior_delta_reactivation",)


@dataclass(frozen=True)
class Action:
    """One intervention: where it may be used, what it costs, how often, and the outcome it targets.
    The priors are the assumed change in the 30-day churn / upgrade probability while there is too
    little campaign history to estimate them."""

    name: str
    stages: tuple[str, ...]
    cost: float
    channel: str
    cooldown_days: int
    outcome: str
    prior_delta_churn: float
    prior_delta_upgrade: float
    prior_delta_reactivation: float | None = None

    @property
    def prior_return(self) -> float:
        """The prior change in the probability of coming back (lapsed users): configured, else −Δchurn."""
        return (
            -self.prior_delta_churn
            if self.prior_delta_reactivation is None
            else self.prior_delta_reactivation
        )


@dataclass(frozen=True)
class ContactPolicy:
    """How often a user may be contacted, which estimated harm is tolerated, and how much to explore."""

    max_contacts_per_30d: int
    harm_tolerance: float
    exploration_share: float
    # Hashed with (user, snapshot date, policy version) into each decision's exploration draw.
    exploration_salt: str = "clm"

    @classmethod
    def from_config(cls, policy_section: Mapping[str, Any]) -> ContactPolicy:
        """Read and validate the contact keys of `config["policy"]` (other keys are for the uplift models)."""
        for key in ("max_contacts_per_30d", "harm_tolerance", "exploration_share"):
            if key not in policy_section:
                raise ValueError(f"policy.{key} is missing from the config")
        cap = policy_section["max_contacts_per_30d"]
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
            raise ValueError(f"policy.max_contacts_per_30d must be a whole number ≥ 0, got {cap!r}")
        harm = _number(policy_section["harm_tolerance"], "policy.harm_tolerance")
        if not 0.0 <= harm <= 1.0:
            raise ValueError(f"policy.harm_tolerance must be in [0, 1] (a probability change), got {harm}")
        share = _number(policy_section["exploration_share"], "policy.exploration_share")
        if not 0.0 <= share < 1.0:
            raise ValueError(f"policy.exploration_share must be in [0, 1), got {share}")
        salt = policy_section.get("exploration_salt", "clm")
        if not isinstance(salt, str):
            raise ValueError(f"policy.exploration_salt must be a string, got {salt!r}")
        return cls(
            max_contacts_per_30d=cap, harm_tolerance=harm, exploration_share=share, exploration_salt=salt
        )


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _action(name: str, spec: Mapping[str, Any], stages: Sequence[str]) -> Action:
    where = f"actions.{name}"
    if name == NO_ACTION:
        raise ValueError(f"{where}: {NO_ACTION!r} is reserved (it is always a candidate, with value 0)")
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where} must be a table of settings")
    unknown = sorted(set(spec) - set(ACTION_KEYS) - set(OPTIONAL_ACTION_KEYS))
    if unknown:
        known = ", ".join((*ACTION_KEYS, *OPTIONAL_ACTION_KEYS))
        raise ValueError(f"{where}.{unknown[0]} is not an action setting (known: {known})")
    missing = [key for key in ACTION_KEYS if key not in spec]
    if missing:
        raise ValueError(f"{where}.{missing[0]} is missing")

    action_stages = spec["stages"]
    if isinstance(action_stages, str) or not isinstance(action_stages, Sequence) or not action_stages:
        raise ValueError(f"{where}.stages must be a non-empty list of stages, got {action_stages!r}")
    for stage in action_stages:
        if stage not in stages:
            raise ValueError(f"{where}.stages: unknown stage {stage!r} (known: {', '.join(stages)})")
    cost = _number(spec["cost"], f"{where}.cost")
    if cost < 0:
        raise ValueError(f"{where}.cost must be ≥ 0, got {cost}")
    cooldown = spec["cooldown_days"]
    if isinstance(cooldown, bool) or not isinstance(cooldown, int) or cooldown < 0:
        raise ValueError(f"{where}.cooldown_days must be a whole number of days ≥ 0, got {cooldown!r}")
    if spec["outcome"] not in OUTCOMES:
        raise ValueError(f"{where}.outcome must be one of {', '.join(OUTCOMES)}, got {spec['outcome']!r}")
    channel = spec["channel"]
    if not isinstance(channel, str) or not channel:
        raise ValueError(f"{where}.channel must be a non-empty string, got {channel!r}")
    priors = {}
    for key in ("prior_delta_churn", "prior_delta_upgrade", *OPTIONAL_ACTION_KEYS):
        if key not in spec:
            continue
        priors[key] = _number(spec[key], f"{where}.{key}")
        if not -1.0 <= priors[key] <= 1.0:
            raise ValueError(
                f"{where}.{key} is a change in probability and must be in [-1, 1], got {priors[key]}"
            )
    return Action(
        name=name,
        stages=tuple(action_stages),
        cost=cost,
        channel=channel,
        cooldown_days=cooldown,
        outcome=spec["outcome"],
        **priors,
    )


def load_catalog(
    actions_section: Mapping[str, Mapping[str, Any]], stages: Sequence[str] = STAGES
) -> tuple[Action, ...]:
    """The actions of `config["actions"]`, validated, in file order (ties in arbitration go to the earlier)."""
    if not actions_section:
        raise ValueError("actions: the catalog is empty")
    return tuple(_action(str(name), spec, stages) for name, spec in actions_section.items())


def catalog_to_dict(catalog: Sequence[Action]) -> dict[str, dict[str, Any]]:
    """JSON-able form, shaped like the config's `[actions]` table (name → settings, in catalog order)."""
    return {
        action.name: {
            "stages": list(action.stages),
            "cost": action.cost,
            "channel": action.channel,
            "cooldown_days": action.cooldown_days,
            "outcome": action.outcome,
            "prior_delta_churn": action.prior_delta_churn,
            "prior_delta_upgrade": action.prior_delta_upgrade,
            **(
                {}
                if action.prior_delta_reactivation is None
                else {"prior_delta_reactivation": action.prior_delta_reactivation}
            ),
        }
        for action in catalog
    }


def catalog_from_dict(
    data: Mapping[str, Mapping[str, Any]], stages: Sequence[str] = STAGES
) -> tuple[Action, ...]:
    """Inverse of `catalog_to_dict` (validated like the config)."""
    return load_catalog(data, stages)
