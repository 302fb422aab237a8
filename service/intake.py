"""What the routes share: classifying items through the classify backend, shaping results,
and building and saving stored requests (idempotently with a key). Routes import this
module, never each other."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

from fastapi.responses import Response
from pydantic_core import to_json

from aduan.model.explain import MAX_SPANS, NGRAMS, Explanation, explain
from aduan.model.pipeline import Routed

from . import duplicates
from .batcher import BackendUnavailable, QueueFull
from .errors import ApiError, not_ready, overloaded, too_large
from .idempotency import save_once
from .ratelimit import retry_after
from .schemas import ClassifyItem
from .state import ServiceState
from .storage import NewRequest

STORED_TOP_K = 3
log = logging.getLogger(__name__)


def check_limits(items: Sequence[ClassifyItem], state: ServiceState) -> None:
    """413 for more items than `max_batch` or a text longer than `max_chars`."""
    settings = state.settings
    if len(items) > settings.max_batch:
        raise too_large(f"batch of {len(items)} items exceeds max_batch {settings.max_batch}")
    for i, item in enumerate(items):
        if len(item.text) > settings.max_chars:
            raise too_large(
                f"items.{i}.text has {len(item.text)} characters; the limit is {settings.max_chars}"
            )


async def classify(items: Sequence[tuple[str, str | None]], state: ServiceState) -> list[Routed]:
    """(text, address) pairs through the classify backend, all answered by the model version
    live when the request started; a full queue becomes 429, no replica to answer 503."""
    try:
        return await state.classify(items)
    except QueueFull as exc:
        raise overloaded(retry_after=retry_after(exc.retry_after)) from exc
    except BackendUnavailable as exc:
        raise not_ready("no model replica could answer; retry shortly") from exc


async def classify_items(items: Sequence[ClassifyItem], state: ServiceState) -> list[Routed]:
    """Limits, then `classify`."""
    check_limits(items, state)
    return await classify([(item.text, item.address) for item in items], state)


def to_result(item_id: str | None, routed: Routed, top_k: int) -> dict[str, Any]:
    """The API's answer for one classified item (`schemas.ClassifyResult` documents it), with
    the top `top_k` labels per head: `Routed.to_dict`, the one shape of an answer."""
    return {"id": item_id, **routed.to_dict(top_k), "request_id": None}


def json_answer(data: Any) -> Response:
    """An answer shaped by `to_result`, as JSON written the way FastAPI writes its response
    models (pydantic's serializer), so the bytes are the documented model's."""
    return Response(to_json(data), media_type="application/json")


def new_request(
    text: str,
    routed: Routed,
    *,
    address: str | None = None,
    client_id: str | None = None,
    latitude: float | None = None,
    longitude: float | None = None,
    media_url: str | None = None,
    service_code: str | None = None,
) -> NewRequest:
    """The row stored for one classified item, naming the model version that answered it, with
    the top 3 labels of each head for the review queue. A `service_code` the client chose
    (Open311) is the category, with score 1."""
    answer = routed.to_dict(top_k=STORED_TOP_K)
    unit = answer["unit"] or {}
    return NewRequest(
        text=text,
        address=address,
        client_id=client_id,
        latitude=latitude,
        longitude=longitude,
        media_url=media_url,
        service_code=service_code,
        category=service_code or answer["category"]["label"],
        category_score=1.0 if service_code else answer["category"]["score"],
        agency=answer["agency"]["label"],
        agency_score=answer["agency"]["score"],
        model_version=routed.model_version,
        route=routed.route,
        kelurahan=unit.get("kelurahan"),
        kecamatan=unit.get("kecamatan"),
        route_reason=routed.route_reason,
        unit_source=unit.get("source"),
        unit_confidence=unit.get("confidence"),
        predictions={head: answer[f"{head}_top_k"] for head in ("category", "agency")},
    )


async def save(
    state: ServiceState, records: Sequence[NewRequest], idempotency: str | None = None
) -> tuple[list[str], bool]:
    """Commit the rows (before the caller answers) and return (their request ids, False); a
    retry under the same `idempotency` key returns (the first attempt's ids, True) instead."""
    assert state.store is not None
    return await state.store.run(save_once, state.store, records, idempotency)


async def save_and_match(
    state: ServiceState,
    records: Sequence[NewRequest],
    idempotency: str | None = None,
    reporters: Sequence[duplicates.Identity | None] | None = None,
) -> tuple[list[str], bool, list[dict[str, Any]]]:
    """`save`, then each stored request's signature and likely duplicates (`duplicates.record`;
    a retry answers what the first attempt found). Returns (ids, replayed, per id
    {"possible_duplicates", "repeat_reporter"})."""
    assert state.store is not None
    ids, replayed = await save(state, records, idempotency)
    who = list(reporters) if reporters is not None else [None] * len(records)
    config = duplicates.Config.from_settings(state.settings)
    try:
        found = await state.store.run(duplicates.record, state.store, ids, records, who, config)
    except Exception as exc:
        # The complaints are committed already: a 500 now would make a client retry and store
        # them twice. Answer without candidates (never the text in the log).
        log.warning(
            "duplicate lookup failed for %d stored requests: %s", len(ids), type(exc).__name__
        )
        found = [{"possible_duplicates": [], "repeat_reporter": False} for _ in ids]
    return ids, replayed, found


def check_labels(state: ServiceState, agency: str | None, category: str | None) -> None:
    """422 unless the agency is a label of the live model and the category is in its
    taxonomy (corrections become training data)."""
    assert state.classifier is not None and state.taxonomy is not None
    if agency is not None and agency not in state.classifier.labels["agency"]:
        raise ApiError(
            422,
            "validation_error",
            f"agency {agency!r} is not a label of model {state.classifier.version} "
            "(see /v1/labels)",
        )
    if category is not None and state.taxonomy.category(category) is None:
        raise ApiError(
            422,
            "validation_error",
            f"category {category!r} is not in the taxonomy (see /v1/labels)",
        )


async def explain_text(
    state: ServiceState, text: str, head: str = "agency", method: str | None = None
) -> Explanation:
    """The words that drove the live model's prediction, computed in the inference thread in
    queue order (up to MAX_SPANS + 1 predictions of the text: it weighs that many texts, and
    a full queue answers 429 as for classify)."""
    pipeline = state.pipeline  # one model version for the whole call, even across a reload
    assert pipeline is not None and state.backend is not None
    weight = 1 if (method or "") == NGRAMS else MAX_SPANS + 1
    try:
        return await state.backend.call(
            partial(explain, pipeline.classifier, text, head, method), weight
        )
    except QueueFull as exc:
        raise overloaded(retry_after=retry_after(exc.retry_after)) from exc
    except ValueError as exc:
        raise ApiError(422, "validation_error", str(exc)) from exc
