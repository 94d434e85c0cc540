"""Outcomes: what happened after a decision, recorded against it in the decision log."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from serving.decision_log import OutcomeConflict, UnknownDecision
from serving.dependencies import SCORE_SCOPE, DecisionLogDep
from serving.schemas import OutcomeRequest, OutcomeResponse

router = APIRouter(tags=["feedback"], dependencies=SCORE_SCOPE)


@router.post(
    "/v1/outcomes", response_model=OutcomeResponse,
    responses={404: {"description": "unknown decision_id"},
               409: {"description": "this outcome is already recorded with another action, time or value"},
               503: {"description": "the decision log did not answer in time; retry"}},
)  # fmt: skip
def post_outcome(decision_log: DecisionLogDep, body: OutcomeRequest) -> OutcomeResponse:
    """What happened after a decision; recording the same (decision_id, outcome) twice is harmless (status
    "duplicate"); the same outcome with a different action, time or value is refused (409)."""
    try:
        status = decision_log.record_outcome(
            body.decision_id, body.outcome, body.action_taken, body.ts, body.value
        )
    except UnknownDecision as exc:
        raise HTTPException(404, f"no decision {body.decision_id!r} in the decision log") from exc
    except OutcomeConflict as exc:
        raise HTTPException(409, str(exc)) from exc
    return OutcomeResponse(decision_id=body.decision_id, outcome=body.outcome, status=status)
