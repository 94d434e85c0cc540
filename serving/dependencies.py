"""Every dependency of the routes, in one place, as `Annotated` aliases over what `create_app` and its
lifespan put on `app.state`. A test replaces any of them with `app.dependency_overrides[get_x] = ...`
(no trained models, no store, no lifespan needed).

The aliases are module-level names on purpose: with `from __future__ import annotations` FastAPI resolves
annotations against the module's globals, so an alias defined inside a function would not resolve."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, Header, HTTPException, Query, Request

from features.online import OnlineStore
from serving.decision_log import DecisionLog
from serving.review.caches import ReplayModels, WaterfallCache
from serving.review.overview import OverviewCache
from serving.scorer import Scorer
from serving.service import DecisionService, Metrics, current_models
from serving.settings import ServingSettings
from serving.state import ModelHolder, ModelSet, RegistryLoader


def get_settings(request: Request) -> ServingSettings:
    return request.app.state.settings


def get_config(request: Request) -> dict[str, Any]:
    return request.app.state.config


def get_holder(request: Request) -> ModelHolder:
    return request.app.state.holder


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_scorer(request: Request) -> Scorer:
    return request.app.state.scorer


def get_loader(request: Request) -> RegistryLoader:
    return request.app.state.loader


def get_store(request: Request) -> OnlineStore:
    return request.app.state.store


def get_decision_log(request: Request) -> DecisionLog:
    return request.app.state.decision_log


def get_service(request: Request) -> DecisionService:
    return request.app.state.service


def get_overview(request: Request) -> OverviewCache:
    return request.app.state.overview


def get_replays(request: Request) -> ReplayModels:
    return request.app.state.replays


def get_waterfalls(request: Request) -> WaterfallCache:
    return request.app.state.waterfalls


SettingsDep = Annotated[ServingSettings, Depends(get_settings)]
ConfigDep = Annotated[dict[str, Any], Depends(get_config)]
HolderDep = Annotated[ModelHolder, Depends(get_holder)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ScorerDep = Annotated[Scorer, Depends(get_scorer)]
LoaderDep = Annotated[RegistryLoader, Depends(get_loader)]
StoreDep = Annotated[OnlineStore, Depends(get_store)]
DecisionLogDep = Annotated[DecisionLog, Depends(get_decision_log)]
ServiceDep = Annotated[DecisionService, Depends(get_service)]
OverviewDep = Annotated[OverviewCache, Depends(get_overview)]
ReplaysDep = Annotated[ReplayModels, Depends(get_replays)]
WaterfallsDep = Annotated[WaterfallCache, Depends(get_waterfalls)]


def serving_models(holder: HolderDep) -> ModelSet:
    """The models serving now; 503 (with the last load error) when none are loaded. A dependency runs
    before the request is validated, so routes with a body or query take `ServiceDep` and call
    `service.models()` instead (keeping 422 ahead of 503)."""
    return current_models(holder)


ModelsDep = Annotated[ModelSet, Depends(serving_models)]
Lang = Annotated[Literal["en", "zh"], Query(description="Language of reasons and rules")]
ApiKey = Annotated[str | None, Header(description="API key")]


def require_scope(scope: str) -> Callable[..., str]:
    """A dependency: the request's `X-API-Key` has `scope` (401 without a known key, 403 without the scope)."""

    def check(settings: SettingsDep, x_api_key: ApiKey = None) -> str:
        if not x_api_key:
            raise HTTPException(401, "missing API key (header X-API-Key)")
        scopes = settings.scopes_of(x_api_key)
        if scopes is None:
            raise HTTPException(401, "unknown API key")
        if scope not in scopes:
            raise HTTPException(403, f"this API key lacks the {scope!r} scope")
        return x_api_key

    return check


SCORE_SCOPE = [Depends(require_scope("score"))]
ADMIN_SCOPE = [Depends(require_scope("admin"))]
