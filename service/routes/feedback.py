"""`POST /v1/feedback`: operators correct the routing of a stored request."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from aduan.service import intake
from aduan.service.deps import OperatorDep, ReadyStateDep, get_keys
from aduan.service.errors import ApiError
from aduan.service.keys import OPERATOR
from aduan.service.schemas import ErrorBody, StrictModel

router = APIRouter(prefix="/v1", tags=["feedback"])


class FeedbackRequest(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "request_id": "3f1c2a9e-8a5b-4c41-9d1e-2f7b6c1d0e55",
                    "agency": "Dinas Lingkungan Hidup",
                    "category": "SAMPAH",
                }
            ]
        },
    )

    request_id: str = Field(..., min_length=1, max_length=36)
    agency: str = Field(..., min_length=1, description="An agency label of the live model")
    category: str = Field(..., min_length=1, description="A category code of the taxonomy")
    operator: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        deprecated=True,
        description="Ignored: the correction is recorded under the name of the API key that "
        "sent it (a body could name anyone)",
    )


class FeedbackResponse(BaseModel):
    feedback_id: int
    request_id: str
    created: bool
    operator: str = Field(description="Who the correction is recorded under: the key's name")


def feedback_enabled(request: Request) -> None:
    # Corrections become training data: never accept them anonymously.
    if not get_keys(request).any_with(OPERATOR):
        raise ApiError(
            403,
            "forbidden",
            "feedback is disabled because no operator keys are configured; set "
            "ADUAN_OPERATOR_KEYS (or add an operator key to the keys file) to enable it",
        )


@router.post(
    "/feedback",
    response_model=FeedbackResponse,
    status_code=201,
    dependencies=[Depends(feedback_enabled)],
    responses={
        200: {"model": FeedbackResponse, "description": "Already recorded"},
        403: {"model": ErrorBody},
        404: {"model": ErrorBody},
        422: {"model": ErrorBody},
    },
    summary="Record an operator's corrected category and agency",
)
async def feedback(
    body: FeedbackRequest, state: ReadyStateDep, operator: OperatorDep
) -> JSONResponse:
    """The audit trail and the training label name the authenticated key, never a name the
    body claims."""
    assert state.store is not None
    intake.check_labels(state, body.agency, body.category)
    outcome = await state.store.run(
        state.store.add_feedback,
        body.request_id,
        category=body.category,
        agency=body.agency,
        operator=operator,
    )
    if outcome is None:
        raise ApiError(404, "not_found", f"no stored request {body.request_id!r}")
    stored, created = outcome
    response = FeedbackResponse(
        feedback_id=stored.id, request_id=body.request_id, created=created, operator=operator
    )
    return JSONResponse(response.model_dump(), status_code=201 if created else 200)
