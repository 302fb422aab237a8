"""The review queue API: list, read and change stored requests (`/v1/requests`), and explain
the prediction of one. Operator keys only; every change is audited with who and when."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request

from aduan.service import duplicates, followup, intake, merges
from aduan.service.deps import OperatorDep, ReadyStateDep, throttle_explanations
from aduan.service.errors import ApiError
from aduan.service.review import (
    DEFAULT_SORT,
    MAX_LIMIT,
    Changes,
    QueueFilter,
    ReviewError,
    event_view,
    history,
    list_requests,
    parse_moment,
    request_view,
    update_request,
)
from aduan.service.schemas import (
    ErrorBody,
    ExplanationResponse,
    MergeBody,
    NotDuplicateBody,
    RequestPatch,
    ReviewDetail,
    ReviewPage,
)
from aduan.service.storage import as_utc

router = APIRouter(prefix="/v1/requests", tags=["review"])

_ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong API key"},
    403: {"model": ErrorBody, "description": "No API keys configured: review is off"},
    404: {"model": ErrorBody, "description": "No such stored request"},
    422: {"model": ErrorBody, "description": "Invalid filter, cursor or change"},
}


def _invalid(exc: ReviewError) -> ApiError:
    return ApiError(422, "validation_error", str(exc))


def queue_filter(
    route: Literal["auto", "review"] | None = None,
    status: Annotated[
        list[str] | None, Query(description="open, in_progress, closed; repeat or comma-separate")
    ] = None,
    agency: Annotated[str | None, Query(description="Predicted agency")] = None,
    corrected_agency: str | None = None,
    category: Annotated[str | None, Query(description="Predicted category code")] = None,
    corrected_category: str | None = None,
    kecamatan: str | None = None,
    kelurahan: str | None = None,
    reviewed: Annotated[bool | None, Query(description="Has a corrected label")] = None,
    repeat_reporter: Annotated[
        bool | None, Query(description="From a reporter flagged for many reports")
    ] = None,
    include_merged: Annotated[
        bool, Query(description="Also list duplicates merged into another request")
    ] = False,
    since: Annotated[str | None, Query(description="Received on/after (date or date-time)")] = None,
    until: Annotated[
        str | None, Query(description="Received before; a date: up to its end")
    ] = None,
) -> QueueFilter:
    """The filters shared by the API and the workbench page."""
    statuses = tuple(s.strip() for raw in status or [] for s in raw.split(",") if s.strip())
    try:
        return QueueFilter(
            route=route,
            status=statuses,
            agency=agency or None,
            corrected_agency=corrected_agency or None,
            category=category or None,
            corrected_category=corrected_category or None,
            kecamatan=kecamatan or None,
            kelurahan=kelurahan or None,
            reviewed=reviewed,
            repeat_reporter=repeat_reporter,
            include_merged=include_merged,
            since=parse_moment(since, "since") if since else None,
            until=parse_moment(until, "until", end_of_day=True) if until else None,
        )
    except ReviewError as exc:
        raise _invalid(exc) from exc


@router.get("", response_model=ReviewPage, responses=_ERRORS, summary="The review queue")
async def list_(
    state: ReadyStateDep,
    operator: OperatorDep,
    request: Request,
    where: Annotated[QueueFilter, Depends(queue_filter)],
    sort: Annotated[
        str, Query(description="received_at, agency_score or category_score; -x: descending")
    ] = DEFAULT_SORT,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
) -> ReviewPage:
    assert state.store is not None
    try:
        page = await state.store.run(list_requests, state.store, where, sort, cursor, limit)
    except ReviewError as exc:
        raise _invalid(exc) from exc
    request.state.log_extra = {"operator": operator, "items": len(page.rows)}
    extra = await state.store.run(duplicates.annotate, state.store, [r.id for r in page.rows])
    return ReviewPage.model_validate(
        {
            "items": [{**request_view(r), **extra[r.id]} for r in page.rows],
            "next_cursor": page.next_cursor,
        }
    )


async def _detail(state: ReadyStateDep, request_id: str) -> ReviewDetail:
    assert state.store is not None
    row = await state.store.run(state.store.get_request, request_id)
    if row is None:
        raise ApiError(404, "not_found", f"no stored request {request_id!r}")
    events = await state.store.run(history, state.store, request_id)
    follow = await state.store.run(followup.get, state.store, request_id)
    extra = await state.store.run(duplicates.summary, state.store, request_id)
    return ReviewDetail.model_validate(
        {
            **request_view(row),
            **extra,
            "history": [event_view(e) for e in events],
            "followup": followup.followup_view(follow),
        }
    )


@router.get(
    "/{request_id}",
    response_model=ReviewDetail,
    responses=_ERRORS,
    summary="One stored request with its audit trail",
)
async def get_one(request_id: str, state: ReadyStateDep, operator: OperatorDep) -> ReviewDetail:
    return await _detail(state, request_id)


@router.patch(
    "/{request_id}",
    response_model=ReviewDetail,
    responses=_ERRORS,
    summary="Change status, note, expected date or the corrected agency/category",
)
async def patch(
    request_id: str,
    body: RequestPatch,
    state: ReadyStateDep,
    operator: OperatorDep,
    request: Request,
) -> ReviewDetail:
    assert state.store is not None
    given = body.model_fields_set
    for name in ("status", "corrected_agency", "corrected_category"):
        if name in given and getattr(body, name) is None:
            raise ApiError(422, "validation_error", f"{name} cannot be null")
    intake.check_labels(state, body.corrected_agency, body.corrected_category)
    note = (body.note or "").strip() or None
    expected = as_utc(body.expected_datetime) if body.expected_datetime else None
    clear = set()
    if "note" in given and note is None:
        clear.add("note")
    if "expected_datetime" in given and expected is None:
        clear.add("expected_at")
    changes = Changes(
        status=body.status,
        note=note,
        expected_at=expected,
        corrected_agency=body.corrected_agency,
        corrected_category=body.corrected_category,
        clear=frozenset(clear),
    )
    outcome = await state.store.run(update_request, state.store, request_id, changes, operator)
    if outcome is None:
        raise ApiError(404, "not_found", f"no stored request {request_id!r}")
    _, events = outcome
    # Which fields changed and who changed them: never the note's or the complaint's text.
    request.state.log_extra = {
        "operator": operator,
        "request_id": request_id,
        "changed": sorted({e.field for e in events}),
    }
    return await _detail(state, request_id)


@router.get(
    "/{request_id}/explanation",
    response_model=ExplanationResponse,
    responses=_ERRORS,
    summary="The words that drove the live model's prediction (computed on demand)",
)
async def explanation(
    request_id: str,
    state: ReadyStateDep,
    operator: OperatorDep,
    request: Request,
    head: Literal["agency", "category"] = "agency",
    method: Annotated[
        Literal["tfidf_ngrams", "leave_one_word_out"] | None,
        Query(description="Default: tfidf_ngrams for a TF-IDF model, else leave_one_word_out"),
    ] = None,
) -> ExplanationResponse:
    assert state.store is not None
    throttle_explanations(request, operator)
    row = await state.store.run(state.store.get_request, request_id)
    if row is None:
        raise ApiError(404, "not_found", f"no stored request {request_id!r}")
    found = await intake.explain_text(state, row.text, head, method)
    return ExplanationResponse.model_validate(found.to_dict())


async def _duplicate_change(
    state: ReadyStateDep, request: Request, operator: str, request_id: str, work, *args
) -> ReviewDetail:
    """Run a merge, unmerge or verdict; 404 for a missing request, 422 for one refused."""
    assert state.store is not None
    try:
        events = await state.store.run(work, state.store, request_id, *args, operator)
    except LookupError as exc:
        raise ApiError(404, "not_found", f"no stored request {exc.args[0]!r}") from exc
    except duplicates.DuplicateError as exc:
        raise ApiError(422, "validation_error", str(exc)) from exc
    request.state.log_extra = {
        "operator": operator,
        "request_id": request_id,
        "changed": sorted({e.field for e in events}),
    }
    return await _detail(state, request_id)


@router.post(
    "/{request_id}/merge",
    response_model=ReviewDetail,
    responses=_ERRORS,
    summary="Merge this request into its original: closed with a public note pointing there",
)
async def merge(
    request_id: str, body: MergeBody, state: ReadyStateDep, operator: OperatorDep, request: Request
) -> ReviewDetail:
    return await _duplicate_change(
        state, request, operator, request_id, merges.merge, body.original_id
    )


@router.post(
    "/{request_id}/unmerge",
    response_model=ReviewDetail,
    responses=_ERRORS,
    summary="Undo a merge: the status and note from before come back",
)
async def unmerge(
    request_id: str, state: ReadyStateDep, operator: OperatorDep, request: Request
) -> ReviewDetail:
    return await _duplicate_change(state, request, operator, request_id, merges.unmerge)


@router.post(
    "/{request_id}/not-duplicate",
    response_model=ReviewDetail,
    responses=_ERRORS,
    summary="Record that a suggested request is not a duplicate of this one",
)
async def not_duplicate(
    request_id: str,
    body: NotDuplicateBody,
    state: ReadyStateDep,
    operator: OperatorDep,
    request: Request,
) -> ReviewDetail:
    return await _duplicate_change(
        state, request, operator, request_id, merges.not_duplicate, body.candidate_id
    )
