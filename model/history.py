"""The handling history of a labelled complaints file: when each complaint arrived, when its
office first answered and how long it took to resolve.

The Surabaya export has `created_at`, `responded_at` (the first response) and `response_days`,
the resolution bucket. The SLA table (`aduan.model.sla`), the deadline model
(`aduan.model.deadlines`) and the office figures (`aduan.model.performance`) all read a file
through `load_history`, so they agree on which rows count.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from . import records
from .taxonomy import agency_class
from .text import normalize_text

# The resolution buckets in their order, as the export spells them.
BUCKETS = ("1 Sampai 3 Hari", "4 Sampai 7 Hari", "Lebih 7 Hari")
BUCKET_DAYS: dict[str, tuple[float, float | None]] = {
    "1 Sampai 3 Hari": (1.0, 3.0),
    "4 Sampai 7 Hari": (4.0, 7.0),
    "Lebih 7 Hari": (7.0, None),  # open-ended
}
# Where a bucket's complaints are taken to close, in hours after arrival: the middle of the
# closed buckets (2 and 5.5 days) and, for the open "more than 7 days", 10 days, an assumption
# (the export says nothing beyond 7) that keeps it after the middle of the 4-7 bucket.
BUCKET_HOURS: dict[str, float] = {
    "1 Sampai 3 Hari": 48.0,
    "4 Sampai 7 Hari": 132.0,
    "Lebih 7 Hari": 240.0,
}

FIELDS = {
    "text": "text",
    "agency": "agency",
    "kelurahan": "kelurahan",
    "kecamatan": "kecamatan",
    "created_at": "created_at",
    "responded_at": "responded_at",
    "response_days": "response_days",
}


class HistoryError(ValueError):
    """A history file that cannot be used; the message names the file (and column)."""


def load_history(path: Path | str, fields: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per complaint with `agency` (as the file names it), `agency_class` (village
    and district offices collapsed into `Kelurahan`/`Kecamatan`, the model's labels),
    `kelurahan`, `kecamatan`, `text` (normalised), `created_at` and `responded_at`
    (timestamps, NaT where missing or unreadable), `response_days` (one of `BUCKETS`, or "")
    and `first_response_hours`, and `source_id` (the file's `id` column when `fields` names
    one, e.g. `{"id": "id"}`, else `row:<number>`). Rows without `created_at` or agency are
    dropped."""
    path = Path(path)
    fields = {**FIELDS, **(fields or {})}
    try:
        found = records.header_columns(path) if records.file_kind(path) == "csv" else None
        parts = [
            records.pick(frame, fields, first)
            for first, frame in records.read_frames(path, 8192, na_markers=True)
        ]
    except records.RecordError as exc:
        raise HistoryError(str(exc)) from exc
    if found is not None:
        missing = [fields[c] for c in ("agency", "created_at") if fields[c] not in found]
        if missing:
            raise HistoryError(f"{path}: missing column(s) {missing}; found {found}")
    if not parts:
        raise HistoryError(f"{path}: the file has no rows")
    frame = pd.concat(parts, ignore_index=True).rename(columns={"row": "source_row"})
    return prepare_history(frame)


def prepare_history(frame: pd.DataFrame) -> pd.DataFrame:
    """`load_history`'s columns from a frame of strings (or already typed values)."""
    out = pd.DataFrame(index=frame.index)
    for name in ("agency", "kelurahan", "kecamatan", "response_days"):
        column = frame[name] if name in frame else pd.Series("", index=frame.index)
        out[name] = column.fillna("").astype(str).map(lambda s: " ".join(s.split()))
    text = frame["text"] if "text" in frame else pd.Series("", index=frame.index)
    out["text"] = text.fillna("").astype(str).map(normalize_text)
    out["agency_class"] = out["agency"].map(agency_class)
    # The file's own id, else its row number: what an import recognises a complaint by again.
    if "id" in frame or "source_row" in frame:
        blank = pd.Series("", index=frame.index)
        rows = "row:" + frame["source_row"].astype(str) if "source_row" in frame else blank
        source = frame["id"].fillna("").astype(str) if "id" in frame else blank
        out["source_id"] = source.where(source != "", rows)
    for name in ("created_at", "responded_at"):
        column = frame[name] if name in frame else pd.Series(pd.NaT, index=frame.index)
        out[name] = _timestamps(column)
    out.loc[~out["response_days"].isin(BUCKETS), "response_days"] = ""
    out = out[out["created_at"].notna() & (out["agency"] != "")]
    hours = (out["responded_at"] - out["created_at"]).dt.total_seconds() / 3600
    # A response logged before the complaint is a clock error, not a fast office.
    out["first_response_hours"] = hours.where(hours >= 0)
    return out.sort_values("created_at", kind="stable").reset_index(drop=True)


def _timestamps(column: pd.Series) -> pd.Series:
    parsed = pd.to_datetime(column.replace("", None), errors="coerce", format="mixed")
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert(None)
    return parsed
