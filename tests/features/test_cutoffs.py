"""Cutoff specifications."""

from __future__ import annotations

import datetime as dt

import pytest

from features.cutoffs import CutoffSpecError, parse_cutoffs

D = dt.date


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("2025-03-01", [D(2025, 3, 1)]),
        ("2025-06-01, 2025-03-01,2025-03-01", [D(2025, 3, 1), D(2025, 6, 1)]),
        ("monthly:2025-11-01..2026-02-01", [D(2025, 11, 1), D(2025, 12, 1), D(2026, 1, 1), D(2026, 2, 1)]),
        ("weekly:2025-03-03..2025-03-20", [D(2025, 3, 3), D(2025, 3, 10), D(2025, 3, 17)]),
        ("daily:2025-03-30..2025-04-01", [D(2025, 3, 30), D(2025, 3, 31), D(2025, 4, 1)]),
    ],
)
def test_specs_expand_to_sorted_unique_dates(spec: str, expected: list[dt.date]) -> None:
    assert parse_cutoffs(spec) == expected


@pytest.mark.parametrize(
    "spec", ["", "2025-13-01", "yearly:2025-01-01..2026-01-01", "monthly:2025-03-01", "monthly:2025-05-01..2025-03-01",
             "monthly:2025-01-31..2025-05-31"],
)  # fmt: skip
def test_bad_specs_raise_a_clear_error(spec: str) -> None:
    with pytest.raises(CutoffSpecError):
        parse_cutoffs(spec)
