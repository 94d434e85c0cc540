"""The day-by-day simulation: every user moves through the latent chain, acts, buys, complains, changes
plan and receives historical campaigns. Vectorised over users; the only Python loop is over days."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from simulation.params import (
    ACTIONS,
    ALIVE_STAGES,
    CHANNELS,
    CHURNED,
    COUNTRIES,
    DECLINING,
    EVENT_TYPES,
    NO_ACTION,
    ONBOARDING,
    PLAN_PRICES,
    PLANS,
    REACTIVATED,
    STAGES,
    SimulationParams,
)
from simulation.truth import (
    Economy,
    Laws,
    MarginParams,
    adjusted_transition_probabilities,
    expected_margins,
    horizon_probabilities,
)
from simulation.world import (
    TRANSITIONS,
    action_log_effects,
    activity_base,
    base_transition_probabilities,
    base_upgrade_probability,
    draw_population,
    purchase_median,
    purchase_probability,
)

SECONDS_PER_DAY = 86_400
_EVENT = {name: i for i, name in enumerate(EVENT_TYPES)}
_ALIVE = np.zeros(len(STAGES), dtype=bool)
_ALIVE[list(ALIVE_STAGES)] = True
_EXITS = {s: [k for k, t in enumerate(TRANSITIONS) if t[0] == s] for s in range(len(STAGES))}
_TARGETS = np.array([t[1] for t in TRANSITIONS], dtype=np.int8)

ProgressCallback = Callable[[int, int], None]
EffectsSink = Callable[[pa.Table], None]
# Users per block of the margin truth: bounds its memory (about 2 KB per user) at any world size.
MARGIN_BLOCK_USERS = 20_000


@dataclass
class SimulatedWorld:
    """What one run produced: the canonical inputs plus the ground truth (all Arrow tables)."""

    events: pa.Table
    users: pa.Table
    subscriptions: pa.Table
    campaigns: pa.Table
    outcomes: pa.Table
    stages: pa.Table
    traits: pa.Table
    manifest: dict = field(default_factory=dict)


class _Chunks:
    """Append-only columnar buffers, concatenated once at the end."""

    def __init__(self, *names: str) -> None:
        self.names = names
        self.parts: dict[str, list[np.ndarray]] = {name: [] for name in names}

    def add(self, **columns: np.ndarray) -> None:
        for name in self.names:
            self.parts[name].append(columns[name])

    def concat(self, name: str, dtype: np.dtype) -> np.ndarray:
        """All parts of one column as one array; the parts are released (peak memory at 1M users)."""
        parts = self.parts.pop(name, [])
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.empty(0, dtype=dtype)


def default_truth_cutoffs(start: dt.date, days: int, warmup_days: int = 60) -> list[dt.date]:
    """The first day of each month after the first `warmup_days`, within the simulated period."""
    end = start + dt.timedelta(days=days)
    first = start + dt.timedelta(days=warmup_days)
    month = dt.date(first.year, first.month, 1)
    if month < first:
        month = dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)
    cutoffs = []
    while month < end:
        cutoffs.append(month)
        month = dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return cutoffs


def _campaign_days(start: dt.date, days: int, params: SimulationParams) -> set[int]:
    """Waves go out on the first day of each month once the product has had a month of users."""
    waves = set()
    for day in range(params.new_user_days, days):
        if (start + dt.timedelta(days=day)).day == 1:
            waves.add(day)
    return waves


def user_ids(n_users: int) -> pa.Array:
    """Stable string ids: u000000, u000001, …"""
    width = max(6, len(str(max(n_users - 1, 0))))
    digits = pc.utf8_lpad(pa.array(np.arange(n_users)).cast(pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise("u", digits, "")


def simulate_world(
    n_users: int,
    days: int,
    seed: int,
    start: dt.date,
    truth_cutoffs: Sequence[dt.date] | None = None,
    horizon_days: int = 30,
    params: SimulationParams | None = None,
    on_effects: EffectsSink | None = None,
    progress: ProgressCallback | None = None,
    on_margins: EffectsSink | None = None,
    value_truth: MarginParams | None = None,
) -> SimulatedWorld:
    """Simulate `n_users` over `days` days from `start`; deterministic for a given `seed`.

    `on_effects` receives, for each truth cutoff, a table of the true effect of every action for every
    user known then (it can be large, so it is streamed rather than kept); `on_margins` the true expected
    discounted margin over the value horizon (`value_truth`) without a contact and each action's
    increment on it (`margin_table`).
    """
    params = params or SimulationParams()
    if n_users < 1 or days < 1:
        raise ValueError("need at least one user and one day")
    rng = np.random.default_rng(seed)
    cutoffs = default_truth_cutoffs(start, days) if truth_cutoffs is None else sorted(set(truth_cutoffs))
    cutoff_days = {(c - start).days: c for c in cutoffs}
    outside = [c for c in cutoffs if not 0 < (c - start).days < days]
    if outside:
        raise ValueError(
            f"truth cutoffs outside the simulated period {start}..{start + dt.timedelta(days)}: {outside}"
        )
    wave_days = _campaign_days(start, days, params)
    last = (value_truth or MarginParams()).last_cutoffs
    margin_cutoffs = set(cutoffs[-last:] if last else cutoffs)

    pop = draw_population(n_users, days, rng, params)
    n = n_users
    ids = user_ids(n)
    base_probabilities = base_transition_probabilities(pop, params)
    stage = np.full(n, -1, dtype=np.int8)  # -1: not signed up yet
    stage_since = np.zeros(n, dtype=np.int32)
    plan = pop.signup_plan.copy()
    last_active = np.full(n, -1, dtype=np.int32)
    effect_churn = np.zeros((n, len(STAGES)), dtype=np.float64)
    effect_upgrade = np.zeros(n)
    effect_return = np.zeros(n)
    effect_until = np.zeros(n, dtype=np.int32)
    probabilities = base_probabilities.copy()
    upgrade = base_upgrade_probability(pop, plan, params)
    signup_seconds = np.zeros(n, dtype=np.int64)

    events = _Chunks("user", "ts", "type", "amount")
    transitions = _Chunks("user", "day", "stage")
    plan_log = _Chunks("user", "ts", "plan")
    campaign_log = _Chunks("user", "day", "action", "propensity")
    upgrades_log = _Chunks("user", "day")
    snapshots: list[tuple[dt.date, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    weekday0 = start.weekday()
    by_signup = np.argsort(pop.signup_day, kind="stable")
    signup_bounds = np.searchsorted(pop.signup_day[by_signup], np.arange(days + 1))

    def refresh(users: np.ndarray) -> None:
        probabilities[users] = adjusted_transition_probabilities(
            base_probabilities[users], effect_churn[users], effect_return[users]
        )
        upgrade[users] = (
            base_upgrade_probability(pop.take(users), plan[users], params)
            * np.exp(effect_upgrade[users])[:, None]
        )

    for day in range(days):
        day_start = day * SECONDS_PER_DAY
        # 1. contact effects that ran out
        expired = np.flatnonzero((effect_until == day) & (effect_until > 0))
        if len(expired):
            effect_churn[expired] = 0.0
            effect_upgrade[expired] = 0.0
            effect_return[expired] = 0.0
            refresh(expired)

        # 2. ground truth at a cutoff: state at the start of the day, before any contact that day
        if day in cutoff_days:
            known = np.flatnonzero((stage >= 0) & (pop.signup_day < day))
            cutoff = cutoff_days[day]
            truth = _truth_at_cutoff(
                known, stage, plan, pop, base_probabilities, effect_churn, effect_upgrade, effect_return,
                effect_until, day, horizon_days, params,
            )  # fmt: skip
            snapshots.append((cutoff, day, known, stage[known].copy(), *truth[:2]))
            if on_effects is not None:
                on_effects(_effects_table(ids, known, cutoff, truth[3]))
            if on_margins is not None and cutoff in margin_cutoffs:
                baseline, incremental = _margins_at_cutoff(
                    known, stage, stage_since, plan, pop, base_probabilities, effect_churn, effect_upgrade,
                    effect_return, effect_until, day, (weekday0 + day) % 7, params, value_truth or MarginParams(),
                )  # fmt: skip
                on_margins(margin_table(ids, known, cutoff, baseline, incremental))

        # 3. a campaign wave: eligible users by observable rules, 20 % contacted at random
        if day in wave_days:
            treated_users, treated_actions = _campaign_wave(
                day, stage, pop, plan, last_active, rng, params, campaign_log
            )
            if len(treated_users):
                effect_until[treated_users] = day + params.effect_days
                for a, action in enumerate(ACTIONS):
                    members = treated_users[treated_actions == a]
                    if len(members) == 0:
                        continue
                    churn_fx, upgrade_fx, return_fx = action_log_effects(action, pop.take(members), params)
                    effect_churn[members] = churn_fx
                    effect_upgrade[members] = upgrade_fx
                    effect_return[members] = return_fx
                refresh(treated_users)

        # 4. latent stage transitions (users who signed up before today)
        new_stage = stage.copy()
        for s in range(len(STAGES)):
            members = np.flatnonzero(stage == s)
            if len(members) == 0:
                continue
            exits = _EXITS[s]
            cumulative = np.cumsum(probabilities[members][:, exits], axis=1)
            draw = rng.random(len(members))
            choice = (draw[:, None] >= cumulative).sum(axis=1)
            moved = choice < len(exits)
            new_stage[members[moved]] = _TARGETS[np.asarray(exits)[choice[moved]]]
        changed = np.flatnonzero(new_stage != stage)
        churned_today = changed[new_stage[changed] == CHURNED]
        returned_today = changed[new_stage[changed] == REACTIVATED]
        stage = new_stage
        stage_since[changed] = day
        if len(changed):
            transitions.add(user=changed, day=np.full(len(changed), day), stage=stage[changed])
        paid_churn = churned_today[plan[churned_today] > 0]
        if len(paid_churn):
            ts = day_start + rng.integers(8 * 3600, 20 * 3600, len(paid_churn))
            events.add(user=paid_churn, ts=ts, type=np.full(len(paid_churn), _EVENT["cancel"]),
                       amount=np.full(len(paid_churn), np.nan))  # fmt: skip
            plan_log.add(user=paid_churn, ts=ts, plan=np.full(len(paid_churn), -1))
        if len(returned_today):
            ts = day_start + rng.integers(6 * 3600, 22 * 3600, len(returned_today))
            plan_log.add(user=returned_today, ts=ts, plan=plan[returned_today].astype(np.int64))

        # 5. today's signups start onboarding
        joining = by_signup[signup_bounds[day] : signup_bounds[day + 1]]
        stage[joining] = ONBOARDING
        stage_since[joining] = day
        signup_seconds[joining] = day_start + rng.integers(6 * 3600, 22 * 3600, len(joining))
        transitions.add(user=joining, day=np.full(len(joining), day), stage=stage[joining])
        plan_log.add(user=joining, ts=signup_seconds[joining], plan=plan[joining].astype(np.int64))

        # 6. plan changes
        alive = np.flatnonzero((stage >= 0) & _ALIVE[np.maximum(stage, 0)])
        alive_before = alive[pop.signup_day[alive] < day]
        up = alive_before[rng.random(len(alive_before)) < upgrade[alive_before, stage[alive_before]]]
        declining_paid = alive_before[(stage[alive_before] == DECLINING) & (plan[alive_before] > 0)]
        down = declining_paid[
            rng.random(len(declining_paid))
            < params.downgrade_declining * pop.price_sensitivity[declining_paid]
        ]
        down = np.setdiff1d(down, up, assume_unique=True)
        for users, kind, step in ((up, "upgrade", 1), (down, "downgrade", -1)):
            if len(users) == 0:
                continue
            plan[users] += step
            ts = day_start + rng.integers(8 * 3600, 20 * 3600, len(users))
            events.add(
                user=users, ts=ts, type=np.full(len(users), _EVENT[kind]), amount=np.full(len(users), np.nan)
            )
            plan_log.add(user=users, ts=ts, plan=plan[users].astype(np.int64))
            refresh(users)
        if len(up):
            upgrades_log.add(user=up, day=np.full(len(up), day))

        # 7. activity of alive users
        weekend = (weekday0 + day) % 7 >= 5
        st = stage[alive]
        active_p = activity_base(pop.engagement[alive], st, params)
        decay = np.where(
            st == DECLINING, np.exp(-(day - stage_since[alive]) / params.decline_decay_days), 1.0
        )
        active_p = np.minimum(active_p * decay * (params.weekend_factor if weekend else 1.0), 0.95)
        forced = (pop.signup_day[alive] == day) | np.isin(alive, returned_today)
        is_active = forced | (rng.random(len(alive)) < active_p)
        active = alive[is_active]
        last_active[active] = day
        _emit_activity(active, day_start, stage, plan, pop, signup_seconds, day, rng, params, events)
        ticket_p = params.ticket_base * (1 + params.ticket_frustration * pop.frustration[alive])
        ticket_p = ticket_p * np.where(stage[alive] == DECLINING, params.ticket_declining, 1.0)
        tickets = alive[rng.random(len(alive)) < ticket_p]
        if len(tickets):
            # a new user can only complain after signing up
            ticket_ts = np.maximum(
                day_start + rng.integers(0, SECONDS_PER_DAY, len(tickets)), signup_seconds[tickets] + 60
            )
            events.add(user=tickets, ts=ticket_ts,
                       type=np.full(len(tickets), _EVENT["support_ticket"]),
                       amount=np.full(len(tickets), np.nan))  # fmt: skip
            last_active[tickets] = day
        if progress is not None:
            progress(day + 1, days)

    return _assemble(
        ids, pop, start, days, horizon_days, seed, params, signup_seconds, events, transitions, plan_log,
        campaign_log, upgrades_log, snapshots, stage,
    )  # fmt: skip


def _emit_activity(active, day_start, stage, plan, pop, signup_seconds, day, rng, params, events) -> None:
    """A login for every active user, then feature uses and purchases within the hour after it."""
    if len(active) == 0:
        return
    first = np.where(
        pop.signup_day[active] == day,
        signup_seconds[active],
        day_start + rng.integers(6 * 3600, 22 * 3600, len(active)),
    )
    events.add(
        user=active, ts=first, type=np.full(len(active), _EVENT["login"]), amount=np.full(len(active), np.nan)
    )
    uses = rng.poisson(params.feature_use_base + params.feature_use_skill * pop.skill[active])
    users = np.repeat(active, uses)
    if len(users):
        ts = np.repeat(first, uses) + rng.integers(1, 3600, len(users))
        events.add(
            user=users,
            ts=ts,
            type=np.full(len(users), _EVENT["feature_use"]),
            amount=np.full(len(users), np.nan),
        )
    buy_p = purchase_probability(pop.price_sensitivity[active], plan[active], params)
    buyers_mask = rng.random(len(active)) < buy_p
    buyers = active[buyers_mask]
    if len(buyers):
        median = purchase_median(pop.price_sensitivity[buyers], plan[buyers], params)
        amount = np.round(rng.lognormal(np.log(median), params.amount_sd), 2)
        ts = first[buyers_mask] + rng.integers(1, 3600, len(buyers))
        events.add(user=buyers, ts=ts, type=np.full(len(buyers), _EVENT["purchase"]), amount=amount)


def _campaign_wave(
    day, stage, pop, plan, last_active, rng, params, campaign_log
) -> tuple[np.ndarray, np.ndarray]:
    """Historical targeting by observable rules (tenure, recency, plan); contacts are random among the
    eligible with a logged propensity, everyone else eligible is a logged `no_action` holdout.
    Returns the contacted users and the index of the action each received."""
    known = np.flatnonzero((stage >= 0) & (pop.signup_day < day))
    tenure = day - pop.signup_day[known]
    recency = day - last_active[known]
    eligible = np.zeros((len(known), len(ACTIONS)), dtype=bool)
    a = {name: i for i, name in enumerate(ACTIONS)}
    new = tenure < params.new_user_days
    active = ~new & (recency <= params.active_recency_days)
    loyal = active & (tenure >= params.loyal_tenure_days)
    lapsing = ~new & (recency > params.active_recency_days) & (recency <= params.lapsing_recency_days)
    lapsed = ~new & (recency > params.lapsing_recency_days) & (recency <= params.winback_max_recency_days)
    for name in ("onboarding_guide", "welcome_offer"):
        eligible[:, a[name]] = new
    for name in ("recommendation", "education_content"):
        eligible[:, a[name]] = active
    eligible[:, a["upgrade_offer"]] = active & (plan[known] < len(PLANS) - 1)
    for name in ("loyalty_reward", "referral_invite"):
        eligible[:, a[name]] = loyal
    for name in ("retention_discount", "satisfaction_survey"):
        eligible[:, a[name]] = lapsing
    eligible[:, a["winback_offer"]] = lapsed
    count = eligible.sum(axis=1)
    keep = count > 0
    known, eligible, count = known[keep], eligible[keep], count[keep]
    treated = rng.random(len(known)) < params.campaign_reach
    pick = np.minimum((rng.random(len(known)) * count).astype(np.int64), count - 1)
    action = np.argmax(np.cumsum(eligible, axis=1) > pick[:, None], axis=1)
    action = np.where(treated, action, -1)
    propensity = np.where(treated, params.campaign_reach / count, 1.0 - params.campaign_reach)
    campaign_log.add(user=known, day=np.full(len(known), day), action=action, propensity=propensity)
    return known[treated], action[treated]


def _truth_at_cutoff(known, stage, plan, pop, base, effect_churn, effect_upgrade, effect_return, effect_until,
                     day, horizon_days, params):  # fmt: skip
    """True P(churn), P(upgrade) without a new contact, and the delta for each action, for `known` users."""
    sub = pop.take(known)
    st = stage[known].astype(np.int64)
    base_k = base[known]
    upgrade_base = base_upgrade_probability(sub, plan[known], params)
    days_left = np.maximum(effect_until[known] - day, 0)
    ongoing = adjusted_transition_probabilities(base_k, effect_churn[known], effect_return[known])
    ongoing_up = upgrade_base * np.exp(effect_upgrade[known])[:, None]
    p_churn, p_upgrade = horizon_probabilities(
        st, ongoing, base_k, ongoing_up, upgrade_base, days_left, horizon_days
    )
    deltas = []
    fresh_days = np.full(len(known), params.effect_days)
    for action in ACTIONS:
        churn_fx, upgrade_fx, return_fx = action_log_effects(action, sub, params)
        during = adjusted_transition_probabilities(base_k, churn_fx, return_fx)
        pc, pu = horizon_probabilities(
            st,
            during,
            base_k,
            upgrade_base * np.exp(upgrade_fx)[:, None],
            upgrade_base,
            fresh_days,
            horizon_days,
        )
        deltas.append((pc - p_churn, pu - p_upgrade))
    return p_churn, p_upgrade, days_left, deltas


def _margins_at_cutoff(known, stage, stage_since, plan, pop, base, effect_churn, effect_upgrade, effect_return,
                       effect_until, day, weekday, params, value_truth):  # fmt: skip
    """The expected discounted margin over the value horizon of `known` users without a new contact (any
    effect still running plays out) and with each action (its effect replaces a running one for
    `effect_days`), no further contact after it: the baseline (n,) and each action's increment (A, n)."""
    baseline = np.empty(len(known))
    incremental = np.empty((len(ACTIONS), len(known)))
    for lo in range(0, len(known), MARGIN_BLOCK_USERS):
        block = known[lo : lo + MARGIN_BLOCK_USERS]
        sub = pop.take(block)
        st = stage[block].astype(np.int64)
        base_k = base[block]
        upgrade_by_plan = np.stack(
            [base_upgrade_probability(sub, np.full(len(block), p), params) for p in range(len(PLANS))]
        ).transpose(0, 2, 1)[:, :, None, :]  # (plan, stage, 1, n)
        ongoing = Laws(
            adjusted_transition_probabilities(base_k, effect_churn[block], effect_return[block]).T[
                :, None, :
            ],
            upgrade_by_plan * np.exp(effect_upgrade[block]),
        )
        transitions, upgrades = [], []
        for action in ACTIONS:
            churn_fx, upgrade_fx, return_fx = action_log_effects(action, sub, params)
            transitions.append(adjusted_transition_probabilities(base_k, churn_fx, return_fx).T)
            upgrades.append(upgrade_by_plan[:, :, 0] * np.exp(upgrade_fx))
        contacted = Laws(np.stack(transitions, axis=1), np.stack(upgrades, axis=2))
        after = Laws(base_k.T[:, None, :], upgrade_by_plan)
        ongoing_days = np.maximum(effect_until[block] - day, 0)[None, :]
        fresh_days = np.full((len(ACTIONS), len(block)), params.effect_days)
        decayed_start = np.where(
            st == DECLINING, np.exp(-(day - 1 - stage_since[block]) / params.decline_decay_days), 0.0
        )
        without, contacts = expected_margins(
            st, plan[block].astype(np.int64), decayed_start, [(ongoing, ongoing_days), (contacted, fresh_days)],
            after, _economy(sub, params), value_truth, weekday,
        )  # fmt: skip
        baseline[lo : lo + len(block)] = without[0]
        incremental[:, lo : lo + len(block)] = contacts - without[0]
    return baseline, incremental


def _economy(sub, params: SimulationParams) -> Economy:
    """Activity and spending laws of the users in `sub`, as the day loop applies them."""
    n = sub.size
    stages = np.arange(len(STAGES))
    weekday = np.minimum(activity_base(sub.engagement[None, :], stages[:, None], params), 0.95)
    weekend = np.minimum(
        activity_base(sub.engagement[None, :], stages[:, None], params) * params.weekend_factor, 0.95
    )
    mean_amount = np.exp(params.amount_sd**2 / 2)
    spend = np.stack(
        [
            purchase_probability(sub.price_sensitivity, np.full(n, p), params)
            * purchase_median(sub.price_sensitivity, np.full(n, p), params)
            * mean_amount
            for p in range(len(PLANS))
        ]
    )
    return Economy(
        downgrade=(params.downgrade_declining * sub.price_sensitivity)[None, :],
        activity=np.stack([weekday, weekend])[:, :, None, :],
        spend=spend[:, None, :],
        price=np.asarray(PLAN_PRICES) / 30.0,
        decline_decay=float(np.exp(-1.0 / params.decline_decay_days)),
    )


def margin_table(
    ids: pa.Array, known: np.ndarray, cutoff: dt.date, baseline: np.ndarray, incremental: np.ndarray
) -> pa.Table:
    """One row per (user, action), `no_action` first with an increment of exactly 0."""
    n = len(known)
    names = (NO_ACTION, *ACTIONS)
    return pa.table(
        {
            "user_id": ids.take(pa.array(np.tile(known, len(names)))),
            "cutoff": pa.array(np.full(n * len(names), np.datetime64(cutoff, "D"))),
            "action": pa.array(names).take(pa.array(np.repeat(np.arange(len(names)), n))),
            "incremental_margin": np.concatenate([np.zeros(n), incremental.reshape(-1)]),
            "baseline_margin": np.tile(baseline, len(names)),
        }
    )


def _effects_table(ids: pa.Array, known: np.ndarray, cutoff: dt.date, deltas) -> pa.Table:
    n = len(known)
    return pa.table(
        {
            "user_id": ids.take(pa.array(np.tile(known, len(ACTIONS)))),
            "cutoff": pa.array(np.full(n * len(ACTIONS), np.datetime64(cutoff, "D"))),
            "action": pa.array(ACTIONS).take(pa.array(np.repeat(np.arange(len(ACTIONS)), n))),
            "delta_p_churn": np.concatenate([d[0] for d in deltas]),
            "delta_p_upgrade": np.concatenate([d[1] for d in deltas]),
        }
    )


def _first_at_or_after(keys_user: np.ndarray, keys_day: np.ndarray, users: np.ndarray, day: int, days: int):
    """For each user, the first logged day ≥ `day` (or a value past the end when there is none)."""
    stride = days + 2
    keys = keys_user.astype(np.int64) * stride + keys_day
    order = np.sort(keys)
    query = users.astype(np.int64) * stride + day
    pos = np.searchsorted(order, query)
    found = np.full(len(users), days + 1, dtype=np.int64)
    ok = pos < len(order)
    hit = np.zeros(len(users), dtype=bool)
    hit[ok] = order[pos[ok]] // stride == users[ok]
    found[hit] = order[pos[hit]] % stride
    return found


def _timestamps(seconds: np.ndarray, start: dt.date, mask: np.ndarray | None = None) -> pa.Array:
    epoch_us = int(dt.datetime(start.year, start.month, start.day, tzinfo=dt.UTC).timestamp()) * 1_000_000
    values = seconds.astype(np.int64) * 1_000_000 + epoch_us
    return pa.array(values, type=pa.timestamp("us", tz="UTC"), mask=mask)


def _assemble(ids, pop, start, days, horizon_days, seed, params, signup_seconds, events, transitions, plan_log,
              campaign_log, upgrades_log, snapshots, final_stage) -> SimulatedWorld:  # fmt: skip
    n = pop.size
    signed_up = final_stage >= 0

    # events, in time order
    ev_user = events.concat("user", np.int32)
    ev_ts = events.concat("ts", np.int64)
    ev_type = events.concat("type", np.int8)
    ev_amount = events.concat("amount", np.float64)
    order = np.lexsort((ev_type, ev_user, ev_ts))
    # Two events of one kind in the same second would be exact duplicates of each other; move the later
    # one on by a second so the log holds only distinct events (ingest counts exact duplicates).
    while True:
        u, t, k = ev_user[order], ev_ts[order], ev_type[order]
        same = np.flatnonzero((u[1:] == u[:-1]) & (t[1:] == t[:-1]) & (k[1:] == k[:-1])) + 1
        if len(same) == 0:
            break
        ev_ts[order[same]] += 1
        order = np.lexsort((ev_type, ev_user, ev_ts))
    del u, t, k
    n_events = len(order)
    event_table = pa.table(
        {
            "user_id": ids.take(pa.array(ev_user[order])),
            "ts": _timestamps(ev_ts[order], start),
            "event_type": pa.array(EVENT_TYPES).take(pa.array(ev_type[order])),
            "amount": pa.array(ev_amount[order], from_pandas=True),
            "properties": pa.nulls(n_events, type=pa.string()),
        }
    )
    del ev_user, ev_ts, ev_type, ev_amount, order

    users_idx = np.flatnonzero(signed_up)
    users_table = pa.table(
        {
            "user_id": ids.take(pa.array(users_idx)),
            "signup_ts": _timestamps(signup_seconds[users_idx], start),
            "plan": pa.array(PLANS).take(pa.array(pop.signup_plan[users_idx])),
            "channel": pa.array(CHANNELS).take(pa.array(pop.channel[users_idx])),
            "country": pa.array(COUNTRIES).take(pa.array(pop.country[users_idx])),
        }
    )

    # subscriptions: paid periods between plan-log entries
    pl_user = plan_log.concat("user", np.int64)
    pl_ts = plan_log.concat("ts", np.int64)
    pl_plan = plan_log.concat("plan", np.int64)
    order = np.lexsort((pl_ts, pl_user))
    pl_user, pl_ts, pl_plan = pl_user[order], pl_ts[order], pl_plan[order]
    same_next = np.append(pl_user[1:] == pl_user[:-1], False)
    next_ts = np.append(pl_ts[1:], 0)
    paid = pl_plan > 0
    subscriptions_table = pa.table(
        {
            "user_id": ids.take(pa.array(pl_user[paid])),
            "plan": pa.array(PLANS).take(pa.array(pl_plan[paid])),
            "start": _timestamps(pl_ts[paid], start),
            "end": _timestamps(np.where(same_next, next_ts, 0)[paid], start, mask=~same_next[paid]),
            "mrr": pa.array(np.asarray(PLAN_PRICES)[pl_plan[paid]]),
        }
    )

    cp_user = campaign_log.concat("user", np.int64)
    cp_day = campaign_log.concat("day", np.int64)
    cp_action = campaign_log.concat("action", np.int64)
    cp_prop = campaign_log.concat("propensity", np.float64)
    action_names = pa.array((*ACTIONS, NO_ACTION))
    campaigns_table = pa.table(
        {
            "user_id": ids.take(pa.array(cp_user)),
            "ts": _timestamps(cp_day * SECONDS_PER_DAY + 9 * 3600, start),
            "action": action_names.take(pa.array(np.where(cp_action < 0, len(ACTIONS), cp_action))),
            "propensity": pa.array(cp_prop),
        }
    )

    # latent stage intervals
    tr_user = transitions.concat("user", np.int64)
    tr_day = transitions.concat("day", np.int64)
    tr_stage = transitions.concat("stage", np.int64)
    order = np.lexsort((tr_day, tr_user))
    tr_user, tr_day, tr_stage = tr_user[order], tr_day[order], tr_stage[order]
    nxt_same = np.append(tr_user[1:] == tr_user[:-1], False)
    stage_end = np.where(nxt_same, np.append(tr_day[1:], 0), 0)
    start64 = np.datetime64(start, "D")
    stages_table = pa.table(
        {
            "user_id": ids.take(pa.array(tr_user)),
            "latent_stage": pa.array(STAGES).take(pa.array(tr_stage)),
            "start": pa.array(start64 + tr_day.astype("timedelta64[D]")),
            "end": pa.array(start64 + stage_end.astype("timedelta64[D]"), mask=~nxt_same),
        }
    )

    # realised outcomes at each truth cutoff
    churn_user = tr_user[tr_stage == CHURNED]
    churn_day = tr_day[tr_stage == CHURNED]
    return_user = tr_user[tr_stage == REACTIVATED]
    return_day = tr_day[tr_stage == REACTIVATED]
    up_user = upgrades_log.concat("user", np.int64)
    up_day = upgrades_log.concat("day", np.int64)
    cp_by_day = {}
    for d in np.unique(cp_day):
        rows = cp_day == d
        cp_by_day[int(d)] = (cp_user[rows], cp_action[rows])
    parts = []
    for cutoff, day, known, stage_at, p_churn, p_upgrade in snapshots:
        closed = day + horizon_days <= days
        first_churn = _first_at_or_after(churn_user, churn_day, known, day, days)
        first_return = _first_at_or_after(return_user, return_day, known, day, days)
        first_up = _first_at_or_after(up_user, up_day, known, day, days)
        end = day + horizon_days
        churned = np.where(stage_at == CHURNED, first_return >= end, first_churn < end)
        upgraded = first_up < end
        action = np.full(len(known), -2, dtype=np.int64)
        if day in cp_by_day:
            cu, ca = cp_by_day[day]
            pos = np.searchsorted(known, cu)
            action[pos] = ca
        action_labels = pa.array((*ACTIONS, NO_ACTION, None)).take(
            pa.array(np.select([action == -2, action == -1], [len(ACTIONS) + 1, len(ACTIONS)], action))
        )
        mask = None if closed else np.ones(len(known), dtype=bool)
        parts.append(
            pa.table(
                {
                    "user_id": ids.take(pa.array(known)),
                    "cutoff": pa.array(np.full(len(known), np.datetime64(cutoff, "D"))),
                    "horizon_days": pa.array(np.full(len(known), horizon_days, dtype=np.int32)),
                    "latent_stage": pa.array(STAGES).take(pa.array(stage_at.astype(np.int64))),
                    "p_churn": pa.array(p_churn),
                    "p_upgrade": pa.array(p_upgrade),
                    "churned": pa.array(churned, mask=mask),
                    "upgraded": pa.array(upgraded, mask=mask),
                    "campaign_action": action_labels,
                }
            )
        )
    outcomes_table = pa.concat_tables(parts) if parts else _empty_outcomes()

    traits_table = pa.table(
        {
            "user_id": ids.take(pa.array(users_idx)),
            "engagement": pop.engagement[users_idx],
            "price_sensitivity": pop.price_sensitivity[users_idx],
            "frustration": pop.frustration[users_idx],
            "skill": pop.skill[users_idx],
            "social": pop.social[users_idx],
            "contact_aversion": pop.contact_aversion[users_idx],
            "hidden_risk": pop.hidden_risk[users_idx],
        }
    )
    manifest = {
        "users": int(n),
        "days": int(days),
        "seed": int(seed),
        "start": start.isoformat(),
        "end": (start + dt.timedelta(days=days)).isoformat(),
        "horizon_days": int(horizon_days),
        "truth_cutoffs": [s[0].isoformat() for s in snapshots],
        "campaign_days": sorted(int(d) for d in np.unique(cp_day)),
        "params": dict(params.__dict__),
    }
    return SimulatedWorld(
        events=event_table,
        users=users_table,
        subscriptions=subscriptions_table,
        campaigns=campaigns_table,
        outcomes=outcomes_table,
        stages=stages_table,
        traits=traits_table,
        manifest=manifest,
    )


def _empty_outcomes() -> pa.Table:
    return pa.table(
        {
            "user_id": pa.array([], pa.string()),
            "cutoff": pa.array([], pa.date32()),
            "horizon_days": pa.array([], pa.int32()),
            "latent_stage": pa.array([], pa.string()),
            "p_churn": pa.array([], pa.float64()),
            "p_upgrade": pa.array([], pa.float64()),
            "churned": pa.array([], pa.bool_()),
            "upgraded": pa.array([], pa.bool_()),
            "campaign_action": pa.array([], pa.string()),
        }
    )
