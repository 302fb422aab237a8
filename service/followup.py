"""Follow-up of routed complaints: each one's office, lifecycle and deadlines (`followups`), the
office's actions on it, the sweep that marks the late ones overdue and escalates them, and the
events (`outbox`) those changes cause, written in the same transaction as the change.

Lifecycle: new -> acknowledged -> in_progress -> closed; new/acknowledged/in_progress ->
overdue (the sweep) -> acknowledged ...; any open state -> returned (the office says "not
ours"), which puts the complaint back in the operators' review queue until they route it
again. `service/dispatch.py` delivers the outbox.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Mapped, Session, mapped_column

from aduan.model.pipeline import office as unit_office
from aduan.model.taxonomy import OTHER_AGENCY

from .duplicates import RequestDuplicate
from .offices import INTAKE, OfficeBook
from .resolution import ResolutionModel
from .review import unit_of
from .storage import Base, Store, StoredRequest, as_utc, audit, utcnow

NEW, ACKNOWLEDGED, IN_PROGRESS = "new", "acknowledged", "in_progress"
OVERDUE, CLOSED, RETURNED = "overdue", "closed", "returned"
STATUSES = (NEW, ACKNOWLEDGED, IN_PROGRESS, OVERDUE, CLOSED, RETURNED)
OPEN = (NEW, ACKNOWLEDGED, IN_PROGRESS, OVERDUE)
ROUTED, STATUS_CHANGED = "complaint.routed", "complaint.status_changed"
OVERDUE_EVENT, RETURNED_EVENT = "complaint.overdue", "complaint.returned"
EVENT_TYPES = (ROUTED, STATUS_CHANGED, OVERDUE_EVENT, RETURNED_EVENT)
SWEEP_ACTOR = "followup-sweep"
AUTO_ACTOR = "auto-route"  # who routes what the model sent on by itself (Store.save_requests)
ACCEPTED, SENT_BACK = "accepted", "returned"
DEFAULT_RESOLUTION_HOURS = 7 * 24.0


class FollowUpError(ValueError):
    """An office action that does not apply to the complaint as it stands."""


class FollowUp(Base):
    """Where a routed complaint stands with its office (migration 0005)."""

    __tablename__ = "followups"

    request_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("requests.id", ondelete="CASCADE"), primary_key=True
    )
    office: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    status_notes: Mapped[str | None] = mapped_column(Text)
    routed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    first_response_due: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expected_datetime: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    overdue_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    returned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    returned_to: Mapped[str | None] = mapped_column(String(200))
    escalated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    auto_agency: Mapped[str | None] = mapped_column(String(200))
    auto_score: Mapped[float | None] = mapped_column(Float)
    verdict: Mapped[str | None] = mapped_column(String(10))
    verdict_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OutboxEvent(Base):
    """An event for an office's webhook; `id` is the Standard Webhooks `webhook-id`, the same
    on every delivery attempt (receivers deduplicate by it)."""

    __tablename__ = "outbox"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    office: Mapped[str] = mapped_column(String(200))
    request_id: Mapped[str | None] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    claimed_by: Mapped[str | None] = mapped_column(String(80))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    dead_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)


def expected_resolution(
    routed_at: datetime,
    office: str,
    book: OfficeBook,
    row: StoredRequest | None = None,
    deadlines: ResolutionModel | None = None,
) -> datetime:
    """When the complaint is expected to be resolved (Open311 `expected_datetime`): the
    deadline model's prediction from the routing time (`ADUAN_DEADLINE_MODEL`, from the
    complaint's text, agency and unit), else the office's `resolution_hours`, else 7 days."""
    if deadlines is not None and row is not None:
        predicted = deadlines.expected_at(
            routed_at, row.text, row.corrected_agency or row.agency, row.kecamatan, row.kelurahan
        )
        if predicted is not None:
            return predicted
    configured = book.get(office)
    hours = (configured.resolution_hours if configured else None) or DEFAULT_RESOLUTION_HOURS
    return routed_at + timedelta(hours=hours)


def office_for(row: StoredRequest) -> str | None:
    """The office a stored complaint goes to: its concrete kelurahan/kecamatan office for
    those classes, else the (corrected) agency; None for `Lainnya` or an unresolved unit."""
    agency = row.corrected_agency or row.agency
    if agency == OTHER_AGENCY:
        return None
    concrete = unit_office(agency, unit_of(row))
    if agency in ("Kelurahan", "Kecamatan"):
        return concrete
    return agency


def supervisor_of(office: str, row: StoredRequest) -> str | None:
    """A kelurahan's supervising office: its kecamatan's."""
    if office.startswith("Kelurahan ") and row.kecamatan:
        return f"Kecamatan {row.kecamatan}"
    return None


def _iso(moment: datetime | None) -> str | None:
    return as_utc(moment).isoformat(timespec="seconds") if moment else None


def event_data(row: StoredRequest, follow: FollowUp) -> dict[str, Any]:
    """The `data` of every event about a complaint: what its office needs to act on it."""
    return {
        "request_id": row.id,
        "office": follow.office,
        "agency": row.corrected_agency or row.agency,
        "unit": {"kelurahan": row.kelurahan, "kecamatan": row.kecamatan},
        "category": row.service_code or row.corrected_category or row.category,
        "text": row.text,
        "address": row.address,
        "latitude": row.latitude,
        "longitude": row.longitude,
        "received_at": _iso(row.received_at),
        "status": follow.status,
        "status_notes": follow.status_notes,
        "first_response_due": _iso(follow.first_response_due),
        "expected_datetime": _iso(follow.expected_datetime),
        "updated_at": _iso(follow.updated_at),
    }


def emit(
    session: Session,
    book: OfficeBook,
    kind: str,
    office: str,
    data: dict[str, Any],
    at: datetime,
    extra_offices: Sequence[str] = (),
) -> list[OutboxEvent]:
    """Queue `kind` for `office` (and `extra_offices`) in the caller's transaction; only
    offices with a webhook get events (the others work in the inbox)."""
    out = []
    # The intake system hears where its complaint went and how it is handled.
    intake = (INTAKE,) if kind in (ROUTED, STATUS_CHANGED) and book.get(INTAKE) else ()
    for name in (office, *extra_offices, *intake):
        configured = book.get(name)
        if configured is None or not configured.webhook:
            continue
        event_id = "msg_" + uuid.uuid4().hex
        payload = {"type": kind, "timestamp": _iso(at), "data": data}
        out.append(
            OutboxEvent(
                id=event_id,
                type=kind,
                payload=payload,
                office=name,
                request_id=data.get("request_id"),
                created_at=at,
                attempts=0,
                next_attempt_at=at,
            )
        )
    session.add_all(out)
    return out


def route(
    session: Session,
    row: StoredRequest,
    book: OfficeBook,
    actor: str,
    at: datetime | None = None,
    deadlines: ResolutionModel | None = None,
    again: bool = False,
) -> FollowUp | None:
    """The complaint is routed (stored with route auto, or confirmed/corrected by an
    operator): give it to its office with its deadlines, and queue `complaint.routed`, in the
    caller's transaction. Confirming a complaint already with that office changes nothing;
    routing a returned one (or to another office, or `again`) starts its follow-up again."""
    at = at or utcnow()
    target = office_for(row)
    if session.get(RequestDuplicate, row.id) is not None:
        return None  # a merged duplicate is followed up in its original, never dispatched
    if target is None or book.get(target) is None:
        # No such office in the file: nobody could answer it, so nothing to follow up
        # (the complaint stays with the operators as before).
        return None
    # An automatic route is a complaint being stored: it has no follow-up yet (no lookup).
    follow = None if actor == AUTO_ACTOR else session.get(FollowUp, row.id)
    if follow is not None and follow.office == target and follow.status != RETURNED and not again:
        return follow
    old = follow.office if follow is not None else None
    if follow is not None and old != target:
        _reassigned(session, book, row, follow, target, at)
    if follow is None:
        follow = FollowUp(request_id=row.id)
        session.add(follow)
        if actor == AUTO_ACTOR:  # the office's answer will judge the model's route
            follow.auto_agency, follow.auto_score = row.agency, row.agency_score
    follow.office, follow.status, follow.status_notes = target, NEW, None
    follow.routed_at = at
    follow.first_response_due = at + timedelta(hours=book.sla_hours(target))
    follow.expected_datetime = expected_resolution(at, target, book, row, deadlines)
    follow.acknowledged_at = follow.closed_at = follow.overdue_at = None
    follow.returned_at = follow.returned_to = follow.escalated_at = None
    follow.updated_at = at
    row.expected_at = follow.expected_datetime
    audit(session, row, actor, at, {"office": (old, target), "followup": (None, NEW)})
    emit(session, book, ROUTED, target, event_data(row, follow), at)
    return follow


def _reassigned(
    session: Session,
    book: OfficeBook,
    row: StoredRequest,
    follow: FollowUp,
    target: str,
    at: datetime,
) -> None:
    """An operator moves the complaint from `follow.office` to `target`. Overriding the model's
    route before any office judged it says the route was wrong (live accuracy would otherwise
    count the correction as accepted), and the old office, which was told it owns the
    complaint, hears that it no longer does, unless it sent it back itself."""
    if follow.auto_agency is not None and follow.verdict is None:
        follow.verdict, follow.verdict_at = SENT_BACK, at
    if follow.status == RETURNED:
        return
    data = {
        **event_data(row, follow),
        "status": RETURNED,
        "status_notes": f"Dialihkan ke {target}",
        "reassigned_to": target,
        "updated_at": _iso(at),
    }
    emit(session, book, RETURNED_EVENT, follow.office, data, at)


def close_merged(
    session: Session, store: Store, row: StoredRequest, note: str, actor: str, at: datetime
) -> None:
    """A duplicate merged into its original leaves its office's inbox: its follow-up closes
    with the merge's public note and the office hears it (`complaint.status_changed`), in the
    merge's transaction; the original carries the case from now on."""
    follow = session.get(FollowUp, row.id)
    if follow is None or follow.status == CLOSED:
        return
    old_status, old_note = follow.status, follow.status_notes
    follow.status, follow.status_notes, follow.closed_at = CLOSED, note, at
    follow.escalated_at, follow.updated_at = None, at
    audit(
        session,
        row,
        actor,
        at,
        {"followup": (old_status, CLOSED), "status_notes": (old_note, note)},
    )
    book = book_of(store)
    if book is not None:
        emit(session, book, STATUS_CHANGED, follow.office, event_data(row, follow), at)


def reopen_unmerged(
    session: Session,
    store: Store,
    row: StoredRequest,
    merged_at: datetime,
    actor: str,
    at: datetime,
) -> FollowUp | None:
    """An unmerged report's follow-up, closed by its merge, starts again: routed to its office
    with fresh deadlines and `complaint.routed`, in the unmerge's transaction. One its office
    closed itself before the merge stays closed."""
    follow = session.get(FollowUp, row.id)
    hook = next((h for h in store.on_routed if hasattr(h, "followup_book")), None)
    if follow is None or hook is None or follow.status != CLOSED:
        return None
    if follow.closed_at is None or as_utc(follow.closed_at) != as_utc(merged_at):
        return None
    book, deadlines = hook.followup_book, getattr(hook, "followup_deadlines", None)
    return route(session, row, book, actor, at=at, deadlines=deadlines, again=True)


def book_of(store: Store) -> OfficeBook | None:
    """The offices `install` gave `store`, if any."""
    return next((h.followup_book for h in store.on_routed if hasattr(h, "followup_book")), None)


def routing_hook(
    book: OfficeBook, deadlines: ResolutionModel | None = None
) -> Callable[[Session, StoredRequest, str], None]:
    """What `Store.on_routed` calls for each routed complaint."""

    def hook(session: Session, row: StoredRequest, actor: str) -> None:
        route(session, row, book, actor, deadlines=deadlines)

    return hook


def install(store: Store, book: OfficeBook, deadlines: ResolutionModel | None = None) -> None:
    """Route every complaint the store routes (idempotent)."""
    if not any(getattr(h, "followup_book", None) is book for h in store.on_routed):
        hook = routing_hook(book, deadlines)
        hook.followup_book = book  # type: ignore[attr-defined]
        hook.followup_deadlines = deadlines  # type: ignore[attr-defined]
        store.on_routed.append(hook)


@dataclass(frozen=True)
class Action:
    """An office's action: `acknowledge`, `progress` (a public note), `close` (a resolution
    note) or `return` (not ours; `right_office` if they know)."""

    kind: str
    note: str | None = None
    right_office: str | None = None


ACTIONS = ("acknowledge", "progress", "close", "return")


def act(
    store: Store,
    book: OfficeBook,
    request_id: str,
    offices: Sequence[str],
    action: Action,
    actor: str,
    now: datetime | None = None,
) -> tuple[StoredRequest, FollowUp] | None:
    """Apply an office's action to one of its complaints, with its audit events and outbox
    event, in one transaction. None when the complaint is not one of `offices`' (to the
    caller, the same as not existing)."""
    if action.kind not in ACTIONS:
        raise FollowUpError(f"action must be one of {list(ACTIONS)}")
    at = now or utcnow()
    with store.sessions.begin() as session:
        # Row locks (PostgreSQL; SQLite has one writer): two actions at once (a double click,
        # an office acting while an operator re-routes) apply one after the other, each
        # checking the status the other left.
        follow = session.get(FollowUp, request_id, with_for_update=True)
        row = session.get(StoredRequest, request_id, with_for_update=True)
        if follow is None or row is None or not _visible(follow, row, offices):
            return None
        if follow.status in (CLOSED, RETURNED):
            raise FollowUpError(f"the complaint is {follow.status}: nothing more to do")
        old_status, old_note = follow.status, follow.status_notes
        note = (action.note or "").strip() or None
        kind = STATUS_CHANGED
        if action.kind == "acknowledge":
            follow.status = ACKNOWLEDGED
            follow.acknowledged_at = follow.acknowledged_at or at
            follow.escalated_at = None
        elif action.kind == "progress":
            if note is None:
                raise FollowUpError("a status update needs a public note")
            follow.status, follow.status_notes = IN_PROGRESS, note
            follow.acknowledged_at = follow.acknowledged_at or at
            follow.escalated_at = None
        elif action.kind == "close":
            if note is None:
                raise FollowUpError("closing needs a resolution note")
            follow.status, follow.status_notes, follow.closed_at = CLOSED, note, at
            follow.acknowledged_at = follow.acknowledged_at or at
            follow.escalated_at = None
        else:
            right = (action.right_office or "").strip() or None
            follow.status, follow.returned_at, follow.returned_to = RETURNED, at, right
            follow.escalated_at = at
            if note:
                follow.status_notes = note
            kind = RETURNED_EVENT
            # Back to the operators: in the review queue, open, its agency no longer
            # confirmed (the export shows it again once an operator routes it right; a
            # corrected category stays, the office disputes only where it went).
            changes = {
                "route": (row.route, "review"),
                "status": (row.status, "open"),
                "corrected_agency": (row.corrected_agency, None),
                "returned_to": (None, right),
            }
            audit(session, row, actor, at, changes)
            row.route, row.status, row.corrected_agency = "review", "open", None
        follow.updated_at = at
        _judge(follow, action.kind, at)
        audit(
            session,
            row,
            actor,
            at,
            {
                "followup": (old_status, follow.status),
                "status_notes": (old_note, follow.status_notes),
            },
        )
        if action.kind in ("progress", "close"):
            # The request's own status and public note are what Open311 shows the citizen.
            status = "closed" if action.kind == "close" else "in_progress"
            audit(
                session, row, actor, at, {"status": (row.status, status), "note": (row.note, note)}
            )
            row.status, row.note = status, note
        emit(session, book, kind, follow.office, event_data(row, follow), at)
        session.flush()
        return row, follow


def _judge(follow: FollowUp, kind: str, at: datetime) -> None:
    """An automatic route's verdict: the office acting on it accepts it; sending it back
    (even after acting on it) says it was wrong. Re-routing keeps the verdict, except that an
    operator moving a route nobody judged yet to another office sends it back (`_reassigned`)."""
    if follow.auto_agency is None:
        return
    if kind == "return" and follow.verdict != SENT_BACK:
        follow.verdict, follow.verdict_at = SENT_BACK, at
    elif kind != "return" and follow.verdict is None:
        follow.verdict, follow.verdict_at = ACCEPTED, at


def _visible(follow: FollowUp, row: StoredRequest, offices: Sequence[str]) -> bool:
    """An office sees its complaints, and a kecamatan its kelurahans' overdue ones."""
    if follow.office in offices:
        return True
    supervisor = supervisor_of(follow.office, row)
    return follow.status == OVERDUE and supervisor is not None and supervisor in offices


def visible_to(store: Store, request_id: str, offices: Sequence[str]) -> bool:
    """Whether the complaint is one of `offices`' (as `act` and the inbox see it)."""
    with store.sessions.begin() as session:
        follow = session.get(FollowUp, request_id)
        row = session.get(StoredRequest, request_id)
        return follow is not None and row is not None and _visible(follow, row, offices)


def offices_holding(store: Store, ids: Sequence[str]) -> dict[str, str]:
    """The office each of `ids` is followed up by (those with a follow-up)."""
    if not ids:
        return {}
    query = select(FollowUp.request_id, FollowUp.office).where(FollowUp.request_id.in_(list(ids)))
    with store.sessions.begin() as session:
        return {str(i): str(o) for i, o in session.execute(query).tuples()}


def inbox(
    store: Store, offices: Sequence[str], statuses: Sequence[str] = (), limit: int = 200
) -> list[tuple[StoredRequest, FollowUp]]:
    """An office's complaints, overdue ones first, then by deadline; a kecamatan's inbox also
    holds its kelurahans' overdue complaints (escalation)."""
    kecamatans = [o.removeprefix("Kecamatan ") for o in offices if o.startswith("Kecamatan ")]
    f, r = FollowUp, StoredRequest
    mine: ColumnElement[bool] = f.office.in_(list(offices))
    if kecamatans:
        late = (f.status == OVERDUE) & f.office.startswith("Kelurahan ")
        mine = or_(mine, late & r.kecamatan.in_(kecamatans))
    query = select(r, f).join(f, f.request_id == r.id).where(mine)
    if statuses:
        query = query.where(f.status.in_(list(statuses)))
    late_first = (f.status != OVERDUE).asc()
    query = query.order_by(late_first, f.first_response_due, r.id).limit(limit)
    with store.sessions.begin() as session:
        return [(row, follow) for row, follow in session.execute(query).tuples()]


def escalated(store: Store, limit: int = 50) -> list[tuple[StoredRequest, FollowUp]]:
    """What the operators' queue shows on top: complaints sent back by their office and
    complaints overdue, the longest waiting first."""
    f, r = FollowUp, StoredRequest
    query = (
        select(r, f)
        .join(f, f.request_id == r.id)
        .where(f.status.in_([RETURNED, OVERDUE]), f.escalated_at.is_not(None))
        .order_by(f.escalated_at, r.id)
        .limit(limit)
    )
    with store.sessions.begin() as session:
        return [(row, follow) for row, follow in session.execute(query).tuples()]


def get(store: Store, request_id: str) -> FollowUp | None:
    with store.sessions.begin() as session:
        return session.get(FollowUp, request_id)


def sweep(store: Store, book: OfficeBook, now: datetime | None = None) -> list[str]:
    """Mark the complaints past their deadline overdue (new ones past the first-response
    deadline, acknowledged or in-progress ones past their expected resolution), queue
    `complaint.overdue` for their office and its supervisor, and escalate them. Returns the
    ids marked. Each is marked once per deadline: an office acting on a late complaint
    (acknowledge, a progress note) takes it out of overdue for good as far as that deadline
    goes; it is marked again only for the resolution deadline, if it had been marked for
    the first response."""
    at = now or utcnow()
    f = FollowUp
    late = or_(
        (f.status == NEW) & (f.first_response_due < at),
        f.status.in_([ACKNOWLEDGED, IN_PROGRESS])
        & f.expected_datetime.is_not(None)
        & (f.expected_datetime < at)
        # Not marked for the resolution deadline yet: never marked, or marked before the
        # first acknowledgement (that is, for the first response; `acknowledged_at` keeps
        # the first one, and a re-route clears both).
        & (f.overdue_at.is_(None) | (f.overdue_at < f.acknowledged_at)),
    )
    marked = []
    with store.sessions.begin() as session:
        query = select(f).where(late).order_by(f.first_response_due).limit(500)
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)  # two pods sweep disjoint rows
        for follow in session.scalars(query):
            row = session.get(StoredRequest, follow.request_id)
            if row is None:
                continue
            old = follow.status
            follow.status, follow.overdue_at, follow.escalated_at = OVERDUE, at, at
            follow.updated_at = at
            audit(session, row, SWEEP_ACTOR, at, {"followup": (old, OVERDUE)})
            supervisor = supervisor_of(follow.office, row)
            extra = [supervisor] if supervisor else []
            emit(session, book, OVERDUE_EVENT, follow.office, event_data(row, follow), at, extra)
            marked.append(row.id)
    return marked


def overdue_by_office(store: Store) -> dict[str, int]:
    """How many complaints are overdue, per office (the gauge)."""
    query = (
        select(FollowUp.office, func.count())
        .where(FollowUp.status == OVERDUE)
        .group_by(FollowUp.office)
    )
    with store.sessions.begin() as session:
        return {str(o): int(n) for o, n in session.execute(query).tuples()}


def followup_view(follow: FollowUp | None) -> dict[str, Any] | None:
    """A follow-up as the APIs answer it."""
    if follow is None:
        return None
    return {
        "office": follow.office,
        "status": follow.status,
        "status_notes": follow.status_notes,
        "routed_at": _iso(follow.routed_at),
        "first_response_due": _iso(follow.first_response_due),
        "expected_datetime": _iso(follow.expected_datetime),
        "acknowledged_at": _iso(follow.acknowledged_at),
        "closed_at": _iso(follow.closed_at),
        "overdue_at": _iso(follow.overdue_at),
        "returned_at": _iso(follow.returned_at),
        "returned_to": follow.returned_to,
        "updated_at": _iso(follow.updated_at),
    }
