"""Shared fixtures: small simulated worlds, generated once per session, and a small *trained* world (models
and policy registered and promoted in a real MLflow SQLite store, an online-store snapshot) for the API,
the reviewer pages, the campaign report and the notebooks."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from clm.config import load_config
from features.jobs import latest_features
from features.online import open_store
from features.registry import FeatureParams, build_registry, registry_version
from simulation.io import simulate_to_directory
from training import tracking
from training.policy import train_policy
from training.promote import promote_model
from training.train import train

START = dt.date(2025, 1, 1)


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite database with every migration applied. A new store migrates for 8–10 s; a
    copy of this one opens at once, so each test that needs a store of its own copies it (`new_store`)."""
    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    uri = f"sqlite:///{path}"
    mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri).search_experiments()
    return path


def new_store(template: Path, directory: Path) -> str:
    """A fresh store in `directory` (its `mlflow.db`, copied from the migrated template), as a tracking URI.
    Experiments the training job creates keep their artifacts beside that file."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, directory / "mlflow.db")
    return f"sqlite:///{directory / 'mlflow.db'}"


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 15,000-user, 300-day world: big enough for rates and AUCs to be measured, small enough for CI."""
    out = tmp_path_factory.mktemp("worlds") / "small"
    simulate_to_directory(out, n_users=15000, days=300, seed=42, start=START)
    return out


def read(world: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(world / f"{name}.parquet")


KEYS = {"score-key": ["score"], "admin-key": ["score", "admin"], "review-key": ["review"]}


@dataclass(frozen=True)
class ServedWorld:
    data: Path
    tracking_uri: str
    store_url: str
    root: Path
    user_ids: list[str]


@pytest.fixture(scope="session")
def served_world(tmp_path_factory: pytest.TempPathFactory, migrated_store: Path) -> ServedWorld:
    root = tmp_path_factory.mktemp("served")
    data = root / "world"
    simulate_to_directory(data, n_users=3000, days=270, seed=11, start=dt.date(2025, 1, 1))
    uri = new_store(migrated_store, root)
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    tracking.configure(uri)
    config = load_config()
    try:
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
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = previous
        if mlflow.active_run():
            mlflow.end_run()
    params = FeatureParams.from_config(config.features)
    frame, as_of = latest_features(data, params=params)
    store_url = f"sqlite:///{root / 'online.db'}"
    with open_store(store_url) as store:
        store.write_snapshot(frame, as_of=as_of, feature_version=registry_version(build_registry(params)))
    return ServedWorld(data, uri, store_url, root, sorted(frame["user_id"].astype(str)))


@pytest.fixture
def served_env(served_world: ServedWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ServedWorld:
    """Point MLflow and the serving settings at the served world (a fresh decision log per test)."""
    import json

    monkeypatch.setenv("MLFLOW_TRACKING_URI", served_world.tracking_uri)
    tracking.configure(served_world.tracking_uri)
    monkeypatch.setenv("CLM_API_KEYS", json.dumps(KEYS))
    monkeypatch.setenv("CLM_ONLINE_STORE", served_world.store_url)
    monkeypatch.setenv("CLM_DECISION_LOG", f"sqlite:///{tmp_path / 'decisions.db'}")
    monkeypatch.setenv("CLM_EXPLORATION", "false")
    return served_world


@pytest.fixture
def api_keys() -> dict[str, list[str]]:
    return KEYS
