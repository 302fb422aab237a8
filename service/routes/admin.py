"""`/v1/admin`: reload the model and read the drift figures (admin key, `ADUAN_ADMIN_KEYS`)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from aduan.service.deps import StateDep, require_admin_key
from aduan.service.errors import ApiError
from aduan.service.schemas import ErrorBody
from aduan.service.state import REFUSED

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin_key)])


@router.post(
    "/reload",
    summary="Load the live model version (or the model directory again) and swap it in",
    responses={
        401: {"model": ErrorBody},
        403: {"model": ErrorBody},
        409: {"model": ErrorBody, "description": "The new model was refused; the old serves"},
    },
)
async def reload(state: StateDep) -> dict[str, Any]:
    outcome = await state.reload("admin request")
    if outcome.outcome == REFUSED:
        raise ApiError(
            409,
            "reload_refused",
            f"{outcome.target} was refused and {outcome.model_version} keeps serving: "
            f"{outcome.error}",
        )
    return outcome.to_dict()


@router.get("/drift", summary="Drift of the live model over the recent window")
def drift(state: StateDep) -> dict[str, Any]:
    return state.drift.snapshot()


class ThresholdBody(BaseModel):
    threshold: float | None = Field(
        ..., gt=0, le=1.01, description="The floor; null: back to the model's own threshold"
    )


@router.post(
    "/auto-route-threshold",
    summary="Raise the auto-route threshold without retraining (a floor on the model's own)",
)
async def auto_route_threshold(body: ThresholdBody, state: StateDep) -> dict[str, Any]:
    """At once for the live model and every later version, until the next restart (set
    ADUAN_AUTO_ROUTE_THRESHOLD to keep it)."""
    pipeline = state.pipeline
    if pipeline is None:
        raise ApiError(503, "not_ready", "no model is loaded")
    state.settings.auto_route_threshold = body.threshold
    threshold = state.apply_threshold_floor(pipeline)
    log.warning("auto-route threshold floor set to %s by an admin: %.3f", body.threshold, threshold)
    return {"floor": body.threshold, "threshold": threshold, "model_version": pipeline.version}
