"""Operators' decisions on likely duplicates: merge a report into its original (closed, with a
public note pointing there), undo it, or record that a suggestion is not a duplicate; and how
Open311 shows a merged report (its original's status). Every change is also an event of the
audit trail (`request_events`); the tables are `duplicates.RequestDuplicate` and
`duplicates.DuplicateVerdict` (migration 0006).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .duplicates import (
    DuplicateError,
    DuplicateVerdict,
    RequestDuplicate,
    RequestSignature,
    merged_counts,
)
from .followup import close_merged, reopen_unmerged
from .storage import RequestEvent, Store, StoredRequest, audit, utcnow


def merge_note(original_id: str) -> str:
    """The public note of a merged duplicate (Open311 status_notes)."""
    return (
        f"Laporan ini sama dengan laporan {original_id} dan digabung ke laporan tersebut; "
        "ikuti perkembangannya di sana."
    )


def _similarity(session: Session, request_id: str, other: str) -> float | None:
    for first, second in ((request_id, other), (other, request_id)):
        sig = session.get(RequestSignature, first)
        for c in sig.candidates if sig else []:
            if c["request_id"] == second:
                return float(c["similarity"])
    return None


def merge(store: Store, request_id: str, original_id: str, actor: str) -> list[RequestEvent]:
    """Merge `request_id` into `original_id`: closed, with a public note pointing to the
    original, and no longer counted in the queue. Raises LookupError for a missing request,
    DuplicateError for a merge that would chain or loop."""
    if request_id == original_id:
        raise DuplicateError("a request cannot be a duplicate of itself")
    at = utcnow()
    with store.sessions.begin() as session:
        # Lock both requests, in id order (no deadlock), before the chain and loop checks:
        # merge(A->B) beside merge(B->A) or merge(C->A) then runs one after the other, and the
        # second sees the first's link (PostgreSQL; SQLite has one writer).
        both = sorted({request_id, original_id})
        lock = (
            select(StoredRequest.id)
            .where(StoredRequest.id.in_(both))
            .order_by(StoredRequest.id)
            .with_for_update()
        )
        session.execute(lock).all()
        row, original = (
            session.get(StoredRequest, request_id),
            session.get(StoredRequest, original_id),
        )
        if row is None or original is None:
            raise LookupError(request_id if row is None else original_id)
        if session.get(RequestDuplicate, request_id) is not None:
            raise DuplicateError("the request is merged already: unmerge it first")
        parent = session.get(RequestDuplicate, original_id)
        if parent is not None:
            raise DuplicateError(
                f"the original is itself merged into {parent.original_id}: merge into that one"
            )
        if merged_counts(session, [request_id]):
            raise DuplicateError("other reports are merged into this request: merge the other way")
        similarity = _similarity(session, request_id, original_id)
        session.add(
            RequestDuplicate(
                request_id=request_id,
                original_id=original_id,
                similarity=similarity,
                merged_by=actor,
                merged_at=at,
                previous_status=row.status,
                previous_note=row.note,
            )
        )
        session.add(
            DuplicateVerdict(
                request_id=request_id,
                candidate_id=original_id,
                verdict="duplicate",
                similarity=similarity,
                actor=actor,
                at=at,
            )
        )
        note = merge_note(original_id)
        events = audit(
            session,
            row,
            actor,
            at,
            {
                "duplicate_of": (None, original_id),
                "status": (row.status, "closed"),
                "note": (row.note, note),
            },
        )
        row.status, row.note = "closed", note
        close_merged(session, store, row, note, actor, at)
    return events


def unmerge(store: Store, request_id: str, actor: str) -> list[RequestEvent]:
    """Undo a merge: the status and note the request had before come back, the merge's
    verdict leaves the tuning data, and a follow-up the merge closed goes to its office again
    (`followup.reopen_unmerged`)."""
    at = utcnow()
    with store.sessions.begin() as session:
        row = session.get(StoredRequest, request_id)
        if row is None:
            raise LookupError(request_id)
        link = session.get(RequestDuplicate, request_id)
        if link is None:
            raise DuplicateError("the request is not merged into another")
        events = audit(
            session,
            row,
            actor,
            at,
            {
                "duplicate_of": (link.original_id, None),
                "status": (row.status, link.previous_status),
                "note": (row.note, link.previous_note),
            },
        )
        row.status, row.note = link.previous_status, link.previous_note
        # The operator took the merge back: its "duplicate" is no evidence for the threshold.
        session.execute(
            delete(DuplicateVerdict).where(
                DuplicateVerdict.request_id == request_id,
                DuplicateVerdict.candidate_id == link.original_id,
                DuplicateVerdict.verdict == "duplicate",
            )
        )
        merged_at = link.merged_at
        session.delete(link)
        session.flush()
        reopen_unmerged(session, store, row, merged_at, actor, at)
    return events


def not_duplicate(
    store: Store, request_id: str, candidate_id: str, actor: str
) -> list[RequestEvent]:
    """Record that `candidate_id` is not a duplicate of `request_id` (it stops being shown;
    the verdicts with their similarities are what the threshold is tuned on)."""
    if request_id == candidate_id:
        raise DuplicateError("a request cannot be compared with itself")
    at = utcnow()
    with store.sessions.begin() as session:
        row, other = (
            session.get(StoredRequest, request_id),
            session.get(StoredRequest, candidate_id),
        )
        if row is None or other is None:
            raise LookupError(request_id if row is None else candidate_id)
        similarity = _similarity(session, request_id, candidate_id)
        session.add(
            DuplicateVerdict(
                request_id=request_id,
                candidate_id=candidate_id,
                verdict="not_duplicate",
                similarity=similarity,
                actor=actor,
                at=at,
            )
        )
        event = RequestEvent(
            request_id=row.id,
            at=at,
            actor=actor,
            field="not_duplicate_of",
            old_value=None,
            new_value=candidate_id,
        )
        session.add(event)
    return [event]


def verdicts(store: Store) -> list[tuple[float, bool]]:
    """(similarity, whether operators judged it a duplicate) for every judged candidate pair:
    the live evidence for moving `duplicate_threshold`."""
    query = select(DuplicateVerdict.similarity, DuplicateVerdict.verdict).where(
        DuplicateVerdict.similarity.is_not(None)
    )
    with store.sessions.begin() as session:
        return [(float(s or 0), v == "duplicate") for s, v in session.execute(query)]


def threshold_table(
    judged: Sequence[tuple[float, bool]], thresholds: Sequence[float] = ()
) -> list[dict[str, float | int | None]]:
    """Per threshold, how many judged suggestions lie at or above it and the share of them
    operators merged: where to move `duplicate_threshold` (a share well under the bench's
    precision, or many rejections just above the threshold, says raise it)."""
    steps = thresholds or [round(0.3 + 0.05 * i, 2) for i in range(14)]
    out: list[dict[str, float | int | None]] = []
    for threshold in steps:
        above = [same for similarity, same in judged if similarity >= threshold]
        share = sum(above) / len(above) if above else None
        out.append({"threshold": threshold, "judged": len(above), "merged_share": share})
    return out


def follow_originals(store: Store, rows: Sequence[StoredRequest]) -> list[StoredRequest]:
    """Rows as Open311 shows them: a merged duplicate takes its original's status (the public
    note already points to the original). Copies, never the stored rows."""
    ids = [r.id for r in rows]
    if not ids:
        return list(rows)
    with store.sessions.begin() as session:
        query = (
            select(RequestDuplicate.request_id, StoredRequest.status)
            .join(StoredRequest, StoredRequest.id == RequestDuplicate.original_id)
            .where(RequestDuplicate.request_id.in_(ids))
        )
        followed = dict(session.execute(query).all())
    if not followed:
        return list(rows)
    columns = [c.key for c in StoredRequest.__mapper__.column_attrs]
    out = []
    for row in rows:
        if row.id in followed:
            row = StoredRequest(**{name: getattr(row, name) for name in columns})
            row.status = followed[row.id]
        out.append(row)
    return out
