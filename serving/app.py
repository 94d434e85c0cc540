"""The FastAPI app: thin routes over the Scorer, the model holder, the online store and the decision log.
Models load in the lifespan (never at import); `clm serve` starts it through `clm.commands.serve`."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from features.online import open_store
from serving.decision_log import DecisionLog, DecisionRecord, UnknownDecision
from serving.review import OverviewCache, PageRefused, refused_page, review_router
from serving.schemas import (
    BatchItem,
    BatchRequest,
    BatchResponse,
    Decision,
    DecisionRequest,
    ModelsResponse,
    OutcomeRequest,
    OutcomeResponse,
    ReloadResponse,
)
from serving.scorer import Decided, Scorer
from serving.settings import ServingSettings
from serving.state import ModelHolder, ModelSet, RegistryLoader

log = logging.getLogger(__name__)
Lang = Annotated[Literal["en", "zh"], Query(description="Language of reasons and rules")]


class Metrics:
    """Prometheus metrics of one app (its own registry, so several apps can live in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "clm_request_seconds", "Request latency by route", ["route", "method", "status"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )  # fmt: skip
        self.decisions = Counter("clm_decisions_total", "Decisions by stage and action", ["stage", "action"],
                                 registry=self.registry)  # fmt: skip
        self.model_version = Gauge("clm_model_version_info", "Loaded model versions (value 1)",
                                   ["role", "model", "version"], registry=self.registry)  # fmt: skip
        self.reload_failures = Counter(
            "clm_reload_failures_total", "Failed model loads", registry=self.registry
        )
        self.log_failures = Counter("clm_decision_log_failures_total", "Decisions the log could not write",
                                    registry=self.registry)  # fmt: skip

    def loaded(self, role: str, models: ModelSet | None) -> None:
        if models is None:
            return
        for name, version in models.versions.items():
            self.model_version.labels(role, name, version).set(1)


def feature_errors(
    features: dict[str, Any], models: ModelSet, loc: tuple = ("body", "features")
) -> list[dict]:
    """Every unknown feature and every value of the wrong type, located under `loc` (for a 422)."""
    errors = []
    for name, value in features.items():
        feature = models.registry.get(name)
        if feature is None:
            msg, kind = f"unknown feature {name!r}", "unknown_feature"
        elif value is None:
            continue
        elif feature.dtype == "category":
            if isinstance(value, str):
                continue
            msg, kind = f"{name} must be a string or null", "string_type"
        elif isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
            msg, kind = f"{name} must be a finite number or null", "float_type"
        else:
            continue
        errors.append({"loc": (*loc, name), "msg": msg, "type": kind})
    return errors


def request_digest(user_id: str | None, features: dict[str, Any]) -> str:
    blob = json.dumps({"user_id": user_id, "features": features}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def create_app(
    config: dict[str, Any],
    settings: ServingSettings | None = None,
    *,
    loader: RegistryLoader | None = None,
) -> FastAPI:
    settings = settings or ServingSettings()
    metrics = Metrics()
    scorer = Scorer(config)
    loader = loader or RegistryLoader(config)
    rng = np.random.default_rng()

    def warm(models: ModelSet) -> None:
        scorer.decide(models, {}, user_id=None, as_of=None)  # first predictions allocate; do it off the path

    holder = ModelHolder(
        loader.load, loader.versions, alias=settings.alias, shadow_alias=settings.shadow_alias, warm=warm,
        on_failure=lambda exc: metrics.reload_failures.inc(),
    )  # fmt: skip

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.store = open_store(settings.store_url())
        app.state.decision_log = DecisionLog(
            settings.decision_log_url(), schema=settings.decision_log_schema,
            on_failure=lambda decision_id, exc: metrics.log_failures.inc(),
        )  # fmt: skip
        app.state.decision_log.start()
        with contextlib.suppress(Exception):  # not ready: /readyz says why, decision routes answer 503
            holder.reload()
        metrics.loaded("served", holder.current)
        metrics.loaded("shadow", holder.shadow)
        holder.start_polling(settings.reload_interval_seconds)
        warming = overview.warm(holder.current, app.state.store)
        yield
        holder.stop()
        if warming is not None:  # it reads the store: let it finish before the store closes
            warming.join(timeout=120)
        app.state.decision_log.close()
        app.state.store.close()

    app = FastAPI(
        title="clm decision API",
        version="1",
        description="Lifecycle stage, churn and upgrade probability, value, the next best action and why. "
        "Send the API key in `X-API-Key`.",
        lifespan=lifespan,
    )
    overview = OverviewCache(config, settings.events_dir)
    app.include_router(review_router(config, settings, scorer, holder, loader, overview))
    app.add_exception_handler(PageRefused, refused_page)
    app.state.holder = holder
    app.state.settings = settings
    app.state.metrics = metrics

    @app.middleware("http")
    async def limits_and_timing(request: Request, call_next: Callable):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_body_bytes):
            return JSONResponse({"detail": f"request body larger than {settings.max_body_bytes} bytes"}, 413)
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.latency.labels(path, request.method, str(response.status_code)).observe(
            time.perf_counter() - started
        )
        return response

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        error_id = uuid.uuid4().hex[:12]
        log.exception("unhandled error %s on %s %s", error_id, request.method, request.url.path)
        return JSONResponse({"detail": "internal error", "error_id": error_id}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def unprocessable(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in exc.errors()]
        return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    def require(scope: str) -> Callable:
        def check(x_api_key: Annotated[str | None, Header(description="API key")] = None) -> str:
            if not x_api_key:
                raise HTTPException(401, "missing API key (header X-API-Key)")
            scopes = settings.scopes_of(x_api_key)
            if scopes is None:
                raise HTTPException(401, "unknown API key")
            if scope not in scopes:
                raise HTTPException(403, f"this API key lacks the {scope!r} scope")
            return x_api_key

        return check

    def serving_models() -> ModelSet:
        models = holder.current
        if models is None:
            raise HTTPException(503, f"no models loaded: {holder.status.last_error}")
        return models

    score_scope = [Depends(require("score"))]
    admin_scope = [Depends(require("admin"))]

    def stored(user_id: str):
        row = app.state.store.read(user_id)
        if row is None:
            info = app.state.store.info()
            when = f"as of the store's snapshot {info.as_of}" if info else "(the store has no snapshot yet)"
            raise HTTPException(404, f"user {user_id!r} has no features {when}")
        return row

    def decide_and_log(models: ModelSet, values: dict, user_id: str | None, as_of: dt.date | None, lang: str,
                       features: dict) -> Decision:  # fmt: skip
        started = time.perf_counter()
        decided: Decided = scorer.decide(models, values, user_id=user_id, as_of=as_of, lang=lang,
                                         rng=rng if settings.exploration else None)  # fmt: skip
        shadow = None
        shadow_models = holder.shadow
        if shadow_models is not None:
            other = scorer.decide(shadow_models, values, user_id=user_id, as_of=as_of, lang=lang)
            shadow = {"versions": other.decision.versions.model_dump(), "action": other.decision.action.name,
                      "expected_value": other.decision.action.expected_value,
                      "stage": other.decision.stage.name, "churn": other.decision.churn.probability}  # fmt: skip
        decision = decided.decision
        metrics.decisions.labels(decision.stage.name, decision.action.name).inc()
        app.state.decision_log.append(
            DecisionRecord(
                decision_id=decision.decision_id, ts=dt.datetime.now(dt.UTC), user_id=user_id,
                request_digest=request_digest(user_id, features), versions=decision.versions.model_dump(),
                stage=decision.stage.name, action=decision.action.name, propensity=decided.propensity,
                explored=decided.explored, expected_value=decision.action.expected_value,
                candidates=decided.candidates, latency_ms=1000 * (time.perf_counter() - started),
                payload=decision.model_dump(mode="json"), inputs=jsonable_encoder(decided.inputs), shadow=shadow,
            )
        )  # fmt: skip
        return decision

    def decide_request(body: DecisionRequest, models: ModelSet, lang: str) -> Decision:
        """The decision for a validated request (its features checked by `feature_errors`)."""
        values: dict[str, Any] = {}
        as_of = None
        if body.user_id is not None:
            row = stored(body.user_id)
            values.update(row.values)
            as_of = row.as_of
        values.update(body.features)
        return decide_and_log(models, values, body.user_id, as_of, lang, body.features)

    @app.get("/v1/users/{user_id}/decision", response_model=Decision, tags=["decisions"], dependencies=score_scope,
             responses={404: {"description": "the user has no features in the store's snapshot"}})  # fmt: skip
    def user_decision(
        user_id: Annotated[str, Path(max_length=200, examples=["u000042"])], lang: Lang = "en"
    ) -> Decision:
        """Stage, scores, value, next best action and explanations for a user, from the online store."""
        models = serving_models()
        row = stored(user_id)
        return decide_and_log(models, dict(row.values), user_id, row.as_of, lang, {})

    @app.post("/v1/decisions", response_model=Decision, tags=["decisions"], dependencies=score_scope)
    def post_decision(body: DecisionRequest, lang: Lang = "en") -> Decision:
        """The same decision for a feature vector (partial vectors allowed; missing features are listed),
        optionally starting from a user's stored features."""
        models = serving_models()
        errors = feature_errors(body.features, models)
        if errors:
            raise RequestValidationError(errors)
        return decide_request(body, models, lang)

    @app.post("/v1/decisions/batch", response_model=BatchResponse, tags=["decisions"], dependencies=score_scope,
              responses={413: {"description": "more items than the batch limit"}})  # fmt: skip
    def post_batch(body: BatchRequest, lang: Lang = "en") -> BatchResponse:
        """Up to `max_batch` users or vectors in one call; an item that fails carries its own error."""
        if len(body.items) > settings.max_batch:
            raise HTTPException(413, f"{len(body.items)} items; the batch limit is {settings.max_batch}")
        models = serving_models()
        errors = [
            error
            for i, item in enumerate(body.items)
            for error in feature_errors(item.features, models, ("body", "items", i, "features"))
        ]
        if errors:  # nothing is decided (or logged) for a batch with an invalid item
            raise RequestValidationError(errors)
        out = []
        for item in body.items:
            try:
                out.append(BatchItem(decision=decide_request(item, models, lang)))
            except HTTPException as exc:
                out.append(BatchItem(error={"status": exc.status_code, "detail": exc.detail}))
        return BatchResponse(items=out)

    @app.post("/v1/outcomes", response_model=OutcomeResponse, tags=["feedback"], dependencies=score_scope,
              responses={404: {"description": "unknown decision_id"}})  # fmt: skip
    def post_outcome(body: OutcomeRequest) -> OutcomeResponse:
        """What happened after a decision; recording the same (decision_id, outcome) twice is harmless."""
        try:
            status = app.state.decision_log.record_outcome(
                body.decision_id, body.outcome, body.action_taken, body.ts, body.value
            )
        except UnknownDecision as exc:
            raise HTTPException(404, f"no decision {body.decision_id!r} in the decision log") from exc
        return OutcomeResponse(decision_id=body.decision_id, outcome=body.outcome, status=status)

    @app.get("/v1/models", response_model=ModelsResponse, tags=["models"], dependencies=score_scope)
    def get_models() -> ModelsResponse:
        """The loaded versions, the alias they were loaded by, and the store's snapshot."""
        models = serving_models()
        info = app.state.store.info()
        return ModelsResponse(
            alias=models.alias, versions=models.version_labels(),
            shadow=holder.shadow.version_labels() if holder.shadow else None,
            loaded_at=dt.datetime.fromtimestamp(models.loaded_at, dt.UTC),
            store={"as_of": str(info.as_of), "users": info.n_users, "feature_version": info.feature_version}
            if info else {},
        )  # fmt: skip

    @app.post("/v1/admin/reload", response_model=ReloadResponse, tags=["models"], dependencies=admin_scope)
    def reload() -> ReloadResponse:
        """Load the aliases' current versions, warm them and swap; on failure the old ones keep serving."""
        try:
            result = holder.reload()
        except Exception as exc:
            raise HTTPException(503, f"reload failed, still serving {holder.describe()}: {exc}") from exc
        metrics.loaded("served", holder.current)
        metrics.loaded("shadow", holder.shadow)
        return ReloadResponse(**result)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict:
        """Alive."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    def readyz() -> JSONResponse:
        """Ready when models, policy and the store's snapshot are loaded; the details say what is missing."""
        info = app.state.store.info()
        status = holder.status
        details = {
            "models": holder.current.version_labels() if holder.current else None,
            "store": {"as_of": str(info.as_of), "users": info.n_users} if info else None,
            "last_reload_error": status.last_error,
            "reload_failures": status.failures,
            "decision_log": app.state.decision_log.stats(),
        }
        ready = holder.current is not None and info is not None
        return JSONResponse({"ready": ready, **details}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["ops"])
    def prometheus() -> PlainTextResponse:
        """Prometheus metrics of this worker process."""
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
