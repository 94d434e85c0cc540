"""Exact cooldowns and the suppression rule (models.arbitration): a cooldown on action A holds when another
action B was sent after it — in the arbitration and through the decision cache's contacts since the snapshot —
and an action pauses for a user after N negative outcomes."""

from __future__ import annotations

import datetime as dt

import numpy as np

from models.arbitration import COOLDOWN, ELIGIBLE, SUPPRESSED, ContactState, arbitrate
from models.catalog import Action, ContactPolicy
from serving.cache import Contacts

CATALOG = (
    Action("discount", ("at_risk",), 1.0, "email", 30, "retention", -0.05, 0.0),
    Action("survey", ("at_risk",), 0.5, "email", 7, "retention", -0.02, 0.0),
)
POLICY = ContactPolicy(max_contacts_per_30d=5, harm_tolerance=0.01, exploration_share=0.0,
                       negative_outcomes_retention=2, negative_outcomes_upgrade=3)  # fmt: skip


def _statuses(contacts: ContactState, policy: ContactPolicy = POLICY) -> list[str]:
    arb = arbitrate(["at_risk"], np.array([-0.05, -0.02]), np.zeros(2), np.array([100.0]), np.zeros(1),
                    contacts, CATALOG, policy)  # fmt: skip
    return [str(s) for s in arb.status[0]]


def test_a_cooldown_on_a_holds_when_b_was_sent_later() -> None:
    # the discount 5 days ago (cooldown 30), the survey yesterday (cooldown 7)
    last_only = ContactState(np.array(["survey"], dtype=object), np.array([1.0]), np.array([2.0]))
    assert _statuses(last_only) == [ELIGIBLE, COOLDOWN]  # only the last action's cooldown is seen
    exact = ContactState(np.array(["survey"], dtype=object), np.array([1.0]), np.array([2.0]),
                         days_since_action={"discount": np.array([5.0]), "survey": np.array([1.0])})  # fmt: skip
    assert _statuses(exact) == [COOLDOWN, COOLDOWN]
    expired = ContactState(np.array(["survey"], dtype=object), np.array([8.0]), np.array([2.0]),
                           days_since_action={"discount": np.array([31.0]), "survey": np.array([8.0])})  # fmt: skip
    assert _statuses(expired) == [ELIGIBLE, ELIGIBLE]


def test_the_decision_cache_keeps_every_cooldown_after_later_contacts() -> None:
    """Contacts logged since the snapshot (newest first): discount then survey; and a snapshot whose own
    last action was the discount, then a survey logged."""
    now = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)
    logged = [(now - dt.timedelta(days=1), "survey"), (now - dt.timedelta(days=4), "discount")]
    values = Contacts.from_log(logged, now).applied({"last_action": None, "days_since_last_contact": None})
    assert values["last_action"] == "survey" and values["days_since_discount"] == 4.0
    assert _statuses(ContactState.from_frame({k: [v] for k, v in values.items()}, 1, ("discount", "survey"))) == [
        COOLDOWN, COOLDOWN]  # fmt: skip
    snapshot = {"last_action": "discount", "days_since_last_contact": 3.0, "contacts_count_30d": 1.0}
    values = Contacts.from_log([(now - dt.timedelta(days=1), "survey")], now).applied(snapshot)
    assert values["last_action"] == "survey" and values["days_since_discount"] == 3.0
    assert _statuses(ContactState.from_frame({k: [v] for k, v in values.items()}, 1, ("discount", "survey"))) == [
        COOLDOWN, COOLDOWN]  # fmt: skip


def test_an_action_pauses_after_n_negative_outcomes() -> None:
    never = ContactState.never_contacted(1)
    for count, expected in ((0, ELIGIBLE), (1, ELIGIBLE), (2, SUPPRESSED), (3, SUPPRESSED)):
        contacts = ContactState(never.last_action, never.days_since_last_contact, never.contacts_30d,
                                negative_outcomes={"discount": np.array([float(count)])})  # fmt: skip
        assert _statuses(contacts)[0] == expected, count
    off = ContactPolicy(max_contacts_per_30d=5, harm_tolerance=0.01, exploration_share=0.0)
    contacts = ContactState(never.last_action, never.days_since_last_contact, never.contacts_30d,
                            negative_outcomes={"discount": np.array([5.0])})  # fmt: skip
    assert _statuses(contacts, off)[0] == ELIGIBLE  # 0: the rule is off
    frame = {"negative_outcomes_discount": [2.0]}  # the column a decision's inputs carry
    assert _statuses(ContactState.from_frame(frame, 1, ("discount", "survey")))[0] == SUPPRESSED


def test_logged_contacts_and_outcomes_update_the_per_action_state() -> None:
    """What the request path adds to the snapshot's contact state (features.contacts columns): each action's
    contacts per window, its days since, and the negative outcomes recorded against it (outcomes named as
    negative for the action's target only)."""
    now = dt.datetime(2026, 3, 10, 12, tzinfo=dt.UTC)
    logged = [(now - dt.timedelta(days=2), "survey"), (now - dt.timedelta(days=45), "discount")]
    outcomes = [("discount", "churned"), ("discount", "retained"), ("survey", "upgraded")]
    names = {"discount": ("churned", "cancelled"), "survey": ("churned",)}
    state = Contacts.from_log(logged, now, outcomes=outcomes, windows=(30, 90), negative_names=names)
    snapshot = {"contacts_discount_90d": 1.0, "negative_outcomes_discount": 1.0, "contacts_count_30d": None,
                "last_action": "discount", "days_since_last_contact": 50.0}  # fmt: skip
    values = state.applied(snapshot)
    assert (
        values["contacts_discount_90d"] == 2.0 and "contacts_discount_30d" not in values
    )  # 45 days: 90 only
    assert values["contacts_survey_30d"] == 1.0 and values["contacts_survey_90d"] == 1.0
    assert values["days_since_discount"] == 45.0 and values["days_since_survey"] == 2.0
    assert values["negative_outcomes_discount"] == 2.0 and "negative_outcomes_survey" not in values
    assert values["contacts_count_30d"] == 1.0 and values["last_action"] == "survey"
    arb = ContactState.from_frame({k: [v] for k, v in values.items()}, 1, ("discount", "survey"), (30, 90))
    assert arb.negative_outcomes["discount"][0] == 2.0 and arb.contacts_in_window[("survey", 30)][0] == 1.0
    assert _statuses(arb) == [SUPPRESSED, COOLDOWN]
    # outcomes alone (no contact since the snapshot) change only the negative outcomes
    only = Contacts.from_log([], now, outcomes=[("survey", "churned")], negative_names=names)
    assert only.applied({"last_action": "discount"}) == {
        "last_action": "discount",
        "negative_outcomes_survey": 1.0,
    }
    assert Contacts.from_log([], now, outcomes=[("survey", "retained")], negative_names=names) is None
