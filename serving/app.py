"""The FastAPI app: the routers of serving/routers over the Scorer, the model holder, the online store and the
decision log, all put on `app.state` (serving/dependencies.py reads them from there). Models load in the
lifespan (never at import); `clm serve` starts it through `clm.commands.serve`."""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from features.online import open_store
from serving.cache import DecisionCaches
from serving.config import ServingConfig
from serving.decision_log import DecisionLog, DecisionLogUnavailable, DecisionNotLogged
from serving.edge import Edge
from serving.limits import BodyLimit, bounded_errors
from serving.openapi import install_docs
from serving.review import (
    STATIC_DIR,
    STATIC_URL,
    OverviewCache,
    PageRefused,
    ReplayModels,
    ReviewSessions,
    WaterfallCache,
    refused_page,
)
from serving.review.monitor import DriftGauges, MonitorCache
from serving.routers import decisions, health, models, outcomes, review
from serving.scorer import Scorer
from serving.service import DecisionService, Metrics, NoModelsLoaded, UnknownUser
from serving.settings import ServingSettings
from serving.state import ModelHolder, RegistryLoader, check_store_features
from serving.workers import WorkerSync

log = logging.getLogger(__name__)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    error_id = uuid.uuid4().hex[:12]
    log.exception("unhandled error %s on %s %s", error_id, request.method, request.url.path)
    return JSONResponse({"detail": "internal error", "error_id": error_id}, status_code=500)


async def unprocessable(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": jsonable_encoder(bounded_errors(list(exc.errors())))}, status_code=422)


async def no_models(request: Request, exc: NoModelsLoaded) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503)


async def unknown_user(request: Request, exc: UnknownUser) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def not_logged(request: Request, exc: DecisionNotLogged) -> JSONResponse:
    """A decision the log could not commit is not answered: the client may retry it."""
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": "the decision could not be logged; retry"}, status_code=503)


async def log_unavailable(request: Request, exc: DecisionLogUnavailable) -> JSONResponse:
    """The decision log's database did not answer in time (locked table, overload): 503, try again."""
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Open the store and the decision log, load the models (a failure leaves the app up but not ready),
    start polling, and build the service the decision routes use."""
    state = app.state
    settings: ServingSettings = state.settings
    metrics: Metrics = state.metrics
    holder: ModelHolder = state.holder
    state.store = open_store(settings.store_url())
    state.decision_log = DecisionLog(
        settings.decision_log_url(),
        schema=settings.decision_log_schema,
        durable=True,
        statement_timeout_seconds=settings.decision_log_statement_timeout_seconds,
        on_failure=lambda decision_id, exc: metrics.log_failures.inc(),
        journal_dir=settings.decision_journal_dir(),
        fsync_seconds=settings.journal_fsync_seconds,
    )  # fmt: skip  (journaled: a decision is in the local journal before it is answered, serving/journal.py)
    state.decision_log.start()
    state.caches.store = state.store  # the decision cache: before the first load, which builds it
    with contextlib.suppress(Exception):  # not ready: /readyz says why, decision routes answer 503
        holder.reload()
    metrics.loaded("served", holder.current)
    metrics.loaded("shadow", holder.shadow)
    state.service = DecisionService(
        state.scorer, holder, state.store, state.decision_log, metrics,
        explore=settings.exploration, caches=state.caches,
    )  # fmt: skip
    holder.start_polling(settings.reload_interval_seconds)
    state.workers.start()
    state.caches.start(lambda: (holder.current, holder.shadow), settings.snapshot_check_seconds)
    state.overview.warm(holder.current, state.store)
    state.monitor.warm(holder.current, state.store)
    yield
    state.caches.stop()
    state.workers.stop()
    holder.stop()
    mark_metrics_process_dead()
    state.monitor.close()
    state.overview.close()  # a build still running stops; none reads the store once this returns
    state.decision_log.close()
    state.store.close()


def loaded(metrics: Metrics, holder: ModelHolder) -> None:
    metrics.loaded("served", holder.current)
    metrics.loaded("shadow", holder.shadow)


def mark_metrics_process_dead() -> None:
    """Under Prometheus multiprocess mode, drop this worker's live gauges from the aggregate."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())


def create_app(
    config: ServingConfig,
    settings: ServingSettings | None = None,
    *,
    loader: RegistryLoader | None = None,
) -> FastAPI:
    settings = settings or ServingSettings()
    metrics = Metrics()
    scorer = Scorer(config.serving)
    loader = loader or RegistryLoader(config, trial_load=settings.trial_load)
    caches = DecisionCaches(scorer, explore=settings.exploration, max_users=settings.decision_cache_max_users)

    def warm(models) -> None:
        store = getattr(app.state, "store", None)  # opened by the lifespan before the first load
        info = store.info() if store is not None else None
        check_store_features(models, info.feature_version if info is not None else None)
        scorer.decide(models, {}, user_id=None, as_of=None)  # first predictions allocate; do it off the path
        if settings.decision_cache_max_users > 0:
            caches.prepare(models)  # every stored user decided before the set is swapped in

    holder = ModelHolder(
        loader.load, loader.versions, alias=settings.alias, shadow_alias=settings.shadow_alias, warm=warm,
        on_failure=lambda exc: metrics.reload_failures.inc(),
    )  # fmt: skip
    app = FastAPI(
        title="clm decision API",
        version="1",
        description="Lifecycle stage, churn and upgrade probability, value, the next best action and why. "
        "Send the API key in `X-API-Key` (the Authorize button).",
        lifespan=lifespan,
        docs_url=None,  # served by install_docs from packaged assets, never a CDN
        redoc_url=None,
    )
    app.state.config = config
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.scorer = scorer
    app.state.loader = loader
    app.state.holder = holder
    app.state.workers = WorkerSync(settings.run_dir, holder, on_reload=lambda: loaded(metrics, holder))
    app.state.caches = caches
    app.state.overview = OverviewCache(config, settings.events_dir)
    app.state.monitor = MonitorCache(config, settings.events_dir, DriftGauges(metrics.registry))
    app.state.replays = ReplayModels(loader)
    app.state.waterfalls = WaterfallCache()
    secret = settings.session_secret.get_secret_value() if settings.session_secret else None
    app.state.sessions = ReviewSessions.from_secret(secret, settings.review_session_seconds)
    for router in (review.router, decisions.router, outcomes.router, models.router, health.router):
        app.include_router(router)
    app.add_middleware(Edge)  # the timing and the hot route (serving/edge.py)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # added last: it wraps the others
    app.add_exception_handler(PageRefused, refused_page)
    app.add_exception_handler(Exception, internal_error)
    app.add_exception_handler(RequestValidationError, unprocessable)
    app.add_exception_handler(NoModelsLoaded, no_models)
    app.add_exception_handler(UnknownUser, unknown_user)
    app.add_exception_handler(DecisionNotLogged, not_logged)
    app.add_exception_handler(DecisionLogUnavailable, log_unavailable)
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="review-static")  # the pages' CSS and JS
    install_docs(app)
    return app
