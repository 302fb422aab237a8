"""`/v1/admin`: reload the model and read the drift figures (admin key, `ADUAN_ADMIN_KEYS`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from aduan.service.deps import StateDep, require_admin_key
from aduan.service.errors import ApiError
from aduan.service.schemas import ErrorBody
from aduan.service.state import REFUSED

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
