"""`aduan followup import-history`: the labelled file's handling history as closed
complaints, so a new deployment's performance page starts from the real history.

Each complaint becomes a stored request (id derived from the file's own id, so importing the
file again adds nothing twice) and a closed follow-up at its office, with the timestamps
`aduan.model.performance.history_complaints` gives: routed at `created_at`, first answered at
`responded_at`, closed at the resolution bucket's hours (`BUCKET_HOURS`), first-response
deadline from the office's `sla_hours`. The complaint's text is not imported: the page needs
none, and the history is a year of citizens' words the deployment has no use for. A complaint
the history never answered nor bucketed is imported closed (nobody will act on it now) but
with no close time, so the figures keep it in the backlog, as the history report does.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select

from aduan.model.history import load_history
from aduan.model.performance import DEFAULT_SLA_HOURS, history_complaints

from .followup import CLOSED, FollowUp
from .storage import RequestEvent, Store, StoredRequest

log = logging.getLogger(__name__)

IMPORT_ACTOR = "history-import"
IMPORT_VERSION = "history-import"  # model_version of imported requests: no model routed them
PLACEHOLDER = ""  # the text column: the history's texts are not imported
_NAMESPACE = uuid.UUID("6f1d0c52-61a8-4a40-9d1b-2f2c7f3b5e0a")
BATCH = 1000


@dataclass(frozen=True)
class ImportOutcome:
    rows: int  # complaints in the file (with an arrival time and an agency)
    imported: int
    already: int  # imported before


def request_id(source_id: str) -> str:
    """The stored id of the file's complaint `source_id` (stable across imports)."""
    return str(uuid.uuid5(_NAMESPACE, f"history:{source_id}"))


def history_frame(
    path: Path | str,
    sla_hours: Mapping[str, float] | None = None,
    timezone: str = "Asia/Jakarta",
    default_sla_hours: float = DEFAULT_SLA_HOURS,
) -> pd.DataFrame:
    """The file's complaints as `history_complaints` gives them, in UTC (the file's times are
    local, `timezone`), with `request_id` and the units."""
    history = load_history(path, {"id": "id"})
    frame = history_complaints(history, sla_hours, default_sla_hours)
    for column in ("received_at", "first_response_at", "closed_at", "due_at"):
        frame[column] = frame[column].dt.tz_localize(timezone).dt.tz_convert("UTC")
    frame["request_id"] = history["source_id"].map(request_id)
    frame["agency_class"] = history["agency_class"]
    frame["kelurahan"] = history["kelurahan"]
    return frame


def _moment(value: Any) -> datetime | None:
    return None if pd.isna(value) else pd.Timestamp(value).to_pydatetime()


def _batches(frame: pd.DataFrame) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), BATCH):
        yield frame.iloc[start : start + BATCH]


def import_history(store: Store, frame: pd.DataFrame) -> ImportOutcome:
    """Store `history_frame`'s complaints not stored yet, one transaction per batch."""
    imported = already = 0
    for batch in _batches(frame):
        ids = batch["request_id"].tolist()
        with store.sessions.begin() as session:
            query = select(StoredRequest.id).where(StoredRequest.id.in_(ids))
            known = set(session.scalars(query))
            already += len(known)
            new = []
            for item in batch.itertuples(index=False):
                if item.request_id not in known:
                    known.add(item.request_id)  # a file listing one id twice: the first wins
                    new.append(item)
            session.add_all([_request(item) for item in new])
            session.flush()  # the follow-ups' foreign keys need the requests first
            for item in new:
                session.add_all(_followup(item))
            imported += len(new)
    log.info("history import: %d imported, %d already there", imported, already)
    return ImportOutcome(len(frame), imported, already)


def _times(item: Any) -> tuple[datetime, datetime | None, datetime | None, datetime]:
    received = _moment(item.received_at)
    assert received is not None
    first, closed = _moment(item.first_response_at), _moment(item.closed_at)
    last = max(m for m in (received, first, closed) if m is not None)
    return received, first, closed, last


def _request(item: Any) -> StoredRequest:
    received, _, closed, last = _times(item)
    return StoredRequest(
        id=item.request_id,
        received_at=received,
        text=PLACEHOLDER,
        category="",
        category_score=0.0,
        agency=item.agency_class,
        agency_score=0.0,
        kelurahan=item.kelurahan or None,
        kecamatan=item.kecamatan or None,
        model_version=IMPORT_VERSION,
        route="auto",
        route_reason="history_import",
        status="closed",
        expected_at=closed,
        updated_at=last,
    )


def _followup(item: Any) -> tuple[FollowUp, RequestEvent]:
    received, first, closed, last = _times(item)
    follow = FollowUp(
        request_id=item.request_id,
        office=item.office,
        status=CLOSED,
        routed_at=received,
        first_response_due=_moment(item.due_at) or received,
        expected_datetime=closed,
        acknowledged_at=first,
        closed_at=closed,
        updated_at=last,
    )
    event = RequestEvent(
        request_id=item.request_id,
        at=last,
        actor=IMPORT_ACTOR,
        field="followup",
        old_value=None,
        new_value=CLOSED,
    )
    return follow, event
