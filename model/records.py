"""The one reader of record files: CSV, JSON Lines and Parquet, in bounded chunks, with the row
number a user sees for every record, used by training (`training/data.py`), `aduan batch`
(`batch.py`) and the Ray backfill (`ray_batch.py`).

Row numbers: CSV counts its header line, as a spreadsheet shows it (the first record is row
2; a quoted field may span lines, blank lines are no records); JSON Lines counts every line,
a blank one included (it is an empty record); Parquet counts records from 1. Bytes that are
not UTF-8 are kept as lone surrogates (`surrogateescape`), so each caller decides what such a
row is worth: training refuses the file naming row and column, backfills send the row to the
errors file (`<output>.errors.csv`, written here too).

A file can be read whole or as `Span`s (byte ranges that end on record boundaries, or Parquet
row groups) that keep the whole file's row numbers: the Ray backfill's read tasks.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

from .extras import install_hint
from .spreadsheet import unguarded, write_csv
from .text import undecodable

log = logging.getLogger(__name__)

KINDS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
# pyarrow is an optional dependency: only Parquet files need it.
PARQUET_HINT = f"Parquet files need pyarrow: {install_hint('pyarrow')}"
ERROR_COLUMNS = ("row", "id", "reason")
_BLOCK = 1 << 16


class RecordError(ValueError):
    """A file that cannot be read; the message names the file (and the line or row)."""


class ParquetMissing(RecordError, ImportError):
    """pyarrow is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Span:
    """A part of a file: records `first_row`.. (the numbers users see), `rows` of them, found at
    bytes [start, end) (CSV, JSON Lines) or in row groups [start, end) (Parquet)."""

    first_row: int
    rows: int
    start: int
    end: int


def file_kind(path: Path) -> str:
    """`csv`, `jsonl` or `parquet` from the file's suffix; `RecordError` for anything else."""
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        raise RecordError(f"{path}: unsupported file type {path.suffix!r} (use {sorted(KINDS)})")
    return kind


def first_row_number(kind: str) -> int:
    """The row number a user sees for the first record: CSV counts its header line."""
    return 2 if kind == "csv" else 1


def parquet() -> Any:
    """The `pyarrow.parquet` module, or `ParquetMissing` naming what to install."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ParquetMissing(PARQUET_HINT) from exc
    return pq


def is_blank(path: Path) -> bool:
    """Whether the file holds nothing but white space (read block by block: bounded)."""
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            if block.strip():
                return False
    return True


def header_columns(path: Path) -> list[str] | None:
    """The column names a CSV header or a Parquet schema declares; None for JSON Lines, whose
    objects may differ from line to line."""
    kind = file_kind(path)
    if kind == "parquet":
        return list(_parquet_file(path).schema_arrow.names)
    if kind == "jsonl":
        return None
    with open(path, "rb") as handle:
        header = handle.readline()
    if not header.strip():
        return []
    with _csv_errors(path):
        return list(_csv(io.BytesIO(header), nrows=0).columns)


def read_frames(
    path: Path, chunk_rows: int, span: Span | None = None, *, na_markers: bool = False
) -> Iterator[tuple[int, pd.DataFrame]]:
    """The file's records as (row number of the first, frame of at most `chunk_rows` rows),
    the whole file or one `span` of it. CSV values are Python strings, as written (a cell that
    `spreadsheet.write_csv` guarded with an apostrophe, without it; with
    `na_markers`, the cells spreadsheets write for a missing value, `NA`, `N/A`, `NULL`...,
    are missing instead); `RecordError` names the line that is not a record."""
    if not path.is_file():
        raise RecordError(f"{path}: no such file")
    kind = file_kind(path)
    first = span.first_row if span else first_row_number(kind)
    if kind == "parquet":
        frames = _parquet_frames(path, chunk_rows, span)
    elif kind == "csv":
        frames = _csv_frames(path, chunk_rows, span, na_markers)
    else:
        frames = _jsonl_frames(path, chunk_rows, span, first)
    for frame in frames:
        yield first, frame
        first += len(frame)


def pick(frame: pd.DataFrame, fields: Mapping[str, str], first_row: int) -> pd.DataFrame:
    """Column `row` (numbers from `first_row`) and one string column per field, read from the
    file's column `fields[name]` ("" where the column or the value is missing)."""
    out: dict[str, Any] = {"row": range(first_row, first_row + len(frame))}
    for name, column in fields.items():
        out[name] = _strings(frame, column)
    return pd.DataFrame(out, dtype=object)


def missing_columns(
    path: Path, wanted: Iterable[str], found: Iterable[str], hint: str
) -> RecordError | None:
    """The error for `wanted` columns the file lacks (None when it has them all)."""
    found = list(found)
    missing = [c for c in wanted if c not in found]
    if not missing:
        return None
    what = f"no column {missing[0]!r}" if len(missing) == 1 else f"no columns {missing}"
    return RecordError(f"{path}: {what}; found {found} ({hint})")


def first_undecodable(frame: pd.DataFrame, first_row: int) -> tuple[int, str] | None:
    """(row number, column) of the first cell holding bytes that are not UTF-8, or None."""
    for position in range(len(frame)):
        for column in frame.columns:
            value = frame[column].iat[position]
            if isinstance(value, str) and _not_utf8(value):
                return first_row + position, str(column)
    return None


def undecodable_reason(values: Mapping[str, str]) -> str | None:
    """The errors-file reason for a record whose named values hold bytes that are not UTF-8."""
    for name, value in values.items():
        if _not_utf8(value):
            return f"bytes that are not UTF-8 in column {name!r} (the file mixes encodings)"
    return None


def errors_file(output: Path) -> Path:
    """Where the rows of `output` that could not be classified are listed."""
    return output.with_name(output.name + ".errors.csv")


def write_errors(output: Path, frames: Iterable[pd.DataFrame]) -> int:
    """Write the error rows (columns `ERROR_COLUMNS`) to `errors_file(output)`, or remove a
    stale one when there are none; returns how many."""
    path = errors_file(output)
    kept = [f[list(ERROR_COLUMNS)] for f in frames if len(f)]
    if not kept:
        path.unlink(missing_ok=True)
        return 0
    merged = pd.concat(kept, ignore_index=True)
    write_csv(merged, path)  # texts opened in a spreadsheet: no live formulas
    log.warning("%d row(s) could not be classified: see %s", len(merged), path)
    return len(merged)


def plan_spans(path: Path, rows_per_span: int) -> list[Span]:
    """`path` cut into spans of about `rows_per_span` records (Parquet: whole row groups)."""
    kind = file_kind(path)
    if kind == "parquet":
        return _parquet_spans(path, rows_per_span)
    with open(path, "rb") as handle:
        offset = len(handle.readline()) if kind == "csv" else 0
        return _line_spans(handle, kind, rows_per_span, offset)


def _not_utf8(value: str) -> bool:
    # Encoding is a C-speed test; only a string that fails it is searched for the surrogates
    # that stand for undecodable bytes.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return undecodable(value)
    return False


def _strings(frame: pd.DataFrame, column: str) -> list[str]:
    if column not in frame.columns:
        return [""] * len(frame)
    values = frame[column].astype("object")
    return [("" if v is None or (isinstance(v, float) and v != v) else str(v)) for v in values]


def _parquet_file(path: Path) -> Any:
    pq = parquet()
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow's ArrowInvalid and OSError for a file that is not one
        raise RecordError(f"{path}: cannot be read as Parquet: {exc}") from exc


def _parquet_frames(path: Path, chunk_rows: int, span: Span | None) -> Iterator[pd.DataFrame]:
    source = _parquet_file(path)
    groups = list(range(span.start, span.end)) if span else None
    for batch in source.iter_batches(batch_size=chunk_rows, row_groups=groups):
        yield batch.to_pandas()


def _parquet_spans(path: Path, rows_per_span: int) -> list[Span]:
    meta = _parquet_file(path).metadata
    spans: list[Span] = []
    first, start, rows = first_row_number("parquet"), 0, 0
    for group in range(meta.num_row_groups):
        rows += meta.row_group(group).num_rows
        if rows >= rows_per_span or group == meta.num_row_groups - 1:
            spans.append(Span(first, rows, start, group + 1))
            first, start, rows = first + rows, group + 1, 0
    return spans


def _csv(source: Any, na_markers: bool = False, **options: Any) -> Any:
    return pd.read_csv(
        source,
        dtype=object,  # python strings: arrow strings refuse the surrogates
        keep_default_na=na_markers,
        encoding="utf-8",
        encoding_errors="surrogateescape",
        **options,
    )


@contextmanager
def _csv_errors(path: Path) -> Iterator[None]:
    """pandas' parser errors as `RecordError`s naming the file."""
    try:
        yield
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise RecordError(f"{path}: cannot be parsed as CSV: {_first_line(exc)}") from exc


def _csv_frames(
    path: Path, chunk_rows: int, span: Span | None, na_markers: bool
) -> Iterator[pd.DataFrame]:
    with open(path, "rb") as handle:
        if span is None:
            source: BinaryIO = handle
        else:
            header = handle.readline()
            source = io.BufferedReader(_Range(path, span.start, span.end, header))
        with source, _csv_errors(path):
            for frame in _csv(source, na_markers, chunksize=chunk_rows):
                yield _unguarded(frame)


def _unguarded(frame: pd.DataFrame) -> pd.DataFrame:
    """A cell guarded against spreadsheet formulas (`spreadsheet.write_csv`) read back as the
    text that was written; the columns stay Python objects (arrow strings refuse the
    surrogates that stand for undecodable bytes)."""
    for column in frame.columns:
        values = frame[column].tolist()
        cleaned = [unguarded(v) for v in values]
        if cleaned != values:
            frame[column] = pd.Series(cleaned, index=frame.index, dtype=object)
    return frame


def _jsonl_frames(
    path: Path, chunk_rows: int, span: Span | None, first_row: int
) -> Iterator[pd.DataFrame]:
    start, end = (span.start, span.end) if span else (0, path.stat().st_size)
    records: list[dict[str, Any]] = []
    with io.BufferedReader(_Range(path, start, end)) as source:
        for number, raw in enumerate(source, start=first_row):
            records.append(_json_record(path, number, raw))
            if len(records) == chunk_rows:
                yield pd.DataFrame.from_records(records)
                records = []
    if records:
        yield pd.DataFrame.from_records(records)


def _json_record(path: Path, number: int, raw: bytes) -> dict[str, Any]:
    line = raw.decode("utf-8", errors="surrogateescape").strip()
    if not line:
        return {}  # a blank line: an empty record (the caller reports it)
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: line {number}: not valid JSON ({exc})") from exc
    if not isinstance(record, dict):
        raise RecordError(
            f"{path}: line {number}: expected a JSON object (JSON Lines: one object a line)"
        )
    return record


def _line_spans(handle: BinaryIO, kind: str, rows_per_span: int, offset: int) -> list[Span]:
    """Byte ranges of `rows_per_span` records each. A CSV record ends at a line end outside
    quotes (a quoted field may hold newlines); blank CSV lines are no records, as for pandas.
    Every JSON Lines line is a record (a blank one is reported as empty text)."""
    spans: list[Span] = []
    first = first_row_number(kind)
    start = position = offset
    rows = 0
    quoted = False
    for line in handle:
        position += len(line)
        if kind == "csv":
            blank = not quoted and not line.strip(b"\r\n")
            if line.count(b'"') % 2:
                quoted = not quoted
            if quoted or blank:
                continue
        rows += 1
        if rows == rows_per_span:
            spans.append(Span(first, rows, start, position))
            first, start, rows = first + rows, position, 0
    if rows or not spans:
        spans.append(Span(first, rows, start, position))
    return spans


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Range(io.RawIOBase):
    """Bytes [start, end) of a file, after `prefix` (a CSV span's header line): what a span's
    reader sees as its whole input, read as it goes, never all at once."""

    def __init__(self, path: Path, start: int, end: int, prefix: bytes = b"") -> None:
        super().__init__()
        self._handle = open(path, "rb")  # noqa: SIM115 (closed with this object)
        self._handle.seek(start)
        self._left = max(end - start, 0)
        self._prefix = prefix

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._handle.read(min(len(view), self._left))
        view[: len(data)] = data
        self._left -= len(data)
        return len(data)

    def close(self) -> None:
        self._handle.close()
        super().close()
