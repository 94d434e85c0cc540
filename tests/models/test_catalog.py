"""The action catalog and the contact policy: the shipped config loads, bad entries name their key."""

from __future__ import annotations

import json

import pytest

from clm.config import ConfigError, load_config, validate_config, with_overrides
from models.catalog import (
    NO_ACTION,
    Action,
    ContactPolicy,
    catalog_from_dict,
    catalog_to_dict,
    load_catalog,
)
from simulation.params import ACTIONS

SHIPPED = load_config()
SHIPPED_ORDER = list(ACTIONS)  # the simulator's catalog and the shipped one list the same actions, in order


def test_the_shipped_catalog_loads_in_file_order() -> None:
    catalog = load_catalog(SHIPPED.actions)
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
        ("recommendation", {"cooldown_day": 3}, "actions.recommendation.cooldown_day' is not known"),
        ("recommendation", {"channel": None}, "actions.recommendation.channel' is missing"),
        (NO_ACTION, {}, "actions.no_action"),
    ],
)
def test_invalid_actions_name_the_key(name: str, change: dict, message: str) -> None:
    spec = SHIPPED.actions.get(name, SHIPPED.actions["recommendation"]).as_dict()
    with pytest.raises(ConfigError, match=message):  # None removes the key
        with_overrides(SHIPPED, {"actions": {name: {**spec, **change}}})


def test_an_empty_catalog_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"'actions': .*at least 1 item"):
        validate_config({**SHIPPED.as_dict(), "actions": {}})


def test_a_stored_catalog_is_validated_like_the_config() -> None:
    stored = catalog_to_dict(load_catalog(SHIPPED.actions))
    stored["recommendation"]["cost"] = -1.0
    with pytest.raises(ValueError, match="cost"):
        catalog_from_dict(stored)
    with pytest.raises(ValueError, match="no_action"):
        catalog_from_dict({"no_action": stored["welcome_offer"]})


def test_catalog_round_trips_through_json_in_order() -> None:
    catalog = load_catalog(SHIPPED.actions)
    stored = json.loads(json.dumps(catalog_to_dict(catalog)))
    assert list(stored) == SHIPPED_ORDER
    assert catalog_from_dict(stored) == catalog


def test_contact_policy_from_the_shipped_config() -> None:
    policy = ContactPolicy.from_config(SHIPPED.policy)
    assert policy == ContactPolicy(
        max_contacts_per_30d=1,
        harm_tolerance=0.01,
        exploration_share=0.05,
        exploration_salt="clm-exploration-1",
        control_share=0.05,
        control_salt="clm-control-1",
        negative_outcomes_retention=2,
        negative_outcomes_upgrade=3,
        negative_outcome_days=30,
        negative_outcome_names_retention=("churned", "cancelled", "unsubscribed", "complained"),
        negative_outcome_names_upgrade=("not_upgraded", "declined", "unsubscribed", "complained"),
        contact_windows_days=(30, 90),
    )
    assert (
        ContactPolicy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy
    )  # as a saved policy keeps it


def test_a_policy_saved_with_the_one_threshold_of_before_applies_it_to_every_action() -> None:
    stored = {"max_contacts_per_30d": 1, "harm_tolerance": 0.01, "exploration_share": 0.05,
              "suppress_after_negative_outcomes": 4}  # fmt: skip
    policy = ContactPolicy.from_dict(stored)
    assert (policy.negative_outcomes_retention, policy.negative_outcomes_upgrade) == (4, 4)


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
    with pytest.raises(ConfigError, match=message):
        with_overrides(SHIPPED, {"policy": change})


def test_contact_policy_names_a_missing_key() -> None:
    with pytest.raises(ConfigError, match=r"policy\.harm_tolerance' is missing"):
        with_overrides(SHIPPED, {"policy": {"harm_tolerance": None}})
