"""The offices' API (`/v1/office`): an office's staff list what was routed to them and
acknowledge, update (with a public note), close or send back each complaint; the operators'
view of what came back or ran late (`/v1/followup`). Every action is audited under the key's
name and queues its webhook event in the same transaction."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from aduan.model.performance import to_records
from aduan.service.deps import OperatorDep, ReadyStateDep, StaffDep, ViewerDep
from aduan.service.dispatch import dead_letters
from aduan.service.errors import ApiError
from aduan.service.followup import (
    STATUSES,
    Action,
    FollowUpError,
    act,
    escalated,
    followup_view,
    inbox,
)
from aduan.service.offices import OfficeBook
from aduan.service.performance import BYS, performance
from aduan.service.review import ReviewError, parse_moment, request_view
from aduan.service.route_accuracy import PROMISE, live_accuracy

router = APIRouter(tags=["office"])


class ActionBody(BaseModel):
    note: str | None = Field(None, max_length=2000, description="Public note (Open311)")


class ReturnBody(BaseModel):
    note: str | None = Field(None, max_length=2000, description="Why it is not ours")
    right_office: str | None = Field(
        None, max_length=200, description="The office it belongs to, if known"
    )


def _book(request: Request) -> OfficeBook:
    book: OfficeBook = request.app.state.offices
    return book


def item_view(row: Any, follow: Any) -> dict[str, Any]:
    return {**request_view(row), "followup": followup_view(follow)}


@router.get("/v1/office/complaints", summary="The complaints routed to the key's office(s)")
async def complaints(
    state: ReadyStateDep,
    staff: StaffDep,
    request: Request,
    status: Annotated[
        list[str] | None,
        Query(description="new, acknowledged, in_progress, overdue, closed, returned"),
    ] = None,
    office: Annotated[str | None, Query(description="One of the key's offices")] = None,
) -> dict[str, Any]:
    assert state.store is not None
    name, offices = staff
    wanted = tuple(s.strip() for raw in status or [] for s in raw.split(",") if s.strip())
    unknown = set(wanted) - set(STATUSES)
    if unknown:
        raise ApiError(422, "validation_error", f"status must be among {list(STATUSES)}")
    if office is not None:
        if office not in offices:
            raise ApiError(403, "forbidden", f"the key {name!r} is not staff of {office!r}")
        offices = [office]
    rows = await state.store.run(inbox, state.store, offices, wanted)
    request.state.log_extra = {"staff": name, "items": len(rows)}
    return {"offices": offices, "items": [item_view(r, f) for r, f in rows]}


async def _act(
    state: ReadyStateDep,
    staff: tuple[str, list[str]],
    request: Request,
    request_id: str,
    action: Action,
) -> dict[str, Any]:
    assert state.store is not None
    name, offices = staff
    try:
        outcome = await state.store.run(
            act, state.store, _book(request), request_id, offices, action, name
        )
    except FollowUpError as exc:
        raise ApiError(409, "conflict", str(exc)) from exc
    if outcome is None:
        raise ApiError(404, "not_found", f"no complaint {request_id!r} for {', '.join(offices)}")
    request.state.log_extra = {"staff": name, "request_id": request_id, "action": action.kind}
    return item_view(*outcome)


@router.post("/v1/office/complaints/{request_id}/acknowledge", summary="Acknowledge")
async def acknowledge(
    request_id: str, state: ReadyStateDep, staff: StaffDep, request: Request
) -> dict[str, Any]:
    return await _act(state, staff, request, request_id, Action("acknowledge"))


@router.post("/v1/office/complaints/{request_id}/status", summary="In progress, with a note")
async def progress(
    request_id: str, body: ActionBody, state: ReadyStateDep, staff: StaffDep, request: Request
) -> dict[str, Any]:
    return await _act(state, staff, request, request_id, Action("progress", body.note))


@router.post("/v1/office/complaints/{request_id}/close", summary="Close, with a resolution")
async def close(
    request_id: str, body: ActionBody, state: ReadyStateDep, staff: StaffDep, request: Request
) -> dict[str, Any]:
    return await _act(state, staff, request, request_id, Action("close", body.note))


@router.post(
    "/v1/office/complaints/{request_id}/return",
    summary="Send back: not this office's (optionally naming the right one)",
)
async def send_back(
    request_id: str, body: ReturnBody, state: ReadyStateDep, staff: StaffDep, request: Request
) -> dict[str, Any]:
    action = Action("return", body.note, body.right_office)
    return await _act(state, staff, request, request_id, action)


@router.get("/v1/followup/escalated", tags=["review"], summary="Sent back or overdue: first")
async def escalated_list(state: ReadyStateDep, operator: OperatorDep) -> dict[str, Any]:
    assert state.store is not None
    rows = await state.store.run(escalated, state.store)
    return {"items": [item_view(r, f) for r, f in rows]}


@router.get("/v1/followup/dead-letters", tags=["review"], summary="Events given up on")
async def dead(state: ReadyStateDep, operator: OperatorDep) -> dict[str, Any]:
    assert state.store is not None
    events = await state.store.run(dead_letters, state.store)
    return {
        "items": [
            {
                "id": e.id,
                "type": e.type,
                "office": e.office,
                "request_id": e.request_id,
                "attempts": e.attempts,
                "last_error": e.last_error,
                "dead_at": e.dead_at.isoformat() if e.dead_at else None,
            }
            for e in events
        ]
    }


@router.get(
    "/v1/followup/route-accuracy",
    tags=["review"],
    summary="Live accuracy of automatic routes: accepted / (accepted + sent back) by offices",
)
async def route_accuracy(
    state: ReadyStateDep,
    operator: OperatorDep,
    request: Request,
    days: Annotated[float, Query(gt=0, le=3650)] = 30.0,
) -> dict[str, Any]:
    assert state.store is not None
    rows = await state.store.run(live_accuracy, state.store, days)
    return {"days": days, "promise": PROMISE, "agencies": [r.to_dict() for r in rows]}


@router.get(
    "/v1/followup/performance",
    tags=["review"],
    summary="How offices perform: received, acknowledged within the SLA, times, backlog",
    responses={200: {"content": {"text/csv": {}}}},
)
async def office_figures(
    state: ReadyStateDep,
    viewer: ViewerDep,
    request: Request,
    by: Annotated[str, Query(description="office, kecamatan or all")] = "office",
    start: Annotated[
        str | None, Query(alias="from", description="First day (2023-01-01) or date-time")
    ] = None,
    end: Annotated[
        str | None, Query(alias="to", description="Last day (whole day) or date-time")
    ] = None,
    weekly: Annotated[bool, Query(description="One row per ISO week")] = False,
    format: Annotated[str, Query(description="json or csv")] = "json",
) -> Any:
    """The figures of `aduan.model.performance.office_performance` over the stored
    follow-ups (docs/followup.md); an office's staff get their own office's only."""
    assert state.store is not None
    name, offices = viewer
    if by not in BYS:
        raise ApiError(422, "validation_error", f"by must be one of {list(BYS)}")
    if format not in ("json", "csv"):
        raise ApiError(422, "validation_error", "format must be json or csv")
    try:
        lo = parse_moment(start, "from") if start else None
        hi = parse_moment(end, "to", end_of_day=True) if end else None
    except ReviewError as exc:
        raise ApiError(422, "validation_error", str(exc)) from exc
    table = await state.store.run(performance, state.store, by, lo, hi, weekly, offices)
    request.state.log_extra = {"viewer": name, "rows": len(table)}
    if format == "csv":
        return Response(
            table.to_csv(index=False),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="performance.csv"'},
        )
    return {
        "by": by,
        "from": lo.isoformat() if lo else None,
        "to": hi.isoformat() if hi else None,
        "weekly": weekly,
        "offices": offices,
        "rows": to_records(table),
    }
