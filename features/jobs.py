"""The feature jobs: read the canonical data directory, run the Ibis builders on an engine, write Parquet
(or the online store). This is the I/O edge; the definitions live in features.build."""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from features.build import (
    CUTOFFS_INPUT,
    DATA_END_INPUT,
    CompiledQuery,
    LabelParams,
    build_features,
    build_labels,
    compiled_features,
    compiled_labels,
    cutoff_table,
    data_end_table,
    midnight_utc,
)
from features.contacts import ContactParams, build_contact_state, join_contact_state, no_contact_state
from features.datadir import DataDirectoryError, resolve_data_dir
from features.online import SnapshotInfo, open_store
from features.registry import FeatureParams, build_registry, registry_version

log = logging.getLogger(__name__)
INPUTS = ("events", "users", "subscriptions", "campaigns")


@dataclass
class Inputs:
    events: ir.Table
    users: ir.Table | None
    subscriptions: ir.Table | None
    campaigns: ir.Table | None
    data_end: dt.date  # the first day with no data: the as-of date, or the day after the last event


@dataclass(frozen=True)
class BuildSummary:
    features_path: str | Path
    labels_path: str | Path
    rows: int
    users: int
    cutoffs: list[dt.date]
    label_rows_known: int
    feature_version: str
    data_end: dt.date


def connect(memory_limit: str = "2GB") -> ibis.BaseBackend:
    """The default engine: an in-process DuckDB that spills to disk rather than grow past `memory_limit`
    (the feature benchmark's budget is 4 GiB for the whole process)."""
    con = ibis.duckdb.connect()
    con.raw_sql(f"SET memory_limit = '{memory_limit}'")
    con.raw_sql("SET preserve_insertion_order = false")
    return con


def _is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def within(location: str | Path, name: str) -> str | Path:
    """`location/name` for a local directory (a Path) or a URI Spark reads (`s3a://bucket/dir`: a string,
    since a Path would fold its `//`)."""
    return f"{str(location).rstrip('/')}/{name}" if _is_uri(location) else Path(location) / name


def _exists(con: ibis.BaseBackend, path: str | Path) -> bool:
    if con.name == "pyspark" and _is_uri(path):
        from features.spark import path_exists

        return path_exists(con, str(path))
    return Path(path).exists()


def load_inputs(con: ibis.BaseBackend, data_dir: str | Path, as_of: dt.date | None = None) -> Inputs:
    """The canonical tables of `data_dir`'s current version (a directory, or on Spark any URI it reads), cut
    at `as_of` (nothing at or after it is ever read). With no `as_of`, the data's end is the day after the
    last accepted event: ingest rejects events outside the plausible window, so a rejected row never sets it."""
    data_dir = data_dir if _is_uri(data_dir) else resolve_data_dir(Path(data_dir))
    if not _exists(con, within(data_dir, "events.parquet")):
        raise DataDirectoryError(f"{data_dir}: no events.parquet (run `clm ingest` or `clm simulate` first)")
    tables: dict[str, ir.Table | None] = {}
    for name in INPUTS:
        path = within(data_dir, f"{name}.parquet")
        tables[name] = con.read_parquet(path, table_name=f"clm_{name}") if _exists(con, path) else None
    events = tables["events"]
    assert events is not None
    if as_of is not None:
        limit = midnight_utc(as_of)
        events = events.filter(events.ts < limit)
        if tables["campaigns"] is not None:
            tables["campaigns"] = tables["campaigns"].filter(tables["campaigns"].ts < limit)
        if tables["subscriptions"] is not None:
            subs = tables["subscriptions"]
            # a subscription row is known from its start; an end after the as-of date is not known yet
            subs = subs.filter(subs.start < limit)
            tables["subscriptions"] = subs.mutate(end=ibis.ifelse(subs.end >= limit, None, subs.end))
        if tables["users"] is not None:
            users = tables["users"]
            tables["users"] = users.filter(users.signup_ts.isnull() | (users.signup_ts < limit))
        data_end = as_of
    else:
        last = con.to_pyarrow(events.ts.max()).as_py()
        if last is None:
            raise DataDirectoryError(f"{data_dir}/events.parquet has no events")
        data_end = last.date() + dt.timedelta(days=1)
    return Inputs(events, tables["users"], tables["subscriptions"], tables["campaigns"], data_end)


def _write_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        tmp = Path(handle.name)
    try:
        pq.write_table(table, tmp, compression="zstd")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _input_tables(inputs: Inputs, names: Sequence[str] = INPUTS) -> dict[str, ir.Table]:
    tables = {name: getattr(inputs, name) for name in names}
    return {name: table for name, table in tables.items() if table is not None}


def _schemas(tables: dict[str, ir.Table]) -> tuple[tuple[str, Any], ...]:
    return tuple((name, table.schema()) for name, table in tables.items())


def _execute(con: ibis.BaseBackend, compiled: CompiledQuery, tables: dict[str, ir.Table]) -> pa.Table:
    """Run a compiled query with each placeholder bound to a view of the real input (named per call, so
    that two runs on one connection never see each other's inputs)."""
    suffix = uuid.uuid4().hex[:12]
    sql = compiled.sql
    views: list[str] = []
    try:
        for name, placeholder in compiled.placeholders.items():
            view = f"clm_{name}_{suffix}"
            con.create_view(view, tables[name], overwrite=True)
            views.append(view)
            sql = sql.replace(f'"{placeholder}"', f'"{view}"')
        result = con.con.sql(sql).to_arrow_table()  # DuckDB's own connection: no SQL parsing by Ibis
    finally:
        for view in views:
            con.con.execute(f'DROP VIEW IF EXISTS "{view}"')
    from ibis.backends.duckdb.converter import DuckDBPyArrowData

    return compiled.expr.__pyarrow_result__(result, data_mapper=DuckDBPyArrowData)


def _as_pandas(table: pa.Table) -> pd.DataFrame:
    """An Arrow result as `con.to_pandas` gives it on DuckDB (columns with nulls through Python objects,
    then ibis's conversion to the schema), so a compiled run reaches pandas users unchanged."""
    import ibis.expr.schema as sch
    from ibis.backends.duckdb.converter import DuckDBPandasData

    frame = pd.DataFrame(
        {
            name: column.to_pylist()
            if pa.types.is_nested(column.type) or pa.types.is_dictionary(column.type) or column.null_count
            else column.to_pandas()
            for name, column in zip(table.column_names, table.columns, strict=True)
        }
    )
    return DuckDBPandasData.convert_table(frame, sch.Schema.from_pyarrow(table.schema))


def _feature_table(
    con: ibis.BaseBackend, inputs: Inputs, cutoffs: Sequence[dt.date], p: FeatureParams, lp: LabelParams
) -> pa.Table:
    """The feature table at `cutoffs`: on DuckDB from SQL compiled once per process and key, elsewhere
    from the expression compiled afresh."""
    tables = _input_tables(inputs)
    if con.name != "duckdb":
        features = build_features(
            inputs.events, cutoffs, p, users=inputs.users, subscriptions=inputs.subscriptions,
            campaigns=inputs.campaigns, labels=lp,
        )  # fmt: skip
        return _in_key_order(con.to_pyarrow(features))
    compiled = compiled_features(con.name, _schemas(tables), tuple(sorted(set(cutoffs))), p, lp)
    return _in_key_order(_execute(con, compiled, {**tables, CUTOFFS_INPUT: cutoff_table(cutoffs)}))


def _in_key_order(table: pa.Table) -> pa.Table:
    """Rows by (cutoff, user_id): the build is a relation without an order; what is written is reproducible."""
    return table.sort_by([("cutoff", "ascending"), ("user_id", "ascending")])


def _label_table(
    con: ibis.BaseBackend, inputs: Inputs, cutoffs: Sequence[dt.date], p: FeatureParams, lp: LabelParams
) -> pa.Table:
    """The label table at `cutoffs`, compiled once per key like `_feature_table`."""
    tables = _input_tables(inputs, ("events", "users", "subscriptions"))
    if con.name != "duckdb":
        labels = build_labels(
            inputs.events, cutoffs, lp, p, data_end=inputs.data_end, users=inputs.users,
            subscriptions=inputs.subscriptions,
        )  # fmt: skip
        return con.to_pyarrow(labels)
    compiled = compiled_labels(con.name, _schemas(tables), lp, p)
    bounds = {CUTOFFS_INPUT: cutoff_table(cutoffs), DATA_END_INPUT: data_end_table(inputs.data_end)}
    return _execute(con, compiled, {**tables, **bounds})


def _features_and_labels(
    con: ibis.BaseBackend,
    inputs: Inputs,
    cutoffs: Sequence[dt.date],
    p: FeatureParams,
    lp: LabelParams,
    *,
    hint: str = "",
) -> tuple[pa.Table, pa.Table]:
    """The feature and label tables at `cutoffs` (refused when one lies after the data's end)."""
    late = [c for c in cutoffs if c > inputs.data_end]
    if late:
        raise DataDirectoryError(
            f"cutoffs after the data's end ({inputs.data_end}): {', '.join(map(str, late))}" + hint
        )
    return _feature_table(con, inputs, cutoffs, p, lp), _label_table(con, inputs, cutoffs, p, lp)


def build_feature_tables(
    data_dir: str | Path,
    cutoffs: Sequence[dt.date],
    out: str | Path,
    *,
    params: FeatureParams | None = None,
    label_params: LabelParams | None = None,
    as_of: dt.date | None = None,
    con: ibis.BaseBackend | None = None,
) -> BuildSummary:
    """Write `out/features.parquet` (user_id, cutoff, registry features) and `out/labels.parquet`
    (user_id, cutoff, horizon_days, churn, upgrade, reactivation) for the same rows. On the Spark engine
    (`con` from `features.spark.connect`) Spark computes and writes them: each a Parquet dataset (a
    directory of part files), `data_dir` and `out` any path or URI Spark reads and writes."""
    p = params or FeatureParams()
    lp = label_params or LabelParams()
    con = con or connect()
    inputs = load_inputs(con, data_dir, as_of)
    if con.name == "pyspark":
        return _build_on_spark(con, inputs, cutoffs, out, p, lp, hint=" (--as-of)" if as_of else "")
    feature_table, all_labels = _features_and_labels(
        con, inputs, cutoffs, p, lp, hint=" (--as-of)" if as_of else ""
    )
    # the labels for exactly the feature rows: join on the keys already computed, not on the expression
    # (which would run the feature pipeline a second time)
    keys = feature_table.select(["user_id", "cutoff"])
    label_table = all_labels.join(keys, ["user_id", "cutoff"], join_type="inner")
    label_table = label_table.sort_by([("cutoff", "ascending"), ("user_id", "ascending")])
    version = registry_version(build_registry(p))
    metadata = {
        b"clm.feature_version": version.encode(),
        b"clm.data_end": inputs.data_end.isoformat().encode(),
    }
    feature_table = feature_table.replace_schema_metadata(
        {**(feature_table.schema.metadata or {}), **metadata}
    )
    out = Path(out)
    _write_atomic(feature_table, out / "features.parquet")
    _write_atomic(label_table, out / "labels.parquet")
    known = label_table.filter(pa.compute.is_valid(label_table["churn"])).num_rows
    return BuildSummary(
        features_path=out / "features.parquet",
        labels_path=out / "labels.parquet",
        rows=feature_table.num_rows,
        users=len(pa.compute.unique(feature_table["user_id"])),
        cutoffs=sorted(set(cutoffs)),
        label_rows_known=known,
        feature_version=version,
        data_end=inputs.data_end,
    )


def _build_on_spark(
    con: ibis.BaseBackend, inputs: Inputs, cutoffs: Sequence[dt.date], out: str | Path, p: FeatureParams,
    lp: LabelParams, *, hint: str = "",
) -> BuildSummary:  # fmt: skip
    """`build_feature_tables` on Spark: the same builders compiled to Spark SQL, the labels joined to the
    feature rows inside Spark, both written by Spark; nothing but counts reaches the driver."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    from features.spark import to_spark, write_parquet

    late = [c for c in cutoffs if c > inputs.data_end]
    if late:
        raise DataDirectoryError(
            f"cutoffs after the data's end ({inputs.data_end}): {', '.join(map(str, late))}" + hint
        )
    features = build_features(
        inputs.events, cutoffs, p, users=inputs.users, subscriptions=inputs.subscriptions,
        campaigns=inputs.campaigns, labels=lp,
    )  # fmt: skip
    labels = build_labels(
        inputs.events, cutoffs, lp, p, data_end=inputs.data_end, users=inputs.users,
        subscriptions=inputs.subscriptions,
    )  # fmt: skip
    # computed once, read by the write, the label join and the counts
    feature_frame = to_spark(con, features).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        keys = feature_frame.select("user_id", "cutoff")
        label_frame = to_spark(con, labels).join(keys, ["user_id", "cutoff"], "inner")
        features_path, labels_path = within(out, "features.parquet"), within(out, "labels.parquet")
        write_parquet(feature_frame.orderBy("cutoff", "user_id"), features_path)
        write_parquet(label_frame.orderBy("cutoff", "user_id"), labels_path)
        counts = feature_frame.agg(F.count(F.lit(1)).alias("rows"), F.countDistinct("user_id").alias("users"))
        rows, users = counts.first()
        known = con._session.read.parquet(str(labels_path)).filter(F.col("churn").isNotNull()).count()
    finally:
        feature_frame.unpersist()
    return BuildSummary(
        features_path=features_path, labels_path=labels_path, rows=int(rows), users=int(users),
        cutoffs=sorted(set(cutoffs)), label_rows_known=int(known),
        feature_version=registry_version(build_registry(p)), data_end=inputs.data_end,
    )  # fmt: skip


def latest_features(
    data_dir: str | Path,
    *,
    params: FeatureParams | None = None,
    as_of: dt.date | None = None,
    con: ibis.BaseBackend | None = None,
    contacts: ContactParams | None = None,
) -> tuple[pd.DataFrame, dt.date]:
    """Every known user's feature vector as of the data's end (or `as_of`), churned users included —
    what the online store serves. With `contacts`, each user's contact state (features.contacts: days since
    each action, contacts per action and window, negative outcomes) beside the features."""
    p = params or FeatureParams()
    con = con or connect()
    inputs = load_inputs(con, data_dir, as_of)
    keep_all = LabelParams(keep_churned_users=True)
    features = _as_pandas(_feature_table(con, inputs, [inputs.data_end], p, keep_all))
    if contacts is not None:
        features = with_contact_state(con, inputs, features, contacts)
    return features, inputs.data_end


def latest_feature_table(
    con: ibis.BaseBackend, data_dir: str | Path, *, params: FeatureParams | None = None,
    as_of: dt.date | None = None, contacts: ContactParams | None = None,
) -> tuple[ir.Table, dt.date]:  # fmt: skip
    """`latest_features` as an expression, not executed (what an engine that keeps its result — Spark —
    runs), and the snapshot's date; with `contacts`, the contact state joined in the same expression."""
    inputs = load_inputs(con, data_dir, as_of)
    features = build_features(
        inputs.events, [inputs.data_end], params or FeatureParams(), users=inputs.users,
        subscriptions=inputs.subscriptions, campaigns=inputs.campaigns,
        labels=LabelParams(keep_churned_users=True),
    )  # fmt: skip
    if contacts is not None:
        features = _joined_contact_state(inputs, features, [inputs.data_end], contacts)
    return features, inputs.data_end


def _joined_contact_state(
    inputs: Inputs, features: ir.Table, cutoffs: Sequence[dt.date], contacts: ContactParams
) -> ir.Table:
    """The feature expression with the contact state left-joined on (user_id, cutoff): 0 and null for users
    never contacted (the expression form of `with_contact_state`)."""
    clash = sorted(set(contacts.columns()) & set(features.columns))
    if clash:
        raise ValueError(
            f"the contact-state columns {clash} clash with columns of the feature table: rename the action(s)"
        )
    counts = set(contacts.count_columns())
    if inputs.campaigns is None:
        return features.mutate(**{
            column: ibis.literal(0.0) if column in counts else ibis.null("float64") for column in contacts.columns()
        })  # fmt: skip
    state = build_contact_state(inputs.events, inputs.campaigns, cutoffs, contacts)
    joined = features.left_join(state, ["user_id", "cutoff"]).drop("user_id_right", "cutoff_right")
    return joined.mutate(**{column: joined[column].fill_null(0.0) for column in contacts.count_columns()})


def contact_state_frame(
    con: ibis.BaseBackend, inputs: Inputs, cutoffs: Sequence[dt.date], contacts: ContactParams
) -> pd.DataFrame:
    """The contact-state table (features.contacts) at `cutoffs`, as pandas: users contacted before a cutoff."""
    if inputs.campaigns is None:
        return pd.DataFrame(columns=["user_id", "cutoff", *contacts.columns()])
    state = build_contact_state(inputs.events, inputs.campaigns, cutoffs, contacts)
    return con.to_pyarrow(state).to_pandas()


def with_contact_state(
    con: ibis.BaseBackend, inputs: Inputs, frame: pd.DataFrame, contacts: ContactParams
) -> pd.DataFrame:
    """`frame` (user_id, cutoff, …) with every user's contact state at its cutoff beside it."""
    if frame.empty or inputs.campaigns is None:
        keys = frame[["user_id", "cutoff"]]
        state = no_contact_state(keys, contacts)
        return pd.concat([frame, state[contacts.columns()].set_axis(frame.index)], axis=1)
    cutoffs = sorted(set(pd.to_datetime(frame["cutoff"]).dt.date))
    return join_contact_state(frame, contact_state_frame(con, inputs, cutoffs, contacts), contacts)


def contact_states(
    data_dir: str | Path, cutoffs: Sequence[dt.date], contacts: ContactParams, *, as_of: dt.date | None = None,
    con: ibis.BaseBackend | None = None,
) -> pd.DataFrame:  # fmt: skip
    """The contact-state table of `data_dir` at `cutoffs` (nothing at or after `as_of` read): one row per user
    contacted before a cutoff; see features.contacts for its columns."""
    con = con or connect()
    return contact_state_frame(con, load_inputs(con, data_dir, as_of), cutoffs, contacts)


def materialize_latest(
    data_dir: str | Path, store_url: str, *, params: FeatureParams | None = None, as_of: dt.date | None = None,
    con: ibis.BaseBackend | None = None, contacts: ContactParams | None = None,
) -> tuple[SnapshotInfo, pd.DataFrame]:  # fmt: skip
    """`latest_features` written to the online store at `store_url` as its new snapshot (tagged with the
    registry's version): what `clm features materialize` does. Returns the snapshot's info and the frame.
    On the Spark engine (`con`) Spark computes the vectors and the driver writes them to the store. With
    `contacts`, each user's contact state is stored beside the features (what the API's cooldowns, caps and
    suppression read)."""
    p = params or FeatureParams()
    frame, snapshot_date = latest_features(data_dir, params=p, as_of=as_of, con=con, contacts=contacts)
    with open_store(store_url) as store:
        info = store.write_snapshot(
            frame, as_of=snapshot_date, feature_version=registry_version(build_registry(p))
        )
    return info, frame


def feature_history(
    data_dir: Path,
    cutoffs: Sequence[dt.date],
    *,
    params: FeatureParams | None = None,
    label_params: LabelParams | None = None,
    con: ibis.BaseBackend | None = None,
    contacts: ContactParams | None = None,
) -> pd.DataFrame:
    """Every known user's features at each cutoff (churned users included, as the online store serves them),
    with the churn and upgrade labels where the horizon after the cutoff has closed inside the data (null
    otherwise). What the reviewer pages and the campaign report read for stage flows and calibration. With
    `contacts`, each user's contact state at each cutoff beside them."""
    import dataclasses

    p = params or FeatureParams()
    lp = dataclasses.replace(label_params or LabelParams(), keep_churned_users=True)
    con = con or connect()
    inputs = load_inputs(con, data_dir)
    feature_table, label_table = _features_and_labels(con, inputs, cutoffs, p, lp)
    label_table = label_table.select(["user_id", "cutoff", "churn", "upgrade", "reactivation"])
    joined = feature_table.join(label_table, ["user_id", "cutoff"], join_type="left outer")
    frame = joined.to_pandas()
    frame["cutoff"] = pd.to_datetime(frame["cutoff"]).dt.date
    frame = frame.sort_values(["cutoff", "user_id"], kind="stable").reset_index(drop=True)
    if contacts is not None:
        frame = with_contact_state(con, inputs, frame, contacts)
    return frame


_LOOKUPS: Any = None
_LOOKUPS_LOCK = threading.Lock()


def _lookup_cursor() -> Any:
    """A cursor on one process-wide in-memory DuckDB for small per-request reads (a connection costs
    25–40 ms to open, a cursor well under 1 ms; each cursor is a connection of its own for its thread)."""
    global _LOOKUPS
    import duckdb

    with _LOOKUPS_LOCK:
        if _LOOKUPS is None:
            _LOOKUPS = duckdb.connect()
        cursor = _LOOKUPS.cursor()
    cursor.execute("SET TimeZone = 'UTC'")
    return cursor


def user_activity(
    data_dir: Path, user_id: str, *, before: dt.date, limit: int = 20
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One user's most recent events (ts, event_type, amount) and campaign contacts (ts, action, propensity)
    before a date, newest first — what a reviewer reads beside a decision."""
    data_dir = resolve_data_dir(data_dir)
    limit_ts = dt.datetime.combine(before, dt.time(), tzinfo=dt.UTC)
    out = []
    for name, columns in (("events", "ts, event_type, amount"), ("campaigns", "ts, action, propensity")):
        path = data_dir / f"{name}.parquet"
        if not path.exists():
            out.append(pd.DataFrame(columns=[c.strip() for c in columns.split(",")]))
            continue
        with _lookup_cursor() as con:
            frame = con.execute(
                f"SELECT {columns} FROM read_parquet(?) WHERE user_id = ? AND ts < ? ORDER BY ts DESC LIMIT ?",
                [str(path), user_id, limit_ts, limit],
            ).df()
        out.append(frame)
    return out[0], out[1]
