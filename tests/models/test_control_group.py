"""The global control group (models.arbitration.control_group): a hash of (user, salt), the same in every call,
snapshot, policy version and process, its share the configured one within sampling error; held-out users get
no contact, say what the policy meant, and the propensities cover the holdout."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from models.arbitration import (
    CONTROL_GROUP,
    HOLDOUT_CONTROL,
    HOLDOUT_EXPLORATION,
    ContactState,
    ExplorationKey,
    arbitrate,
    control_group,
    exploration_draws,
)
from models.catalog import Action, ContactPolicy

USERS = [f"u{i:06d}" for i in range(20_000)]


def test_the_share_matches_the_config_within_sampling_error() -> None:
    for share in (0.05, 0.2):
        held = control_group(USERS, share, "salt-a")
        # 4 standard errors of a binomial share: fails by chance about once in 16,000 runs
        assert abs(held.mean() - share) < 4 * np.sqrt(share * (1 - share) / len(USERS)), held.mean()


def test_the_same_users_every_call_and_independent_of_snapshot_and_policy_version() -> None:
    held = control_group(USERS, 0.05, "salt-a")
    assert np.array_equal(held, control_group(USERS, 0.05, "salt-a"))
    assert np.array_equal(held[::-1], control_group(USERS[::-1], 0.05, "salt-a"))  # order does not matter
    # exploration redraws with the snapshot; the control group does not depend on it
    draws = [exploration_draws(USERS[:500], ExplorationKey(day, "clm-policy/1", "x")) for day in ("d1", "d2")]
    assert not np.array_equal(draws[0], draws[1])
    # another salt, another group; a larger share keeps everyone the smaller one held out
    assert not np.array_equal(held, control_group(USERS, 0.05, "salt-b"))
    assert (control_group(USERS, 0.1, "salt-a") >= held).all()
    assert not control_group(USERS, 0.0, "salt-a").any()
    with pytest.raises(ValueError, match="control share"):
        control_group(USERS, 1.0, "salt-a")


def test_every_process_draws_the_same_group() -> None:
    """A BLAKE2b hash, not Python's salted hash(): another interpreter (another worker) agrees."""
    code = (
        "from models.arbitration import control_group\n"
        "users = [f'u{i:06d}' for i in range(2000)]\n"
        "print(''.join('1' if h else '0' for h in control_group(users, 0.05, 'salt-a')))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123", "PATH": ""}, cwd=".")  # fmt: skip
    here = "".join("1" if h else "0" for h in control_group(USERS[:2000], 0.05, "salt-a"))
    assert other.stdout.strip() == here and "1" in here


CATALOG = (
    Action("discount", ("at_risk",), 1.0, "email", 30, "retention", -0.05, 0.0),
    Action("survey", ("at_risk",), 0.5, "email", 30, "retention", -0.01, 0.0),
)


def test_held_out_users_get_no_contact_and_the_propensities_cover_the_holdout() -> None:
    n = 4
    policy = ContactPolicy(max_contacts_per_30d=1, harm_tolerance=0.01, exploration_share=0.2,
                           exploration_salt="x", control_share=0.1, control_salt="c")  # fmt: skip
    held_out = np.array([True, False, True, False])
    # draws: user 0 and 1 greedy (no exploration), user 2 and 3 explore and draw no_action (option 3 of 3)
    draws = np.array([[0.9, 0.0], [0.9, 0.0], [0.1, 0.99], [0.1, 0.99]])
    arb = arbitrate(["at_risk"] * n, np.array([-0.05, -0.01]), np.zeros(2), np.full(n, 100.0), np.zeros(n),
                    ContactState.never_contacted(n), CATALOG, policy, draws=draws, held_out=held_out)  # fmt: skip
    assert arb.chosen_names().tolist() == ["no_action", "discount", "no_action", "no_action"]
    # users 2 and 3 drew no_action by exploration: held out of the greedy choice, which they were meant
    assert arb.intended_names().tolist() == ["discount"] * 4
    assert arb.holdout.tolist() == [HOLDOUT_CONTROL, None, HOLDOUT_CONTROL, HOLDOUT_EXPLORATION]
    assert (arb.status[held_out] == CONTROL_GROUP).all() and not (
        arb.status[~held_out] == CONTROL_GROUP
    ).any()
    # P(no_action) = c + (1 − c)·p_explore(no_action); P(discount) = (1 − c)·((1 − ε) + ε/3)
    p_none = 0.2 / 3
    assert arb.propensity == pytest.approx([0.1 + 0.9 * p_none, 0.9 * (0.8 + 0.2 / 3), 0.1 + 0.9 * p_none,
                                            0.9 * p_none])  # fmt: skip
    assert "control group" in arb.candidate_reason(0, "no_action")
    assert "control group" in arb.candidate_reason(0, "discount")
