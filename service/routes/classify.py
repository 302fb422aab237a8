"""`POST /v1/classify`: the contract intake systems call."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from aduan.model.pipeline import flat_labels
from aduan.service import duplicates, intake
from aduan.service.deps import ReadyStateDep, require_api_key
from aduan.service.idempotency import idempotency_key, mark_replayed
from aduan.service.keys import ApiKey
from aduan.service.schemas import ERROR_RESPONSES, ClassifyRequest, ClassifyResponse

router = APIRouter(prefix="/v1", tags=["classify"])


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses=ERROR_RESPONSES,
    summary="Classify complaints: category, agency, calibrated scores and route",
)
async def classify(
    body: ClassifyRequest,
    request: Request,
    state: ReadyStateDep,
    # The router's own key check, run once (FastAPI caches it per request): who is calling.
    caller: Annotated[ApiKey | None, Depends(require_api_key)],
) -> Response:
    """With `store`, an `Idempotency-Key` header makes a retry return the first attempt's
    request ids instead of storing the complaints again."""
    # The answer is shaped once (`intake.to_result`: `Routed.to_dict`) and sent as it is;
    # `ClassifyResponse` documents it.
    idempotency = idempotency_key(request, caller) if body.store else None
    routed = await intake.classify_items(body.items, state)
    request.state.model_version = routed[0].model_version  # the X-Model-Version header
    results = [
        intake.to_result(item.id, r, body.top_k) for item, r in zip(body.items, routed, strict=True)
    ]
    replayed = False
    if body.store:
        records = [
            intake.new_request(item.text, r, address=item.address, client_id=item.id)
            for item, r in zip(body.items, routed, strict=True)
        ]
        reporters = [
            duplicates.Identity("reporter", item.reporter) if item.reporter else None
            for item in body.items
        ]
        ids, replayed, found = await intake.save_and_match(state, records, idempotency, reporters)
        for result, request_id, match in zip(results, ids, found, strict=True):
            result["request_id"] = request_id
            result["possible_duplicates"] = match["possible_duplicates"]
        request.state.log_extra["request_ids"] = ids
    state.metrics.request_items.observe(len(results))
    for r in routed:
        state.metrics.observe_prediction(
            r.prediction.best("category").label, r.prediction.best("agency").label, r.route
        )
    # Logged labels and scores only: never the complaint text.
    request.state.log_extra = {
        **request.state.log_extra,
        "items": len(results),
        "predictions": [flat_labels(r) for r in results],
    }
    answer = {
        "model_version": routed[0].model_version,
        "trace_id": request.state.trace_id,
        "results": results,
    }
    response = intake.json_answer(answer)
    mark_replayed(response, replayed)
    return response
