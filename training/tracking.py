"""The MLflow layer of the training job: where runs go, what a run logs, registry versions and promotion.

Where things land with the embedded default (no `MLFLOW_TRACKING_URI`):

- runs, params, metrics, tags and the model registry: `<project_root>/mlruns/mlflow.db` (SQLite);
- artifacts: `<project_root>/mlruns/artifacts/<experiment>/<run_id>/artifacts/...` for run artifacts
  and `<project_root>/mlruns/artifacts/<experiment>/models/<model_id>/artifacts/...` for logged models.

An in-process SQLite client does not read `MLFLOW_ARTIFACTS_DESTINATION` or `--default-artifact-root`
(those configure `mlflow server`); left alone it would put artifacts in `./mlruns` relative to the
*current directory*. So every experiment this module creates gets an explicit, absolute
`artifact_location` next to the database file, stored in the database itself. That is why
`mlflow ui --backend-store-uri sqlite:///<project_root>/mlruns/mlflow.db`, started from any
directory, finds the artifacts. (Experiment `Default`, created by MLflow with the database, points at
`<cwd>/mlruns/0`; the training job never logs to it and deletes it while it holds no run, so that a
browser of the store sees no empty experiment.)

What a run holds: the model's own parameters as params (a few dozen), the resolved config as one
artifact (`config/resolved_config.json`), a description (what was trained, on what, the headline
metric) that the registered version repeats, and a registered model described once.

Nothing here runs at import; every side effect happens inside a call.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException

from models.artifacts import MANIFEST_FILE, digest_tag, manifest_digest

logger = logging.getLogger(__name__)

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
STORE_DIR = "mlruns"
DATABASE_FILE = "mlflow.db"
ARTIFACTS_DIR = "artifacts"

CHAMPION = "champion"
CHALLENGER = "challenger"

# MLflow's own limits (mlflow.utils.validation: MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH,
# MAX_ENTITY_KEY_LENGTH); restated so that we truncate visibly instead of MLflow doing it silently.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_KEY_LENGTH = 250

NOT_LOGGED_METRICS_TAG = "clm.metrics.not_logged"
TRUNCATED_PARAMS_TAG = "clm.params.truncated"
FULL_PARAMS_ARTIFACT = "params_full.json"

CONFIG_ARTIFACT = "config/resolved_config.json"
DEFAULT_EXPERIMENT_NAME = "Default"

PROMOTION_DECISION_TAG = "clm.promotion.decision"
PROMOTION_REASONS_TAG = "clm.promotion.reasons"
PROMOTION_COMPARED_WITH_TAG = "clm.promotion.compared_with"
PROMOTION_TIMESTAMP_TAG = "clm.promotion.timestamp"

# Packages the served model imports; pinned to what trained it (mlflow itself is added by MLflow). The
# python model is logged as code (a file MLflow runs), so no cloudpickle is needed to load it.
DEFAULT_MODEL_PACKAGES = ("lightgbm", "numpy", "pandas", "scikit-learn")

# MLflow accepts alphanumerics, `_`, `-`, `.`, space, `:` and `/` in param/metric/tag names.
_DISALLOWED_NAME_CHARACTERS = re.compile(r"[^/\w.\- :]")
_TRUNCATION_MARK = "…[truncated]"
_EXPERIMENT_FOLDER_UNSAFE = re.compile(r"[^\w.-]")


# --------------------------------------------------------------------------------------------------
# Where the store lives


def resolve_tracking_uri(project_root: Path) -> str:
    """`MLFLOW_TRACKING_URI` when set, else the project's SQLite store `<root>/mlruns/mlflow.db` (created)."""
    from_env = os.environ.get(TRACKING_URI_ENV, "").strip()
    if from_env:
        return from_env
    store_dir = Path(project_root).resolve() / STORE_DIR
    store_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(store_dir / DATABASE_FILE).as_posix()}"


def artifact_root_for(tracking_uri: str) -> str | None:
    """Artifact root for a SQLite store: the `artifacts/` folder next to the database file, as a file URI.

    None for any other store (a tracking server or a database server decides its own artifact root).
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = unquote(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
    if not database or database == ":memory:":
        return None
    return (Path(database).resolve().parent / ARTIFACTS_DIR).as_uri()


def configure(tracking_uri: str) -> None:
    """Point MLflow's tracking and model registry at the same store (idempotent)."""
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)


# --------------------------------------------------------------------------------------------------
# Names and values MLflow accepts


def sanitize_name(name: str) -> str:
    """A param/metric/tag name MLflow accepts: other characters become `_`, no empty/`.`/`..` path parts."""
    cleaned = _DISALLOWED_NAME_CHARACTERS.sub("_", name)
    # MLflow rejects names that change under posixpath.normpath (they may become file paths).
    parts = [("__" if part == ".." else part) for part in cleaned.split("/") if part not in ("", ".")]
    result = "/".join(parts) or "_"
    if len(result) > MAX_KEY_LENGTH:
        raise ValueError(f"name {name!r} is longer than MLflow's {MAX_KEY_LENGTH} characters")
    return result


def _truncate(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit - len(_TRUNCATION_MARK)] + _TRUNCATION_MARK


def _json_default(value: Any) -> Any:
    """JSON for the values configs and metrics hold: numpy scalars/arrays, paths, dates, sets."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    return str(value)


def _put(flat: dict[str, Any], key: str, value: Any, original: str) -> None:
    if key in flat:
        raise ValueError(f"two names map to the same MLflow key {key!r} (one of them is {original!r})")
    flat[key] = value


def _flatten(values: Mapping[str, Any], prefix: str, flat: dict[str, Any], *, keep_empty: bool) -> None:
    """Dotted keys into `flat`; with `keep_empty` an empty dict stays a value instead of vanishing."""
    for raw_key, value in values.items():
        dotted = f"{prefix}.{raw_key}" if prefix else str(raw_key)
        if isinstance(value, Mapping) and (value or not keep_empty):
            _flatten(value, dotted, flat, keep_empty=keep_empty)
        else:
            _put(flat, sanitize_name(dotted), value, dotted)


def flatten_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Nested dicts become dotted keys, lists JSON strings; keys sanitised, values not yet truncated."""
    flat: dict[str, Any] = {}
    _flatten(params, "", flat, keep_empty=True)
    return {key: _param_text(value) for key, value in flat.items()}


def _param_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple | set | frozenset | Mapping):
        return json.dumps(value, default=_json_default, ensure_ascii=False)
    return str(value)


def _metric_value(value: Any) -> float | str:
    """The float to log, or why it cannot be logged (`none`, `nan`, `inf`, `-inf`)."""
    if value is None or value is pd.NA:
        return "none"
    try:
        if isinstance(value, str | bytes):
            raise TypeError  # float("0.8") would succeed; a metric is a number, not text
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metric value {value!r} is not a number") from exc
    if math.isnan(number):
        return "nan"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return number


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> tuple[dict[str, float], dict[str, str]]:
    """(loggable metrics, {name: why not logged}) with nested dicts flattened to `prefix.key.subkey`."""
    flat: dict[str, Any] = {}
    _flatten(metrics, prefix, flat, keep_empty=False)
    loggable: dict[str, float] = {}
    not_logged: dict[str, str] = {}
    for key, value in flat.items():
        try:
            checked = _metric_value(value)
        except TypeError as exc:
            raise TypeError(f"metric {key!r}: {exc}") from None
        if isinstance(checked, str):
            not_logged[key] = checked
        else:
            loggable[key] = checked
    return loggable, not_logged


# --------------------------------------------------------------------------------------------------
# Runs


def _active_run_id() -> str:
    run = mlflow.active_run()
    if run is None:
        # mlflow.log_* would silently start a run in experiment "Default"; refuse instead.
        raise RuntimeError("no active MLflow run: call this inside `start_training_run(...)`")
    return run.info.run_id


def _experiment_id(client: MlflowClient, experiment: str) -> str:
    """The experiment's id, creating it with an artifact location next to a SQLite store's database (and
    deleting MLflow's empty `Default` experiment, in a new store as in one made before it was deleted)."""
    delete_empty_default_experiment(client)
    existing = client.get_experiment_by_name(experiment)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            logger.warning("experiment %r was deleted; restoring it", experiment)
            client.restore_experiment(existing.experiment_id)
        return existing.experiment_id
    artifact_root = artifact_root_for(mlflow.get_tracking_uri())
    location = None
    if artifact_root is not None:
        location = f"{artifact_root}/{_EXPERIMENT_FOLDER_UNSAFE.sub('_', experiment)}"
    experiment_id = client.create_experiment(experiment, artifact_location=location)
    logger.info("created experiment %r (id %s) with artifacts in %s", experiment, experiment_id, location)
    return experiment_id


def delete_empty_default_experiment(client: MlflowClient) -> bool:
    """Delete MLflow's `Default` experiment when it holds no run (MLflow creates it with every store; we
    never log to it), so that a browser of the store sees only experiments with runs. True if deleted."""
    default = client.get_experiment_by_name(DEFAULT_EXPERIMENT_NAME)
    if default is None or default.lifecycle_stage == "deleted":
        return False
    if client.search_runs([default.experiment_id], max_results=1, run_view_type=ViewType.ALL):
        return False
    client.delete_experiment(default.experiment_id)
    return True


@contextmanager
def start_training_run(
    experiment: str,
    run_name: str,
    *,
    params: Mapping[str, Any],
    tags: Mapping[str, Any],
    description: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Start a run in `experiment` with flattened params, tags and a description (shown by the MLflow UI);
    the run ends (FAILED on error) on exit.

    Params longer than MLflow's limit are truncated; their names go in the tag `clm.params.truncated`
    and the untruncated params in the artifact `params_full.json`, so nothing is lost.
    """
    client = MlflowClient()
    experiment_id = _experiment_id(client, experiment)
    flat_params = flatten_params(params)
    truncated = sorted(key for key, value in flat_params.items() if len(value) > MAX_PARAM_VALUE_LENGTH)
    run_tags = {
        sanitize_name(str(key)): _truncate(str(value), MAX_TAG_VALUE_LENGTH) for key, value in tags.items()
    }
    if truncated:
        run_tags[TRUNCATED_PARAMS_TAG] = _truncate(json.dumps(truncated), MAX_TAG_VALUE_LENGTH)
        logger.warning(
            "params longer than %d characters were truncated: %s", MAX_PARAM_VALUE_LENGTH, truncated
        )
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name, tags=run_tags, description=description
    ) as run:
        mlflow.log_params(
            {key: _truncate(value, MAX_PARAM_VALUE_LENGTH) for key, value in flat_params.items()}
        )
        if truncated:
            log_dict(flat_params, FULL_PARAMS_ARTIFACT)
        yield run


def log_metrics_flat(
    metrics: Mapping[str, Any], prefix: str = "", *, step: int | None = None
) -> dict[str, float]:
    """Log nested metrics as `prefix.key.subkey`; NaN/None/inf are not logged but named in a run tag.

    The tag `clm.metrics.not_logged` holds a JSON object {metric name: "nan" | "none" | "inf" | "-inf"},
    accumulated over calls within the run. Returns what was logged.
    """
    run_id = _active_run_id()
    loggable, not_logged = flatten_metrics(metrics, prefix)
    if loggable:
        mlflow.log_metrics(loggable, step=step)
    if not_logged:
        logger.warning("metrics not logged (no finite value): %s", not_logged)
        previous = MlflowClient().get_run(run_id).data.tags.get(NOT_LOGGED_METRICS_TAG)
        merged = {**(json.loads(previous) if previous else {}), **not_logged}
        mlflow.set_tag(
            NOT_LOGGED_METRICS_TAG, _truncate(json.dumps(merged, sort_keys=True), MAX_TAG_VALUE_LENGTH)
        )
    return loggable


def log_figure_png(fig: Any, artifact_file: str) -> None:
    """Save a matplotlib figure as a PNG artifact of the active run."""
    if not artifact_file.lower().endswith(".png"):
        raise ValueError(f"artifact_file {artifact_file!r} must end with .png")
    _active_run_id()
    mlflow.log_figure(fig, artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    """Write text to an artifact file of the active run."""
    _active_run_id()
    mlflow.log_text(text, artifact_file)


def log_dict(d: Mapping[str, Any], artifact_file: str) -> None:
    """Write a dict as JSON (numpy scalars, paths and dates allowed) or, for .yaml/.yml, as YAML."""
    _active_run_id()
    if artifact_file.lower().endswith((".yaml", ".yml")):
        mlflow.log_dict(dict(d), artifact_file)
    else:
        mlflow.log_text(json.dumps(d, indent=2, sort_keys=True, default=_json_default), artifact_file)


def log_config(config: Any) -> None:
    """The resolved config (a validated `ClmConfig`, or its plain dict) as one JSON artifact of the run."""
    log_dict(config if isinstance(config, Mapping) else config.as_dict(), CONFIG_ARTIFACT)


def log_frame(df: pd.DataFrame, artifact_file: str, *, index: bool = False) -> None:
    """Write a DataFrame as a CSV artifact of the active run."""
    _active_run_id()
    mlflow.log_text(df.to_csv(index=index), artifact_file)


# --------------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class RegisteredVersion:
    """One version of a registered model, as the training job and serving refer to it."""

    name: str
    version: str
    run_id: str | None
    model_uri: str
    alias: str | None = None


def _registered_version(name: str, version: Any, run_id: str | None, alias: str | None) -> RegisteredVersion:
    return RegisteredVersion(
        name=name, version=str(version), run_id=run_id, model_uri=f"models:/{name}/{version}", alias=alias
    )


def default_pip_requirements() -> list[str]:
    """`package==installed version` for the packages the served model needs (skipping any not installed)."""
    requirements = []
    for package in DEFAULT_MODEL_PACKAGES:
        try:
            requirements.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            logger.warning("package %s is not installed; not pinned in the model's requirements", package)
    return requirements


def log_and_register_model(
    *,
    name: str,
    python_model: str | Path,
    artifacts: Mapping[str, str],
    signature: Any,
    input_example: Any,
    registered_model_name: str,
    alias: str = CHALLENGER,
    pip_requirements: list[str] | None = None,
    tags: Mapping[str, str] | None = None,
    code_paths: list[str] | None = None,
    model_description: str | None = None,
    version_description: str | None = None,
) -> RegisteredVersion:
    """Log a pyfunc model in the active run, register it as a new version, point `alias` at it, tag it.

    `python_model` is a Python file that names the model with `mlflow.models.set_model` ("models from
    code": MLflow copies the file into the model and runs it at load; nothing is pickled); the modules it
    imports must be importable where the model loads (or come with `code_paths`). `artifacts` maps names
    to local paths (e.g. {"bundle": "<dir>"}) that the model's `load_context` reads; a directory with a
    checksum manifest (models.artifacts) has its digest recorded as the version tag
    `artifact_sha256.<name>`. Requirements are explicit (default: pinned lightgbm, numpy, pandas,
    scikit-learn), which keeps MLflow from spending seconds inferring them. The registered model gets
    `model_description` (when given) and the version `version_description`; registering goes through
    the client, which prints nothing (`mlflow.register_model` prints to stderr).
    """
    run_id = _active_run_id()
    requirements = default_pip_requirements() if pip_requirements is None else list(pip_requirements)
    started = time.perf_counter()
    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=str(python_model),
        artifacts=dict(artifacts),
        signature=signature,
        input_example=input_example,
        pip_requirements=requirements,
        code_paths=code_paths,
    )
    logged = time.perf_counter()
    version_tags = {sanitize_name(str(k)): str(v) for k, v in (tags or {}).items()}
    for artifact, local in artifacts.items():  # checked by the loader (models.registry) before it loads
        if (Path(local) / MANIFEST_FILE).is_file():
            version_tags[digest_tag(artifact)] = manifest_digest(Path(local))
    client = MlflowClient()
    _ensure_registered_model(client, registered_model_name, model_description)
    model_version = client.create_model_version(
        registered_model_name, info.model_uri, run_id=run_id, tags=version_tags or None,
        description=version_description, model_id=info.model_id,
    )  # fmt: skip
    client.set_registered_model_alias(registered_model_name, alias, str(model_version.version))
    logger.info(
        "logged model %s in %.2f s, registered %s version %s as @%s in %.2f s",
        info.model_uri,
        logged - started,
        registered_model_name,
        model_version.version,
        alias,
        time.perf_counter() - logged,
    )
    return _registered_version(
        registered_model_name, model_version.version, model_version.run_id or run_id, alias
    )


def _ensure_registered_model(client: MlflowClient, name: str, description: str | None) -> None:
    """Create the registered model with `description`, or bring an existing one's description up to date."""
    try:
        existing = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_registered_model(name, description=description)
        return
    if description and existing.description != description:
        client.update_registered_model(name, description=description)


def version_by_alias(name: str, alias: str) -> RegisteredVersion | None:
    """The version `name@alias` points at; None when the model or the alias does not exist."""
    try:
        model_version = MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        # A missing model is RESOURCE_DOES_NOT_EXIST, a missing alias INVALID_PARAMETER_VALUE.
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return _registered_version(name, model_version.version, model_version.run_id, alias)


def first_alias(name: str, aliases: Sequence[str]) -> RegisteredVersion | None:
    """The version the first existing alias of `aliases` points at (e.g. champion, else challenger)."""
    for alias in aliases:
        found = version_by_alias(name, alias)
        if found is not None:
            return found
    return None


def version_metrics(name: str, version: str) -> dict[str, float]:
    """Latest metrics of the run that produced `name` version `version` ({} when no run is recorded)."""
    client = MlflowClient()
    model_version = client.get_model_version(name, str(version))
    if not model_version.run_id:
        return {}
    return dict(client.get_run(model_version.run_id).data.metrics)


def set_version_tags(name: str, version: str, tags: Mapping[str, Any]) -> None:
    """Set tags on one registered model version (values stringified)."""
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), sanitize_name(str(key)), str(value))


def load_model_by_alias(name: str, alias: str = CHAMPION) -> mlflow.pyfunc.PyFuncModel:
    """Load `models:/name@alias` as a pyfunc model."""
    return mlflow.pyfunc.load_model(f"models:/{name}@{alias}")


# --------------------------------------------------------------------------------------------------
# Promotion


@dataclass(frozen=True)
class PromotionDecision:
    """Whether a challenger replaces the champion, and why, with the numbers compared."""

    promote: bool
    reasons: list[str] = field(default_factory=list)
    metric: str = ""
    challenger_value: float | None = None
    champion_value: float | None = None


def _finite(metrics: Mapping[str, float] | None, metric: str) -> float | None:
    if metrics is None or metrics.get(metric) is None:
        return None
    value = float(metrics[metric])
    return value if math.isfinite(value) else None


def decide_promotion(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    *,
    metric: str = "backtest.roc_auc.mean",
    higher_is_better: bool = True,
    tolerance: float = 0.005,
    behaviour_passed: bool,
    behaviour_report: str = "",
    minimum: float | None = None,
) -> PromotionDecision:
    """Promote iff the behaviour tests passed, the challenger reaches `minimum` (when given; e.g. a
    policy's offline value must not be negative) and there is no champion or the challenger is within
    `tolerance` of it or better (≥ champion − tolerance; ≤ champion + tolerance when lower is better).

    A champion without the metric is kept: the comparison cannot be made, so a person decides. The
    minimum holds even with no champion: a first version that loses value is not served either.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be ≥ 0, got {tolerance}")
    reasons: list[str] = []
    challenger_value = _finite(challenger, metric)
    champion_value = _finite(champion, metric)

    def decision(promote: bool) -> PromotionDecision:
        return PromotionDecision(promote, reasons, metric, challenger_value, champion_value)

    behaviour_ok = bool(behaviour_passed)
    if behaviour_ok:
        reasons.append("behaviour tests passed")
    else:
        reasons.append("behaviour tests failed" + (f": {behaviour_report}" if behaviour_report else ""))

    if challenger_value is None:
        reasons.append(f"challenger has no finite {metric}")
        return decision(False)
    if minimum is not None and challenger_value < minimum:
        reasons.append(f"challenger {metric} = {challenger_value:.6g} is below the minimum {minimum:g}")
        return decision(False)
    if champion is None:
        reasons.append(f"no champion yet; challenger {metric} = {challenger_value:.6g}")
        return decision(behaviour_ok)
    if champion_value is None:
        reasons.append(
            f"champion has no finite {metric} to compare with (challenger {challenger_value:.6g}); keeping it"
        )
        return decision(False)

    if higher_is_better:
        threshold = champion_value - tolerance
        good_enough = challenger_value >= threshold
        rule = f"≥ champion {champion_value:.6g} − tolerance {tolerance:g} = {threshold:.6g}"
    else:
        threshold = champion_value + tolerance
        good_enough = challenger_value <= threshold
        rule = f"≤ champion {champion_value:.6g} + tolerance {tolerance:g} = {threshold:.6g}"
    verdict = "meets" if good_enough else "fails"
    reasons.append(f"{metric}: challenger {challenger_value:.6g} {verdict} the bar ({rule})")
    return decision(behaviour_ok and good_enough)


def promote(name: str, decision: PromotionDecision, challenger_version: str) -> None:
    """Apply a decision: move `champion` to the challenger when promoting; always tag the challenger
    version with the decision, its reasons, the champion it was compared with and when."""
    client = MlflowClient()
    current = version_by_alias(name, CHAMPION)
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION, str(challenger_version))
        logger.info("promoted %s version %s to @%s", name, challenger_version, CHAMPION)
    else:
        logger.info("kept @%s of %s; version %s not promoted", CHAMPION, name, challenger_version)
    set_version_tags(
        name,
        str(challenger_version),
        {
            PROMOTION_DECISION_TAG: "promoted" if decision.promote else "rejected",
            PROMOTION_REASONS_TAG: "\n".join(decision.reasons),
            PROMOTION_COMPARED_WITH_TAG: f"version {current.version}" if current else "none",
            PROMOTION_TIMESTAMP_TAG: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        },
    )
