"""Decisions: for a stored user, for a posted feature vector, for a batch. The routes are HTTP only; the
step itself (decide, shadow, count, log) is `DecisionService`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Response
from fastapi.exceptions import RequestValidationError

from serving.dependencies import SCORE_SCOPE, Lang, ServiceDep, SettingsDep
from serving.schemas import (
    NO_CONTROL_CHARACTERS,
    BatchItem,
    BatchRequest,
    BatchResponse,
    Decision,
    DecisionRequest,
)
from serving.service import UnknownUser, feature_errors

router = APIRouter(tags=["decisions"], dependencies=SCORE_SCOPE)


@router.get("/v1/users/{user_id}/decision", response_model=Decision,
            responses={404: {"description": "the user has no features in the store's snapshot"}})  # fmt: skip
def user_decision(
    service: ServiceDep,
    user_id: Annotated[str, Path(max_length=200, pattern=NO_CONTROL_CHARACTERS, examples=["u000042"])],
    lang: Lang = "en",
) -> Response:
    """Stage, scores, value, next best action and explanations for a user, from the online store."""
    # Decided once per (snapshot, model versions) and kept encoded (serving/cache.py): the body goes out as is
    return Response(
        service.user_decision_body(service.models(), user_id, lang), media_type="application/json"
    )


@router.post("/v1/decisions", response_model=Decision)
def post_decision(service: ServiceDep, body: DecisionRequest, lang: Lang = "en") -> Response:
    """The same decision for a feature vector (partial vectors allowed; missing features are listed),
    optionally starting from a user's stored features."""
    models = service.models()
    errors = feature_errors(body.features, models)
    if errors:
        raise RequestValidationError(errors)
    return Response(service.decide_request_encoded(body, models, lang)[1], media_type="application/json")


@router.post("/v1/decisions/batch", response_model=BatchResponse,
             responses={413: {"description": "more items than the batch limit"}})  # fmt: skip
def post_batch(
    service: ServiceDep, settings: SettingsDep, body: BatchRequest, lang: Lang = "en"
) -> BatchResponse:
    """Up to `max_batch` users or vectors in one call; an item that fails carries its own error."""
    if len(body.items) > settings.max_batch:
        raise HTTPException(413, f"{len(body.items)} items; the batch limit is {settings.max_batch}")
    models = service.models()
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
            out.append(BatchItem(decision=service.decide_request(item, models, lang)))
        except UnknownUser as exc:
            out.append(BatchItem(error={"status": 404, "detail": str(exc)}))
    return BatchResponse(items=out)
