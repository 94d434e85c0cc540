"""Fixtures of the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import mlflow_store, new_store


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, migrated_store: Path):
    """A fresh MLflow SQLite store for one test module, made current through the environment and the client."""
    with mlflow_store(new_store(migrated_store, tmp_path_factory.mktemp("mlstore"))) as uri:
        yield uri
