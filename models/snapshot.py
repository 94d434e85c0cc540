"""How old the feature snapshot behind a decision is, and the warning past a configured age
(`[serving] stale_after_days`). Pure: dates in, a `SnapshotAge` out; the API's Decision, the reviewer pages
and the campaign report all read it from here."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

WARNINGS = {
    "en": (
        "The features behind this decision are from the {date} snapshot, {age} days old (stale after "
        "{limit} days): users' activity since then is not in it. Materialise a new snapshot (clm features "
        "materialize) before acting on it."
    ),
    "zh": (
        "此决策所用特征来自 {date} 的快照，已有 {age} 天（超过 {limit} 天即视为过期），之后的用户行为未包含在内。"
        "请先生成新快照（clm features materialize）再据此行动。"
    ),
}


@dataclass(frozen=True)
class SnapshotAge:
    """The snapshot's date, its age in whole days on `today`, the configured limit, and whether it is past it
    (with the warning to show, in the decision's language)."""

    date: dt.date
    age_days: int
    stale_after_days: int
    stale: bool
    warning: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def snapshot_age(date: dt.date, today: dt.date, stale_after_days: int, lang: str = "en") -> SnapshotAge:
    """Stale when the snapshot is more than `stale_after_days` days older than `today` (at exactly the limit
    it is not yet)."""
    age = (today - date).days
    stale = age > stale_after_days
    return SnapshotAge(
        date, age, stale_after_days, stale, warning_text(date, age, stale_after_days, lang) if stale else None
    )


def warning_text(date: dt.date | str, age_days: int, stale_after_days: int, lang: str = "en") -> str:
    """The stale snapshot's warning in `lang` (English for a language it does not know)."""
    return WARNINGS.get(lang, WARNINGS["en"]).format(date=date, age=age_days, limit=stale_after_days)


def in_language(snapshot: dict[str, Any] | None, lang: str) -> dict[str, Any] | None:
    """A snapshot's age as logged (`SnapshotAge.as_dict`, JSON) with its warning in `lang`: a decision made in one
    language and read in another."""
    if not snapshot or not snapshot.get("stale"):
        return snapshot
    warning = warning_text(snapshot["date"], snapshot["age_days"], snapshot["stale_after_days"], lang)
    return {**snapshot, "warning": warning}


def utc_today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()
