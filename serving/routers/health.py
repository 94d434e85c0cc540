"""Operations: liveness, readiness (what is missing, if anything) and the Prometheus metrics. No key needed."""

from __future__ import annotations

import os

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

from serving.dependencies import DecisionLogDep, HolderDep, MetricsDep, StoreDep, WorkersDep
from serving.state import check_store_features

router = APIRouter(tags=["ops"])


@router.get("/healthz")
def healthz() -> dict:
    """Alive."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(
    holder: HolderDep, store: StoreDep, decision_log: DecisionLogDep, workers: WorkersDep
) -> JSONResponse:
    """Ready when models, policy and the store's snapshot are loaded; the details say what is missing and
    which versions every worker process serves."""
    info = store.info()
    status = holder.status
    details = {
        "models": holder.current.version_labels() if holder.current else None,
        "store": {"as_of": str(info.as_of), "users": info.n_users} if info else None,
        "last_reload_error": status.last_error,
        "reload_failures": status.failures,
        "decision_log": decision_log.stats(),
        "worker": os.getpid(),
        "workers": workers.workers(),
    }
    mismatch = None
    if holder.current is not None and info is not None:
        try:
            check_store_features(holder.current, info.feature_version)
        except ValueError as exc:  # a snapshot written since the load, with other features
            mismatch = str(exc)
    details["feature_mismatch"] = mismatch
    ready = holder.current is not None and info is not None and mismatch is None
    return JSONResponse({"ready": ready, **details}, status_code=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)
def prometheus(metrics: MetricsDep) -> PlainTextResponse:
    """Prometheus metrics: of every worker process added up when `clm serve` runs several (Prometheus
    multiprocess mode, PROMETHEUS_MULTIPROC_DIR), else of this process."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)
    return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
