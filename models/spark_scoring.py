"""Batch decisions on Spark: the latest feature vectors computed by Spark (the same Ibis builders), then
`models.batch.decision_table` — the function in-process `clm score` calls — run on each partition with
`mapInPandas`, the decision models shipped to the executors once, LightGBM on `spark.task.cpus` threads."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ibis
import pandas as pd
import pyarrow as pa

from features.contacts import ContactParams
from features.jobs import latest_feature_table
from features.registry import FeatureParams
from features.spark import task_cpus, to_spark
from models.batch import decision_table
from models.decision import DecisionModels

# rows of features given to the decision on the driver to learn the output's columns and types
SCHEMA_SAMPLE_ROWS = 200


@dataclass(frozen=True)
class SparkScoreSummary:
    out: str
    users: int
    contacted: int
    expected_value: float
    as_of: dt.date


def _arrow_type(field: pa.Field) -> pa.DataType:
    # a column that is null on every sampled row (say `since` where no stage names a date) carries text
    return pa.string() if pa.types.is_null(field.type) else field.type


def _output_schema(sample: pd.DataFrame) -> Any:
    """The Spark schema of the decision table, from its pandas form on a sample."""
    from pyspark.sql.pandas.types import from_arrow_schema

    arrow = pa.Schema.from_pandas(sample, preserve_index=False)
    fields = [pa.field(f.name, _arrow_type(f)) for f in arrow]
    return from_arrow_schema(pa.schema(fields))


def in_process_types(frame: pd.DataFrame) -> pd.DataFrame:
    """A batch of Spark rows as the in-process feature job gives them: `cutoff` as datetime64[s], not Python
    dates (the exploration draw hashes the snapshot's text, which must not depend on the engine)."""
    frame = frame.reset_index(drop=True)
    frame["cutoff"] = pd.to_datetime(frame["cutoff"]).astype("datetime64[s]")
    return frame


def _decider(
    models: DecisionModels, *, as_of: dt.date, explore: bool, explain_top_k: int | None, num_threads: int,
    columns: list[str],
) -> Any:  # fmt: skip
    """The function each Spark task runs over its batches of feature rows."""

    def decide_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for frame in batches:
            if frame.empty:
                continue
            result, _ = decision_table(
                in_process_types(frame), models, as_of=as_of, explore=explore,
                explain_top_k=explain_top_k, num_threads=num_threads,
            )  # fmt: skip
            yield result[columns]

    return decide_batches


def decisions_on_spark(
    con: ibis.BaseBackend,
    data: str | Path,
    models: DecisionModels,
    *,
    as_of: dt.date,
    params: FeatureParams,
    explore: bool = True,
    explain_top_k: int | None = None,
    contacts: ContactParams | None = None,
) -> Any:
    """A Spark DataFrame of `clm score`'s table for every user known before `as_of` (not yet executed); with
    `contacts`, each user's contact state computed by Spark beside the features (the decision reads it)."""
    expr, _ = latest_feature_table(con, data, params=params, as_of=as_of, contacts=contacts)
    features = to_spark(con, expr)
    sample_rows = features.limit(SCHEMA_SAMPLE_ROWS).toPandas()
    if sample_rows.empty:
        raise ValueError(f"no user is known before {as_of} in {data}")
    sample, _ = decision_table(
        in_process_types(sample_rows), models, as_of=as_of, explore=explore, explain_top_k=explain_top_k
    )
    decide = _decider(
        models, as_of=as_of, explore=explore, explain_top_k=explain_top_k, num_threads=task_cpus(con),
        columns=list(sample.columns),
    )  # fmt: skip
    return features.mapInPandas(decide, _output_schema(sample))


def score_on_spark(
    con: ibis.BaseBackend,
    data: str | Path,
    out: str,
    models: DecisionModels,
    *,
    as_of: dt.date,
    params: FeatureParams,
    explore: bool = True,
    explain_top_k: int | None = None,
    contacts: ContactParams | None = None,
) -> SparkScoreSummary:
    """`decisions_on_spark` written by Spark to `out` (a path or URI ending in .parquet or .csv: a dataset
    of part files, CSV with a header), and its totals."""
    from pyspark.sql import functions as F

    decided = decisions_on_spark(
        con,
        data,
        models,
        as_of=as_of,
        params=params,
        explore=explore,
        explain_top_k=explain_top_k,
        contacts=contacts,
    )
    writer = decided.write.mode("overwrite")
    if out.lower().endswith(".csv"):
        writer.option("header", True).csv(out)
    else:
        writer.parquet(out)
    written = con._session.read.parquet(out) if not out.lower().endswith(".csv") else None
    totals = (written if written is not None else decided).agg(
        F.count(F.lit(1)), F.sum((F.col("action") != "no_action").cast("int")), F.sum("expected_value")
    )
    users, contacted, value = totals.first()
    return SparkScoreSummary(out, int(users), int(contacted or 0), float(value or 0.0), as_of)
