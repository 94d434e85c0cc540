"""The loaded models: which versions serve (and shadow), and the admin reload that swaps them."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, HTTPException

from serving.dependencies import (
    ADMIN_SCOPE,
    SCORE_SCOPE,
    HolderDep,
    MetricsDep,
    ModelsDep,
    StoreDep,
    WorkersDep,
)
from serving.schemas import ModelsResponse, ReloadResponse

router = APIRouter(tags=["models"])


@router.get("/v1/models", response_model=ModelsResponse, dependencies=SCORE_SCOPE)
def get_models(models: ModelsDep, holder: HolderDep, store: StoreDep, workers: WorkersDep) -> ModelsResponse:
    """The loaded versions (of the worker that answers, and of every worker), the alias they were loaded
    by, and the store's snapshot."""
    info = store.info()
    return ModelsResponse(
        alias=models.alias, versions=models.version_labels(),
        shadow=holder.shadow.version_labels() if holder.shadow else None,
        loaded_at=dt.datetime.fromtimestamp(models.loaded_at, dt.UTC),
        store={"as_of": str(info.as_of), "users": info.n_users, "feature_version": info.feature_version}
        if info else {},
        workers=workers.workers(),
    )  # fmt: skip


@router.post("/v1/admin/reload", response_model=ReloadResponse, dependencies=ADMIN_SCOPE)
def reload(holder: HolderDep, metrics: MetricsDep, workers: WorkersDep) -> ReloadResponse:
    """Load the aliases' current versions, warm them and swap in this worker; on success every other worker
    follows within its poll interval (`workers` of /v1/models shows them); on failure the old ones keep
    serving."""
    try:
        result = holder.reload()
    except Exception as exc:
        raise HTTPException(503, f"reload failed, still serving {holder.describe()}: {exc}") from exc
    metrics.loaded("served", holder.current)
    metrics.loaded("shadow", holder.shadow)
    workers.bump()
    return ReloadResponse(**result)
