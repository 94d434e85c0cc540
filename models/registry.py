"""The MLflow registry as `models.decision`'s loader reads it: which version an alias points at, and a
registered model's bundle or policy artifact (by version or alias)."""

from __future__ import annotations

from pathlib import Path

import mlflow


def download_artifact(model_uri: str, artifact: str, dst: Path | None = None) -> Path:
    """A named artifact of a logged pyfunc model (`models:/NAME/VERSION`, `models:/NAME@ALIAS`)."""
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{model_uri.rstrip('/')}/artifacts/{artifact}", dst_path=str(dst) if dst else None
    )
    return Path(local)


def download_verified(name: str, version: str, artifact: str, dst: Path | None = None) -> Path:
    """The artifact of `models:/NAME/VERSION`, its checksum manifest checked against the digest recorded on
    the version at registration (ArtifactRefused naming the file that differs). A version registered
    before digests were recorded is checked against its own manifest only, when it has one."""
    from models.artifacts import digest_tag, verify_manifest

    local = download_artifact(f"models:/{name}/{version}", artifact, dst)
    tags = mlflow.MlflowClient().get_model_version(name, version).tags or {}
    verify_manifest(local, expected_digest=tags.get(digest_tag(artifact)))
    return local


def download_bundle(model_uri: str, dst: Path | None = None) -> Path:
    """The `bundle` artifact of a registered churn/upgrade model."""
    return download_artifact(model_uri, "bundle", dst)


def download_policy(model_uri: str, dst: Path | None = None) -> Path:
    """The `policy` artifact of a registered policy (`models:/clm-policy@champion`)."""
    return download_artifact(model_uri, "policy", dst)


def version_by_alias(name: str, alias: str) -> str | None:
    """The version `name@alias` points at; None when the model or the alias does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow.MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        # A missing model is RESOURCE_DOES_NOT_EXIST, a missing alias INVALID_PARAMETER_VALUE.
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
