"""Figures the reliability tests measure, written where `make reliability` collects them for
RELIABILITY.md (`ADUAN_FIGURES=DIR`); without the variable nothing is written."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any


def machine() -> str:
    """What the figures were measured on: cores and the load average when measured (the
    machine is shared, so timings are noisy; ratios travel better)."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.machine()}, {os.cpu_count()} cores, load {load:.1f}"


def record(name: str, what: str, figures: dict[str, Any], command: str) -> None:
    """One row of RELIABILITY.md's table: `name` (the test), what it does, its figures and
    the command that reproduces them."""
    folder = os.environ.get("ADUAN_FIGURES")
    if not folder:
        return
    path = Path(folder) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {
        "test": name,
        "what": what,
        "figures": figures,
        "command": command,
        "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%d %H:%M"),
    }
    path.write_text(json.dumps(row, indent=1, ensure_ascii=False) + "\n")
