"""Every dependency of the routes, in one place, as `Annotated` aliases over what `create_app` and its
lifespan put on `app.state`. A test replaces any of them with `app.dependency_overrides[get_x] = ...`
(no trained models, no store, no lifespan needed).

The aliases are module-level names on purpose: with `from __future__ import annotations` FastAPI resolves
annotations against the module's globals, so an alias defined inside a function would not resolve."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, HTTPException, Query, Request, Security
from fastapi.security import APIKeyHeader

from features.online import OnlineStore
from serving.config import ServingConfig
from serving.decision_log import DecisionLog
from serving.review.caches import ReplayModels, WaterfallCache
from serving.review.monitor import MonitorCache
from serving.review.overview import OverviewCache
from serving.review.session import ReviewSessions
from serving.scorer import Scorer
from serving.service import DecisionService, Metrics, current_models
from serving.settings import ServingSettings
from serving.state import ModelHolder, ModelSet, RegistryLoader
from serving.workers import WorkerSync


def _from_state(name: str) -> Callable[[Request], Any]:
    """A dependency that returns `app.state.<name>`; each is its own function, so each can be overridden."""

    async def dependency(request: Request) -> Any:  # async: no thread-pool hop for an attribute read
        return getattr(request.app.state, name)

    dependency.__name__ = dependency.__qualname__ = f"get_{name}"
    return dependency


get_settings = _from_state("settings")
get_config = _from_state("config")
get_holder = _from_state("holder")
get_metrics = _from_state("metrics")
get_scorer = _from_state("scorer")
get_loader = _from_state("loader")
get_store = _from_state("store")
get_decision_log = _from_state("decision_log")
get_service = _from_state("service")
get_overview = _from_state("overview")
get_monitor = _from_state("monitor")
get_replays = _from_state("replays")
get_waterfalls = _from_state("waterfalls")
get_workers = _from_state("workers")
get_sessions = _from_state("sessions")


SettingsDep = Annotated[ServingSettings, Depends(get_settings)]
ConfigDep = Annotated[ServingConfig, Depends(get_config)]
HolderDep = Annotated[ModelHolder, Depends(get_holder)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ScorerDep = Annotated[Scorer, Depends(get_scorer)]
LoaderDep = Annotated[RegistryLoader, Depends(get_loader)]
StoreDep = Annotated[OnlineStore, Depends(get_store)]
DecisionLogDep = Annotated[DecisionLog, Depends(get_decision_log)]
ServiceDep = Annotated[DecisionService, Depends(get_service)]
OverviewDep = Annotated[OverviewCache, Depends(get_overview)]
MonitorDep = Annotated[MonitorCache, Depends(get_monitor)]
ReplaysDep = Annotated[ReplayModels, Depends(get_replays)]
WaterfallsDep = Annotated[WaterfallCache, Depends(get_waterfalls)]
WorkersDep = Annotated[WorkerSync, Depends(get_workers)]
SessionsDep = Annotated[ReviewSessions, Depends(get_sessions)]


async def serving_models(holder: HolderDep) -> ModelSet:
    """The models serving now; 503 (with the last load error) when none are loaded. A dependency runs
    before the request is validated, so routes with a body or query take `ServiceDep` and call
    `service.models()` instead (keeping 422 ahead of 503)."""
    return current_models(holder)


ModelsDep = Annotated[ModelSet, Depends(serving_models)]
Lang = Annotated[Literal["en", "zh"], Query(description="Language of reasons and rules")]
# Declared as a security scheme, so the OpenAPI document has an Authorize button; the check stays ours
# (auto_error=False) so a missing key is a 401 with our message, not FastAPI's 403.
API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key", scheme_name="ApiKey", auto_error=False,
    description='An API key from CLM_API_KEYS; its scopes ("score", "review", "admin") decide the routes it opens.',
)  # fmt: skip


def require_scope(scope: str) -> Callable[..., str]:
    """A dependency: the request's `X-API-Key` has `scope` (401 without a known key, 403 without the scope)."""

    async def check(  # async: nothing here blocks
        settings: SettingsDep, x_api_key: Annotated[str | None, Security(API_KEY_HEADER)] = None
    ) -> str:
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
