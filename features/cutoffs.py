"""Cutoff specifications: one date, a comma-separated list, or a schedule like
`monthly:2025-01-01..2025-12-01`, `weekly:2025-03-03..2025-04-28`, `daily:…`."""

from __future__ import annotations

import datetime as dt

SCHEDULES = ("daily", "weekly", "monthly")


class CutoffSpecError(ValueError):
    """A cutoff specification that cannot be parsed."""


def _date(text: str, spec: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError as exc:
        raise CutoffSpecError(f"cutoff spec {spec!r}: {text.strip()!r} is not a date (YYYY-MM-DD)") from exc


def _add_month(day: dt.date, months: int) -> dt.date:
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    if day.day > 28:
        raise CutoffSpecError(f"monthly schedules must start on a day ≤ 28, got {day}")
    return dt.date(year, month, day.day)


def parse_cutoffs(spec: str) -> list[dt.date]:
    """All cutoff dates of a spec, sorted and unique."""
    spec = spec.strip()
    if not spec:
        raise CutoffSpecError("empty cutoff spec")
    if ":" in spec:
        kind, _, span = spec.partition(":")
        kind = kind.strip().lower()
        if kind not in SCHEDULES:
            raise CutoffSpecError(f"cutoff spec {spec!r}: schedule must be one of {', '.join(SCHEDULES)}")
        first_text, sep, last_text = span.partition("..")
        if not sep:
            raise CutoffSpecError(f"cutoff spec {spec!r}: expected FIRST..LAST after {kind}:")
        first, last = _date(first_text, spec), _date(last_text, spec)
        if last < first:
            raise CutoffSpecError(f"cutoff spec {spec!r}: {last} is before {first}")
        dates, step = [], 0
        while True:
            if kind == "monthly":
                current = _add_month(first, step)
            else:
                current = first + dt.timedelta(days=step * (7 if kind == "weekly" else 1))
            if current > last:
                break
            dates.append(current)
            step += 1
        return dates
    return sorted({_date(part, spec) for part in spec.split(",") if part.strip()})


# ---------------------------------------------------------------------------------------------------
# cadences: how often training cutoffs fall ("daily", "weekly", "monthly", or every N days)

Cadence = str | int


def parse_cadence(value: object) -> Cadence:
    """A cutoff cadence: one of SCHEDULES, or a positive number of days (an int, or digits in a string)."""
    if isinstance(value, bool):
        raise CutoffSpecError(
            f"cutoff cadence must be daily, weekly, monthly or a number of days, got {value!r}"
        )
    if isinstance(value, int):
        if value <= 0:
            raise CutoffSpecError(f"cutoff cadence must be a positive number of days, got {value}")
        return value
    text = str(value).strip().lower()
    if text.isdigit():
        return parse_cadence(int(text))
    if text not in SCHEDULES:
        raise CutoffSpecError(
            f"cutoff cadence must be daily, weekly, monthly or a number of days, got {value!r}"
        )
    return text


def cadence_label(cadence: Cadence) -> str:
    """How a cadence reads in output: `weekly`, `every 10 days`."""
    return cadence if isinstance(cadence, str) else f"every {cadence} days"


def cadence_step_days(cadence: Cadence) -> int:
    """The nominal distance between two cutoffs of a cadence (a month counts as 30 days)."""
    if isinstance(cadence, int):
        return cadence
    return {"daily": 1, "weekly": 7, "monthly": 30}[cadence]


def schedule(cadence: Cadence, first: dt.date, last: dt.date) -> list[dt.date]:
    """Cutoffs of `cadence` between `first` and `last` (both included): monthly ones on the first day of each
    month (the campaign waves' day), the others every step days from `first` itself."""
    if last < first:
        return []
    if cadence == "monthly":
        start = first if first.day == 1 else (first.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
        return parse_cutoffs(f"monthly:{start}..{last}") if start <= last else []
    step = dt.timedelta(days=cadence_step_days(cadence))
    dates, current = [], first
    while current <= last:
        dates.append(current)
        current += step
    return dates
