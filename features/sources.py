"""Reading raw export files for ingest, row by row where a row can be bad: a CSV line that is not UTF-8, has
another number of fields than the header, or holds a field longer than the limit is set aside with its row
number, line and reason, and the rest of the file is read.

The fast path is one pyarrow read of the whole file. Only when pyarrow refuses the file for a reason that
belongs to some rows (undecodable bytes, a row too long for its block) is the file split into records here
(vectorised: a newline ends a record unless it sits inside quotes), the bad records set aside, and the rest
read by pyarrow again.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
DEFAULT_MAX_FIELD_BYTES = 1 << 20
RAW_PREVIEW_CHARS = 1000
"""A rejected oversized value keeps this many characters in the rejects file, then says how long it was."""

# pyarrow refuses a whole file for these, though only some rows are at fault.
_ROW_LEVEL_ERRORS = ("invalid UTF8", "straddling object")
_CHUNK_BYTES = 1 << 20
_BLOCK_BYTES = 1 << 20


class InputError(ValueError):
    """An input file that cannot be used at all; the message names the file and, where it applies, the column."""


def _no_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row": pd.Series(dtype="int64"),
            "reason": pd.Series(dtype="str"),
            "detail": pd.Series(dtype="str"),
            "raw": pd.Series(dtype="str"),
        }
    )


@dataclass(frozen=True)
class SourceTable:
    """A file as read: every readable row (index = 0-based data row number) plus the rows that were not
    readable (`row`, `reason`, `detail`, `raw` as a JSON text), which ingest turns into rejects."""

    frame: pd.DataFrame
    unreadable: pd.DataFrame = field(default_factory=_no_rows)


def _preview(text: str) -> str:
    if len(text) <= RAW_PREVIEW_CHARS:
        return text
    return f"{text[:RAW_PREVIEW_CHARS]}… [{len(text.encode('utf-8', 'surrogateescape')):,} bytes in all]"


def _unreadable(rows: list[dict[str, Any]]) -> pd.DataFrame:
    if not rows:
        return _no_rows()
    return pd.DataFrame(rows).astype({"row": "int64", "reason": "str", "detail": "str", "raw": "str"})


# --------------------------------------------------------------------------- CSV, fast path


def _parse_csv(
    open_source: Callable[[], Any], where: Path, *, block_size: int
) -> tuple[pa.Table, list[tuple[int, str]]]:
    """One pyarrow read, every column as text; (table, [(pyarrow row number, text) of malformed lines])."""
    bad_lines: list[tuple[int, str]] = []

    def remember(row: pa_csv.InvalidRow) -> str:
        bad_lines.append((row.number, row.text))
        return "skip"

    parse = pa_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=remember)
    with pa_csv.open_csv(
        open_source(), read_options=pa_csv.ReadOptions(block_size=block_size), parse_options=parse
    ) as reader:
        names = reader.schema.names
    duplicated_names = sorted({name for name in names if names.count(name) > 1})
    if duplicated_names:
        raise InputError(f"{where}: column(s) {duplicated_names} appear more than once in the header")
    convert = pa_csv.ConvertOptions(
        column_types=dict.fromkeys(names, pa.string()), null_values=[""], strings_can_be_null=True
    )
    bad_lines.clear()
    table = pa_csv.read_csv(
        open_source(),
        read_options=pa_csv.ReadOptions(block_size=block_size),
        parse_options=parse,
        convert_options=convert,
    )
    if bad_lines:
        # Row numbers of skipped lines are only known when reading on one thread; re-read to get them.
        bad_lines.clear()
        table = pa_csv.read_csv(
            open_source(),
            read_options=pa_csv.ReadOptions(use_threads=False, block_size=block_size),
            parse_options=parse,
            convert_options=convert,
        )
    return table, bad_lines


def _oversized(table: pa.Table, max_field_bytes: int) -> tuple[np.ndarray, list[tuple[int, str, int]]]:
    """(rows holding a text value longer than the limit, [(position, column, bytes)] of the first such
    value per row) — vectorised over the text columns."""
    over = np.zeros(table.num_rows, dtype=bool)
    found: dict[int, tuple[str, int]] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            continue
        lengths = pc.binary_length(column).to_numpy(zero_copy_only=False)
        hits = np.flatnonzero(np.nan_to_num(lengths.astype("float64"), nan=0.0) > max_field_bytes)
        for position in hits:
            found.setdefault(int(position), (name, int(lengths[position])))
        over[hits] = True
    return over, [(position, *found[position]) for position in sorted(found)]


def _oversized_rejects(
    table: pa.Table, rows: np.ndarray, over: list[tuple[int, str, int]], max_field_bytes: int
) -> list[dict[str, Any]]:
    rejects = []
    for position, column, size in over:
        values = table.slice(position, 1).to_pylist()[0]
        raw = {name: _preview(value) if isinstance(value, str) else value for name, value in values.items()}
        rejects.append(
            {
                "row": int(rows[position]),
                "reason": "oversized_field",
                "detail": f"field {column!r} is {size:,} bytes, over the limit of {max_field_bytes:,} "
                "(ingest.max_field_bytes)",
                "raw": json.dumps(raw, ensure_ascii=False, default=str),
            }
        )
    return rejects


def _malformed_rejects(
    bad_lines: list[tuple[int, str]], row_of: Callable[[int], int]
) -> list[dict[str, Any]]:
    return [
        {
            "row": row_of(number),
            "reason": "malformed_row",
            "detail": "the line has another number of fields than the header",
            "raw": json.dumps({"line": text}, ensure_ascii=False),
        }
        for number, text in bad_lines
    ]


def _source_table(
    table: pa.Table,
    bad_lines: list[tuple[int, str]],
    rows_of_parsed: Callable[[np.ndarray], np.ndarray],
    max_field_bytes: int,
    set_aside: list[dict[str, Any]],
) -> SourceTable:
    """The frame with source row numbers, oversized rows moved to the unreadable ones.

    `rows_of_parsed` maps pyarrow's 0-based data row numbers (malformed lines included) to source rows."""
    # pyarrow numbers rows from 1 including the header; data rows are numbered from 0.
    skipped = np.array([number - 2 for number, _ in bad_lines], dtype="int64")
    parsed_rows = np.setdiff1d(
        np.arange(table.num_rows + len(skipped), dtype="int64"), skipped, assume_unique=True
    )
    rows = rows_of_parsed(parsed_rows)
    unreadable = list(set_aside)
    unreadable += _malformed_rejects(bad_lines, lambda number: int(rows_of_parsed(np.array([number - 2]))[0]))
    over, found = _oversized(table, max_field_bytes)
    if found:
        unreadable += _oversized_rejects(table, rows, found, max_field_bytes)
        table, rows = table.filter(pa.array(~over)), rows[~over]
    frame = table.to_pandas()
    frame.index = pd.Index(rows)
    return SourceTable(frame, _unreadable(sorted(unreadable, key=lambda reject: reject["row"])))


# --------------------------------------------------------------------------- CSV, record by record


def _record_bounds(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) byte offsets of every non-empty CSV record; a newline inside quotes does not end one."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buffer == 0x0A)
    quotes = np.flatnonzero(buffer == 0x22)
    quotes_before = np.searchsorted(quotes, newlines)
    ends = newlines[quotes_before % 2 == 0]
    starts = np.concatenate([[0], ends + 1])
    ends = np.concatenate([ends, [len(data)]])
    # a CR before the newline belongs to the line ending, not to the record
    has_cr = (ends > starts) & (buffer[np.maximum(ends - 1, 0)] == 0x0D)
    ends = ends - has_cr
    keep = ends > starts
    return starts[keep], ends[keep]


def _bad_utf8(data: bytes, starts: np.ndarray, ends: np.ndarray) -> dict[int, UnicodeDecodeError]:
    """Records (by index) that are not UTF-8, with the error; whole chunks of records are decoded at once and
    only a failing chunk record by record."""
    bad: dict[int, UnicodeDecodeError] = {}
    first = 0
    while first < len(starts):
        last = int(np.searchsorted(starts, starts[first] + _CHUNK_BYTES, side="right"))
        last = max(last, first + 1)
        try:
            data[starts[first] : ends[last - 1]].decode("utf-8")
        except UnicodeDecodeError:
            for record in range(first, last):
                try:
                    data[starts[record] : ends[record]].decode("utf-8")
                except UnicodeDecodeError as exc:
                    bad[record] = exc
        first = last
    return bad


def _line_numbers(data: bytes, starts: np.ndarray) -> np.ndarray:
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 0x0A)
    return np.searchsorted(newlines, starts) + 1


def _field_sizes(record: str) -> list[tuple[int, int]]:
    """(field position, bytes) of each field of one CSV record."""
    csv.field_size_limit(2**31 - 1)
    values = next(csv.reader([record]), [])
    return [(position, len(value.encode("utf-8"))) for position, value in enumerate(values)]


def _read_csv_by_records(path: Path, max_field_bytes: int) -> SourceTable:
    """Set aside undecodable records and records with an oversized field, then read the rest with pyarrow."""
    with pa.input_stream(str(path)) as stream:
        data = stream.read()
    starts, ends = _record_bounds(data)
    if len(starts) == 0:
        raise InputError(f"{path}: cannot be read as CSV: the file is empty")
    try:
        header_text = data[starts[0] : ends[0]].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{path}: the header line is not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    header = next(csv.reader([header_text.removeprefix("\ufeff")]))
    lines = _line_numbers(data, starts)
    set_aside: list[dict[str, Any]] = []
    drop = np.zeros(len(starts), dtype=bool)
    for record, exc in _bad_utf8(data, starts, ends).items():
        drop[record] = True
        raw_bytes = data[starts[record] : ends[record]]
        set_aside.append(
            {
                "row": record - 1,
                "reason": "undecodable_row",
                "detail": f"row {record - 1} (line {lines[record]}) is not UTF-8 text: byte "
                f"0x{raw_bytes[exc.start]:02x} at position {exc.start} ({exc.reason})",
                "raw": json.dumps({"line": _preview(raw_bytes.decode("utf-8", "backslashreplace"))}),
            }
        )
    lengths = ends - starts
    for record in np.flatnonzero((lengths > max_field_bytes) & ~drop):
        if record == 0:
            continue
        text = data[starts[record] : ends[record]].decode("utf-8")
        sizes = [(position, size) for position, size in _field_sizes(text) if size > max_field_bytes]
        if not sizes:
            continue
        position, size = sizes[0]
        column = header[position] if position < len(header) else f"#{position + 1}"
        drop[record] = True
        set_aside.append(
            {
                "row": int(record - 1),
                "reason": "oversized_field",
                "detail": f"field {column!r} of row {record - 1} (line {lines[record]}) is {size:,} bytes, "
                f"over the limit of {max_field_bytes:,} (ingest.max_field_bytes)",
                "raw": json.dumps({"line": _preview(text)}, ensure_ascii=False),
            }
        )
    kept = np.flatnonzero(~drop)
    # contiguous runs of kept records are contiguous byte ranges: the new file is a few slices
    run_breaks = np.flatnonzero(np.diff(kept) != 1) + 1
    runs = np.split(kept, run_breaks)
    sliced = b"\n".join(data[starts[run[0]] : ends[run[-1]]] for run in runs if len(run)) + b"\n"
    longest = int(lengths[kept].max()) if len(kept) else 0
    block_size = max(_BLOCK_BYTES, 2 * longest + _BLOCK_BYTES)
    table, bad_lines = _parse_csv(lambda: pa.BufferReader(sliced), path, block_size=block_size)
    data_records = kept[1:] - 1  # source data row of each record pyarrow sees, in order
    if table.num_rows + len(bad_lines) != len(data_records):
        raise InputError(
            f"{path}: cannot be read as CSV: its quoting could not be followed to set aside the bad rows "
            f"({', '.join(sorted({reject['reason'] for reject in set_aside})) or 'none found'})"
        )
    return _source_table(table, bad_lines, lambda parsed: data_records[parsed], max_field_bytes, set_aside)


def _read_csv(path: Path, max_field_bytes: int) -> SourceTable:
    try:
        table, bad_lines = _parse_csv(lambda: str(path), path, block_size=_BLOCK_BYTES)
    except pa.ArrowInvalid as exc:
        if not any(marker in str(exc) for marker in _ROW_LEVEL_ERRORS):
            raise
        return _read_csv_by_records(path, max_field_bytes)
    return _source_table(table, bad_lines, lambda parsed: parsed, max_field_bytes, [])


# --------------------------------------------------------------------------- Parquet and the entry point


def _read_parquet(path: Path, max_field_bytes: int) -> SourceTable:
    table = pq.read_table(path)
    columns = [
        column.dictionary_decode() if pa.types.is_dictionary(column.type) else column
        for column in table.columns
    ]
    table = pa.table(columns, names=table.column_names)
    rows = np.arange(table.num_rows, dtype="int64")
    unreadable: list[dict[str, Any]] = []
    over, found = _oversized(table, max_field_bytes)
    if found:
        unreadable = _oversized_rejects(table, rows, found, max_field_bytes)
        table, rows = table.filter(pa.array(~over)), rows[~over]
    frame = table.to_pandas(
        types_mapper=lambda arrow_type: pd.Int64Dtype() if pa.types.is_integer(arrow_type) else None
    )
    frame.index = pd.Index(rows)
    return SourceTable(frame, _unreadable(unreadable))


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in (*CSV_SUFFIXES, *PARQUET_SUFFIXES):
        if name.endswith(suffix):
            return suffix
    raise InputError(
        f"{path}: unsupported file type; expected one of {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}"
    )


def read_input(path: Path, *, max_field_bytes: int = DEFAULT_MAX_FIELD_BYTES) -> SourceTable:
    """Read a CSV (.csv, .csv.gz; every column as text) or Parquet (.parquet, .pq) file.

    Rows that cannot be read (malformed, undecodable, a field over `max_field_bytes`) are set aside in
    `unreadable`. Raises InputError naming the file when it is missing, of another type, or cannot be read
    at all.
    """
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        if suffix in CSV_SUFFIXES:
            return _read_csv(path, max_field_bytes)
        return _read_parquet(path, max_field_bytes)
    except (pa.ArrowException, OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        kind = "CSV" if suffix in CSV_SUFFIXES else "Parquet"
        raise InputError(f"{path}: cannot be read as {kind}: {exc}") from None
