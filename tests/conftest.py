"""Shared fixtures: small simulated worlds, generated once per test run, and a small *trained* world (models
and policy registered and promoted in a real MLflow SQLite store, an online-store snapshot) for the API,
the reviewer pages, the campaign report and the notebooks.

Under pytest-xdist the session fixtures below are built once for the whole run, not once per worker: the
first worker to need one builds it under a file lock in the run's shared temporary directory, the others
wait for it and read it back (`built_once`). Tests only read them; a test that moves a registry alias works
on its own copy of the served store (`private_served_world`).

How xdist shares the work (`pytest_xdist_make_scheduler`): the tests of a module whose module-scoped
fixtures are costly (`TOGETHER`) go to one worker, which builds those fixtures once; every other test goes
alone to whichever worker is free; and the costliest work is handed out first (`COSTLY`), so that the two
workers finish together."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest

from clm.config import load_config
from features.jobs import materialize_latest
from features.registry import FeatureParams
from models.catalog import contact_params
from simulation.io import simulate_to_directory
from training import tracking
from training.policy import train_policy
from training.promote import promote_model
from training.train import train

START = dt.date(2025, 1, 1)

# Test modules (or single tests) by the seconds they take on a quiet 2-core machine, measured; they are
# handed to the workers first, costliest first, so that neither worker is left with a long tail.
COSTLY: dict[str, float] = {
    "tests/training/test_policy_job.py": 260,
    "tests/training/test_train_job.py": 150,
    "tests/notebooks/test_notebooks.py::test_notebook_runs_without_errors[02-train-and-compare.ipynb]": 130,
    "tests/serving/test_schema.py": 120,
    "tests/training/test_report.py": 110,
    "tests/browser/test_review_browser.py": 75,
    "tests/models/test_model_behaviour.py": 60,
    "tests/notebooks/test_notebooks.py::test_notebook_runs_without_errors[04-evaluate-policy.ipynb]": 60,
    "tests/serving/test_live.py": 60,
    "tests/training/test_short_history.py": 55,
    "tests/test_spark.py": 150,
    "tests/notebooks/test_notebooks.py::test_notebook_runs_without_errors[03-review-explanations.ipynb]": 48,
    "tests/notebooks/test_notebooks.py::test_notebook_runs_without_errors[01-explore-events.ipynb]": 35,
}


# Modules whose module-scoped fixtures train models, simulate worlds or start servers: one worker runs all
# their tests, so each fixture is built once (xdist's plain `load` would build it on both workers).
TOGETHER = frozenset({
    "tests/browser/test_docs_offline.py", "tests/browser/test_review_browser.py", "tests/models/test_decision.py",
    "tests/models/test_model_behaviour.py", "tests/serving/test_review.py", "tests/simulation/test_margin_truth.py",
    "tests/test_benchmark_features_agree.py", "tests/test_spark.py", "tests/training/test_bgnbd_baseline.py",
    "tests/training/test_policy_job.py", "tests/training/test_report.py", "tests/training/test_short_history.py",
    "tests/training/test_tracking.py", "tests/training/test_train_job.py",
})  # fmt: skip


def _cost(item: pytest.Item) -> float:
    """The measured cost of the test's own entry, else of its module (0 for the rest)."""
    return COSTLY.get(item.nodeid, COSTLY.get(item.nodeid.split("::")[0], 0.0))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Costliest first (a stable sort: the rest keep their order); the scheduler below hands work out in
    this order."""
    items.sort(key=lambda item: -_cost(item))


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """For `-n N` (xdist's default `load` distribution): the tests of a `TOGETHER` module as one unit of
    work, every other test a unit of its own, handed out in collection order. (xdist's `loadgroup` would
    do this from markers, but its group suffix does not reach the scheduler under pytest 9.)"""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModulesTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::")[0]
            return module if module in TOGETHER else nodeid

    config.option.loadscopereorder = False
    return ModulesTogether(config, log)


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], Any]) -> Any:
    """`build(directory)` run once per test run — under xdist, by the first worker to ask, while the others
    wait on a file lock — and its JSON-able result returned to every caller."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    directory, done = shared / name, shared / f"{name}.json"
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not done.exists():
                shutil.rmtree(directory, ignore_errors=True)  # a build that failed part-way
                directory.mkdir(parents=True)
                done.write_text(json.dumps(build(directory)))
            return json.loads(done.read_text())
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@contextlib.contextmanager
def _mlflow_uris_restored() -> Iterator[None]:
    """MLflow's process-wide tracking and registry URIs and the environment variables that carry them (MLflow
    sets both when told a URI, for subprocesses to inherit) put back on exit, whatever ran inside
    (`tracking.configure`, a CLI command that configures from the environment)."""
    import mlflow.tracking._model_registry.utils as registry_utils
    import mlflow.tracking._tracking_service.utils as tracking_utils

    saved_uris = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    saved_environment = {name: os.environ.get(name) for name in _URI_VARIABLES}
    try:
        yield
    finally:
        if mlflow.active_run():
            mlflow.end_run()
        tracking_utils._tracking_uri, registry_utils._registry_uri = saved_uris
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def mlflow_store(uri: str) -> Iterator[str]:
    """MLflow's tracking and registry pointed at `uri` — the environment and the process-wide URIs that
    `tracking.configure` sets — and all three put back afterwards, so no store leaks into a later test."""
    with _mlflow_uris_restored():
        os.environ["MLFLOW_TRACKING_URI"] = uri
        tracking.configure(uri)
        yield uri


@pytest.fixture(autouse=True)
def _no_mlflow_store_leaks() -> Iterator[None]:
    """Whatever store a test points MLflow at, the next test starts where this one did."""
    with _mlflow_uris_restored():
        yield


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite database with every migration applied. A new store migrates for 8–10 s; a
    copy of this one opens at once, so each test that needs a store of its own copies it (`new_store`)."""

    def build(directory: Path) -> str:
        uri = f"sqlite:///{directory / 'mlflow.db'}"
        mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()
        return str(directory / "mlflow.db")

    return Path(built_once(tmp_path_factory, "mlflow-template", build))


def new_store(template: Path, directory: Path) -> str:
    """A fresh store in `directory` (its `mlflow.db`, copied from the migrated template), as a tracking URI.
    Experiments the training job creates keep their artifacts beside that file."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, directory / "mlflow.db")
    return f"sqlite:///{directory / 'mlflow.db'}"


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 15,000-user, 300-day world: big enough for rates and AUCs to be measured, small enough for CI."""

    def build(directory: Path) -> str:
        simulate_to_directory(directory, n_users=15000, days=300, seed=42, start=START)
        return str(directory)

    return Path(built_once(tmp_path_factory, "small-world", build))


def read(world: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(world / f"{name}.parquet")


# The decision cache's bound in the served tests: below the world's 3,000 users, so it fills on demand.
ON_DEMAND_CACHE_USERS = 100

KEYS = {"score-key": ["score"], "admin-key": ["score", "admin"], "review-key": ["review"]}


@dataclass(frozen=True)
class ServedWorld:
    data: Path
    tracking_uri: str
    store_url: str
    root: Path
    user_ids: list[str]


def _build_served_world(root: Path, template: Path) -> dict[str, Any]:
    data = root / "world"
    simulate_to_directory(data, n_users=3000, days=270, seed=11, start=dt.date(2025, 1, 1))
    uri = new_store(template, root)
    config = load_config()
    with mlflow_store(uri):
        train(
            data,
            ["churn", "upgrade", "reactivation"],
            config=config,
            project_root=root,
            truth_dir=data / "truth",
        )
        for name in ("clm-churn", "clm-upgrade", "clm-reactivation"):
            promote_model(name, metric="backtest.roc_auc.mean", tolerance=0.005)
        train_policy(data, config=config, project_root=root, truth_dir=data / "truth")
        promote_model("clm-policy", metric="test.offline.dr", tolerance=1e9)
    store_url = f"sqlite:///{root / 'online.db'}"
    _, frame = materialize_latest(data, store_url, params=FeatureParams.from_config(config.features),
                                  contacts=contact_params(config))  # fmt: skip
    user_ids = sorted(frame["user_id"].astype(str))
    return {
        "data": str(data),
        "tracking_uri": uri,
        "store_url": store_url,
        "root": str(root),
        "user_ids": user_ids,
    }


@pytest.fixture(scope="session")
def served_world(tmp_path_factory: pytest.TempPathFactory, migrated_store: Path) -> ServedWorld:
    """The trained world, read-only: its registry's aliases stay where they are for the whole run."""
    built = built_once(tmp_path_factory, "served", lambda root: _build_served_world(root, migrated_store))
    return ServedWorld(Path(built["data"]), built["tracking_uri"], built["store_url"], Path(built["root"]),
                       built["user_ids"])  # fmt: skip


@pytest.fixture
def private_served_world(served_world: ServedWorld, tmp_path: Path) -> ServedWorld:
    """The served world with a registry of its own (a copy of its MLflow database; the artifacts it points
    to are shared, read-only): for a test that registers versions or moves aliases."""
    shutil.copyfile(served_world.root / "mlflow.db", tmp_path / "mlflow.db")
    return dataclasses.replace(served_world, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


@contextlib.contextmanager
def serving_env(world: ServedWorld, log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ServedWorld]:
    """MLflow and the serving settings pointed at `world` (a fresh decision log in `log_dir`)."""
    monkeypatch.setenv("CLM_API_KEYS", json.dumps(KEYS))
    monkeypatch.setenv("CLM_ONLINE_STORE", world.store_url)
    monkeypatch.setenv("CLM_DECISION_LOG", f"sqlite:///{log_dir / 'decisions.db'}")
    monkeypatch.setenv("CLM_EXPLORATION", "false")
    # every app start would load the models once more in a fresh process (seconds under load); the trial
    # load has its own tests (tests/serving/test_hardening.py, tests/models/test_artifacts.py)
    monkeypatch.setenv("CLM_TRIAL_LOAD", "false")
    # decisions go through the decision cache filled on demand (an LRU smaller than the world), not its bulk
    # build of all 3,000 users at every app start; tests/serving/test_cache.py tests the bulk build
    monkeypatch.setenv("CLM_DECISION_CACHE_MAX_USERS", str(ON_DEMAND_CACHE_USERS))
    with mlflow_store(world.tracking_uri):
        yield world


def _serving_env_fixture(name: str, world_fixture: str) -> Any:
    """A fixture `name`: MLflow and the serving settings pointed at the world `world_fixture` gives (`serving_env`:
    a fresh decision log per test, decisions through the on-demand decision cache)."""

    @pytest.fixture(name=name)
    def fixture(
        request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> Iterator[ServedWorld]:
        """MLflow and the serving settings pointed at this world (a fresh decision log per test)."""
        with serving_env(request.getfixturevalue(world_fixture), tmp_path, monkeypatch) as world:
            yield world

    return fixture


served_env = _serving_env_fixture("served_env", "served_world")
# the same over a registry of the test's own (a test that registers versions or moves aliases)
private_served_env = _serving_env_fixture("private_served_env", "private_served_world")


@pytest.fixture
def api_keys() -> dict[str, list[str]]:
    return KEYS


@pytest.fixture(scope="session")
def spark_engine() -> Iterator[Any]:
    """One Spark session (local[2]) for the whole run, as an Ibis backend: a session starts in 15–30 s and a
    process holds only one (the Spark tests sit in one `TOGETHER` module, so one worker starts it)."""
    from features.spark import connect

    con = connect("local[2]", {"spark.sql.shuffle.partitions": "2"})
    yield con
    con._session.stop()
