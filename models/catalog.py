"""The action catalog and the contact policy (DESIGN.md §4), read from the config's `[actions.*]` and
`[policy]` tables. `no_action` is not in the catalog: arbitration always adds it, with value 0."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from models.config import ActionSection, PolicySection

NO_ACTION = "no_action"
OUTCOMES = ("retention", "upgrade")
STAGES = ("new", "growing", "mature", "at_risk", "dormant", "reactivated")
# How the default catalog's actions (and no_action) read in Chinese; an action configured beyond these is
# shown by its name.
ACTION_NAMES_ZH: dict[str, str] = {
    NO_ACTION: "不干预", "onboarding_guide": "新手引导", "welcome_offer": "欢迎优惠", "recommendation": "个性化推荐",
    "education_content": "教育内容", "loyalty_reward": "忠诚奖励", "upgrade_offer": "升级优惠",
    "referral_invite": "推荐邀请", "retention_discount": "挽留折扣", "satisfaction_survey": "满意度调查",
    "winback_offer": "召回优惠",
}  # fmt: skip


def action_label(action: str, lang: str = "en") -> str:
    """An action as a reader of `lang` sees it: its name in English, its Chinese name in Chinese."""
    return ACTION_NAMES_ZH.get(action, action) if lang == "zh" else action


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
    # The assumed change in the probability that a lapsed user comes back within the horizon (the
    # reactivation model's outcome); None: the opposite of `prior_delta_churn`.
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
    # The global control group: this share of users, by a hash of (user, control_salt), is never contacted
    # (models.arbitration.control_group). 0 in a policy saved before there was one.
    control_share: float = 0.0
    control_salt: str = "clm-control"
    # An action is paused for a user after this many negative outcomes following it (0: never).
    suppress_after_negative_outcomes: int = 0

    @classmethod
    def from_config(cls, policy_section: PolicySection) -> ContactPolicy:
        """The contact keys of the config's `[policy]` table (other keys are for the uplift models)."""
        return cls(
            max_contacts_per_30d=policy_section.max_contacts_per_30d,
            harm_tolerance=policy_section.harm_tolerance,
            exploration_share=policy_section.exploration_share,
            exploration_salt=policy_section.exploration_salt,
            control_share=policy_section.control_share,
            control_salt=policy_section.control_salt,
            suppress_after_negative_outcomes=policy_section.suppress_after_negative_outcomes,
        )


def load_catalog(actions_section: Mapping[str, ActionSection]) -> tuple[Action, ...]:
    """The actions of the config's `[actions.*]` tables, in file order (ties in arbitration go to the
    earlier); the schema (models.config.ActionSection) has already checked each entry."""
    return tuple(
        Action(
            name=name,
            stages=tuple(spec.stages),
            cost=spec.cost,
            channel=spec.channel,
            cooldown_days=spec.cooldown_days,
            outcome=spec.outcome,
            prior_delta_churn=spec.prior_delta_churn,
            prior_delta_upgrade=spec.prior_delta_upgrade,
            prior_delta_reactivation=spec.prior_delta_reactivation,
        )
        for name, spec in actions_section.items()
    )


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


def catalog_from_dict(data: Mapping[str, Mapping[str, Any]]) -> tuple[Action, ...]:
    """Inverse of `catalog_to_dict` (each entry validated like the config's)."""
    if not data or NO_ACTION in data:
        raise ValueError(f"a stored catalog must list at least one action and not {NO_ACTION!r}")
    return load_catalog({str(name): ActionSection.model_validate(spec) for name, spec in data.items()})
