"""Arbitration (DESIGN.md §4): for every user, the action with the largest expected incremental value among
those the stage, the contact policy and the harm guard allow — or `no_action`, worth 0. Pure and
vectorised over users (a 1M-row batch and a single request take the same path), plus a budget mode that
picks at most one action per user under a total cost."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd

from features.contacts import contacts_column, days_since_column, negative_outcomes_column
from features.registry import money_text
from models.catalog import CONTACT_WINDOW_DAYS, NO_ACTION, Action, ContactPolicy, action_label
from models.frame import Columns, numeric_column, object_column
from models.stages import LANGUAGES, stage_label

# Candidate status codes, in order of precedence when several apply.
ELIGIBLE = "eligible"
INELIGIBLE_STAGE = "ineligible_stage"
COOLDOWN = "cooldown"
CONTACT_CAP = "contact_cap"
HARMFUL = "harmful"
CONTROL_GROUP = "control_group"
SUPPRESSED = (
    "suppressed"  # paused for this user after `[policy] negative_outcomes_<outcome>` negative outcomes
)
STATUSES = (ELIGIBLE, INELIGIBLE_STAGE, COOLDOWN, CONTACT_CAP, HARMFUL, CONTROL_GROUP, SUPPRESSED)
# Why a user the policy would have contacted got no contact (`Arbitration.holdout`): the global control
# group (a hash of user and salt, the same in every snapshot), or an exploration draw of no_action.
HOLDOUT_CONTROL = "control_group"
HOLDOUT_EXPLORATION = "exploration"
_STATUS_NAMES = np.array(STATUSES, dtype=object)
# The contact features (features/registry.py, family "contacts") the arbitration reads, and the decision
# cache updates with the contacts logged since the snapshot (serving/cache.py).
LAST_ACTION = "last_action"
DAYS_SINCE_LAST_CONTACT = "days_since_last_contact"
CONTACTS_IN_WINDOW = f"contacts_count_{CONTACT_WINDOW_DAYS}d"


days_since_action_column = days_since_column  # the per-action columns (features.contacts) a decision reads


@dataclass(frozen=True, eq=False)  # arrays: no element-wise __eq__ / __hash__
class ContactState:
    """Each user's contact history, as the contact features and the contact-state table describe it."""

    last_action: np.ndarray  # object, None when never contacted
    days_since_last_contact: np.ndarray  # float, NaN when never contacted
    contacts_30d: np.ndarray  # float: contacts of any action in the last 30 days (the policy's cap)
    # Per action, by name: days since it was last sent (NaN never) and negative outcomes after it. With the
    # first, every action's cooldown is exact (a cooldown on A holds when B was sent later); without it, only
    # the last action's cooldown is seen.
    days_since_action: dict[str, np.ndarray] | None = None
    negative_outcomes: dict[str, np.ndarray] | None = None
    # Per (action, window in days): contacts of that action in the window (an action's own cap).
    contacts_in_window: dict[tuple[str, int], np.ndarray] | None = None

    @classmethod
    def from_frame(
        cls, frame: Columns, n: int | None = None, actions: Sequence[str] = (), windows: Sequence[int] = ()
    ) -> ContactState:
        """From the features `last_action`, `days_since_last_contact` and `contacts_count_30d` (a frame or
        a mapping of columns), and each of `actions`' per-action columns where present (features.contacts:
        `days_since_<action>`, `contacts_<action>_<W>d` for each of `windows`, `negative_outcomes_<action>`);
        an absent column means never contacted. Contacts of any action in 30 days: the larger of
        `contacts_count_30d` and the per-action 30-day counts added up (so the cap holds where the feature
        windows leave 30 days out)."""
        if n is None:
            n = len(frame) if isinstance(frame, pd.DataFrame) else len(next(iter(frame.values()), []))
        since = {a: numeric_column(frame, days_since_column(a), n) for a in actions
                 if days_since_column(a) in frame}  # fmt: skip
        negative = {a: np.nan_to_num(numeric_column(frame, negative_outcomes_column(a), n), nan=0.0) for a in actions
                    if negative_outcomes_column(a) in frame}  # fmt: skip
        counts = {(a, w): np.nan_to_num(numeric_column(frame, contacts_column(a, w), n), nan=0.0)
                  for a in actions for w in {*windows, CONTACT_WINDOW_DAYS} if contacts_column(a, w) in frame}  # fmt: skip
        contacts_30d = np.nan_to_num(numeric_column(frame, CONTACTS_IN_WINDOW, n, default=0.0), nan=0.0)
        per_action_30d = [v for (_, w), v in counts.items() if w == CONTACT_WINDOW_DAYS]
        if per_action_30d:
            contacts_30d = np.maximum(contacts_30d, np.sum(per_action_30d, axis=0))
        return cls(
            last_action=object_column(frame, LAST_ACTION, n),
            days_since_last_contact=numeric_column(frame, DAYS_SINCE_LAST_CONTACT, n),
            contacts_30d=contacts_30d,
            days_since_action=since or None,
            negative_outcomes=negative or None,
            contacts_in_window=counts or None,
        )

    @classmethod
    def never_contacted(cls, n: int) -> ContactState:
        return cls(np.full(n, None, dtype=object), np.full(n, np.nan), np.zeros(n))


@dataclass(frozen=True)
class ExplorationKey:
    """What an exploration draw is a hash of, beside the user: the same (user, snapshot, policy version,
    salt) always draws the same, so the same request gets the same decision and propensity, a replay
    reproduces it, and every worker agrees."""

    snapshot: str  # the feature snapshot's date ("" for a posted vector)
    policy_version: str  # e.g. clm-policy/4
    salt: str  # `policy.exploration_salt`: change it to redraw everyone


def _hashed_uniforms(user_ids: Sequence[Any], parts: Sequence[str]) -> np.ndarray:
    """(n, 2) uniforms in [0, 1) from BLAKE2b of (parts…, user): the same inputs, the same draws, in every
    process."""
    out = np.empty((len(user_ids), 2))
    prefix = "".join(f"{part}\x1f" for part in parts).encode()
    for i, user in enumerate(user_ids):
        digest = hashlib.blake2b(prefix + str(user).encode(), digest_size=16).digest()
        out[i, 0] = int.from_bytes(digest[:8], "big") / 2.0**64
        out[i, 1] = int.from_bytes(digest[8:], "big") / 2.0**64
    return out


def exploration_draws(user_ids: Sequence[Any], key: ExplorationKey) -> np.ndarray:
    """(n, 2) uniforms in [0, 1) from BLAKE2b of (salt, policy version, snapshot, user): the first decides
    whether to explore, the second which option."""
    return _hashed_uniforms(user_ids, (key.salt, key.policy_version, key.snapshot))


def control_group(user_ids: Sequence[Any], share: float, salt: str) -> np.ndarray:
    """(n,) bool: the users held out from all contact — a hash of (salt, user) below `share`, the same draw
    as exploration's but without snapshot or policy version, so a user stays in (or out of) the control
    group across snapshots, policy versions, workers, `clm score` and replays."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"control share must be in [0, 1), got {share}")
    if share == 0.0 or not len(user_ids):
        return np.zeros(len(user_ids), dtype=bool)
    return _hashed_uniforms(user_ids, ("control", salt))[:, 0] < share


def expected_values(
    delta_churn: Any, delta_upgrade: Any, clv: Any, upgrade_value: Any, costs: Any
) -> np.ndarray:
    """(n, A) expected incremental value: −Δchurn · value + Δupgrade · upgrade value − cost. The decision
    passes Δchurn = −Δp(stay or return) and the value if retained (models.value)."""
    churn_value = np.asarray(clv, dtype="float64")[:, None]
    upgrade = np.asarray(upgrade_value, dtype="float64")[:, None]
    return (
        -np.asarray(delta_churn, dtype="float64") * churn_value
        + np.asarray(delta_upgrade, dtype="float64") * upgrade
        - np.asarray(costs, dtype="float64")[None, :]
    )


@dataclass(eq=False)
class Arbitration:
    """The full candidate set of every decision: values, statuses, the choice and its probability."""

    actions: tuple[str, ...]  # catalog order; no_action is index −1
    value: np.ndarray  # (n, A) expected incremental value, also for suppressed actions
    status: np.ndarray  # (n, A) object: one status code per candidate
    chosen: np.ndarray  # (n,) index into actions, −1 = no_action
    greedy: np.ndarray  # (n,) the greedy rule's choice; differs from chosen only when explored
    propensity: np.ndarray  # (n,) probability the policy gave the chosen option
    explored: np.ndarray  # (n,) bool
    eligible: np.ndarray  # (n, A) bool: status == ELIGIBLE (what budget mode may choose)
    # The inputs the reasons quote.
    stage: np.ndarray
    delta_churn: np.ndarray
    delta_upgrade: np.ndarray
    contacts: ContactState
    catalog: tuple[Action, ...]
    policy: ContactPolicy
    # The holdouts: `held_out` (n,) bool, the global control group; `intended` (n,) the policy's choice
    # (greedy or explored; greedy when exploration drew no_action over it) before any holdout; `holdout` (n,) object, why a user the
    # policy meant to contact got nothing: HOLDOUT_CONTROL, HOLDOUT_EXPLORATION or None.
    held_out: np.ndarray = None  # type: ignore[assignment]
    intended: np.ndarray = None  # type: ignore[assignment]
    holdout: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        n = len(self.chosen)
        if self.held_out is None:
            self.held_out = np.zeros(n, dtype=bool)
        if self.intended is None:
            self.intended = self.chosen
        if self.holdout is None:
            self.holdout = holdouts(self.held_out, self.explored, self.chosen, self.greedy)

    def intended_names(self) -> np.ndarray:
        """(n,) the action the policy meant for each user before the control group held them out."""
        return np.array((*self.actions, NO_ACTION), dtype=object)[self.intended]

    def chosen_names(self) -> np.ndarray:
        """(n,) the chosen action's name, `no_action` included."""
        return np.array((*self.actions, NO_ACTION), dtype=object)[self.chosen]

    def chosen_values(self) -> np.ndarray:
        """(n,) the chosen option's expected value (0 for no_action)."""
        rows = np.arange(len(self.chosen))
        return np.where(self.chosen >= 0, self.value[rows, np.maximum(self.chosen, 0)], 0.0)

    def candidate_reason(self, i: int, a: int | str, lang: str = "en", currency: str | None = None) -> str:
        """Why candidate `a` (index, name, −1 or "no_action") was or was not chosen for user `i`, in `lang`
        (stages and actions by their names in that language), values in `currency`."""
        if lang not in LANGUAGES:
            raise ValueError(f"lang must be one of {LANGUAGES}, got {lang!r}")
        index = self._index(a)
        zh = lang == "zh"
        chosen, greedy = int(self.chosen[i]), int(self.greedy[i])
        best = self._option_value(i, greedy)
        if self.held_out[i]:
            if index == -1:
                return (
                    "被选中：该用户属于对照组（不接受任何联系）"
                    if zh
                    else "chosen: the user is in the control group (held out from all contact)"
                )
            if self.status[i, index] == CONTROL_GROUP:
                return "对照组：不联系此用户" if zh else "control group: this user is never contacted"
        if index == chosen:
            if chosen != greedy:
                p = float(self.propensity[i])
                return (
                    f"被选中：探索（随机选择，概率{p:.2f}）"
                    if zh
                    else f"chosen: exploration (random pick, probability {p:.2f})"
                )
            if index == -1:
                return (
                    "被选中：没有任何动作的预期价值为正"
                    if zh
                    else "chosen: no action has a positive expected value"
                )
            return "被选中：预期价值最高" if zh else "chosen: highest expected value"
        if index == greedy:  # the best option, passed over by an exploration draw
            pick = action_label(self.actions[chosen] if chosen >= 0 else NO_ACTION, lang)
            value = money_text(self._option_value(i, index), currency)
            return (
                f"价值最高（{value}），但本次探索随机选择了{pick}"
                if zh
                else f"highest value ({value}) but an exploration draw picked {pick}"
            )
        if index == -1:
            return _lower_value(0.0, best, zh, currency)

        status = self.status[i, index]
        action = self.catalog[index]
        if status == INELIGIBLE_STAGE:
            stage = stage_label(str(self.stage[i]), lang)
            return f"当前阶段（{stage}）不提供此动作" if zh else f"not offered at stage {stage}"
        if status == SUPPRESSED:
            limit = self.policy.suppress_after(action)
            found = (self.contacts.negative_outcomes or {}).get(action.name)
            count = int(found[i]) if found is not None else limit
            if zh:
                return f"已暂停：此动作之后已有{count}次负面结果（达到{limit}次即暂停）"
            noun = "outcome" if count == 1 else "outcomes"
            return f"suppressed: {count} negative {noun} after this action (paused at {limit})"
        if status == COOLDOWN:
            since = (self.contacts.days_since_action or {}).get(action.name)
            days = (
                float(since[i])
                if since is not None and np.isfinite(since[i])
                else float(self.contacts.days_since_last_contact[i])
            )
            cooldown = action.cooldown_days
            if zh:
                return f"冷却期：{days:.0f}天前刚发送过（冷却期{cooldown}天）"
            ago = "day" if f"{days:.0f}" == "1" else "days"
            return f"cooldown: last sent {days:.0f} {ago} ago (cooldown {cooldown})"
        if status == CONTACT_CAP:
            count = int(np.nan_to_num(self.contacts.contacts_30d[i]))
            cap = self.policy.max_contacts_per_30d
            if count < cap and action.max_contacts is not None:  # the action's own cap
                window = int(action.max_contacts_window_days or 0)
                found = (self.contacts.contacts_in_window or {}).get((action.name, window))
                sent = int(found[i]) if found is not None else action.max_contacts
                if zh:
                    return f"动作联系上限：最近{window}天已发送此动作{sent}次（上限{action.max_contacts}次）"
                return (
                    f"action cap: sent {sent} {'time' if sent == 1 else 'times'} in the last {window} days "
                    f"(cap {action.max_contacts})"
                )
            if zh:
                return f"联系上限：最近{CONTACT_WINDOW_DAYS}天已联系{count}次（上限{cap}次）"
            noun = "contact" if count == 1 else "contacts"
            return f"contact cap: {count} {noun} in the last {CONTACT_WINDOW_DAYS} days (cap {cap})"
        if status == HARMFUL:
            churn_points = 100.0 * float(self.delta_churn[i, index])
            if churn_points > 100.0 * self.policy.harm_tolerance:
                return (
                    f"预计会使流失风险上升{churn_points:.1f}个百分点"
                    if zh
                    else f"estimated to raise churn risk by {churn_points:.1f} points"
                )
            upgrade_points = -100.0 * float(self.delta_upgrade[i, index])
            return (
                f"预计会使升级概率下降{upgrade_points:.1f}个百分点"
                if zh
                else f"estimated to lower the upgrade chance by {upgrade_points:.1f} points"
            )
        value = float(self.value[i, index])
        if not value > 0:
            shown = money_text(value, currency)
            return f"价值不为正（{shown}）" if zh else f"value not positive ({shown})"
        return _lower_value(value, best, zh, currency)

    def _index(self, a: int | str) -> int:
        if isinstance(a, str):
            return -1 if a == NO_ACTION else self.actions.index(a)
        index = int(a)
        if not -1 <= index < len(self.actions):
            raise IndexError(f"candidate index {index} outside −1..{len(self.actions) - 1}")
        return index

    def _option_value(self, i: int, index: int) -> float:
        return 0.0 if index == -1 else float(self.value[i, index])


def _lower_value(value: float, best: float, zh: bool, currency: str | None) -> str:
    value_text, best_text = money_text(value, currency), money_text(best, currency)
    return (
        f"价值较低（{value_text} 对比 {best_text}）" if zh else f"lower value ({value_text} vs {best_text})"
    )


def _per_user(values: Any, n: int, name: str) -> np.ndarray:
    array = np.asarray(values, dtype="float64")
    if array.shape != (n,):
        raise ValueError(f"{name} has shape {array.shape}, expected ({n},)")
    return array


def _codes(values: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """Index of each value in `names`, −1 when absent (a dict lookup per row beats object-array equality
    and a pandas indexer at every size, from one request to a 1M batch)."""
    lookup = {name: k for k, name in enumerate(names)}
    return np.fromiter(map(lookup.get, values.tolist(), repeat(-1)), dtype="int64", count=len(values))


def arbitrate(
    stage: Any,
    delta_churn: Any,
    delta_upgrade: Any,
    clv: Any,
    upgrade_value: Any,
    contacts: ContactState,
    catalog: Sequence[Action],
    policy: ContactPolicy,
    rng: np.random.Generator | None = None,
    draws: np.ndarray | None = None,
    held_out: np.ndarray | None = None,
) -> Arbitration:
    """Choose one action (or no_action) per user. `delta_churn` / `delta_upgrade` are (n, A) — or (A,) to
    use the same effect for everyone, e.g. the catalog's priors — in catalog order.

    Without `draws` or `rng` (or with exploration_share 0) the choice is greedy and its propensity 1;
    otherwise each decision is, with probability ε, a uniform draw among the eligible actions and
    no_action, and the propensity recorded is (1 − ε)·[choice is greedy] + ε / K, K = eligible actions + 1.
    `draws` ((n, 2) uniforms, e.g. `exploration_draws`) make that deterministic per user; `rng` draws them.

    `held_out` ((n,) bool, e.g. `control_group`) marks the global control group: those users get no_action
    whatever the policy meant (`intended`), every action they could have had has status `control_group`,
    and the propensities cover the holdout: c·[no_action] + (1 − c)·p, c = `policy.control_share`."""
    catalog = tuple(catalog)
    if not catalog:
        raise ValueError("arbitration needs at least one action in the catalog")
    stage = np.asarray(stage, dtype=object).ravel()
    n, n_actions = len(stage), len(catalog)
    delta_churn = np.broadcast_to(np.asarray(delta_churn, dtype="float64"), (n, n_actions))
    delta_upgrade = np.broadcast_to(np.asarray(delta_upgrade, dtype="float64"), (n, n_actions))
    clv = _per_user(clv, n, "clv")
    upgrade_value = _per_user(upgrade_value, n, "upgrade_value")
    for name in ("last_action", "days_since_last_contact", "contacts_30d"):
        if len(getattr(contacts, name)) != n:
            raise ValueError(f"contacts.{name} has {len(getattr(contacts, name))} rows, expected {n}")

    costs = np.array([action.cost for action in catalog], dtype="float64")
    cooldowns = np.array([action.cooldown_days for action in catalog], dtype="float64")
    targets_upgrade = np.array([action.outcome == "upgrade" for action in catalog])
    value = expected_values(delta_churn, delta_upgrade, clv, upgrade_value, costs)

    stages = sorted({s for action in catalog for s in action.stages})
    offered = np.array([[s in action.stages for action in catalog] for s in stages] + [[False] * n_actions])
    stage_ok = offered[_codes(stage, stages)]  # code −1 picks the all-False last row
    last = _codes(np.asarray(contacts.last_action, dtype=object), [action.name for action in catalog])
    cooldown = (last[:, None] == np.arange(n_actions)[None, :]) & (
        np.asarray(contacts.days_since_last_contact, dtype="float64")[:, None] < cooldowns[None, :]
    )
    for a, action in enumerate(catalog):  # exact per-action history, where known
        since = (contacts.days_since_action or {}).get(action.name)
        if since is not None:
            cooldown[:, a] |= np.asarray(since, dtype="float64") < cooldowns[a]  # NaN (never) compares False
    suppressed = np.zeros((n, n_actions), dtype=bool)
    for a, action in enumerate(catalog):  # the suppression rule: paused after N negative outcomes of it
        limit = policy.suppress_after(action)
        negative = (contacts.negative_outcomes or {}).get(action.name)
        if limit > 0 and negative is not None:
            suppressed[:, a] = np.asarray(negative, dtype="float64") >= limit
    capped = (
        np.nan_to_num(np.asarray(contacts.contacts_30d, dtype="float64"), nan=0.0)
        >= policy.max_contacts_per_30d
    )
    own_cap = np.zeros((n, n_actions), dtype=bool)
    for a, action in enumerate(catalog):  # each action's own cap over its window
        if action.max_contacts is None:
            continue
        sent = (contacts.contacts_in_window or {}).get(
            (action.name, int(action.max_contacts_window_days or 0))
        )
        if sent is not None:
            own_cap[:, a] = np.asarray(sent, dtype="float64") >= action.max_contacts
    harmful = (delta_churn > policy.harm_tolerance) | (
        targets_upgrade[None, :] & (delta_upgrade < -policy.harm_tolerance)
    )

    # The last assignment wins, so write the statuses from the lowest precedence up.
    code = np.where(harmful, STATUSES.index(HARMFUL), 0).astype("int8")
    code[suppressed] = STATUSES.index(SUPPRESSED)
    code[own_cap] = STATUSES.index(CONTACT_CAP)
    code[capped, :] = STATUSES.index(CONTACT_CAP)
    code[cooldown] = STATUSES.index(COOLDOWN)
    code[~stage_ok] = STATUSES.index(INELIGIBLE_STAGE)
    eligible = code == 0

    candidate = np.where(eligible & ~np.isnan(value), value, -np.inf)
    best = np.argmax(candidate, axis=1)  # the first maximum: ties go to the earlier action
    best_value = np.take_along_axis(candidate, best[:, None], axis=1)[:, 0]
    greedy = np.where(best_value > 0, best, -1)

    chosen = greedy.copy()
    explored = np.zeros(n, dtype=bool)
    propensity = np.ones(n)
    share = policy.exploration_share
    if draws is None and rng is not None:
        draws = np.column_stack([rng.random(n), rng.random(n)])
    if draws is not None and share > 0:
        draws = np.asarray(draws, dtype="float64")
        if draws.shape != (n, 2):
            raise ValueError(f"draws has shape {draws.shape}, expected ({n}, 2)")
        options = eligible.sum(axis=1) + 1  # eligible actions plus no_action
        explored = draws[:, 0] < share
        draw = np.floor(draws[:, 1] * options).astype("int64")  # 0..K−1, K−1 meaning no_action
        rows = np.flatnonzero(explored)
        picks = draw[rows]
        nth_eligible = np.argmax(np.cumsum(eligible[rows], axis=1) > picks[:, None], axis=1)
        chosen[rows] = np.where(picks == options[rows] - 1, -1, nth_eligible)
        propensity = (1.0 - share) * (chosen == greedy) + share / options

    # an exploration draw of no_action over a positive greedy choice holds the user out of that choice
    intended = np.where(explored & (chosen < 0) & (greedy >= 0), greedy, chosen)
    if held_out is None:
        held_out = np.zeros(n, dtype=bool)
    else:
        held_out = np.asarray(held_out, dtype=bool)
        if held_out.shape != (n,):
            raise ValueError(f"held_out has shape {held_out.shape}, expected ({n},)")
        control = policy.control_share
        p_none = (greedy < 0).astype(float)  # P(no_action) before the holdout
        if draws is not None and share > 0:
            p_none = (1.0 - share) * p_none + share / (eligible.sum(axis=1) + 1)
        propensity = np.where(held_out, control + (1.0 - control) * p_none, (1.0 - control) * propensity)
        chosen = np.where(held_out, -1, chosen)
        code[held_out[:, None] & eligible] = STATUSES.index(CONTROL_GROUP)
        eligible = eligible & ~held_out[:, None]

    return Arbitration(
        actions=tuple(action.name for action in catalog),
        value=value,
        status=_STATUS_NAMES[code],
        chosen=chosen,
        greedy=greedy,
        propensity=propensity,
        explored=explored,
        eligible=eligible,
        stage=stage,
        delta_churn=delta_churn,
        delta_upgrade=delta_upgrade,
        contacts=contacts,
        catalog=catalog,
        policy=policy,
        held_out=held_out,
        intended=intended,
    )


def holdouts(
    held_out: np.ndarray, explored: np.ndarray, chosen: np.ndarray, greedy: np.ndarray
) -> np.ndarray:
    """(n,) why each user got no contact although the policy would have contacted them: the control group,
    an exploration draw of no_action over a positive greedy choice, or None."""
    out = np.full(len(chosen), None, dtype=object)
    out[explored & (chosen < 0) & (greedy >= 0)] = HOLDOUT_EXPLORATION
    out[held_out] = HOLDOUT_CONTROL
    return out


# --------------------------------------------------------------------------------------------------------
# Budget mode: at most one action per user, total cost within a budget (a multiple-choice knapsack).


@dataclass(eq=False)
class BudgetPlan:
    chosen: np.ndarray  # (n,) index into the actions, −1 = no contact
    total_value: float
    total_cost: float
    contacts: int
    unconstrained_value: float
    unconstrained_cost: float
    unconstrained_contacts: int
    method: str
    price: float | None  # the Lagrange multiplier on cost, when the method uses one


BUDGET_METHODS = ("lagrangian", "greedy")
_PRICE_ITERATIONS = 60
_PRICE_TOLERANCE = 1e-9  # relative; the greedy fill spends what the last step of bisection leaves


def _budget_inputs(value: Any, allowed: Any, costs: Any, budget: float) -> tuple[np.ndarray, np.ndarray]:
    """Values with every option that may not be chosen (not allowed, not positive, unknown) set to −inf."""
    value = np.asarray(value, dtype="float64")
    allowed = np.asarray(allowed, dtype=bool)
    costs = np.asarray(costs, dtype="float64")
    if value.ndim != 2 or allowed.shape != value.shape or costs.shape != (value.shape[1],):
        raise ValueError(
            f"value {value.shape}, allowed {allowed.shape} and costs {costs.shape} must be (n, A), (n, A), (A,)"
        )
    if np.any(~np.isfinite(costs)) or np.any(costs < 0):
        raise ValueError(f"costs must be finite and ≥ 0, got {costs}")
    if not np.isfinite(budget) or budget < 0:
        raise ValueError(f"budget must be a finite amount ≥ 0, got {budget}")
    usable = allowed & (value > 0)  # NaN > 0 is False
    return np.where(usable, value, -np.inf), costs


def _best(candidate: np.ndarray) -> np.ndarray:
    """Each user's best option, −1 when none is positive (ties to the earlier action)."""
    if candidate.shape[1] == 0:
        return np.full(candidate.shape[0], -1, dtype="int64")
    best = np.argmax(candidate, axis=1)
    return np.where(np.take_along_axis(candidate, best[:, None], axis=1)[:, 0] > 0, best, -1)


def _totals(candidate: np.ndarray, costs: np.ndarray, chosen: np.ndarray) -> tuple[float, float, int]:
    taken = np.flatnonzero(chosen >= 0)
    return (
        float(candidate[taken, chosen[taken]].sum()),
        float(costs[chosen[taken]].sum()),
        int(taken.size),
    )


def _take_in_order(extra_cost: np.ndarray, budget: float) -> np.ndarray:
    """Walk items in the given order and take each one that still fits (skipping the rest). Vectorised:
    take the longest prefix that fits, drop every item dearer than what is left (it can never fit again),
    repeat; each round drops at least one distinct cost, so this ends after a handful of rounds."""
    taken = np.zeros(extra_cost.size, dtype=bool)
    remaining = float(budget)
    open_items = np.arange(extra_cost.size)
    slack = 1e-9 * max(1.0, abs(budget))
    while open_items.size:
        open_items = open_items[extra_cost[open_items] <= remaining + slack]
        if not open_items.size:
            break
        spent = np.cumsum(extra_cost[open_items])
        fits = int(np.searchsorted(spent, remaining + slack, side="right"))
        taken[open_items[:fits]] = True
        if fits:
            remaining -= float(spent[fits - 1])
        open_items = open_items[fits + 1 :]  # the item at `fits` did not fit and never will
    return taken


def _greedy_plan(candidate: np.ndarray, costs: np.ndarray, budget: float, best: np.ndarray) -> np.ndarray:
    users = np.flatnonzero(best >= 0)
    user_cost = costs[best[users]]
    user_value = candidate[users, best[users]]
    with np.errstate(divide="ignore"):
        ratio = np.where(user_cost > 0, user_value / np.where(user_cost > 0, user_cost, 1.0), np.inf)
    order = np.argsort(-ratio, kind="stable")
    taken = _take_in_order(user_cost[order], budget)
    chosen = np.full(candidate.shape[0], -1, dtype="int64")
    chosen[users[order[taken]]] = best[users[order[taken]]]
    return chosen


def _priced_choice(candidate: np.ndarray, costs: np.ndarray, price: float) -> np.ndarray:
    return _best(candidate - price * costs[None, :])


def _lagrangian_plan(candidate: np.ndarray, costs: np.ndarray, budget: float) -> tuple[np.ndarray, float]:
    def spend(chosen: np.ndarray) -> float:
        return float(costs[chosen[chosen >= 0]].sum())

    users = np.flatnonzero(np.isfinite(candidate).any(axis=1))  # only users with an option take part
    options = candidate[users]
    priced = costs > 0
    finite = np.isfinite(options[:, priced])
    # Above the highest value per unit of cost no priced option is worth taking: that price always fits.
    ratios = options[:, priced][finite] / np.broadcast_to(costs[priced], finite.shape)[finite]
    high = float(ratios.max()) * (1.0 + 1e-9) + 1e-12 if ratios.size else 0.0
    low = 0.0
    picked = _priced_choice(options, costs, high)
    for _ in range(_PRICE_ITERATIONS):
        if high - low <= _PRICE_TOLERANCE * high:
            break
        middle = 0.5 * (low + high)
        trial = _priced_choice(options, costs, middle)
        if spend(trial) <= budget:
            high, picked = middle, trial
        else:
            low = middle
    chosen = np.full(candidate.shape[0], -1, dtype="int64")
    chosen[users] = _fill(options, costs, budget, picked)
    return chosen, high


def _fill(candidate: np.ndarray, costs: np.ndarray, budget: float, chosen: np.ndarray) -> np.ndarray:
    """Spend what the priced plan left: per round, each user's best move to a costlier, more valuable option
    (or a first contact), by value gained per extra cost, taken while it fits."""
    chosen = chosen.copy()
    n_actions = candidate.shape[1]
    for _ in range(n_actions):
        remaining = budget - float(costs[chosen[chosen >= 0]].sum())
        if remaining <= 0:
            break
        rows = np.arange(candidate.shape[0])
        current_value = np.where(chosen >= 0, candidate[rows, np.maximum(chosen, 0)], 0.0)
        current_cost = np.where(chosen >= 0, costs[np.maximum(chosen, 0)], 0.0)
        gain = candidate - current_value[:, None]
        extra = costs[None, :] - current_cost[:, None]
        movable = np.isfinite(candidate) & (gain > 0) & (extra > 0) & (extra <= remaining)
        with np.errstate(divide="ignore", invalid="ignore"):
            efficiency = np.where(movable, gain / np.where(extra > 0, extra, 1.0), -np.inf)
        move = np.argmax(efficiency, axis=1)
        users = np.flatnonzero(np.take_along_axis(efficiency, move[:, None], axis=1)[:, 0] > -np.inf)
        if not users.size:
            break
        order = users[np.argsort(-efficiency[users, move[users]], kind="stable")]
        taken = _take_in_order(extra[order, move[order]], remaining)
        if not taken.any():
            break
        chosen[order[taken]] = move[order[taken]]
    return chosen


def plan_within_budget(
    value: Any, allowed: Any, costs: Any, budget: float, method: str = "lagrangian"
) -> BudgetPlan:
    """At most one allowed, positive-value action per user maximising total value with total cost ≤ budget.

    "greedy": each user's best action, users by value per cost (free actions first), taken while they fit.
    "lagrangian": the smallest price λ ≥ 0 on cost (by bisection) at which every user's best
    value − λ·cost fits the budget, then the leftover spent greedily on the best upgrades per extra cost."""
    if method not in BUDGET_METHODS:
        raise ValueError(f"budget method must be one of {BUDGET_METHODS}, got {method!r}")
    candidate, costs = _budget_inputs(value, allowed, costs, budget)
    best = _best(candidate)
    free_value, free_cost, free_contacts = _totals(candidate, costs, best)
    price: float | None = None
    if free_cost <= budget:
        chosen = best
        price = 0.0 if method == "lagrangian" else None
    elif method == "greedy":
        chosen = _greedy_plan(candidate, costs, budget, best)
    else:
        chosen, price = _lagrangian_plan(candidate, costs, budget)
    total_value, total_cost, contacts = _totals(candidate, costs, chosen)
    return BudgetPlan(
        chosen, total_value, total_cost, contacts, free_value, free_cost, free_contacts, method, price
    )


MAX_EXACT_CELLS = 20_000_000


def exact_budget_plan(
    value: Any, allowed: Any, costs: Any, budget: float, resolution: float = 0.01
) -> BudgetPlan:
    """The optimal plan by dynamic programming over cost in `resolution` units (a multiple-choice knapsack);
    costs must be multiples of the resolution. For small instances only (tests, checks of the heuristics)."""
    candidate, costs = _budget_inputs(value, allowed, costs, budget)
    if resolution <= 0:
        raise ValueError(f"resolution must be positive, got {resolution}")
    n, n_actions = candidate.shape
    units = np.rint(costs / resolution).astype("int64")
    if np.any(np.abs(units * resolution - costs) > 1e-9 * np.maximum(1.0, costs)):
        raise ValueError(f"costs {costs} are not multiples of the resolution {resolution}")
    capacity = int(np.floor(budget / resolution + 1e-9))
    if n * (capacity + 1) > MAX_EXACT_CELLS:
        raise ValueError(
            f"exact plan too large: {n} users × {capacity + 1} budget steps > {MAX_EXACT_CELLS}; "
            "use plan_within_budget or a coarser resolution"
        )
    best = _best(candidate)
    free_value, free_cost, free_contacts = _totals(candidate, costs, best)

    total = np.zeros(capacity + 1)  # best value with spend ≤ b, over the users seen so far
    choice = np.full((n, capacity + 1), -1, dtype="int16")
    for i in range(n):
        updated = total.copy()
        for a in range(n_actions):
            if not np.isfinite(candidate[i, a]) or units[a] > capacity:
                continue
            c = units[a]
            option = total[: capacity + 1 - c] + candidate[i, a]
            better = option > updated[c:]
            updated[c:][better] = option[better]
            choice[i, c:][better] = a
        total = updated
    chosen = np.full(n, -1, dtype="int64")
    spend = capacity
    for i in range(n - 1, -1, -1):
        a = int(choice[i, spend])
        if a >= 0:
            chosen[i] = a
            spend -= int(units[a])
    total_value, total_cost, contacts = _totals(candidate, costs, chosen)
    return BudgetPlan(
        chosen, total_value, total_cost, contacts, free_value, free_cost, free_contacts, "exact", None
    )
