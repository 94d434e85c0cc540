"""Fixtures of the training tests."""

from __future__ import annotations

import mlflow
import pytest

from training import tracking


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    """A fresh MLflow SQLite store for one test module, made current through the environment and the client."""
    root = tmp_path_factory.mktemp("mlstore")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.configure(uri)
    yield uri
    mp.undo()
    if mlflow.active_run():
        mlflow.end_run()
