"""The action catalog and the contact policy (DESIGN.md §4), read from the config's `[actions.*]` and
`[policy]` tables. `no_action` is not in the catalog: arbitration always adds it, with value 0."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from features.contacts import ContactParams
from models.config import ActionSection, ModelsConfig, PolicySection

NO_ACTION = "no_action"
CONTACT_WINDOW_DAYS = 30  # the window of the policy's cap on all contacts (`max_contacts_per_30d`)
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
    # The action's own contact cap: at most `max_contacts` contacts of it in the last `max_contacts_window_days`
    # days (the `contacts_<action>_<W>d` input); None: no cap of its own (the policy's cap on all contacts holds).
    max_contacts: int | None = None
    max_contacts_window_days: int | None = None

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
    # The suppression rule: an action is paused for a user after this many negative outcomes following it
    # (the `negative_outcomes_<action>` input), by the outcome the action targets; 0: never.
    negative_outcomes_retention: int = 0
    negative_outcomes_upgrade: int = 0
    # A contact's outcome is judged over this many days after it (features.contacts).
    negative_outcome_days: int = 30
    # Outcomes recorded through the API (POST /v1/outcomes) that count as a negative outcome of the action
    # taken, by the outcome that action targets.
    negative_outcome_names_retention: tuple[str, ...] = ()
    negative_outcome_names_upgrade: tuple[str, ...] = ()
    # The trailing windows of the per-action contact counts (`contacts_<action>_<W>d`).
    contact_windows_days: tuple[int, ...] = (CONTACT_WINDOW_DAYS, 90)

    def __post_init__(self) -> None:
        for name in (
            "negative_outcome_names_retention",
            "negative_outcome_names_upgrade",
            "contact_windows_days",
        ):
            object.__setattr__(self, name, tuple(getattr(self, name)))  # lists from JSON

    def suppress_after(self, action: Action) -> int:
        """How many negative outcomes of `action` pause it for a user (0: never)."""
        return (
            self.negative_outcomes_upgrade
            if action.outcome == "upgrade"
            else self.negative_outcomes_retention
        )

    def negative_outcome_names(self, action: Action) -> tuple[str, ...]:
        """The recorded outcomes that count as a negative outcome of `action`."""
        return (
            self.negative_outcome_names_upgrade
            if action.outcome == "upgrade"
            else self.negative_outcome_names_retention
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (what a saved policy keeps)."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContactPolicy:
        """Inverse of `to_dict`; a policy saved with the one threshold of before
        (`suppress_after_negative_outcomes`) applies it to every action."""
        data = dict(data)
        legacy = data.pop("suppress_after_negative_outcomes", None)
        if legacy is not None:
            data.setdefault("negative_outcomes_retention", int(legacy))
            data.setdefault("negative_outcomes_upgrade", int(legacy))
        return cls(**data)

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
            negative_outcomes_retention=policy_section.negative_outcomes_retention,
            negative_outcomes_upgrade=policy_section.negative_outcomes_upgrade,
            negative_outcome_days=policy_section.negative_outcome_days,
            negative_outcome_names_retention=tuple(policy_section.negative_outcome_names_retention),
            negative_outcome_names_upgrade=tuple(policy_section.negative_outcome_names_upgrade),
            contact_windows_days=tuple(policy_section.contact_windows_days),
        )


def contact_windows(contact: ContactPolicy, catalog: Sequence[Action]) -> tuple[int, ...]:
    """Every window a per-action contact count is needed for: the policy's, the 30 days of its cap on all
    contacts, and each action's own cap window."""
    own = {a.max_contacts_window_days for a in catalog if a.max_contacts_window_days is not None}
    return tuple(sorted({*contact.contact_windows_days, CONTACT_WINDOW_DAYS, *own}))


def contact_params(
    config: ModelsConfig, catalog: Sequence[Action] | None = None, contact: ContactPolicy | None = None
) -> ContactParams:
    """What the contact-state table (features.contacts) is computed for: the actions of `catalog` (a policy's;
    default the config's) with the outcome each targets, the windows `contact_windows` names, and the outcome
    window and event definitions of the config (`[policy] negative_outcome_days`, `[labels]`, `[features]`)."""
    catalog = tuple(catalog) if catalog is not None else load_catalog(config.actions)
    contact = contact or ContactPolicy.from_config(config.policy)
    return ContactParams(
        actions=tuple((a.name, a.outcome) for a in catalog),
        windows_days=contact_windows(contact, catalog),
        outcome_days=contact.negative_outcome_days,
        holdout_actions=(NO_ACTION,),
        activity=config.labels.non_contractual_activity,
        purchase_event_types=tuple(config.features.purchase_event_types),
        cancel_event_types=tuple(config.features.cancel_event_types),
        upgrade_event_types=("upgrade",),  # the upgrade label's event (features.build._labels)
        upgrade_spend_threshold=config.labels.upgrade_spend_threshold,
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
            max_contacts=spec.max_contacts,
            max_contacts_window_days=spec.max_contacts_window_days,
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
            **(
                {}
                if action.max_contacts is None
                else {
                    "max_contacts": action.max_contacts,
                    "max_contacts_window_days": action.max_contacts_window_days,
                }
            ),
        }
        for action in catalog
    }


def catalog_from_dict(data: Mapping[str, Mapping[str, Any]]) -> tuple[Action, ...]:
    """Inverse of `catalog_to_dict` (each entry validated like the config's)."""
    if not data or NO_ACTION in data:
        raise ValueError(f"a stored catalog must list at least one action and not {NO_ACTION!r}")
    return load_catalog({str(name): ActionSection.model_validate(spec) for name, spec in data.items()})
