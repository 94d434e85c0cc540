"""The canonical data contract: events (required), users, subscriptions and campaigns.

Every table the rest of the system reads has the columns and dtypes below, whatever the source export looked
like: strings for ids and categories, `datetime64[us, UTC]` timestamps (`timestamp[us, tz=UTC]` in Parquet),
float64 for money and probabilities, and `properties` as a JSON object serialised to a string.
`validate_canonical(kind, frame)` checks a frame (or an Arrow table read back from Parquet) against it, so a
producer such as the simulator can be tested against the same definition that ingest writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pandera.pandas as pa
import pyarrow as pa_arrow

FieldType = Literal["string", "timestamp", "float", "json"]

KINDS: tuple[str, ...] = ("events", "users", "subscriptions", "campaigns")

TIMESTAMP_DTYPE = pd.DatetimeTZDtype(unit="us", tz="UTC")
STRING_DTYPE = "str"
FLOAT_DTYPE = "float64"

_ARROW_TYPES: dict[str, pa_arrow.DataType] = {
    "string": pa_arrow.string(),
    "timestamp": pa_arrow.timestamp("us", tz="UTC"),
    "float": pa_arrow.float64(),
    "json": pa_arrow.string(),
}


@dataclass(frozen=True)
class Field:
    """One canonical column: its type, and whether every row must have a value."""

    name: str
    type: FieldType
    required: bool
    description: str


@dataclass(frozen=True)
class Contract:
    """The canonical shape of one input kind."""

    kind: str
    fields: tuple[Field, ...]
    keeps_extra_columns: bool
    schema: pa.DataFrameSchema

    @property
    def columns(self) -> tuple[str, ...]:
        """Canonical column names, in output order."""
        return tuple(field.name for field in self.fields)

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Columns an input must provide (directly or through a mapping), non-null in every accepted row."""
        return tuple(field.name for field in self.fields if field.required)


def _is_finite(series: pd.Series) -> pd.Series:
    return pd.Series(np.isfinite(series.to_numpy(dtype="float64", na_value=np.nan)), index=series.index)


def _column(field: Field) -> pa.Column:
    checks: list[pa.Check] = []
    if field.type == "string":
        dtype = pa.String
        if field.required:
            checks.append(pa.Check.str_length(min_value=1, error="empty string"))
    elif field.type == "json":
        dtype = pa.String
        checks.append(pa.Check.str_startswith("{", ignore_na=True, error="not a JSON object"))
    elif field.type == "timestamp":
        dtype = TIMESTAMP_DTYPE
    else:
        dtype = FLOAT_DTYPE
        checks.append(pa.Check(_is_finite, ignore_na=True, error="not finite"))
    return pa.Column(dtype, nullable=not field.required, checks=checks, description=field.description)


def _schema(
    kind: str,
    fields: tuple[Field, ...],
    *,
    strict: bool,
    column_checks: Mapping[str, list[pa.Check]] | None = None,
    frame_checks: list[pa.Check] | None = None,
    unique: list[str] | None = None,
) -> pa.DataFrameSchema:
    columns = {field.name: _column(field) for field in fields}
    for name, checks in (column_checks or {}).items():
        columns[name] = columns[name].set_checks([*columns[name].checks, *checks])
    return pa.DataFrameSchema(
        columns,
        checks=frame_checks or [],
        strict=strict,
        ordered=False,
        unique=unique,
        name=kind,
    )


def _end_not_before_start(frame: pd.DataFrame) -> pd.Series:
    return frame["end"].isna() | (frame["end"] >= frame["start"])


EVENT_FIELDS = (
    Field("user_id", "string", True, "Who did it."),
    Field("ts", "timestamp", True, "When, in UTC."),
    Field("event_type", "string", True, "What happened (login, purchase, cancel, ...)."),
    Field("amount", "float", False, "Revenue of the event, when it has one."),
    Field("properties", "json", False, "Anything else about the event, as a JSON object."),
)
USER_FIELDS = (
    Field("user_id", "string", True, "The user."),
    # optional: a transaction export often has none; ingest starts such users at their first event or first
    # subscription start (whichever is earlier) and says how many it started so
    Field("signup_ts", "timestamp", False, "When the user signed up, in UTC (else their first activity)."),
    Field("plan", "string", False, "Plan at signup."),
    Field("channel", "string", False, "Acquisition channel."),
    Field("country", "string", False, "Country."),
)
SUBSCRIPTION_FIELDS = (
    Field("user_id", "string", True, "The subscriber."),
    Field("plan", "string", True, "The plan of this subscription period."),
    Field("start", "timestamp", True, "Start of the period, in UTC."),
    Field("end", "timestamp", False, "End of the period, in UTC; null while it is running."),
    Field("mrr", "float", True, "Monthly recurring revenue of the period; never negative."),
)
CAMPAIGN_FIELDS = (
    Field("user_id", "string", True, "The contacted user."),
    Field("ts", "timestamp", True, "When the contact happened, in UTC."),
    Field("action", "string", True, "Which intervention was applied."),
    Field("propensity", "float", False, "Probability the action was chosen with, in (0, 1], when known."),
)

EVENTS = _schema("events", EVENT_FIELDS, strict=True)
USERS = _schema("users", USER_FIELDS, strict=False, unique=["user_id"])
SUBSCRIPTIONS = _schema(
    "subscriptions",
    SUBSCRIPTION_FIELDS,
    strict=True,
    column_checks={"mrr": [pa.Check.ge(0, ignore_na=True)]},
    frame_checks=[pa.Check(_end_not_before_start, error="end before start")],
)
CAMPAIGNS = _schema(
    "campaigns",
    CAMPAIGN_FIELDS,
    strict=True,
    column_checks={
        "propensity": [pa.Check.in_range(0, 1, include_min=False, include_max=True, ignore_na=True)]
    },
)

CONTRACTS: dict[str, Contract] = {
    "events": Contract("events", EVENT_FIELDS, False, EVENTS),
    "users": Contract("users", USER_FIELDS, True, USERS),
    "subscriptions": Contract("subscriptions", SUBSCRIPTION_FIELDS, False, SUBSCRIPTIONS),
    "campaigns": Contract("campaigns", CAMPAIGN_FIELDS, False, CAMPAIGNS),
}

EVENT_COLUMNS = CONTRACTS["events"].columns
USER_COLUMNS = CONTRACTS["users"].columns
SUBSCRIPTION_COLUMNS = CONTRACTS["subscriptions"].columns
CAMPAIGN_COLUMNS = CONTRACTS["campaigns"].columns


def contract(kind: str) -> Contract:
    """The contract of `kind` (one of KINDS), with a clear error for anything else."""
    try:
        return CONTRACTS[kind]
    except KeyError:
        raise ValueError(f"unknown input kind {kind!r}; expected one of {', '.join(KINDS)}") from None


def pandas_dtype(field: Field) -> object:
    """The pandas dtype a canonical frame holds for `field`."""
    if field.type == "timestamp":
        return TIMESTAMP_DTYPE
    if field.type == "float":
        return FLOAT_DTYPE
    return STRING_DTYPE


def arrow_schema(kind: str) -> pa_arrow.Schema:
    """The exact Parquet/Arrow schema of the canonical columns of `kind` (extra user columns not included)."""
    return pa_arrow.schema(
        [
            pa_arrow.field(field.name, _ARROW_TYPES[field.type], nullable=not field.required)
            for field in contract(kind).fields
        ]
    )


def to_arrow(kind: str, frame: pd.DataFrame) -> pa_arrow.Table:
    """A canonical frame as an Arrow table with the exact canonical types (extra columns as pandas maps them)."""
    canonical = arrow_schema(kind)
    # Timestamps go over as naive UTC values (pandas 3 warns when Arrow reads a tz-aware column's `.values`),
    # and the cast below puts the UTC zone back without changing any value.
    timestamps = {
        column: frame[column].dt.tz_convert("UTC").dt.tz_localize(None)
        for column in canonical.names
        if column in frame.columns and isinstance(frame[column].dtype, pd.DatetimeTZDtype)
    }
    table = pa_arrow.Table.from_pandas(frame.assign(**timestamps), preserve_index=False)
    fields = [
        canonical.field(name) if name in canonical.names else table.schema.field(name)
        for name in table.schema.names
    ]
    return table.cast(pa_arrow.schema(fields))


def _same_arrow_type(actual: pa_arrow.DataType, expected: pa_arrow.DataType) -> bool:
    # pandas writes its `str` dtype as large_string; both are the same logical string type.
    if pa_arrow.types.is_string(expected):
        return pa_arrow.types.is_string(actual) or pa_arrow.types.is_large_string(actual)
    return actual.equals(expected)


def _check_arrow_types(kind: str, table: pa_arrow.Table) -> None:
    expected = arrow_schema(kind)
    wrong = [
        f"{field.name}: expected {field.type}, got {table.schema.field(field.name).type}"
        for field in expected
        if field.name in table.schema.names
        and not _same_arrow_type(table.schema.field(field.name).type, field.type)
    ]
    if wrong:
        raise pa.errors.SchemaError(
            contract(kind).schema, table, f"{kind}: wrong Arrow types: {'; '.join(wrong)}"
        )


def validate_canonical(kind: str, frame: pd.DataFrame | pa_arrow.Table) -> pd.DataFrame:
    """Check a frame against the canonical contract of `kind`; return it, or raise pandera's SchemaErrors.

    An Arrow table (e.g. `pyarrow.parquet.read_table(path)`) is also checked for the exact Parquet types
    (`string`, `timestamp[us, tz=UTC]`, `double`) before its rows are validated.
    """
    schema = contract(kind).schema
    if isinstance(frame, pa_arrow.Table):
        _check_arrow_types(kind, frame)
        frame = frame.to_pandas()
    return schema.validate(frame, lazy=True)
