"""How offices perform, from the stored follow-ups: the frame `aduan.model.performance`'s
`office_performance` computes the dashboard's figures from, and the PNG plot of them.

One row per stint of a complaint with an office: `received_at` is when it was routed there,
`first_response_at` its first acknowledgement (acknowledge, a status note or a close all
count), `closed_at` its close, `due_at` its first-response deadline, `sent_back` whether the
office sent it back. A complaint sent back and routed elsewhere has two stints: the earlier
one, read from the audit trail, ends when it was sent back (it left that office's backlog then)
and carries no deadline (the audit keeps none).
"""

from __future__ import annotations

import importlib.util
import itertools
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import or_, select

from aduan.model.performance import office_performance, plot_performance

from .followup import ACKNOWLEDGED, CLOSED, IN_PROGRESS, RETURNED, FollowUp
from .storage import RequestEvent, Store, StoredRequest, as_utc

BYS = ("office", "kecamatan", "all")
_ANSWERS = (ACKNOWLEDGED, IN_PROGRESS, CLOSED)
_COLUMNS = ("office", "kecamatan", "received_at", "first_response_at", "closed_at", "due_at")


def _utc(values: list[Any]) -> pd.Series:
    return pd.to_datetime(pd.Series(values, dtype=object), utc=True)


def followup_frame(
    store: Store, end: datetime | None = None, since: datetime | None = None
) -> pd.DataFrame:
    """The stints not closed before `since` (those count in no period from `since` on);
    earlier stints routed from `end` on are left out. A complaint routed after `end` is still
    read: its earlier stint may lie within the range."""
    f, r = FollowUp, StoredRequest
    query = select(
        f.request_id,
        f.office,
        r.kecamatan,
        f.routed_at,
        f.acknowledged_at,
        f.closed_at,
        f.first_response_due,
        f.returned_at,
        f.status,
    ).join(r, r.id == f.request_id)
    if since is not None:
        query = query.where(or_(f.closed_at.is_(None), f.closed_at >= since))
    rows: dict[str, list[Any]] = defaultdict(list)
    with store.sessions.begin() as session:
        current = session.execute(query).all()
        for _, office, kecamatan, routed, ack, closed, due, returned, status in current:
            rows["office"].append(office)
            rows["kecamatan"].append(kecamatan or "")
            rows["received_at"].append(routed)
            rows["first_response_at"].append(ack)
            # A sent-back complaint is out of the office's backlog from then on.
            rows["closed_at"].append(closed or returned)
            rows["due_at"].append(due)
            rows["sent_back"].append(status == RETURNED or returned is not None)
        kecamatans = {rid: kec or "" for rid, _, kec, *_ in current}
        _earlier_stints(session, kecamatans, rows, end)
    frame = pd.DataFrame({c: rows[c] for c in ("office", "kecamatan")}, dtype=object)
    for column in _COLUMNS[2:]:
        frame[column] = _utc(rows[column])
    frame["sent_back"] = pd.Series(rows["sent_back"], dtype=bool)
    return frame


def _earlier_stints(
    session: Any, kecamatans: dict[str, str], rows: dict[str, list[Any]], end: datetime | None
) -> None:
    """The stints before a complaint's current office, from its audit trail: only complaints
    routed more than once have any."""
    e = RequestEvent
    moved = select(e.request_id).where(e.field == "office", e.old_value.is_not(None))
    query = (
        select(e.request_id, e.at, e.field, e.new_value)
        .where(e.request_id.in_(moved), e.field.in_(["office", "followup"]))
        .order_by(e.request_id, e.at, e.id)
    )
    trails: dict[str, list[tuple[datetime, str, str | None]]] = defaultdict(list)
    for rid, at, field, new in session.execute(query):
        if rid in kecamatans:
            trails[rid].append((at, field, new))
    for rid, trail in trails.items():
        starts = [i for i, (_, field, _) in enumerate(trail) if field == "office"]
        for begin, stop in itertools.pairwise(starts):
            routed, _, office = trail[begin]
            if office is None or (end is not None and as_utc(routed) >= end):
                continue
            stint = trail[begin + 1 : stop]
            answers = [at for at, field, new in stint if field == "followup" and new in _ANSWERS]
            back = [at for at, field, new in stint if field == "followup" and new == RETURNED]
            rows["office"].append(office)
            rows["kecamatan"].append(kecamatans[rid])
            rows["received_at"].append(routed)
            rows["first_response_at"].append(answers[0] if answers else None)
            rows["closed_at"].append(back[0] if back else trail[stop][0])
            rows["due_at"].append(None)
            rows["sent_back"].append(bool(back))


def performance(
    store: Store,
    by: str = "office",
    start: datetime | None = None,
    end: datetime | None = None,
    weekly: bool = False,
    offices: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The figures per office (or kecamatan, or all together) and per ISO week or for the
    range [start, end): `offices` keeps only those offices' complaints (an office's staff)."""
    if by not in BYS:
        raise ValueError(f"by must be one of {list(BYS)}")
    frame = followup_frame(store, end, start)
    if offices is not None:
        frame = frame[frame["office"].isin(list(offices))]
    if frame.empty:  # the columns, no rows
        nothing = pd.Timestamp(0, tz="UTC")
        return office_performance(_empty(), None if by == "all" else by, nothing, nothing, weekly)
    return office_performance(
        frame,
        by=None if by == "all" else by,
        start=pd.Timestamp(start) if start is not None else None,
        end=pd.Timestamp(end) if end is not None else None,
        weekly=weekly,
    )


def _empty() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=object) for c in ("office", "kecamatan")})
    for column in _COLUMNS[2:]:
        frame[column] = pd.Series(dtype="datetime64[ns, UTC]")
    frame["sent_back"] = pd.Series(dtype=bool)
    return frame


def plots_installed() -> bool:
    """Whether matplotlib (the `plots` extra) is there to draw the weeks."""
    return importlib.util.find_spec("matplotlib") is not None


def plot_png(weekly: pd.DataFrame, by: str, top: int = 6) -> bytes | None:
    """The weekly figures of the `top` groups as a PNG, or None without matplotlib (the
    `plots` extra) or with fewer than two weeks to draw."""
    if not plots_installed():
        return None
    if weekly.empty or weekly["period"].nunique() < 2:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        column = "group" if by == "all" else by
        path = plot_performance(weekly, Path(tmp) / "performance.png", top=top, by=column)
        return path.read_bytes()
