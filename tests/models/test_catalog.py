"""The action catalog and the contact policy: the shipped config loads, bad entries name their key."""

from __future__ import annotations

import copy
import json

import pytest

from clm.config import load_config
from models.catalog import (
    NO_ACTION,
    Action,
    ContactPolicy,
    catalog_from_dict,
    catalog_to_dict,
    load_catalog,
)

SHIPPED = load_config()
SHIPPED_ORDER = [
    "onboarding_guide",
    "welcome_offer",
    "recommendation",
    "education_content",
    "loyalty_reward",
    "upgrade_offer",
    "referral_invite",
    "retention_discount",
    "satisfaction_survey",
    "winback_offer",
]


def test_the_shipped_catalog_loads_in_file_order() -> None:
    catalog = load_catalog(SHIPPED["actions"])
    assert [action.name for action in catalog] == SHIPPED_ORDER
    assert catalog[1] == Action(
        name="welcome_offer",
        stages=("new", "reactivated"),
        cost=3.0,
        channel="email",
        cooldown_days=60,
        outcome="upgrade",
        prior_delta_churn=-0.005,
        prior_delta_upgrade=0.01,
    )
    assert NO_ACTION not in [action.name for action in catalog]


@pytest.mark.parametrize(
    ("name", "change", "message"),
    [
        ("recommendation", {"outcome": "revenue"}, "actions.recommendation.outcome"),
        ("recommendation", {"cost": -1.0}, "actions.recommendation.cost"),
        ("recommendation", {"cost": "cheap"}, "actions.recommendation.cost"),
        ("recommendation", {"cooldown_days": -1}, "actions.recommendation.cooldown_days"),
        ("recommendation", {"cooldown_days": 1.5}, "actions.recommendation.cooldown_days"),
        ("recommendation", {"stages": []}, "actions.recommendation.stages"),
        ("recommendation", {"stages": ["growing", "churned"]}, "actions.recommendation.stages.*churned"),
        ("recommendation", {"stages": "growing"}, "actions.recommendation.stages"),
        ("recommendation", {"channel": ""}, "actions.recommendation.channel"),
        ("recommendation", {"prior_delta_churn": -2.0}, "actions.recommendation.prior_delta_churn"),
        ("recommendation", {"cooldown_day": 3}, "actions.recommendation.cooldown_day "),
        ("recommendation", {"channel": None}, "actions.recommendation.channel is missing"),
        (NO_ACTION, {}, "actions.no_action"),
    ],
)
def test_invalid_actions_name_the_key(name: str, change: dict, message: str) -> None:
    actions = copy.deepcopy(SHIPPED["actions"])
    spec = {**actions.get(name, actions["recommendation"]), **change}
    actions[name] = {k: v for k, v in spec.items() if v is not None}  # None removes the key
    with pytest.raises(ValueError, match=message):
        load_catalog(actions)


def test_an_empty_catalog_is_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        load_catalog({})


def test_catalog_round_trips_through_json_in_order() -> None:
    catalog = load_catalog(SHIPPED["actions"])
    stored = json.loads(json.dumps(catalog_to_dict(catalog)))
    assert list(stored) == SHIPPED_ORDER
    assert catalog_from_dict(stored) == catalog


def test_contact_policy_from_the_shipped_config() -> None:
    policy = ContactPolicy.from_config(SHIPPED["policy"])
    assert policy == ContactPolicy(
        max_contacts_per_30d=1,
        harm_tolerance=0.01,
        exploration_share=0.05,
        exploration_salt="clm-exploration-1",
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"exploration_share": 1.0}, "policy.exploration_share"),
        ({"exploration_share": -0.1}, "policy.exploration_share"),
        ({"max_contacts_per_30d": -1}, "policy.max_contacts_per_30d"),
        ({"max_contacts_per_30d": 1.5}, "policy.max_contacts_per_30d"),
        ({"harm_tolerance": -0.01}, "policy.harm_tolerance"),
    ],
)
def test_contact_policy_rejects_out_of_range_values(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ContactPolicy.from_config({**SHIPPED["policy"], **change})


def test_contact_policy_names_a_missing_key() -> None:
    section = {k: v for k, v in SHIPPED["policy"].items() if k != "harm_tolerance"}
    with pytest.raises(ValueError, match=r"policy\.harm_tolerance"):
        ContactPolicy.from_config(section)
