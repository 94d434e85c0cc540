"""Operations: liveness, readiness (what is missing, if anything) and the Prometheus metrics. No key needed."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.dependencies import DecisionLogDep, HolderDep, MetricsDep, StoreDep

router = APIRouter(tags=["ops"])


@router.get("/healthz")
def healthz() -> dict:
    """Alive."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(holder: HolderDep, store: StoreDep, decision_log: DecisionLogDep) -> JSONResponse:
    """Ready when models, policy and the store's snapshot are loaded; the details say what is missing."""
    info = store.info()
    status = holder.status
    details = {
        "models": holder.current.version_labels() if holder.current else None,
        "store": {"as_of": str(info.as_of), "users": info.n_users} if info else None,
        "last_reload_error": status.last_error,
        "reload_failures": status.failures,
        "decision_log": decision_log.stats(),
    }
    ready = holder.current is not None and info is not None
    return JSONResponse({"ready": ready, **details}, status_code=200 if ready else 503)


@router.get("/metrics")
def prometheus(metrics: MetricsDep) -> PlainTextResponse:
    """Prometheus metrics of this worker process."""
    return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
