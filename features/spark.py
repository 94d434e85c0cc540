"""The Spark engine: a SparkSession from settings (master, extra conf) wrapped as an Ibis PySpark backend, so
the feature and label builders of features.build run unchanged on a cluster, and the feature jobs write
their tables with Spark (Parquet to any path or URI Spark reads).

Nothing here defines a feature: the same Ibis expressions the DuckDB engine runs are compiled to Spark SQL.
Before a JVM is started the set-up is checked — Java present, a standalone master reachable — so that a
missing piece is named with how to install it, not reported as a Py4J stack trace."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import ibis
import ibis.expr.types as ir

log = logging.getLogger(__name__)

ENGINES = ("duckdb", "spark")
JAVA_PACKAGE = "openjdk-17-jre-headless"
JAVA_SCRIPT = "scripts/ensure-java.sh"
# What every clm session sets: UTC for the naive Parquet timestamps (STACK-NOTES), no console progress bars
# on a CLI's stderr, no web UI port per session (several runs on one machine would fight over 4040).
BASE_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",
    "spark.ui.enabled": "false",
}
# Local mode only: the feature tables are small next to the events, and Spark's default of 200 shuffle
# partitions makes hundreds of tiny tasks per stage on a laptop (a cluster keeps its own setting).
LOCAL_CONF = {"spark.sql.shuffle.partitions": "8"}


class SparkUnavailable(RuntimeError):
    """Spark cannot start here: Java is missing or too old, or the master does not answer."""


def parse_conf(pairs: Sequence[str]) -> dict[str, str]:
    """`key=value` strings (the `spark_conf` setting) as a mapping; a malformed one is named."""
    conf = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"spark conf {pair!r} is not key=value (e.g. spark.executor.memory=4g)")
        conf[key.strip()] = value.strip()
    return conf


def _java_missing() -> str:
    how = f"install Debian's {JAVA_PACKAGE} (`bash {JAVA_SCRIPT}`, which `make setup` runs)"
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if java is None or not Path(java).exists():
        where = f"JAVA_HOME={java_home} has no bin/java" if java_home else "no `java` on PATH"
        return f"Spark needs Java 17: {where}; {how}"
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"Spark needs Java 17: {java} -version failed ({exc}); {how}"
    text = (out.stderr or out.stdout).strip()
    first = text.splitlines()[0] if text else ""
    try:
        major = int(first.split('"')[1].split(".")[0])
    except (IndexError, ValueError):
        return ""  # an unusual banner: let Spark try
    if major < 17:
        return f"Spark needs Java 17 or later, {java} is {first!r}; {how}"
    return ""


def _master_unreachable(master: str, timeout_seconds: float = 5.0) -> str:
    """Why a standalone master (`spark://host:port[,host:port]`) cannot be reached, or '' (other masters —
    local, yarn, k8s — are left to Spark)."""
    if not master.startswith("spark://"):
        return ""
    errors = []
    for address in master.removeprefix("spark://").split(","):
        parsed = urlparse(f"spark://{address}")
        host, port = parsed.hostname, parsed.port or 7077
        try:
            with socket.create_connection((host, port), timeout=timeout_seconds):
                return ""
        except OSError as exc:
            errors.append(f"{host}:{port} ({exc.strerror or exc})")
    return (
        f"the Spark master {master} is unreachable: {', '.join(errors)}; start it or point the `spark_master` "
        "setting (CLM_SPARK_MASTER) at a running one, e.g. local[*]"
    )


def spark_session(master: str = "local[*]", conf: Mapping[str, str] | None = None) -> Any:
    """The process's SparkSession for `master` with `conf` over clm's base settings (an existing session
    is reused: Spark allows one per process, and its master cannot change afterwards). Raises
    SparkUnavailable naming what is missing before any JVM is started."""
    problem = _java_missing() or _master_unreachable(master)
    if problem:
        raise SparkUnavailable(problem)
    from pyspark.sql import SparkSession

    local = master.startswith("local")
    if local:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # local mode: the Python workers are this interpreter (the project's venv), not whatever `python3` is
    # on PATH; a cluster's executors need an environment with the locked packages (spark.pyspark.python)
    local_conf = {**LOCAL_CONF, "spark.pyspark.python": sys.executable} if local else {}
    settings = {**BASE_CONF, **local_conf, **dict(conf or {})}
    builder = SparkSession.builder.master(master).appName("clm")
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # Py4J / JVM start-up: the message is all a user can act on
        raise SparkUnavailable(f"Spark did not start with master {master}: {exc}") from exc
    session.conf.set("spark.sql.session.timeZone", "UTC")  # on a reused session too
    session.sparkContext.setLogLevel("ERROR")  # Spark's WARN lines drown a CLI's output
    return session


def connect(master: str = "local[*]", conf: Mapping[str, str] | None = None) -> ibis.BaseBackend:
    """The Spark engine: an Ibis PySpark backend over `spark_session(master, conf)`."""
    return ibis.pyspark.connect(spark_session(master, conf))


def task_cpus(con: ibis.BaseBackend) -> int:
    """`spark.task.cpus` of the engine's session (1 unless configured): the LightGBM threads of a task."""
    return int(con._session.conf.get("spark.task.cpus", "1") or 1)


def to_spark(con: ibis.BaseBackend, expr: ir.Table) -> Any:
    """A Spark DataFrame of the expression, not executed (in-memory tables it reads registered first)."""
    con._run_pre_execute_hooks(expr)
    return con._session.sql(con.compile(expr))


def write_parquet(frame: Any, path: str | Path) -> None:
    """A Spark DataFrame written as a Parquet dataset at `path` (a directory of part files; replaced)."""
    frame.write.mode("overwrite").parquet(str(path))


def path_exists(con: ibis.BaseBackend, path: str) -> bool:
    """Whether a path or URI (file:, hdfs:, s3a:, …) exists, asked through Spark's own file systems."""
    session = con._session
    hadoop_path = session._jvm.org.apache.hadoop.fs.Path(path)
    return bool(hadoop_path.getFileSystem(session._jsc.hadoopConfiguration()).exists(hadoop_path))
