"""First-response SLAs from the history: each office's p85 hours to the first response.

`sla_table` is the measurement; `merge_offices` writes it into the offices file's shape
(`offices: [{name, sla_hours, ...}]`) without touching anything a person wrote there: other
keys of the file, other keys of each office, and an office's `sla_hours` set by hand when
`overwrite` is off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from .taxonomy import KECAMATAN, KELURAHAN

DEFAULT_QUANTILE = 0.85
# Fewer first responses than this and a quantile is noise: the office gets no SLA from the
# history (the service's default applies).
DEFAULT_MIN_ROWS = 20


@dataclass(frozen=True)
class Sla:
    """One office's measured first-response time."""

    name: str
    sla_hours: float  # the quantile, rounded up to a whole hour
    rows: int  # complaints with a first response
    median_hours: float
    within_24h: float  # share answered within 24 hours

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sla_hours": self.sla_hours,
            "rows": self.rows,
            "median_hours": round(self.median_hours, 2),
            "within_24h": round(self.within_24h, 4),
        }


def sla_table(
    history: pd.DataFrame,
    quantile: float = DEFAULT_QUANTILE,
    by: str = "agency",
    min_rows: int = DEFAULT_MIN_ROWS,
) -> list[Sla]:
    """Per value of `by` (a column of `aduan.model.history.load_history`'s frame: `agency`,
    the office as the file names it, or `agency_class`) with at least `min_rows` first
    responses: the `quantile` of `first_response_hours`, rounded up to a whole hour (at least
    1). Largest offices first."""
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be between 0 and 1, got {quantile}")
    answered = history.dropna(subset=["first_response_hours"])
    out = []
    for name, hours in answered.groupby(by)["first_response_hours"]:
        if len(hours) < min_rows:
            continue
        value = float(hours.quantile(quantile))
        out.append(
            Sla(
                name=str(name),
                sla_hours=float(max(1, math.ceil(value))),
                rows=len(hours),
                median_hours=float(hours.median()),
                within_24h=float((hours <= 24).mean()),
            )
        )
    return sorted(out, key=lambda s: (-s.rows, s.name))


def merge_offices(
    document: dict[str, Any] | None, table: list[Sla], overwrite: bool = True
) -> dict[str, Any]:
    """The offices document with each measured office's `sla_hours` set: an office already
    listed keeps its other keys (and its own `sla_hours` unless `overwrite`), a new one is
    appended as `{name, sla_hours}`; the document's other keys stay. Returns a new dict."""
    document = dict(document or {})
    offices: list[dict[str, Any]] = []
    for i, office in enumerate(document.get("offices") or []):
        if not isinstance(office, dict) or not isinstance(office.get("name"), str):
            raise ValueError(f"offices[{i}] has no name")
        offices.append(dict(office))
    by_name = {o["name"]: o for o in offices}
    for sla in table:
        hours = int(sla.sla_hours) if float(sla.sla_hours).is_integer() else sla.sla_hours
        known = by_name.get(sla.name)
        if known is None:
            by_name[sla.name] = {"name": sla.name, "sla_hours": hours}
            offices.append(by_name[sla.name])
        elif overwrite or "sla_hours" not in known:
            known["sla_hours"] = hours
    document["offices"] = offices
    return document


def office_slas(
    history: pd.DataFrame, quantile: float = DEFAULT_QUANTILE, min_rows: int = DEFAULT_MIN_ROWS
) -> list[Sla]:
    """What the offices file gets: every office the history names with enough rows, plus the
    pooled `Kelurahan` and `Kecamatan` classes (the model's labels), which a village or
    district office too small for its own figure falls back on."""
    own = sla_table(history, quantile, "agency", min_rows)
    pooled = [
        s
        for s in sla_table(history, quantile, "agency_class", min_rows)
        if s.name in (KELURAHAN, KECAMATAN)
    ]
    return own + pooled
