"""The contact-state table: per (user, cutoff) and per action of the catalogue, what the campaign history says
about contacting the user again — point in time, from contacts strictly before the cutoff, as one Ibis
definition that DuckDB and Spark both run (the feature jobs join it to the decision frame: `contacts=`).

For every action `a` (`ContactParams.actions`):

- `days_since_<a>`: days from the last contact of `a` to the cutoff (cutoff day − contact day, as
  `days_since_last_contact`); null when `a` was never sent;
- `contacts_<a>_<W>d`, for each window W of `ContactParams.windows_days` (`[policy] contact_windows_days`):
  contacts of `a` on the days `cutoff − W ≤ day < cutoff`;
- `negative_outcomes_<a>`: contacts of `a` followed by the bad outcome for that action within
  `outcome_days` (`[policy] negative_outcome_days`), counted once that window has closed before the cutoff
  (contact day + outcome_days ≤ cutoff day; an open window counts nothing yet). The bad outcome follows the
  outcome the action targets (`[actions.*] outcome`), read from the events as the labels read them:
  * retention actions (retention offers, win-backs, …): the user *churned* in `[contact day, contact day +
    outcome_days)` — no activity in it (`[labels] non_contractual_activity`: any event, or purchases only) or a
    cancel event (`[features] cancel_event_types`) in it; for a dormant user sent a win-back, "did not come back";
  * upgrade actions: *no upgrade* in that window — no `upgrade` event and purchases of at most
    `[labels] upgrade_spend_threshold`.

A contact is (user, day, action): the same action sent to a user twice on one day is one contact, so a contact
that both the ingested campaigns file and the decision log hold (training.history merges them, each contact
once) can never count twice here either. Holdouts (`no_action`) and actions outside the catalogue are not
contacts of any action. A user with no contact before a cutoff has no row (the jobs fill 0 and null)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import ibis
import ibis.expr.types as ir
import pandas as pd

RETENTION, UPGRADE = "retention", "upgrade"
KEYS = ("user_id", "cutoff")


def days_since_column(action: str) -> str:
    """Days since `action` was last sent to the user (null: never)."""
    return f"days_since_{action}"


def contacts_column(action: str, window_days: int) -> str:
    """Contacts of `action` in the last `window_days` days."""
    return f"contacts_{action}_{window_days}d"


def negative_outcomes_column(action: str) -> str:
    """Contacts of `action` followed by its bad outcome (churned after a retention action, no upgrade after an
    upgrade action), counted once the outcome window has closed."""
    return f"negative_outcomes_{action}"


@dataclass(frozen=True)
class ContactParams:
    """What the contact-state table is computed for and how (models.catalog.contact_params builds it from the
    config and the policy's catalogue)."""

    actions: tuple[tuple[str, str], ...]  # (action, the outcome it targets: "retention" or "upgrade")
    windows_days: tuple[int, ...] = (30, 90)
    outcome_days: int = 30
    holdout_actions: tuple[str, ...] = ("no_action",)
    activity: str = "any"  # what keeps a user active: any event, or purchases ("purchase")
    purchase_event_types: tuple[str, ...] = ("purchase",)
    cancel_event_types: tuple[str, ...] = ("cancel",)
    upgrade_event_types: tuple[str, ...] = ("upgrade",)
    upgrade_spend_threshold: float = 100.0

    def __post_init__(self) -> None:
        if not self.actions:
            raise ValueError("the contact-state table needs at least one action")
        names = [name for name, _ in self.actions]
        if len(set(names)) != len(names):
            raise ValueError(f"actions named twice: {sorted({n for n in names if names.count(n) > 1})}")
        wrong = [name for name, outcome in self.actions if outcome not in (RETENTION, UPGRADE)]
        if wrong:
            raise ValueError(f"actions {wrong}: the outcome must be {RETENTION!r} or {UPGRADE!r}")
        held = [name for name in names if name in self.holdout_actions]
        if held:
            raise ValueError(f"{held} are holdouts, not actions")
        if not self.windows_days or any(w <= 0 for w in self.windows_days):
            raise ValueError(f"windows must be positive numbers of days, got {self.windows_days}")
        if tuple(sorted(set(self.windows_days))) != tuple(self.windows_days):
            raise ValueError(f"windows must be distinct and in increasing order, got {self.windows_days}")
        if self.outcome_days <= 0:
            raise ValueError(f"outcome_days must be positive, got {self.outcome_days}")
        if self.activity not in ("any", "purchase"):
            raise ValueError(f"activity must be 'any' or 'purchase', got {self.activity!r}")

    @property
    def action_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.actions)

    def count_columns(self) -> list[str]:
        """The columns that are 0 for a user never contacted."""
        return [column for name in self.action_names for column in (
            *(contacts_column(name, w) for w in self.windows_days), negative_outcomes_column(name))]  # fmt: skip

    def columns(self) -> list[str]:
        """Every column of the table beside the keys, per action: days since, the window counts, negatives."""
        return [column for name in self.action_names for column in (
            days_since_column(name), *(contacts_column(name, w) for w in self.windows_days),
            negative_outcomes_column(name))]  # fmt: skip


def build_contact_state(
    events: ir.Table,
    campaigns: ir.Table,
    cutoffs: Sequence[dt.date],
    params: ContactParams,
    *,
    engine: str | None = None,
) -> ir.Table:
    """`user_id, cutoff`, then `ContactParams.columns()` (float64), for every user contacted by an action of the
    catalogue before a cutoff; events and campaigns as the jobs read them (`features.jobs.load_inputs`)."""
    from features.build import _engine_of, _windowed_sums, cutoff_table, day_function, midnight_utc

    day_of = day_function(engine if engine is not None else _engine_of(events))
    cut = cutoff_table(cutoffs)
    last = midnight_utc(max(cutoffs))
    horizon = params.outcome_days
    names = list(params.action_names)

    sent = campaigns.filter((campaigns.ts < last) & campaigns.action.isin(names))
    sent = sent.select("user_id", "action", day=day_of(sent.ts)).distinct()  # a contact: (user, day, action)

    # what followed each contact day within the outcome window (only windows closed before a cutoff are read)
    e = events.filter(events.ts < last)
    e = e.mutate(day=day_of(e.ts))
    purchase = e.event_type.isin(list(params.purchase_event_types))
    daily = e.group_by(["user_id", "day"]).aggregate(
        n_activity=e.count(where=purchase) if params.activity == "purchase" else e.count(),
        n_cancel=e.count(where=e.event_type.isin(list(params.cancel_event_types))),
        n_upgrade=e.count(where=e.event_type.isin(list(params.upgrade_event_types))),
        revenue=e.amount.sum(where=purchase).fill_null(0.0).cast("float64"),
    )
    contact_days = sent.select("user_id", cutoff_day=sent.day).distinct()
    sums = ["n_activity", "n_cancel", "n_upgrade", "revenue"]
    after = _windowed_sums(daily, contact_days, {"after": (0, horizon)}, sums)
    after = after.rename(outcome_user="user_id", outcome_day="cutoff_day")
    s = sent.left_join(after, [sent.user_id == after.outcome_user, sent.day == after.outcome_day])
    churned = (s.n_activity__after.fill_null(0) == 0) | (s.n_cancel__after.fill_null(0) > 0)
    no_upgrade = (s.n_upgrade__after.fill_null(0) == 0) & (
        s.revenue__after.fill_null(0.0) <= params.upgrade_spend_threshold
    )
    upgrade_actions = [name for name, outcome in params.actions if outcome == UPGRADE]
    negative = (
        ibis.ifelse(s.action.isin(upgrade_actions), no_upgrade, churned) if upgrade_actions else churned
    )
    s = s.select("user_id", "action", "day", negative=negative)

    j = s.join(cut.select("cutoff", "cutoff_day"), s.day < cut.cutoff_day)
    aggregates: dict[str, ir.Value] = {}
    for k, name in enumerate(names):
        is_a = j.action == name
        aggregates[f"_last_{k}"] = j.day.max(where=is_a)
        for w in params.windows_days:
            aggregates[f"_n_{k}_{w}"] = j.count(where=is_a & (j.day >= j.cutoff_day - w))
        aggregates[f"_neg_{k}"] = j.count(where=is_a & j.negative & (j.day + horizon <= j.cutoff_day))
    g = j.group_by(["user_id", "cutoff", "cutoff_day"]).aggregate(**aggregates)
    columns: dict[str, ir.Value] = {}
    for k, name in enumerate(names):
        columns[days_since_column(name)] = (g.cutoff_day - g[f"_last_{k}"]).cast("float64")
        for w in params.windows_days:
            columns[contacts_column(name, w)] = g[f"_n_{k}_{w}"].cast("float64")
        columns[negative_outcomes_column(name)] = g[f"_neg_{k}"].cast("float64")
    return g.select("user_id", g.cutoff.cast("date").name("cutoff"), **columns)


def no_contact_state(keys: pd.DataFrame, params: ContactParams) -> pd.DataFrame:
    """The table for `keys` (user_id, cutoff) when nobody was contacted: counts 0, days since null."""
    out = keys[list(KEYS)].copy()
    for name in params.action_names:
        out[days_since_column(name)] = float("nan")
    for column in params.count_columns():
        out[column] = 0.0
    return out[[*KEYS, *params.columns()]]


def _day_key(column: pd.Series) -> pd.Series:
    """A cutoff column (dates, datetimes of any unit, text) as datetime64[s], for joining."""
    return pd.to_datetime(column).astype("datetime64[s]").reset_index(drop=True)


def join_contact_state(frame: pd.DataFrame, state: pd.DataFrame, params: ContactParams) -> pd.DataFrame:
    """`frame` (one row per user_id and cutoff) with the contact-state columns beside it, in its own row order:
    counts 0 and days since null for the users the table has no row for. Refuses a column the frame has."""
    clash = sorted(set(params.columns()) & set(frame.columns))
    if clash:
        raise ValueError(
            f"the contact-state columns {clash} clash with columns of the feature table: rename the action(s)"
        )
    left = pd.DataFrame(
        {"user_id": frame["user_id"].astype(str).to_numpy(), "cutoff": _day_key(frame["cutoff"])}
    )
    right = state[[*KEYS, *params.columns()]].copy()
    right["user_id"] = right["user_id"].astype(str)
    right["cutoff"] = _day_key(right["cutoff"])
    joined = left.merge(right, on=list(KEYS), how="left", validate="one_to_one")
    counts = set(params.count_columns())
    added = {
        column: (joined[column].fillna(0.0) if column in counts else joined[column]).to_numpy(dtype="float64")
        for column in params.columns()
    }
    return pd.concat([frame, pd.DataFrame(added, index=frame.index)], axis=1)
