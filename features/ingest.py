"""Ingest: raw events, users, subscriptions and campaigns into the canonical tables, losing nothing.

`ingest_frame` is the pure step: a source frame, its column mapping and the options in; the accepted
canonical rows, one reject row per bad or duplicate source row, and the counts out. Every check is a
vectorised mask over the whole column. `read_input`, `ingest_inputs`, `write_canonical` and
`ingest_files` are the thin file layer the CLI calls.

Counting: `read = accepted + rejected + duplicates` for every input. Duplicates (same stable key as an
earlier accepted row) are counted on their own but also written to the rejects file with reason
`duplicate`, so every source row ends up in exactly one of the two outputs.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import shutil
import string
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from features import schemas
from features.mapping import (
    ColumnSpec,
    ConstantSpec,
    FieldSpec,
    InputMapping,
    MappingError,
    PackSpec,
    check_timezone,
)
from features.schemas import Contract, Field

log = logging.getLogger(__name__)

REJECT_COLUMNS: tuple[str, ...] = ("input", "row", "reason", "detail", "raw")
REJECTS_FILE = "rejects.parquet"
CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")

REJECT_REASONS: dict[str, str] = {
    "malformed_row": "CSV line whose number of fields differs from the header",
    "missing_user_id": "user_id is empty",
    "missing_ts": "ts is empty",
    "missing_event_type": "event_type is empty",
    "missing_plan": "plan is empty (subscriptions)",
    "missing_start": "start is empty",
    "missing_mrr": "mrr is empty",
    "missing_action": "action is empty",
    "unparseable_ts": "ts is not a date-time in the expected format",
    "unparseable_signup_ts": "signup_ts is not a date-time in the expected format",
    "unparseable_start": "start is not a date-time in the expected format",
    "unparseable_end": "end is not a date-time in the expected format",
    "invalid_local_time": "a naive time that does not exist or is ambiguous in its time zone (DST change)",
    "unparseable_amount": "amount is not a finite number",
    "unparseable_mrr": "mrr is not a finite number",
    "unparseable_propensity": "propensity is not a finite number",
    "unparseable_properties": "properties is not a JSON object",
    "unknown_event_type": "event_type is not one of the configured event types",
    "negative_amount": "amount below zero for an event type that must not be negative",
    "negative_mrr": "mrr below zero",
    "invalid_propensity": "propensity outside (0, 1]",
    "end_before_start": "subscription end earlier than its start",
    "conflicting_user_id": "a users row whose user_id an earlier, different row already has",
    "duplicate": "same stable key as an earlier accepted row (counted as a duplicate, not as rejected)",
}

# Patterns use ASCII classes ([0-9], not \d or \s) so pandas runs them in pyarrow's RE2, not row by row.
# An explicit UTC offset or Z after a time of day: "…T10:00:00+05:30", "… 10:00Z", "…T10:00-0800".
_OFFSET_SUFFIX = (
    r"[Tt ][0-9]{1,2}:?[0-9]{2}(?::?[0-9]{2}(?:[.,][0-9]+)?)?[ \t]*(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)$"
)
# Text that would lose meaning as a number (identifiers and codes such as zip codes).
_LEADING_ZERO = r"^[+-]?0[0-9]"
_JSON_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))


class InputError(ValueError):
    """An input file that cannot be used at all; the message names the file and, where it applies, the column."""


@dataclass(frozen=True)
class IngestOptions:
    """Business parameters of ingest (from the config's `[ingest]` table and the CLI)."""

    timezone: str = "UTC"
    duplicate_key: tuple[str, ...] = schemas.EVENT_COLUMNS
    non_negative_amount_event_types: tuple[str, ...] = ("purchase",)
    event_types: tuple[str, ...] | None = None
    """When given, events with any other event_type are rejected as `unknown_event_type`."""

    def __post_init__(self) -> None:
        check_timezone(self.timezone, where="ingest timezone")
        unknown = [name for name in self.duplicate_key if name not in schemas.EVENT_COLUMNS]
        if not self.duplicate_key or unknown:
            raise ValueError(
                f"duplicate_key must be a non-empty list of event columns ({', '.join(schemas.EVENT_COLUMNS)}); "
                f"got {list(self.duplicate_key)}"
            )


@dataclass(frozen=True)
class IngestCounts:
    """What happened to one input's rows; read = accepted + rejected + duplicates."""

    input: str
    read: int
    accepted: int
    rejected: int
    duplicates: int
    rejected_by_reason: dict[str, int]
    ignored_columns: tuple[str, ...] = ()
    # users only: accepted users without a signup_ts, by where their start was taken from (`first_event`,
    # `first_subscription`, or `none` when they have neither)
    started_without_signup: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON-ready summary printed by `clm ingest --json`."""
        summary = {
            "input": self.input,
            "read": self.read,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "duplicates": self.duplicates,
            "ignored_columns": list(self.ignored_columns),
        }
        if self.started_without_signup:
            summary["started_without_signup"] = dict(self.started_without_signup)
        return summary

    def start_note(self) -> str | None:
        """What the output says about users without a signup_ts, or None when every user had one."""
        started = self.started_without_signup
        if not started:
            return None
        total = sum(started.values())
        note = (
            f"{total:,} users have no signup_ts: {started.get('first_event', 0):,} begin at their first event, "
            f"{started.get('first_subscription', 0):,} at their first subscription start"
        )
        if started.get("none"):
            note += f"; {started['none']:,} have neither and enter no cutoff until they act"
        return note


@dataclass(frozen=True)
class IngestResult:
    """The accepted canonical rows (indexed by source row), their rejects, and the counts."""

    accepted: pd.DataFrame
    rejects: pd.DataFrame
    counts: IngestCounts


@dataclass(frozen=True)
class SourceTable:
    """A file as read: every well-formed row (index = 0-based row number) plus the lines that were not."""

    frame: pd.DataFrame
    malformed: pd.DataFrame = field(default_factory=lambda: pd.DataFrame({"row": [], "text": []}))


@dataclass(frozen=True)
class _Check:
    """One failing condition: a reason code, a row mask, and a detail template over source values."""

    reason: str
    mask: np.ndarray
    template: str
    values: Mapping[str, pd.Series] = field(default_factory=dict)


@dataclass
class _Parsed:
    values: pd.Series
    checks: list[_Check]


# --------------------------------------------------------------------------- column parsing


def _missing(series: pd.Series) -> np.ndarray:
    return series.isna().to_numpy(dtype=bool)


def _integral_floats(series: pd.Series) -> bool:
    values = series.to_numpy(dtype="float64", na_value=np.nan)
    finite = values[np.isfinite(values)]
    return bool(np.all(finite == np.round(finite))) and bool(np.all(np.abs(finite) < 2**53))


def as_text(series: pd.Series) -> pd.Series:
    """Any column as stripped `str` values, empty text as missing; integral numbers print without `.0`."""
    if pd.api.types.is_bool_dtype(series.dtype):
        text = series.astype("str")
    elif pd.api.types.is_integer_dtype(series.dtype):
        text = series.astype("Int64").astype("str")
    elif pd.api.types.is_float_dtype(series.dtype):
        text = series.astype("Int64").astype("str") if _integral_floats(series) else series.astype("str")
    elif isinstance(series.dtype, pd.CategoricalDtype):
        text = series.astype("object").astype("str")
    else:
        text = series.astype("str")
    text = text.str.strip()
    return text.mask(text == "")


def _numbers_or_none(text: pd.Series) -> pd.Series | None:
    """The column as float64 when every present value is a plain finite number (and none is a 0-padded code)."""
    present = text.notna()
    if not present.any() or text[present].str.contains(_LEADING_ZERO, regex=True).any():
        return None
    numbers = pd.to_numeric(text, errors="coerce").astype("float64")
    if numbers[present].isna().any() or not np.isfinite(numbers[present].to_numpy()).all():
        return None
    return numbers


def _parse_string(field: Field, raw: pd.Series, source: str) -> _Parsed:
    text = as_text(raw)
    checks = []
    if field.required:
        checks.append(_Check(f"missing_{field.name}", _missing(text), f"{field.name} is empty{source}"))
    return _Parsed(text, checks)


def _parse_float(field: Field, raw: pd.Series, source: str) -> _Parsed:
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        numbers = raw.astype("float64")
        present = numbers.notna().to_numpy(dtype=bool)
    else:
        text = as_text(raw)
        numbers = pd.to_numeric(text, errors="coerce").astype("float64")
        present = text.notna().to_numpy(dtype=bool)
    finite = np.isfinite(numbers.to_numpy(dtype="float64", na_value=np.nan))
    numbers = numbers.where(finite)
    checks = [
        _Check(
            f"unparseable_{field.name}",
            present & ~finite,
            f"{field.name} {{value}} is not a finite number{source}",
            {"value": raw},
        )
    ]
    if field.required:
        checks.insert(0, _Check(f"missing_{field.name}", ~present, f"{field.name} is empty{source}"))
    return _Parsed(numbers, checks)


def _is_texty(series: pd.Series) -> bool:
    return pd.api.types.is_string_dtype(series.dtype) or series.dtype == object


def _localize(naive: pd.Series, timezone: str) -> pd.Series:
    return naive.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")


def _parse_one_iso(value: str) -> pd.Timestamp:
    try:
        return pd.Timestamp(value)
    except ValueError:
        return pd.NaT


def _parse_text_timestamps(text: pd.Series, fmt: str | None, timezone: str) -> tuple[pd.Series, np.ndarray]:
    """Text as UTC timestamps, and which values parsed at all (to tell bad text from an invalid local time)."""
    if fmt is not None and ("%z" in fmt or "%Z" in fmt):
        parsed = pd.to_datetime(text, format=fmt, utc=True, errors="coerce")
        return parsed, parsed.notna().to_numpy(dtype=bool)
    if fmt is not None:
        naive = pd.to_datetime(text, format=fmt, errors="coerce")
        return _localize(naive, timezone), naive.notna().to_numpy(dtype=bool)
    result = pd.Series(pd.NaT, index=text.index, dtype=schemas.TIMESTAMP_DTYPE)
    parsed_ok = np.zeros(len(text), dtype=bool)
    present = text.notna().to_numpy(dtype=bool)
    has_offset = text.str.contains(_OFFSET_SUFFIX, regex=True).fillna(False).to_numpy(dtype=bool)
    naive_rows = present & ~has_offset
    try:
        naive = pd.to_datetime(text[naive_rows], format="ISO8601", errors="coerce")
    except ValueError:
        naive = None
    if naive is None or isinstance(naive.dtype, pd.DatetimeTZDtype):
        # Offsets the pattern did not recognise: look at these values one by one rather than guess.
        stamps = text[naive_rows].map(_parse_one_iso)
        aware = stamps.map(lambda stamp: stamp is not pd.NaT and stamp.tzinfo is not None).to_numpy(
            dtype=bool
        )
        has_offset[np.flatnonzero(naive_rows)[aware]] = True
        naive_rows = present & ~has_offset
        naive = pd.to_datetime(stamps[~aware])
    aware_values = pd.to_datetime(text[has_offset], format="ISO8601", utc=True, errors="coerce")
    if has_offset.any():
        result[has_offset] = aware_values.dt.as_unit("us")
        parsed_ok[has_offset] = aware_values.notna().to_numpy(dtype=bool)
    if naive_rows.any():
        result[naive_rows] = _localize(naive, timezone).dt.as_unit("us")
        parsed_ok[naive_rows] = naive.notna().to_numpy(dtype=bool)
    return result, parsed_ok


def _parse_timestamp(
    field: Field, raw: pd.Series, spec: ColumnSpec | ConstantSpec, timezone: str, source: str
) -> _Parsed:
    zone = spec.timezone or timezone
    fmt = spec.format if isinstance(spec, ColumnSpec) else None
    unit = spec.unit if isinstance(spec, ColumnSpec) else None
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        parsed = raw.dt.tz_convert("UTC")
        parsed_ok = parsed.notna().to_numpy(dtype=bool)
        present = parsed_ok
    elif pd.api.types.is_datetime64_dtype(raw.dtype):
        parsed = _localize(raw, zone)
        parsed_ok = present = raw.notna().to_numpy(dtype=bool)
    else:
        text = as_text(raw)
        present = text.notna().to_numpy(dtype=bool)
        if unit is not None:
            numbers = pd.to_numeric(text, errors="coerce")
            parsed = pd.to_datetime(numbers, unit=unit, utc=True, errors="coerce")
            parsed_ok = parsed.notna().to_numpy(dtype=bool)
        else:
            parsed, parsed_ok = _parse_text_timestamps(text, fmt, zone)
    parsed = parsed.astype(schemas.TIMESTAMP_DTYPE)
    unparsed = present & ~parsed_ok
    invalid_local = parsed_ok & _missing(parsed)
    how = f"format {fmt}" if fmt else f"epoch {unit}" if unit else "ISO 8601"
    checks = [
        _Check(
            f"unparseable_{field.name}",
            unparsed,
            f"{field.name} {{value}} is not a date-time ({how}){source}",
            {"value": raw},
        ),
        _Check(
            "invalid_local_time",
            invalid_local,
            f"{field.name} {{value}} does not exist or is ambiguous in {zone} (daylight saving change){source}",
            {"value": raw},
        ),
    ]
    if field.required:
        checks.insert(0, _Check(f"missing_{field.name}", ~present, f"{field.name} is empty{source}"))
    return _Parsed(parsed, checks)


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _json_string_literals(text: pd.Series) -> pd.Series:
    escaped = text
    for old, new in _JSON_ESCAPES:
        escaped = escaped.str.replace(old, new, regex=False)
    other_controls = escaped.str.contains(r"[\x00-\x1f]", regex=True).fillna(False).to_numpy(dtype=bool)
    literals = '"' + escaped + '"'
    if other_controls.any():
        literals[other_controls] = text[other_controls].map(
            lambda value: json.dumps(value, ensure_ascii=False)
        )
    return literals.fillna("null")


def _json_literals(series: pd.Series) -> pd.Series:
    """Each value of a column as a JSON literal (numbers stay numbers, missing is null), vectorised."""
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.map({True: "true", False: "false"}).astype("str").fillna("null")
    if pd.api.types.is_numeric_dtype(series.dtype):
        numbers = series.astype("float64")
    elif isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(series.dtype):
        return _json_string_literals(series.map(lambda ts: ts.isoformat(), na_action="ignore").astype("str"))
    elif series.dtype == object and series.map(lambda value: isinstance(value, dict | list)).any():
        return series.map(
            lambda value: json.dumps(value, default=str, ensure_ascii=False), na_action="ignore"
        ).fillna("null")
    else:
        text = as_text(series)
        numbers = _numbers_or_none(text)
        if numbers is None:
            return _json_string_literals(text)
    finite = np.isfinite(numbers.to_numpy(dtype="float64", na_value=np.nan))
    numbers = numbers.where(finite)
    literals = numbers.astype("Int64").astype("str") if _integral_floats(numbers) else numbers.astype("str")
    return literals.fillna("null")


def pack_json(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """One JSON object string per row, holding `columns` under their own names."""
    packed = pd.Series("{", index=frame.index, dtype="str")
    for position, column in enumerate(columns):
        separator = ", " if position else ""
        packed = (
            packed + f"{separator}{json.dumps(column, ensure_ascii=False)}: " + _json_literals(frame[column])
        )
    return packed + "}"


def _parse_json(field: Field, raw: pd.Series, source: str) -> _Parsed:
    if raw.dtype == object and raw.map(lambda value: isinstance(value, dict | list)).any():
        # Structs or maps from Parquet: serialise them; a list (of map pairs) becomes an object when it can.
        def to_json(value: Any) -> Any:
            if isinstance(value, list):
                try:
                    value = dict(value)
                except (TypeError, ValueError):
                    return json.dumps(value, default=str)
            return json.dumps(value, default=str, ensure_ascii=False) if isinstance(value, dict) else value

        raw = raw.map(to_json, na_action="ignore")
    text = as_text(raw)
    present = text.notna().to_numpy(dtype=bool)
    distinct = pd.unique(text[present])
    good = [value for value in distinct if _is_json_object(value)]
    valid = text.isin(good).to_numpy(dtype=bool)
    bad = present & ~valid
    return _Parsed(
        text.where(valid),
        [
            _Check(
                f"unparseable_{field.name}",
                bad,
                f"{field.name} {{value}} is not a JSON object{source}",
                {"value": raw},
            )
        ],
    )


def _source_of(spec: FieldSpec) -> str:
    if isinstance(spec, ColumnSpec):
        return f" (column {spec.column!r})"
    if isinstance(spec, PackSpec):
        return f" (columns {list(spec.columns)})"
    return " (constant)"


def _parse_field(field: Field, spec: FieldSpec, frame: pd.DataFrame, timezone: str) -> _Parsed:
    source = _source_of(spec)
    if isinstance(spec, PackSpec):
        return _Parsed(pack_json(frame, spec.columns), [])
    if isinstance(spec, ConstantSpec):
        value = spec.value.isoformat() if isinstance(spec.value, dt.date) else spec.value
        raw = pd.Series(value, index=frame.index, dtype="float64" if field.type == "float" else "str")
    else:
        raw = frame[spec.column]
    if field.type == "string":
        return _parse_string(field, raw, source)
    if field.type == "float":
        return _parse_float(field, raw, source)
    if field.type == "timestamp":
        return _parse_timestamp(field, raw, spec, timezone, source)
    return _parse_json(field, raw, source)


def _null_column(field: Field, index: pd.Index) -> pd.Series:
    return pd.Series(None, index=index, dtype=schemas.pandas_dtype(field))


# --------------------------------------------------------------------------- mapping resolution


def resolve_mapping(
    contract: Contract, columns: Iterable[str], mapping: InputMapping | None, *, source: str
) -> tuple[InputMapping, list[str]]:
    """Where each canonical field comes from in these columns, and the source columns nothing uses.

    A field the mapping does not mention is read from the column of the same name when there is one.
    InputError names the file and the column when a required field or a mapped column is missing.
    """
    columns = list(columns)
    present = set(columns)
    specs: InputMapping = dict(mapping or {})
    for name in contract.columns:
        if name not in specs and name in present:
            specs[name] = ColumnSpec(name)
    for name, spec in specs.items():
        needed = (
            spec.columns
            if isinstance(spec, PackSpec)
            else (spec.column,)
            if isinstance(spec, ColumnSpec)
            else ()
        )
        absent = [column for column in needed if column not in present]
        if absent:
            raise InputError(
                f"{source}: column {absent[0]!r} (mapped to {contract.kind} field {name!r}) not found; "
                f"the file has columns {columns}"
            )
    for name in contract.required_columns:
        if name not in specs:
            raise InputError(
                f"{source}: required {contract.kind} column {name!r} not found; the file has columns {columns}. "
                f"Rename it or map it in the [{contract.kind}] section of a mapping file"
            )
    used = {
        column
        for spec in specs.values()
        for column in (
            spec.columns
            if isinstance(spec, PackSpec)
            else (spec.column,)
            if isinstance(spec, ColumnSpec)
            else ()
        )
    }
    unused = [column for column in columns if column not in used]
    return specs, unused


# --------------------------------------------------------------------------- rows, rejects and counts


def _render(template: str, values: Mapping[str, pd.Series], positions: np.ndarray) -> pd.Series:
    """The detail text of the rows at `positions`, filling `{name}` placeholders with quoted source values."""
    rendered = pd.Series("", index=range(len(positions)), dtype="str")
    for literal, name, _, _ in string.Formatter().parse(template):
        rendered = rendered + literal
        if name is not None:
            shown = values[name].iloc[positions].reset_index(drop=True)
            text = shown.astype("str")
            rendered = rendered + (("'" + text + "'") if _is_texty(shown) else text).fillna("null")
    return rendered


def _raw_json(frame: pd.DataFrame, positions: np.ndarray) -> list[str]:
    if len(positions) == 0:
        return []
    rows = frame.iloc[positions]
    if not rows.columns.is_unique:
        rows = rows.set_axis([str(name) for name in rows.columns], axis=1)
        return [
            json.dumps(dict(zip(rows.columns, row, strict=True)), default=str)
            for row in rows.itertuples(index=False)
        ]
    text = rows.to_json(
        orient="records",
        lines=True,
        date_format="iso",
        date_unit="us",
        double_precision=15,
        force_ascii=False,
        default_handler=str,
    )
    return text.rstrip("\n").split("\n")


def _row_numbers(frame: pd.DataFrame) -> np.ndarray:
    index = frame.index
    if pd.api.types.is_integer_dtype(index.dtype) and index.is_unique:
        return index.to_numpy(dtype="int64")
    return np.arange(len(frame), dtype="int64")


def empty_rejects() -> pd.DataFrame:
    """A rejects frame with no rows and the canonical columns."""
    return pd.DataFrame(
        {
            "input": pd.Series(dtype="str"),
            "row": pd.Series(dtype="int64"),
            "reason": pd.Series(dtype="str"),
            "detail": pd.Series(dtype="str"),
            "raw": pd.Series(dtype="str"),
        }
    )


def _rejects_frame(
    kind: str,
    frame: pd.DataFrame,
    rows: np.ndarray,
    positions: np.ndarray,
    reasons: pd.Series,
    details: pd.Series,
) -> pd.DataFrame:
    if len(positions) == 0:
        return empty_rejects()
    return pd.DataFrame(
        {
            "input": pd.Series(kind, index=range(len(positions)), dtype="str"),
            "row": rows,
            "reason": reasons.to_numpy(),
            "detail": details.to_numpy(),
            "raw": _raw_json(frame, positions),
        }
    ).astype({"input": "str", "reason": "str", "detail": "str", "raw": "str"})


def _row_checks(kind: str, values: Mapping[str, pd.Series], options: IngestOptions) -> list[_Check]:
    """Checks across fields, run on parsed values (a value that did not parse never fails these)."""
    if kind == "events":
        checks = []
        if options.event_types is not None:
            unknown = values["event_type"].notna() & ~values["event_type"].isin(list(options.event_types))
            checks.append(
                _Check(
                    "unknown_event_type",
                    unknown.to_numpy(dtype=bool),
                    "event_type {event_type} is not one of the configured event types",
                    {"event_type": values["event_type"]},
                )
            )
        negative = (values["amount"] < 0) & values["event_type"].isin(
            list(options.non_negative_amount_event_types)
        )
        checks.append(
            _Check(
                "negative_amount",
                negative.to_numpy(dtype=bool),
                "amount {amount} is negative for event_type {event_type}",
                {"amount": values["amount"], "event_type": values["event_type"]},
            )
        )
        return checks
    if kind == "subscriptions":
        return [
            _Check(
                "negative_mrr",
                (values["mrr"] < 0).to_numpy(dtype=bool),
                "mrr {mrr} is negative",
                {"mrr": values["mrr"]},
            ),
            _Check(
                "end_before_start",
                (values["end"] < values["start"]).to_numpy(dtype=bool),
                "end {end} is before start {start}",
                {"end": values["end"], "start": values["start"]},
            ),
        ]
    if kind == "campaigns":
        propensity = values["propensity"]
        return [
            _Check(
                "invalid_propensity",
                ((propensity <= 0) | (propensity > 1)).to_numpy(dtype=bool),
                "propensity {propensity} is outside (0, 1]",
                {"propensity": propensity},
            )
        ]
    return []


def _repeats(frame: pd.DataFrame, key: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(rows whose key an earlier row has, source position of that earlier row) — exact, vectorised.

    Row hashes find the few rows whose key may repeat; the exact comparison runs on those rows only.
    """
    repeated = np.zeros(len(frame), dtype=bool)
    first = np.full(len(frame), -1, dtype="int64")
    hashes = pd.util.hash_pandas_object(frame[key], index=False).to_numpy()
    candidates = np.flatnonzero(pd.Series(hashes).duplicated(keep=False).to_numpy())
    if len(candidates) == 0:
        return repeated, first
    subset = frame[key].iloc[candidates]
    repeated[candidates] = subset.duplicated(keep="first").to_numpy(dtype=bool)
    groups = subset.groupby(key, dropna=False, sort=False).ngroup().to_numpy()
    first[candidates] = candidates[
        pd.Series(np.arange(len(candidates))).groupby(groups).transform("first").to_numpy()
    ]
    return repeated, first


def _extra_columns(frame: pd.DataFrame, unused: Sequence[str], contract: Contract) -> pd.DataFrame:
    """Users keep their other columns; CSV text that is wholly numeric is stored as numbers."""
    extras = {}
    for column in unused:
        if column in contract.columns:
            continue
        series = frame[column]
        if pd.api.types.is_string_dtype(series.dtype):
            numbers = _numbers_or_none(as_text(series))
            if numbers is not None:
                series = numbers.astype("Int64") if _integral_floats(numbers) else numbers
        extras[column] = series
    return pd.DataFrame(extras, index=frame.index)


def ingest_frame(
    kind: str,
    frame: pd.DataFrame,
    *,
    mapping: InputMapping | None = None,
    options: IngestOptions | None = None,
    source: str = "<frame>",
) -> IngestResult:
    """Validate one source frame into canonical rows, reject rows with reasons, and count.

    A unique integer index is taken as the source row numbers (as `read_input` makes it); any other index
    is replaced by positions 0..n-1. The accepted frame keeps those row numbers as its index.
    Raises InputError when a required column is missing even after the mapping.
    """
    options = options or IngestOptions()
    contract = schemas.contract(kind)
    specs, unused = resolve_mapping(contract, frame.columns, mapping, source=source)
    rows = _row_numbers(frame)
    frame = frame.reset_index(drop=True)
    values: dict[str, pd.Series] = {}
    checks: list[_Check] = []
    for canonical_field in contract.fields:
        spec = specs.get(canonical_field.name)
        if spec is None:
            values[canonical_field.name] = _null_column(canonical_field, frame.index)
            continue
        parsed = _parse_field(canonical_field, spec, frame, options.timezone)
        values[canonical_field.name] = parsed.values.astype(schemas.pandas_dtype(canonical_field))
        checks.extend(parsed.checks)
    checks.extend(_row_checks(kind, values, options))

    n_rows = len(frame)
    reasons = np.full(n_rows, "", dtype=object)
    for check in reversed(checks):
        reasons[check.mask] = check.reason
    rejected = np.zeros(n_rows, dtype=bool)
    for check in checks:
        rejected |= check.mask

    canonical = pd.DataFrame(values, index=frame.index)
    ignored: list[str] = []
    if contract.keeps_extra_columns:
        extras = _extra_columns(frame, unused, contract)
        canonical = pd.concat([canonical, extras], axis=1)
        ignored = [column for column in unused if column in contract.columns]
    else:
        ignored = list(unused)
    if ignored:
        log.info("%s: ignoring columns %s (not mapped to any %s field)", source, ignored, kind)

    duplicate, conflicting, first_rows = _duplicates(kind, canonical, ~rejected, options, rows)
    reasons[conflicting] = "conflicting_user_id"
    rejected |= conflicting
    reasons[duplicate] = "duplicate"
    keep = ~rejected & ~duplicate
    accepted = (canonical if keep.all() else canonical[keep]).set_axis(pd.Index(rows[keep]), axis=0)
    schemas.validate_canonical(kind, accepted)

    out = rejected | duplicate
    positions = np.flatnonzero(out)
    chosen = pd.Series(reasons[positions], dtype="str")
    details = _details(checks, chosen, positions, duplicate, conflicting, first_rows, options, kind)
    rejects = _rejects_frame(kind, frame, rows[positions], positions, chosen, details)
    by_reason = chosen[chosen != "duplicate"].value_counts()
    counts = IngestCounts(
        input=kind,
        read=n_rows,
        accepted=len(accepted),
        rejected=int(rejected.sum()),
        duplicates=int(duplicate.sum()),
        rejected_by_reason={str(reason): int(count) for reason, count in sorted(by_reason.items())},
        ignored_columns=tuple(ignored),
    )
    return IngestResult(accepted, rejects, counts)


def _duplicates(
    kind: str, canonical: pd.DataFrame, valid: np.ndarray, options: IngestOptions, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(duplicate mask, conflicting-user mask, source row each repeats) over the valid rows.

    Events repeat on the configured key, subscriptions and campaigns on all their columns. Users repeat on
    all their columns; a users row that repeats only the user_id of an earlier row is conflicting instead.
    """
    duplicate = np.zeros(len(canonical), dtype=bool)
    conflicting = np.zeros(len(canonical), dtype=bool)
    first_rows = np.full(len(canonical), -1, dtype="int64")
    positions = np.flatnonzero(valid)
    valid_rows = canonical if len(positions) == len(canonical) else canonical.iloc[positions]
    if kind == "events":
        key = list(options.duplicate_key)
    elif kind == "users":
        key = list(valid_rows.columns)
    else:
        key = list(schemas.contract(kind).columns)
    try:
        same, first = _repeats(valid_rows, key)
    except TypeError:  # unhashable extra user columns (nested Parquet values): compare the canonical ones
        same, first = _repeats(valid_rows, list(schemas.USER_COLUMNS))
    duplicate[positions[same]] = True
    first_rows[positions[same]] = rows[positions[first[same]]]
    if kind == "users":
        same_id, first_id = _repeats(valid_rows, ["user_id"])
        other = same_id & ~same
        conflicting[positions[other]] = True
        first_rows[positions[other]] = rows[positions[first_id[other]]]
    return duplicate, conflicting, first_rows


def _details(
    checks: Sequence[_Check],
    chosen: pd.Series,
    positions: np.ndarray,
    duplicate: np.ndarray,
    conflicting: np.ndarray,
    first_rows: np.ndarray,
    options: IngestOptions,
    kind: str,
) -> pd.Series:
    details = pd.Series("", index=range(len(positions)), dtype="str")
    also = pd.Series("", index=range(len(positions)), dtype="str")
    chosen_values = chosen.to_numpy(dtype=object)
    for check in checks:
        failing = check.mask[positions]
        primary = failing & (chosen_values == check.reason)
        if primary.any():
            details[primary] = _render(check.template, check.values, positions[primary]).to_numpy()
        secondary = failing & ~primary
        if secondary.any():
            also[secondary] = also[secondary] + ", " + check.reason
    for mask, template in (
        (duplicate, f"same {', '.join(options.duplicate_key) if kind == 'events' else 'values'} as row "),
        (conflicting, "user_id already given with other values in row "),
    ):
        selected = mask[positions]
        if selected.any():
            details[selected] = template + pd.Series(first_rows[positions[selected]]).astype("str").to_numpy()
    has_more = (also != "").to_numpy()
    if has_more.any():
        details[has_more] = details[has_more] + " (also: " + also[has_more].str.slice(2) + ")"
    return details


# --------------------------------------------------------------------------- the file layer


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (*CSV_SUFFIXES, *PARQUET_SUFFIXES):
        if name.endswith(suffix):
            return suffix
    raise InputError(
        f"{path}: unsupported file type; expected one of {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}"
    )


def _read_csv(path: Path) -> SourceTable:
    bad_lines: list[tuple[int | None, str]] = []

    def remember(row: pa_csv.InvalidRow) -> str:
        bad_lines.append((row.number, row.text))
        return "skip"

    parse = pa_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=remember)
    with pa_csv.open_csv(path, parse_options=parse) as reader:
        names = reader.schema.names
    duplicated_names = sorted({name for name in names if names.count(name) > 1})
    if duplicated_names:
        raise InputError(f"{path}: column(s) {duplicated_names} appear more than once in the header")
    convert = pa_csv.ConvertOptions(
        column_types=dict.fromkeys(names, pa.string()), null_values=[""], strings_can_be_null=True
    )
    bad_lines.clear()
    table = pa_csv.read_csv(path, parse_options=parse, convert_options=convert)
    if bad_lines:
        # Row numbers of skipped lines are only known when reading on one thread; re-read to get them.
        bad_lines.clear()
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(use_threads=False),
            parse_options=parse,
            convert_options=convert,
        )
    frame = table.to_pandas()
    # pyarrow numbers rows from 1 including the header; we number data rows from 0.
    skipped = np.array([number - 2 for number, _ in bad_lines], dtype="int64")
    if len(skipped):
        all_rows = np.arange(len(frame) + len(skipped), dtype="int64")
        frame.index = pd.Index(np.setdiff1d(all_rows, skipped, assume_unique=True))
    malformed = pd.DataFrame(
        {"row": skipped, "text": pd.Series([text for _, text in bad_lines], dtype="str")}
    )
    return SourceTable(frame, malformed)


def _read_parquet(path: Path) -> SourceTable:
    table = pq.read_table(path)
    columns = [
        column.dictionary_decode() if pa.types.is_dictionary(column.type) else column
        for column in table.columns
    ]
    table = pa.table(columns, names=table.column_names)
    frame = table.to_pandas(
        types_mapper=lambda arrow_type: pd.Int64Dtype() if pa.types.is_integer(arrow_type) else None
    )
    return SourceTable(frame)


def read_input(path: Path) -> SourceTable:
    """Read a CSV (.csv, .csv.gz; every column as text) or Parquet (.parquet, .pq) file.

    Raises InputError naming the file when it is missing, of another type, or cannot be parsed at all.
    """
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        return _read_csv(path) if suffix in CSV_SUFFIXES else _read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        kind = "CSV" if suffix in CSV_SUFFIXES else "Parquet"
        raise InputError(f"{path}: cannot be read as {kind}: {exc}") from None


def _with_malformed(kind: str, result: IngestResult, malformed: pd.DataFrame) -> IngestResult:
    if malformed.empty:
        return result
    rejects = pd.DataFrame(
        {
            "input": pd.Series(kind, index=range(len(malformed)), dtype="str"),
            "row": malformed["row"].to_numpy(dtype="int64"),
            "reason": pd.Series("malformed_row", index=range(len(malformed)), dtype="str"),
            "detail": pd.Series(
                "the line has another number of fields than the header",
                index=range(len(malformed)),
                dtype="str",
            ),
            "raw": [json.dumps({"line": text}, ensure_ascii=False) for text in malformed["text"]],
        }
    )
    combined = pd.concat([result.rejects, rejects], ignore_index=True).sort_values(
        "row", kind="stable", ignore_index=True
    )
    counts = result.counts
    by_reason = dict(counts.rejected_by_reason)
    by_reason["malformed_row"] = by_reason.get("malformed_row", 0) + len(malformed)
    counts = IngestCounts(
        input=counts.input,
        read=counts.read + len(malformed),
        accepted=counts.accepted,
        rejected=counts.rejected + len(malformed),
        duplicates=counts.duplicates,
        rejected_by_reason=dict(sorted(by_reason.items())),
        ignored_columns=counts.ignored_columns,
    )
    return IngestResult(result.accepted, combined, counts)


def ingest_inputs(
    paths: Mapping[str, Path],
    *,
    mapping: Mapping[str, InputMapping] | None = None,
    options: IngestOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, IngestResult]:
    """Read and ingest each given input (kind -> path) in memory; nothing is written."""
    unknown = [kind for kind in paths if kind not in schemas.KINDS]
    if unknown:
        raise ValueError(f"unknown input kind(s) {unknown}; expected {', '.join(schemas.KINDS)}")
    mapping = mapping or {}
    results: dict[str, IngestResult] = {}
    for kind in schemas.KINDS:
        if kind not in paths:
            continue
        path = Path(paths[kind])
        if progress:
            progress(f"reading {kind} from {path}")
        table = read_input(path)
        if progress:
            progress(f"validating {len(table.frame) + len(table.malformed):,} {kind} rows")
        result = ingest_frame(kind, table.frame, mapping=mapping.get(kind), options=options, source=str(path))
        results[kind] = _with_malformed(kind, result, table.malformed)
    if "users" in results:
        results["users"] = start_users_without_signup(
            results["users"], results.get("events"), results.get("subscriptions")
        )
    return results


def start_users_without_signup(
    users: IngestResult, events: IngestResult | None, subscriptions: IngestResult | None
) -> IngestResult:
    """Users without a signup_ts begin at their first accepted event or first subscription start, whichever
    is earlier; the counts say how many began where (`started_without_signup`)."""
    accepted = users.accepted
    missing = accepted["signup_ts"].isna()
    if not missing.any():
        return users
    firsts = []
    for source, result, column in (
        ("first_event", events, "ts"),
        ("first_subscription", subscriptions, "start"),
    ):
        if result is not None and not result.accepted.empty:
            first = result.accepted.groupby("user_id")[column].min().rename(source)
            firsts.append(first)
    starts = pd.concat(firsts, axis=1) if firsts else pd.DataFrame(index=pd.Index([], dtype="str"))
    for source in ("first_event", "first_subscription"):
        if source not in starts:
            starts[source] = pd.Series(pd.NaT, index=starts.index, dtype=schemas.TIMESTAMP_DTYPE)
    ids = accepted.loc[missing, "user_id"]
    found = starts.reindex(ids.to_numpy())
    start = found.min(axis=1).astype(schemas.TIMESTAMP_DTYPE)
    from_subscription = found["first_subscription"].notna() & (
        found["first_event"].isna() | (found["first_subscription"] < found["first_event"])
    )
    where = np.where(start.isna(), "none", np.where(from_subscription, "first_subscription", "first_event"))
    filled = accepted.copy()
    filled.loc[missing, "signup_ts"] = start.to_numpy()
    started = {name: int((where == name).sum()) for name in ("first_event", "first_subscription", "none")}
    log.info("users without signup_ts: %s", started)
    counts = dataclasses.replace(users.counts, started_without_signup={k: v for k, v in started.items() if v})
    return IngestResult(filled, users.rejects, counts)


def all_rejects(results: Mapping[str, IngestResult]) -> pd.DataFrame:
    """The rejects of every input in one frame (inputs in contract order, rows in source order)."""
    frames = [results[kind].rejects for kind in schemas.KINDS if kind in results]
    frames = [frame for frame in frames if not frame.empty]
    if not frames:
        return empty_rejects()
    return pd.concat(frames, ignore_index=True)


def _rejects_arrow(rejects: pd.DataFrame) -> pa.Table:
    schema = pa.schema(
        [
            pa.field("input", pa.string(), nullable=False),
            pa.field("row", pa.int64(), nullable=False),
            pa.field("reason", pa.string(), nullable=False),
            pa.field("detail", pa.string(), nullable=False),
            pa.field("raw", pa.string(), nullable=False),
        ]
    )
    return pa.Table.from_pandas(rejects[list(REJECT_COLUMNS)], preserve_index=False).cast(schema)


def write_canonical(out_dir: Path, results: Mapping[str, IngestResult]) -> list[Path]:
    """Write `<kind>.parquet` per result and `rejects.parquet` into out_dir, all or nothing.

    Files go to a fresh sibling directory first. A new out_dir is that directory renamed; an existing one
    gets each file moved in with an atomic rename, and its other files are left alone.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.{uuid.uuid4().hex[:12]}.partial"
    staging.mkdir()
    try:
        names = []
        for kind, result in results.items():
            pq.write_table(schemas.to_arrow(kind, result.accepted), staging / f"{kind}.parquet")
            names.append(f"{kind}.parquet")
        pq.write_table(_rejects_arrow(all_rejects(results)), staging / REJECTS_FILE)
        names.append(REJECTS_FILE)
        if out_dir.is_dir():
            for name in names:
                os.replace(staging / name, out_dir / name)
        else:
            os.replace(staging, out_dir)
        return [out_dir / name for name in names]
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def ingest_files(
    out_dir: Path,
    *,
    events: Path,
    users: Path | None = None,
    subscriptions: Path | None = None,
    campaigns: Path | None = None,
    mapping: Mapping[str, InputMapping] | None = None,
    options: IngestOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, IngestCounts]:
    """Ingest the given files into the canonical data directory and return the counts per input.

    Every input is read and validated before anything is written, so an unusable file (InputError) or
    mapping (MappingError) leaves out_dir untouched.
    """
    paths = {"events": events, "users": users, "subscriptions": subscriptions, "campaigns": campaigns}
    paths = {kind: Path(path) for kind, path in paths.items() if path is not None}
    results = ingest_inputs(paths, mapping=mapping, options=options, progress=progress)
    if progress:
        progress(f"writing {out_dir}")
    write_canonical(out_dir, results)
    return {kind: result.counts for kind, result in results.items()}


__all__ = [
    "REJECT_COLUMNS",
    "REJECT_REASONS",
    "IngestCounts",
    "IngestOptions",
    "IngestResult",
    "InputError",
    "MappingError",
    "SourceTable",
    "all_rejects",
    "as_text",
    "empty_rejects",
    "ingest_files",
    "ingest_frame",
    "ingest_inputs",
    "pack_json",
    "read_input",
    "resolve_mapping",
    "write_canonical",
]
