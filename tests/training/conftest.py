"""Fixtures of the training tests."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from tests.conftest import new_store
from training import tracking


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, migrated_store: Path):
    """A fresh MLflow SQLite store for one test module, made current through the environment and the client."""
    uri = new_store(migrated_store, tmp_path_factory.mktemp("mlstore"))
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.configure(uri)
    yield uri
    mp.undo()
    if mlflow.active_run():
        mlflow.end_run()
