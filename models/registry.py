"""Fetch a registered model's bundle from MLflow (by version or alias); used by scoring and serving."""

from __future__ import annotations

from pathlib import Path

import mlflow

from models.bundle import ModelBundle, load_bundle


def download_artifact(model_uri: str, artifact: str, dst: Path | None = None) -> Path:
    """A named artifact of a logged pyfunc model (`models:/NAME/VERSION`, `models:/NAME@ALIAS`)."""
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{model_uri.rstrip('/')}/artifacts/{artifact}", dst_path=str(dst) if dst else None
    )
    return Path(local)


def download_bundle(model_uri: str, dst: Path | None = None) -> Path:
    """The `bundle` artifact of a registered churn/upgrade model."""
    return download_artifact(model_uri, "bundle", dst)


def download_policy(model_uri: str, dst: Path | None = None) -> Path:
    """The `policy` artifact of a registered policy (`models:/clm-policy@champion`)."""
    return download_artifact(model_uri, "policy", dst)


def load_registered_bundle(name: str, alias: str = "champion") -> ModelBundle:
    return load_bundle(download_bundle(f"models:/{name}@{alias}"))
