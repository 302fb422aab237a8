"""`POST /v1/classify`: the contract intake systems call."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.batcher import QueueFull
from service.deps import ReadyStateDep
from service.errors import overloaded, too_large
from service.schemas import (
    ERROR_RESPONSES,
    ClassifyRequest,
    ClassifyResponse,
    ClassifyResult,
    ScoredLabel,
    Unit,
)
from service.state import Classified, ServiceState

router = APIRouter(prefix="/v1", tags=["classify"])


def check_limits(body: ClassifyRequest, state: ServiceState) -> None:
    settings = state.settings
    if len(body.items) > settings.max_batch:
        raise too_large(f"batch of {len(body.items)} items exceeds max_batch {settings.max_batch}")
    for i, item in enumerate(body.items):
        if len(item.text) > settings.max_chars:
            raise too_large(
                f"items.{i}.text has {len(item.text)} characters; the limit is {settings.max_chars}"
            )


async def classify_items(body: ClassifyRequest, state: ServiceState) -> list[Classified]:
    """Limits, then the batcher; `QueueFull` becomes 429."""
    check_limits(body, state)
    assert state.batcher is not None
    try:
        return await state.batcher.submit([(item.text, item.address) for item in body.items])
    except QueueFull as exc:
        raise overloaded() from exc


def to_result(
    item_id: str | None, classified: Classified, top_k: int, state: ServiceState
) -> ClassifyResult:
    prediction, unit = classified.prediction, classified.unit
    heads = {
        head: [ScoredLabel(label=s.label, score=round(s.score, 6)) for s in ranked[:top_k]]
        for head, ranked in prediction.heads.items()
    }
    agency = heads["agency"][0]
    return ClassifyResult(
        id=item_id,
        category=heads["category"][0],
        agency=agency,
        category_top_k=heads["category"],
        agency_top_k=heads["agency"],
        route="auto" if prediction.route == "auto" else "review",
        unit=Unit(
            kelurahan=unit.kelurahan,
            kecamatan=unit.kecamatan,
            office=state.office(agency.label, unit),
        )
        if unit
        else None,
    )


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses=ERROR_RESPONSES,
    summary="Classify complaints: category, agency, calibrated scores and route",
)
async def classify(
    body: ClassifyRequest, request: Request, state: ReadyStateDep
) -> ClassifyResponse:
    classified = await classify_items(body, state)
    assert state.classifier is not None
    results = [
        to_result(item.id, c, body.top_k, state)
        for item, c in zip(body.items, classified, strict=True)
    ]
    if body.store:
        from service.routes.feedback import store_results

        await store_results(state, body, results)
    state.metrics.request_items.observe(len(results))
    for result in results:
        state.metrics.observe_prediction(result.category.label, result.agency.label, result.route)
    # Logged labels and scores only: never the complaint text.
    request.state.log_extra = {
        "items": len(results),
        "predictions": [
            {
                "category": r.category.label,
                "category_score": r.category.score,
                "agency": r.agency.label,
                "agency_score": r.agency.score,
                "route": r.route,
            }
            for r in results
        ],
    }
    return ClassifyResponse(model_version=state.classifier.version, results=results)
