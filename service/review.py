"""The operators' review of stored requests: the filtered, sorted, cursor-paginated queue,
changes (status, note, expected date, corrected labels) with their audit trail, and the
outcomes of reviews (how often the model's agency was confirmed at each score).

The routes (`routes/requests.py`, `routes/ui.py`, `routes/open311.py`) share this module.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select

from aduan.model.location import Unit
from aduan.model.pipeline import office

from . import duplicates
from .storage import (
    RequestEvent,
    Store,
    StoredRequest,
    as_utc,
    audit,
    record_correction,
    utcnow,
)

STATUSES = ("open", "in_progress", "closed")
SORTS = {
    "received_at": StoredRequest.received_at,
    "agency_score": StoredRequest.agency_score,
    "category_score": StoredRequest.category_score,
}
DEFAULT_SORT = "received_at"
MAX_LIMIT = 200


class ReviewError(ValueError):
    """A filter, cursor or change that cannot be applied; the message says why."""


@dataclass(frozen=True)
class QueueFilter:
    """What to list. Each set field narrows the list; dates bound `received_at` (`since`
    inclusive, `until` exclusive)."""

    route: str | None = None
    status: tuple[str, ...] = ()
    agency: str | None = None  # predicted
    corrected_agency: str | None = None
    category: str | None = None  # predicted
    corrected_category: str | None = None
    kecamatan: str | None = None
    kelurahan: str | None = None
    reviewed: bool | None = None  # corrected (or confirmed) by an operator
    since: datetime | None = None
    until: datetime | None = None
    # A merged duplicate is counted once, in its original: left out unless asked for.
    include_merged: bool = False
    repeat_reporter: bool | None = None

    def conditions(self) -> list[ColumnElement[bool]]:
        r = StoredRequest
        out: list[ColumnElement[bool]] = []
        for column, value in (
            (r.route, self.route),
            (r.agency, self.agency),
            (r.corrected_agency, self.corrected_agency),
            (r.category, self.category),
            (r.corrected_category, self.corrected_category),
            (r.kecamatan, self.kecamatan),
            (r.kelurahan, self.kelurahan),
        ):
            if value:
                out.append(column == value)
        if self.status:
            out.append(r.status.in_(self.status))
        if self.reviewed is not None:
            out.append(
                r.corrected_agency.is_not(None) if self.reviewed else r.corrected_agency.is_(None)
            )
        if self.since is not None:
            out.append(r.received_at >= self.since)
        if self.until is not None:
            out.append(r.received_at < self.until)
        if not self.include_merged:
            out.append(~duplicates.merged_condition(r.id))
        if self.repeat_reporter is not None:
            flagged = duplicates.repeat_condition(r.id)
            out.append(flagged if self.repeat_reporter else ~flagged)
        return out


def parse_moment(value: str, name: str, end_of_day: bool = False) -> datetime:
    """An ISO date or date-time (UTC when no zone is given). A bare date used as an upper
    bound (`end_of_day`) means the whole of that day."""
    value = value.strip()
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return moment + timedelta(days=1) if end_of_day else moment
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        message = f"{name} must be a date (2023-04-01) or date-time, got {value!r}"
        raise ReviewError(message) from exc
    return as_utc(parsed)


@dataclass(frozen=True)
class Page:
    rows: list[StoredRequest]
    next_cursor: str | None


def _encode_cursor(sort: str, row: StoredRequest) -> str:
    key = sort.lstrip("-")
    value: Any = getattr(row, key)
    value = as_utc(value).isoformat() if isinstance(value, datetime) else value
    raw = json.dumps({"sort": sort, "value": value, "id": row.id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        value, last_id, cursor_sort = data["value"], str(data["id"]), data["sort"]
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise ReviewError("cursor is not one this service issued") from exc
    if cursor_sort != sort:
        raise ReviewError(f"cursor was issued for sort={cursor_sort!r}, not {sort!r}")
    if sort.lstrip("-") == "received_at":
        value = parse_moment(str(value), "cursor")
    elif not isinstance(value, int | float):
        raise ReviewError("cursor is not one this service issued")
    return value, last_id


def list_requests(
    store: Store,
    where: QueueFilter,
    sort: str = DEFAULT_SORT,
    cursor: str | None = None,
    limit: int = 50,
) -> Page:
    """One page of the queue: keyset pagination on (sort column, id), stable under inserts."""
    key = sort.lstrip("-")
    if key not in SORTS:
        raise ReviewError(f"sort must be one of {sorted(SORTS)} (prefix - for descending)")
    if not 1 <= limit <= MAX_LIMIT:
        raise ReviewError(f"limit must lie in 1..{MAX_LIMIT}")
    column, descending = SORTS[key], sort.startswith("-")
    query = select(StoredRequest).where(*where.conditions())
    if cursor:
        value, last_id = _decode_cursor(cursor, sort)
        after = (column < value) if descending else (column > value)
        same = (StoredRequest.id < last_id) if descending else (StoredRequest.id > last_id)
        query = query.where(or_(after, and_(column == value, same)))
    order = (column.desc(), StoredRequest.id.desc()) if descending else (column, StoredRequest.id)
    query = query.order_by(*order).limit(limit + 1)
    with store.sessions.begin() as session:
        rows = list(session.scalars(query))
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, _encode_cursor(sort, rows[-1]) if more and rows else None)


def history(store: Store, request_id: str) -> list[RequestEvent]:
    """The audit events of one request, oldest first."""
    query = (
        select(RequestEvent).where(RequestEvent.request_id == request_id).order_by(RequestEvent.id)
    )
    with store.sessions.begin() as session:
        return list(session.scalars(query))


@dataclass(frozen=True)
class Changes:
    """What an operator changes; None leaves a field as it is (`clear` names fields to empty:
    note, expected_at)."""

    status: str | None = None
    note: str | None = None
    expected_at: datetime | None = None
    corrected_agency: str | None = None
    corrected_category: str | None = None
    clear: frozenset[str] = field(default_factory=frozenset)


def update_request(
    store: Store, request_id: str, changes: Changes, actor: str
) -> tuple[StoredRequest, list[RequestEvent]] | None:
    """Apply an operator's changes in one transaction, appending an audit event per changed
    field; None when there is no such request. Corrected labels also become this operator's
    feedback (what `aduan feedback export` writes for retraining)."""
    if changes.status is not None and changes.status not in STATUSES:
        raise ReviewError(f"status must be one of {list(STATUSES)}")
    at = utcnow()
    with store.sessions.begin() as session:
        row = session.get(StoredRequest, request_id)
        if row is None:
            return None
        plain: dict[str, tuple[str | None, str | None]] = {}
        if changes.status is not None:
            plain["status"] = (row.status, changes.status)
            row.status = changes.status
        if changes.note is not None or "note" in changes.clear:
            plain["note"] = (row.note, changes.note)
            row.note = changes.note
        if changes.expected_at is not None or "expected_at" in changes.clear:
            old = as_utc(row.expected_at).isoformat() if row.expected_at else None
            new = changes.expected_at.isoformat() if changes.expected_at else None
            plain["expected_at"] = (old, new)
            row.expected_at = changes.expected_at
        events = audit(session, row, actor, at, plain)
        if changes.corrected_agency or changes.corrected_category:
            category = changes.corrected_category or row.corrected_category or row.category
            agency = changes.corrected_agency or row.corrected_agency or row.agency
            events += record_correction(session, row, category, agency, actor, at)[2]
            store.routed(session, row, actor)
        session.flush()
    return row, events


def review_outcomes(store: Store, head: str = "agency") -> list[tuple[float, bool]]:
    """(predicted score, whether the operator kept the prediction) for every reviewed request:
    a live calibration check, biased towards what the model sent to review."""
    score = StoredRequest.agency_score if head == "agency" else StoredRequest.category_score
    predicted = StoredRequest.agency if head == "agency" else StoredRequest.category
    corrected = (
        StoredRequest.corrected_agency if head == "agency" else StoredRequest.corrected_category
    )
    query = select(score, predicted, corrected).where(corrected.is_not(None))
    with store.sessions.begin() as session:
        return [(float(s), p == c) for s, p, c in session.execute(query)]


def reliability(outcomes: Sequence[tuple[float, bool]], bins: int = 10) -> list[dict[str, Any]]:
    """A reliability diagram's points: per score bin, the mean score, the share kept, the count."""
    out = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(s, k) for s, k in outcomes if lo < s <= hi or (b == 0 and s == 0)]
        if inside:
            out.append(
                {
                    "low": lo,
                    "high": hi,
                    "confidence": sum(s for s, _ in inside) / len(inside),
                    "accuracy": sum(k for _, k in inside) / len(inside),
                    "count": len(inside),
                }
            )
    return out


def effective_agency(row: StoredRequest) -> str:
    return row.corrected_agency or row.agency


def effective_category(row: StoredRequest) -> str:
    return row.service_code or row.corrected_category or row.category


def unit_of(row: StoredRequest) -> Unit | None:
    if not row.kelurahan and not row.kecamatan:
        return None
    return Unit(row.kelurahan, row.kecamatan, row.unit_source, row.unit_confidence)


def _iso(moment: datetime | None) -> str | None:
    return as_utc(moment).isoformat(timespec="seconds") if moment else None


def request_view(row: StoredRequest, include_text: bool = True) -> dict[str, Any]:
    """A stored request as the review API answers it."""
    unit = unit_of(row)
    predictions = row.predictions or {}
    view: dict[str, Any] = {
        "request_id": row.id,
        "received_at": _iso(row.received_at),
        "updated_at": _iso(row.updated_at or row.received_at),
        "status": row.status,
        "route": row.route,
        "route_reason": row.route_reason,
        "model_version": row.model_version,
        "client_id": row.client_id,
        "service_code": row.service_code,
        "address": row.address,
        "latitude": row.latitude,
        "longitude": row.longitude,
        "category": {"label": row.category, "score": row.category_score},
        "agency": {"label": row.agency, "score": row.agency_score},
        "category_top_k": predictions.get("category", []),
        "agency_top_k": predictions.get("agency", []),
        "unit": (
            {**unit.to_dict(), "office": office(effective_agency(row), unit)} if unit else None
        ),
        "corrected_category": row.corrected_category,
        "corrected_agency": row.corrected_agency,
        "corrected_by": row.corrected_by,
        "corrected_at": _iso(row.corrected_at),
        "note": row.note,
        "expected_datetime": _iso(row.expected_at),
    }
    if include_text:
        view["text"] = row.text
    return view


def event_view(event: RequestEvent) -> dict[str, Any]:
    return {
        "at": _iso(event.at),
        "actor": event.actor,
        "field": event.field,
        "old": event.old_value,
        "new": event.new_value,
    }


def open311_requests(
    store: Store,
    *,
    ids: Sequence[str] = (),
    codes: Sequence[str] = (),
    statuses: Sequence[str] = (),
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 1000,
) -> list[StoredRequest]:
    """GeoReport v2's `GET requests`: by id list (other filters ignored, as the spec says), else
    by service code (the reviewed category), open/closed and the requested date, newest first."""
    r = StoredRequest
    query = select(r)
    if ids:
        query = query.where(r.id.in_(list(ids)))
    else:
        if codes:
            code = func.coalesce(r.service_code, r.corrected_category, r.category)
            query = query.where(code.in_(list(codes)))
        if statuses:
            wanted = {"open": ("open", "in_progress"), "closed": ("closed",)}
            # A merged duplicate is open or closed as its original is (what Open311 shows).
            shown = duplicates.followed_status(r)
            query = query.where(shown.in_([s for k in statuses for s in wanted[k]]))
        if start is not None:
            query = query.where(r.received_at >= start)
        if end is not None:
            query = query.where(r.received_at <= end)
    query = query.order_by(r.received_at.desc(), r.id.desc()).limit(limit)
    with store.sessions.begin() as session:
        return list(session.scalars(query))
