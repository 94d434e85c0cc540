"""Mapping files: the documented forms parse, and every malformed one fails naming section and field."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import pytest

from features.mapping import ColumnSpec, ConstantSpec, MappingError, PackSpec, load_mapping, parse_mapping
from tests.features.mappings import RETAIL_MAPPING


def test_the_retail_example_parses_to_these_specs(tmp_path: Path) -> None:
    path = tmp_path / "retail.toml"
    path.write_text(RETAIL_MAPPING, encoding="utf-8")

    assert load_mapping(path) == {
        "events": {
            "user_id": ColumnSpec("customer_id"),
            "ts": ColumnSpec("date", format="%Y%m%d"),
            "event_type": ConstantSpec("purchase"),
            "amount": ColumnSpec("dollars"),
            "properties": PackSpec(("quantity",)),
        }
    }


def test_other_sections_and_forms_parse() -> None:
    mapping = parse_mapping(
        tomllib.loads(
            """
            [users]
            signup_ts = { column = "created", timezone = "Europe/Berlin" }
            country = { value = "DE" }
            [subscriptions]
            start = { column = "from", unit = "s" }
            end = { value = 2024-12-31T00:00:00Z }
            [campaigns]
            propensity = { value = 0.5 }
            """
        )
    )

    assert mapping["users"]["signup_ts"] == ColumnSpec("created", timezone="Europe/Berlin")
    assert mapping["users"]["country"] == ConstantSpec("DE")
    assert mapping["subscriptions"]["start"] == ColumnSpec("from", unit="s")
    assert mapping["subscriptions"]["end"] == ConstantSpec(dt.datetime(2024, 12, 31, tzinfo=dt.UTC))
    assert mapping["campaigns"]["propensity"] == ConstantSpec(0.5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[orders]\nuser_id = "c"', r"unknown section \[orders\]"),
        ('[events]\nuser = "c"', r"\[events\]\.user: unknown canonical field 'user'"),
        ("[events]\nuser_id = 3", r"\[events\]\.user_id: expected a column name"),
        ('[events]\nuser_id = ["a", "b"]', r"\[events\]\.user_id: a list of columns can only be packed"),
        ("[events]\nproperties = []", "empty"),
        ('[events]\nts = { column = "d", fromat = "%Y" }', "unknown key"),
        ('[events]\nts = { column = "d", value = "2024-01-01" }', "exactly one of"),
        ("[events]\nts = { format = '%Y' }", "exactly one of"),
        ('[events]\nts = { column = "d", format = "YYYYMMDD" }', "strptime format"),
        (
            '[events]\nts = { column = "d", format = "%Y-%m-%Q" }',
            r"\[events\]\.ts\.format: '%Y-%m-%Q' is not a usable",
        ),
        (
            '[users]\nsignup_ts = { column = "d", format = "%Y %" }',
            r"\[users\]\.signup_ts\.format: .*stray %",
        ),
        ('[events]\nts = { column = "d", unit = "days" }', "unit"),
        ('[events]\nts = { column = "d", timezone = "Mars/Olympus" }', "unknown time zone 'Mars/Olympus'"),
        ('[events]\nts = { column = "d", unit = "s", timezone = "UTC" }', "epoch numbers are UTC"),
        ('[events]\namount = { column = "d", format = "%Y" }', "only apply to timestamp fields"),
        ('[events]\namount = { value = "ten" }', "must be a number"),
        ('[events]\nts = { value = "someday" }', "not an ISO 8601"),
        ('[events]\nproperties = { value = "[1]" }', "JSON object"),
        ('[events]\nevent_type = { value = "" }', "must not be empty"),
        ('events = "customer_id"', r"\[events\] must be a table"),
    ],
)
def test_malformed_mappings_fail_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(MappingError, match=message):
        parse_mapping(tomllib.loads(text), source="m.toml")


def test_an_unreadable_mapping_file_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[events\n", encoding="utf-8")

    with pytest.raises(MappingError, match=r"broken\.toml is not valid TOML"):
        load_mapping(broken)
    with pytest.raises(MappingError, match=r"absent\.toml"):
        load_mapping(tmp_path / "absent.toml")
