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
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features import schemas
from features.datadir import (
    REJECTS_FILE,
    Checkpoint,
    DataDirectoryWriter,
    Publication,
    current_version,
    link_or_copy,
)
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
from features.sources import (
    DEFAULT_MAX_FIELD_BYTES,
    InputError,
    SourceTable,
    read_input,
)

log = logging.getLogger(__name__)

REJECT_COLUMNS: tuple[str, ...] = ("input", "row", "reason", "detail", "raw")
REFUSAL_EXAMPLES = 5

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
    "undecodable_row": "a CSV row that is not UTF-8 text (its line number and first bad byte in the detail)",
    "oversized_field": "a field longer than ingest.max_field_bytes",
    "control_character": "an id or category (user_id, event_type, plan, action, ...) holds a control character",
    "implausible_ts": "ts before ingest.earliest_timestamp or after the run's clock + ingest.max_days_after_run",
    "implausible_signup_ts": "signup_ts outside the plausible window (as for ts)",
    "implausible_start": "start outside the plausible window (as for ts)",
    "implausible_end": "end before ingest.earliest_timestamp (a future end is a scheduled one and is kept)",
    "duplicate": "same stable key as an earlier accepted row (counted as a duplicate, not as rejected)",
}

# Patterns use ASCII classes ([0-9], not \d or \s) so pandas runs them in pyarrow's RE2, not row by row.
# An explicit UTC offset or Z after a time of day: "…T10:00:00+05:30", "… 10:00Z", "…T10:00-0800".
_OFFSET_SUFFIX = (
    r"[Tt ][0-9]{1,2}:?[0-9]{2}(?::?[0-9]{2}(?:[.,][0-9]+)?)?[ \t]*(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)$"
)
# Text that would lose meaning as a number (identifiers and codes such as zip codes).
_LEADING_ZERO = r"^[+-]?0[0-9]"
# C0 controls (NUL, tab, newline, ...), DEL and C1 controls: never part of an id or a category.
_CONTROL_CHARACTER = r"[\x00-\x1f\x7f-\x9f]"
_JSON_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))


@dataclass(frozen=True)
class IngestOptions:
    """Business parameters of ingest (from the config's `[ingest]` table and the CLI)."""

    timezone: str = "UTC"
    duplicate_key: tuple[str, ...] = schemas.EVENT_COLUMNS
    non_negative_amount_event_types: tuple[str, ...] = ("purchase",)
    event_types: tuple[str, ...] | None = None
    """When given, events with any other event_type are rejected as `unknown_event_type`."""
    earliest_timestamp: dt.date = dt.date(1970, 1, 1)
    """Timestamps before this day (UTC) are rejected as `implausible_<field>`."""
    max_days_after_run: float = 1.0
    """Timestamps later than the run's clock plus this many days are rejected (a subscription's `end` may lie
    in the future)."""
    run_clock: dt.datetime | None = None
    """The run's clock; None: the time `ingest_inputs` starts (one clock for every input of a run)."""
    max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES
    """A CSV or Parquet text value longer than this rejects its row (`oversized_field`)."""
    min_accepted_share: float = 0.5
    """`ingest_files` refuses a run in which an input accepts no row, or fewer than this share of the rows it
    did not count as duplicates, and leaves the data directory as it was."""

    def __post_init__(self) -> None:
        check_timezone(self.timezone, where="ingest timezone")
        if self.run_clock is not None and self.run_clock.tzinfo is None:
            raise ValueError("run_clock must be time-zone aware")
        if not self.max_days_after_run >= 0:
            raise ValueError(f"max_days_after_run must be >= 0, got {self.max_days_after_run}")
        if self.max_field_bytes <= 0:
            raise ValueError(f"max_field_bytes must be > 0, got {self.max_field_bytes}")
        if not 0 <= self.min_accepted_share <= 1:
            raise ValueError(f"min_accepted_share must be within [0, 1], got {self.min_accepted_share}")
        unknown = [name for name in self.duplicate_key if name not in schemas.EVENT_COLUMNS]
        if not self.duplicate_key or unknown:
            raise ValueError(
                f"duplicate_key must be a non-empty list of event columns ({', '.join(schemas.EVENT_COLUMNS)}); "
                f"got {list(self.duplicate_key)}"
            )

    def timestamp_window(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        """(earliest, latest) plausible timestamp of this run, both UTC."""
        clock = self.run_clock or dt.datetime.now(dt.UTC)
        earliest = pd.Timestamp(self.earliest_timestamp).tz_localize("UTC")
        return earliest, pd.Timestamp(clock).tz_convert("UTC") + pd.Timedelta(days=self.max_days_after_run)


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


def _escaped(text: pd.Series, rows: np.ndarray) -> pd.Series:
    """The values at `rows` with control characters shown as escapes (\\x00), the others missing."""
    shown = pd.Series(None, index=text.index, dtype="str")
    shown[rows] = text[rows].map(lambda value: value.encode("unicode_escape").decode("ascii"))
    return shown


def _parse_string(field: Field, raw: pd.Series, source: str) -> _Parsed:
    text = as_text(raw)
    checks = []
    if field.required:
        checks.append(_Check(f"missing_{field.name}", _missing(text), f"{field.name} is empty{source}"))
    controls = text.str.contains(_CONTROL_CHARACTER, regex=True).fillna(False).to_numpy(dtype=bool)
    checks.append(
        _Check(
            "control_character",
            controls,
            f"{field.name} {{value}} holds a control character{source}",
            {"value": _escaped(text, controls) if controls.any() else text},
        )
    )
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


def _window_checks(
    field: Field, parsed: pd.Series, raw: pd.Series, window: tuple[pd.Timestamp, pd.Timestamp], source: str
) -> list[_Check]:
    """Timestamps before the earliest plausible one, or after the run's clock plus the allowed days (a
    subscription's end excepted: a scheduled end may lie in the future)."""
    earliest, latest = window
    reason = f"implausible_{field.name}"
    checks = [
        _Check(
            reason,
            (parsed < earliest).to_numpy(dtype=bool, na_value=False),
            f"{field.name} {{value}} is before {earliest:%Y-%m-%d} (ingest.earliest_timestamp){source}",
            {"value": raw},
        )
    ]
    if field.name != "end":
        checks.append(
            _Check(
                reason,
                (parsed > latest).to_numpy(dtype=bool, na_value=False),
                f"{field.name} {{value}} is after {latest:%Y-%m-%d %H:%M} UTC, the run's clock plus "
                f"ingest.max_days_after_run{source}",
                {"value": raw},
            )
        )
    return checks


def _parse_timestamp(
    field: Field,
    raw: pd.Series,
    spec: ColumnSpec | ConstantSpec,
    timezone: str,
    window: tuple[pd.Timestamp, pd.Timestamp],
    source: str,
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
    checks.extend(_window_checks(field, parsed, raw, window, source))
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


def _parse_field(
    field: Field,
    spec: FieldSpec,
    frame: pd.DataFrame,
    timezone: str,
    window: tuple[pd.Timestamp, pd.Timestamp],
) -> _Parsed:
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
        return _parse_timestamp(field, raw, spec, timezone, window, source)
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
    window = options.timestamp_window()
    for canonical_field in contract.fields:
        spec = specs.get(canonical_field.name)
        if spec is None:
            values[canonical_field.name] = _null_column(canonical_field, frame.index)
            continue
        parsed = _parse_field(canonical_field, spec, frame, options.timezone, window)
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


def _with_unreadable(kind: str, result: IngestResult, unreadable: pd.DataFrame) -> IngestResult:
    """The result with the rows the reader could not read (malformed, undecodable, oversized) as rejects."""
    if unreadable.empty:
        return result
    rejects = pd.DataFrame(
        {
            "input": pd.Series(kind, index=range(len(unreadable)), dtype="str"),
            "row": unreadable["row"].to_numpy(dtype="int64"),
            "reason": unreadable["reason"].to_numpy(),
            "detail": unreadable["detail"].to_numpy(),
            "raw": unreadable["raw"].to_numpy(),
        }
    ).astype({"reason": "str", "detail": "str", "raw": "str"})
    combined = pd.concat([result.rejects, rejects], ignore_index=True).sort_values(
        "row", kind="stable", ignore_index=True
    )
    counts = result.counts
    by_reason = dict(counts.rejected_by_reason)
    for reason, n in unreadable["reason"].value_counts().items():
        by_reason[str(reason)] = by_reason.get(str(reason), 0) + int(n)
    counts = dataclasses.replace(
        counts,
        read=counts.read + len(unreadable),
        rejected=counts.rejected + len(unreadable),
        rejected_by_reason=dict(sorted(by_reason.items())),
    )
    return IngestResult(result.accepted, combined, counts)


def ingest_inputs(
    paths: Mapping[str, Path],
    *,
    mapping: Mapping[str, InputMapping] | None = None,
    options: IngestOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, IngestResult]:
    """Read and ingest each given input (kind -> path) in memory; nothing is written.

    Every input of the run is checked against one clock (`options.run_clock`, else now)."""
    unknown = [kind for kind in paths if kind not in schemas.KINDS]
    if unknown:
        raise ValueError(f"unknown input kind(s) {unknown}; expected {', '.join(schemas.KINDS)}")
    mapping = mapping or {}
    options = options or IngestOptions()
    if options.run_clock is None:
        options = dataclasses.replace(options, run_clock=dt.datetime.now(dt.UTC))
    results: dict[str, IngestResult] = {}
    for kind in schemas.KINDS:
        if kind not in paths:
            continue
        path = Path(paths[kind])
        if progress:
            progress(f"reading {kind} from {path}")
        table = read_input(path, max_field_bytes=options.max_field_bytes)
        if progress:
            progress(f"validating {len(table.frame) + len(table.unreadable):,} {kind} rows")
        result = ingest_frame(kind, table.frame, mapping=mapping.get(kind), options=options, source=str(path))
        results[kind] = _with_unreadable(kind, result, table.unreadable)
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


class IngestRefused(InputError):
    """A run in which an input accepted no row, or too small a share of its rows: nothing was written."""

    def __init__(
        self, message: str, counts: Mapping[str, IngestCounts], examples: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.counts = dict(counts)
        self.examples = list(examples)
        """A few rejected rows ("events row 3: detail"), since a refused run writes no rejects file."""


@dataclass(frozen=True)
class IngestRun:
    """What one ingest run did: the counts per input and the version it made current."""

    counts: dict[str, IngestCounts]
    publication: Publication
    carried_over: tuple[str, ...] = ()

    @property
    def data_path(self) -> Path:
        """The directory of the version this run made current."""
        return self.publication.path

    @property
    def notes(self) -> list[str]:
        """What the run said about the directory: leftovers cleaned, a flat layout migrated, inputs kept."""
        return list(self.publication.notes)


def refusal(counts: Mapping[str, IngestCounts], min_accepted_share: float) -> str | None:
    """Why a run must not replace the data (an input accepted nothing, or less than the share), else None."""
    problems = []
    for kind, count in counts.items():
        considered = count.accepted + count.rejected
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in count.rejected_by_reason.items())
        if count.read == 0:
            problems.append(f"{kind}: the file has no data rows")
        elif count.accepted == 0:
            problems.append(f"{kind}: none of {count.read:,} rows accepted (rejected: {reasons})")
        elif count.accepted < min_accepted_share * considered:
            problems.append(
                f"{kind}: {count.accepted:,} of {considered:,} rows accepted ({count.accepted / considered:.0%}), "
                f"below ingest.min_accepted_share {min_accepted_share:.0%} (rejected: {reasons})"
            )
    return "; ".join(problems) or None


def _write_version(
    staging: Path, current: Path | None, results: Mapping[str, IngestResult], carried: list[str]
) -> None:
    """One version's files: this run's inputs and their rejects, plus the inputs this run did not give
    (and their rejects) taken over from the current version."""
    for kind, result in results.items():
        pq.write_table(schemas.to_arrow(kind, result.accepted), staging / f"{kind}.parquet")
    rejects = all_rejects(results)
    if current is not None:
        carried.extend(
            kind for kind in schemas.KINDS if kind not in results and (current / f"{kind}.parquet").is_file()
        )
        for kind in carried:
            link_or_copy(current / f"{kind}.parquet", staging / f"{kind}.parquet")
        if carried and (current / REJECTS_FILE).is_file():
            previous = pq.read_table(current / REJECTS_FILE).to_pandas()
            previous = previous[previous["input"].isin(carried)]
            order = {kind: position for position, kind in enumerate(schemas.KINDS)}
            rejects = pd.concat([rejects, previous], ignore_index=True).sort_values(
                "input", key=lambda column: column.map(order), kind="stable", ignore_index=True
            )
    pq.write_table(_rejects_arrow(rejects), staging / REJECTS_FILE)


def _publish(writer: DataDirectoryWriter, results: Mapping[str, IngestResult]) -> IngestRun:
    carried: list[str] = []
    publication = writer.publish(lambda staging, current: _write_version(staging, current, results, carried))
    if carried:
        publication.notes.append(
            f"kept {', '.join(carried)} (and their rejects) from version {publication.previous}"
        )
    counts = {kind: result.counts for kind, result in results.items()}
    return IngestRun(counts, publication, tuple(carried))


def write_canonical(
    out_dir: Path, results: Mapping[str, IngestResult], *, checkpoint: Checkpoint | None = None
) -> IngestRun:
    """Write `<kind>.parquet` per result and `rejects.parquet` as a new version of out_dir and make it current
    in one step (features.datadir); inputs not in `results` are taken over from the current version."""
    with DataDirectoryWriter(out_dir, checkpoint=checkpoint) as writer:
        return _publish(writer, results)


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
    checkpoint: Checkpoint | None = None,
) -> IngestRun:
    """Ingest the given files into the canonical data directory as its new current version.

    All or nothing: every input is read and validated before anything is written, so an unusable file
    (InputError), mapping (MappingError) or a refused run (IngestRefused: an input accepted nothing, or less
    than `options.min_accepted_share`) leaves out_dir as it was. What a killed run left in out_dir is
    cleaned first (the run holds out_dir's lock throughout).
    """
    options = options or IngestOptions()
    paths = {"events": events, "users": users, "subscriptions": subscriptions, "campaigns": campaigns}
    paths = {kind: Path(path) for kind, path in paths.items() if path is not None}
    with DataDirectoryWriter(out_dir, checkpoint=checkpoint) as writer:
        results = ingest_inputs(paths, mapping=mapping, options=options, progress=progress)
        counts = {kind: result.counts for kind, result in results.items()}
        problem = refusal(counts, options.min_accepted_share)
        if problem:
            version = current_version(out_dir) if Path(out_dir).is_dir() else None
            kept = (
                f"{out_dir} still holds version {version}"
                if version
                else f"{out_dir} is unchanged"
                if Path(out_dir).is_dir()
                else f"{out_dir} was not created"
            )
            rejects = all_rejects(results)
            rejects = rejects[rejects["reason"] != "duplicate"].head(REFUSAL_EXAMPLES)
            examples = [
                f"{r.input} row {r.row}: {r.reason}: {r.detail}" for r in rejects.itertuples(index=False)
            ]
            raise IngestRefused(f"refused, nothing written: {problem}. {kept}", counts, examples)
        if progress:
            progress(f"writing {out_dir}")
        return _publish(writer, results)


__all__ = [
    "REJECTS_FILE",
    "REJECT_COLUMNS",
    "REJECT_REASONS",
    "IngestCounts",
    "IngestOptions",
    "IngestRefused",
    "IngestResult",
    "IngestRun",
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
    "refusal",
    "resolve_mapping",
    "write_canonical",
]
