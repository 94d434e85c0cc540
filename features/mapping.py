"""Column mappings: how an export with its own column names and formats becomes the canonical fields.

A mapping file is TOML with one table per input kind (`[events]`, `[users]`, `[subscriptions]`,
`[campaigns]`); each key is a canonical field and its value says where the field comes from:

    user_id = "customer_id"                                # a source column, parsed as the field's type
    ts = { column = "date", format = "%Y%m%d" }            # ... with a strptime format (default: ISO 8601)
    ts = { column = "local_time", timezone = "Asia/Tokyo" } # ... naive values are in this zone
    ts = { column = "epoch", unit = "ms" }                 # ... numbers since 1970-01-01 UTC
    event_type = { value = "purchase" }                    # the same value on every row
    properties = ["quantity", "store"]                     # those columns packed into a JSON object

A canonical field the mapping does not mention is read from the source column of the same name.
"""

from __future__ import annotations

import datetime as dt
import json
import tomllib
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from features.schemas import KINDS, Field, contract

TIMESTAMP_UNITS = ("s", "ms", "us", "ns")
_SPEC_KEYS = ("column", "format", "timezone", "unit", "value", "columns")


class MappingError(ValueError):
    """A mapping file (or mapping table) that cannot be used; the message names the file, section and field."""


@dataclass(frozen=True)
class ColumnSpec:
    """The field comes from one source column."""

    column: str
    format: str | None = None
    timezone: str | None = None
    unit: str | None = None


@dataclass(frozen=True)
class ConstantSpec:
    """The field has the same value on every row (`timezone` applies to a naive timestamp value)."""

    value: Any
    timezone: str | None = None


@dataclass(frozen=True)
class PackSpec:
    """The JSON field packs these source columns into one object per row."""

    columns: tuple[str, ...]


FieldSpec = ColumnSpec | ConstantSpec | PackSpec
InputMapping = dict[str, FieldSpec]
"""Canonical field name -> where it comes from, for one input kind."""
ColumnMapping = dict[str, InputMapping]
"""Input kind -> its InputMapping."""


def check_timezone(name: object, *, where: str = "timezone") -> str:
    """`name` when it is an IANA time zone, else a MappingError saying where it was given."""
    if not isinstance(name, str) or not name:
        raise MappingError(
            f"{where}: expected a time zone name such as 'UTC' or 'Europe/Berlin', got {name!r}"
        )
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise MappingError(f"{where}: unknown time zone {name!r}") from None
    return name


def _check_constant(field: Field, value: Any, where: str) -> Any:
    if field.type == "string":
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise MappingError(f"{where}: value must be a string, got {value!r}")
        if not str(value).strip():
            raise MappingError(f"{where}: value must not be empty")
        return str(value).strip()
    if field.type == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise MappingError(f"{where}: value must be a number, got {value!r}")
        return float(value)
    if field.type == "timestamp":
        if isinstance(value, dt.date | dt.datetime):
            return value
        if not isinstance(value, str):
            raise MappingError(
                f"{where}: value must be a TOML date-time or an ISO 8601 string, got {value!r}"
            )
        try:
            pd.Timestamp(value)
        except ValueError:
            raise MappingError(f"{where}: value {value!r} is not an ISO 8601 date-time") from None
        return value
    # json
    if isinstance(value, dict):
        return json.dumps(value, default=str, ensure_ascii=False, sort_keys=True)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            return value
    raise MappingError(f"{where}: value must be a TOML table or a JSON object string, got {value!r}")


def _check_directives(fmt: str, where: str) -> None:
    """A MappingError naming `where` when pandas cannot use `fmt` at all (a bad directive, a stray %)."""
    try:
        pd.to_datetime(pd.Series(["2000-01-01"]), format=fmt, errors="coerce", utc=True)
    except ValueError as exc:
        raise MappingError(f"{where}: {fmt!r} is not a usable strptime format ({exc})") from None


def _column_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise MappingError(f"{where}: a source column name must be a non-empty string, got {value!r}")
    return value


def parse_field_spec(field: Field, raw: Any, *, where: str) -> FieldSpec:
    """One field's spec from its TOML value (a column name, a list of columns, or a table)."""
    if isinstance(raw, str):
        return ColumnSpec(_column_name(raw, where))
    if isinstance(raw, list):
        if field.type != "json":
            raise MappingError(
                f"{where}: a list of columns can only be packed into a JSON field (properties)"
            )
        if not raw:
            raise MappingError(f"{where}: the list of columns to pack is empty")
        columns = tuple(_column_name(item, where) for item in raw)
        if len(set(columns)) != len(columns):
            raise MappingError(f"{where}: a column is listed twice in {list(columns)}")
        return PackSpec(columns)
    if not isinstance(raw, dict):
        raise MappingError(
            f"{where}: expected a column name, a list of columns or a table such as "
            f'{{ column = "..." }} / {{ value = ... }}, got {raw!r}'
        )
    unknown = sorted(set(raw) - set(_SPEC_KEYS))
    if unknown:
        raise MappingError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(_SPEC_KEYS)}")
    sources = [key for key in ("column", "value", "columns") if key in raw]
    if len(sources) != 1:
        raise MappingError(
            f"{where}: give exactly one of 'column', 'value' or 'columns', got {sources or 'none'}"
        )
    if field.type != "timestamp":
        options = [key for key in ("format", "timezone", "unit") if key in raw]
        if options:
            raise MappingError(
                f"{where}: {options} only apply to timestamp fields; {field.name} is a {field.type}"
            )
    timezone = check_timezone(raw["timezone"], where=f"{where}.timezone") if "timezone" in raw else None
    if "columns" in raw:
        return parse_field_spec(field, raw["columns"], where=where)
    if "value" in raw:
        if "format" in raw or "unit" in raw:
            raise MappingError(f"{where}: 'format' and 'unit' apply to a column, not to a constant value")
        return ConstantSpec(_check_constant(field, raw["value"], where), timezone)
    fmt = raw.get("format")
    unit = raw.get("unit")
    if fmt is not None and (not isinstance(fmt, str) or "%" not in fmt):
        raise MappingError(f"{where}.format: expected a strptime format such as '%Y-%m-%d', got {fmt!r}")
    if fmt is not None:
        _check_directives(fmt, f"{where}.format")
    if unit is not None and unit not in TIMESTAMP_UNITS:
        raise MappingError(f"{where}.unit: expected one of {', '.join(TIMESTAMP_UNITS)}, got {unit!r}")
    if fmt is not None and unit is not None:
        raise MappingError(f"{where}: give either 'format' (text dates) or 'unit' (epoch numbers), not both")
    if unit is not None and timezone is not None:
        raise MappingError(
            f"{where}: epoch numbers are UTC by definition; 'timezone' does not apply with 'unit'"
        )
    return ColumnSpec(_column_name(raw["column"], f"{where}.column"), fmt, timezone, unit)


def parse_mapping(document: Mapping[str, Any], *, source: str = "mapping") -> ColumnMapping:
    """Validate a parsed mapping document; MappingError names the section and field of the first problem."""
    mapping: ColumnMapping = {}
    for kind, section in document.items():
        if kind not in KINDS:
            raise MappingError(
                f"{source}: unknown section [{kind}]; expected one of {', '.join(f'[{k}]' for k in KINDS)}"
            )
        if not isinstance(section, dict):
            raise MappingError(f"{source}: [{kind}] must be a table of canonical field = source")
        fields = {field.name: field for field in contract(kind).fields}
        specs: InputMapping = {}
        for name, raw in section.items():
            where = f"{source}: [{kind}].{name}"
            if name not in fields:
                raise MappingError(
                    f"{where}: unknown canonical field {name!r}; [{kind}] fields are {', '.join(fields)}"
                )
            specs[name] = parse_field_spec(fields[name], raw, where=where)
        mapping[kind] = specs
    return mapping


def load_mapping(path: Path) -> ColumnMapping:
    """Read and validate a mapping TOML file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingError(f"mapping file {path}: cannot be read ({exc.strerror or exc})") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"mapping file {path} is not valid TOML: {exc}") from None
    return parse_mapping(document, source=str(path))
