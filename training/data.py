"""Loading, validating, normalising, de-duplicating and splitting labelled complaint files.

Duplicate policy (documented in data/README.md): rows are grouped by their normalised text.
Each group keeps one row, the earliest (so a later re-post cannot leak a training text into
the validation period). Its labels are the group's most frequent (agency, category) pair;
ties go to the most recent row, whose routing reflects the newest practice.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from aduan.model.labels import LabelSet
from aduan.model.taxonomy import OTHER_AGENCY, Taxonomy, agency_class
from aduan.model.text import MAX_TEXT_CHARS, normalize_text, undecodable

from .config import TrainConfig

log = logging.getLogger(__name__)

SUFFIXES = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_STANDARD = (
    "text",
    "agency",
    "topic",
    "category",
    "created_at",
    "address",
    "kelurahan",
    "kecamatan",
)


# Shorter texts (after normalisation) carry nothing to learn from; such rows are skipped.
MIN_TEXT_CHARS = 3


class DataError(ValueError):
    """Input data that cannot be used; the message names the file, row and column."""


@dataclass(frozen=True)
class ColumnMap:
    """Which column of the input file holds each field. Defaults match the Surabaya export."""

    text: str = "text"
    agency: str = "agency"
    topic: str = "topic"
    created_at: str = "created_at"
    address: str = "address"
    kelurahan: str = "kelurahan"
    kecamatan: str = "kecamatan"
    # Optional: a file that already carries category codes (e.g. exported operator feedback).
    category: str = "category"

    def required(self) -> tuple[str, ...]:
        return (self.text, self.agency, self.created_at)


@dataclass
class Splits:
    """Prepared training and validation rows plus what preparation did to the data."""

    train: pd.DataFrame
    valid: pd.DataFrame
    labels: dict[str, LabelSet]
    agency_map: dict[str, str]
    report: dict[str, Any] = field(default_factory=dict)
    # Usable rows read from each data file (path as given): recorded with the model.
    files: dict[str, int] = field(default_factory=dict)


def _row_number(kind: str, index: int) -> int:
    # CSV row numbers count the header line, as a spreadsheet shows them.
    return index + 2 if kind == "csv" else index + 1


def _check_bytes(path: Path) -> None:
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path}: the file is empty")
    kind = SUFFIXES[path.suffix.lower()]
    if kind == "parquet":
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        where = _undecodable_cell(data, kind) or f"line {line}"
        raise DataError(
            f"{path}: {where}: bytes that are not UTF-8 (byte {exc.start}: "
            f"{data[exc.start : exc.start + 4]!r}); the file mixes encodings: save it as UTF-8"
        ) from exc


def _bad(value: object) -> bool:
    return isinstance(value, str) and undecodable(value)


def _undecodable_cell(data: bytes, kind: str) -> str | None:
    """ "row R, column 'C'" of the first cell holding bytes that are not UTF-8."""
    text = data.decode("utf-8", errors="surrogateescape")
    if kind == "json":
        for number, line in enumerate(text.splitlines(), start=1):
            if not _bad(line):
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                return f"row {number}"
            bad = [k for k, v in record.items() if _bad(v)] if isinstance(record, dict) else []
            return f"row {number}, column {bad[0]!r}" if bad else f"row {number}"
        return None
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader, [])
        for number, record in enumerate(reader, start=2):
            for i, value in enumerate(record):
                if _bad(value):
                    name = header[i] if i < len(header) else f"#{i + 1}"
                    return f"row {number}, column {name!r}"
    except csv.Error:
        return None
    finally:
        csv.field_size_limit(limit)
    return None


def _csv_header(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return next(csv.reader(io.StringIO(handle.readline())), [])


def read_table(path: Path | str) -> tuple[pd.DataFrame, str]:
    """Read a CSV, JSON Lines or Parquet file through `datasets`; every column as text."""
    import datasets

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (use {sorted(SUFFIXES)})")
    _check_bytes(path)
    kwargs: dict[str, Any] = {}
    if kind == "csv":
        header = _csv_header(path)
        if not header:
            raise DataError(f"{path}: the file has no header row")
        kwargs["features"] = datasets.Features({c: datasets.Value("string") for c in header})
    datasets.disable_progress_bars()
    try:
        table = datasets.load_dataset(
            kind, data_files=str(path), split="train", keep_in_memory=True, **kwargs
        )
    except Exception as exc:  # datasets wraps parser errors in several types
        cause = _root_cause(exc)
        if "corresponds to no data" in cause:  # a header and nothing else
            raise DataError(f"{path}: the file has no rows") from exc
        raise DataError(f"{path}: cannot be parsed as {kind}: {cause}") from exc
    frame = table.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    if frame.empty:
        raise DataError(f"{path}: the file has no rows")
    return frame, kind


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _text_column(frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series([""] * len(frame), index=frame.index, dtype="object")
    values = frame[column].astype("object")
    return values.where(values.notna(), "").map(lambda v: str(v).strip())


def load_complaints(path: Path | str, columns: ColumnMap | None = None) -> pd.DataFrame:
    """Load one labelled file into the standard columns, validated and normalised.

    Raises `DataError` naming file, row and column for anything that cannot be used.
    """
    columns = columns or ColumnMap()
    path = Path(path)
    frame, kind = read_table(path)
    missing = [c for c in columns.required() if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; found {list(frame.columns)} "
            "(map them with --column FIELD=NAME)"
        )
    out = pd.DataFrame({name: _text_column(frame, getattr(columns, name)) for name in _STANDARD})
    out["source_row"] = [_row_number(kind, i) for i in range(len(frame))]
    out["source_file"] = str(path)
    _check_lengths(out, path, columns.text)
    if (out["agency"] == "").all():
        raise DataError(f"{path}: column {columns.agency!r}: the label column is entirely empty")
    out["created_at"] = _parse_dates(out, path, columns.created_at)
    out["text"] = out["text"].map(normalize_text)
    short = (out["text"] != "") & (out["text"].str.len() < MIN_TEXT_CHARS)
    usable = (out["text"].str.len() >= MIN_TEXT_CHARS) & (out["agency"] != "")
    dropped = int((~usable).sum())
    first = int(short.to_numpy().nonzero()[0][0]) if short.any() else None
    if first is not None:
        log.warning(
            "%s: %d row(s) whose column %r has fewer than %d characters skipped (first: row %d)",
            path,
            int(short.sum()),
            columns.text,
            MIN_TEXT_CHARS,
            out["source_row"].iloc[first],
        )
    if dropped:
        log.warning("%s: %d row(s) without usable text or agency skipped", path, dropped)
    if not usable.any():
        detail = ""
        if first is not None:
            detail = (
                f"; {int(short.sum())} row(s) have column {columns.text!r} shorter than "
                f"{MIN_TEXT_CHARS} characters (first: row {out['source_row'].iloc[first]}: "
                f"{out['text'].iloc[first]!r})"
            )
        raise DataError(
            f"{path}: no usable rows (every row lacks text or {columns.agency!r}){detail}"
        )
    return out[usable].reset_index(drop=True)


def _check_lengths(frame: pd.DataFrame, path: Path, column: str) -> None:
    """A text longer than `MAX_TEXT_CHARS` means a broken file: refuse it, naming the row."""
    lengths = frame["text"].str.len()
    if (lengths > MAX_TEXT_CHARS).any():
        first = int((lengths > MAX_TEXT_CHARS).to_numpy().nonzero()[0][0])
        raise DataError(
            f"{path}: row {frame['source_row'].iloc[first]}: column {column!r}: a field of "
            f"{int(lengths.iloc[first]):,} characters (the limit is {MAX_TEXT_CHARS:,}); an "
            "unclosed quote may have swallowed the rows after it"
        )


def _parse_dates(frame: pd.DataFrame, path: Path, column: str) -> pd.Series:
    raw = frame["created_at"]
    parsed = pd.to_datetime(raw, errors="coerce", format="mixed")
    bad = parsed.isna() & (frame["text"] != "")
    if bad.any():
        first = int(bad.to_numpy().nonzero()[0][0])
        value = raw.iloc[first]
        raise DataError(
            f"{path}: row {frame['source_row'].iloc[first]}: column {column!r}: "
            f"unparseable date {value!r} ({int(bad.sum())} such row(s))"
        )
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert(None)
    return parsed


def load_many(paths: list[Path] | list[str], columns: ColumnMap | None = None) -> pd.DataFrame:
    """Load and concatenate several labelled files (e.g. the export plus operator feedback)."""
    if not paths:
        raise DataError("no data file given")
    frames = [load_complaints(p, columns) for p in paths]
    return pd.concat(frames, ignore_index=True)


def add_labels(frame: pd.DataFrame, taxonomy: Taxonomy) -> pd.DataFrame:
    """Derive the agency class and the category (from the topic via the taxonomy)."""
    frame = frame.copy()
    frame["agency_raw"] = frame["agency"]
    frame["agency"] = frame["agency"].map(agency_class)
    given = frame["category"].where(frame["category"] != "")
    frame["category"] = given.fillna(frame["topic"].map(taxonomy.category_of_topic))
    return frame


def deduplicate(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Apply the module's duplicate policy; returns the kept rows and counts."""
    frame = frame.sort_values("created_at", kind="stable").reset_index(drop=True)
    keep_rows = []
    conflicts = 0
    for _, group in frame.groupby("text", sort=False):
        if len(group) == 1:
            keep_rows.append(group.iloc[0])
            continue
        pairs = list(zip(group["agency"], group["category"], strict=True))
        counts = Counter(pairs)
        if len(counts) > 1:
            conflicts += 1
        top = max(counts.values())
        # Latest pair among the most frequent ones wins the tie.
        winner = next(p for p in reversed(pairs) if counts[p] == top)
        row = group.iloc[0].copy()
        row["agency"], row["category"] = winner
        keep_rows.append(row)
    kept = pd.DataFrame(keep_rows).sort_values("created_at", kind="stable").reset_index(drop=True)
    return kept, {"duplicates_removed": len(frame) - len(kept), "conflicting_groups": conflicts}


def fold_rare_agencies(train: pd.DataFrame, min_rows: int) -> dict[str, str]:
    """Map every agency class with fewer than `min_rows` training rows to `Lainnya`."""
    counts = train["agency"].value_counts()
    return {str(a): (str(a) if n >= min_rows else OTHER_AGENCY) for a, n in counts.items()}


def apply_agency_map(frame: pd.DataFrame, agency_map: dict[str, str]) -> pd.DataFrame:
    """Agencies seen at training keep their mapped class; unseen ones become `Lainnya`."""
    frame = frame.copy()
    frame["agency"] = frame["agency"].map(lambda a: agency_map.get(a, OTHER_AGENCY))
    return frame


def time_split(
    frame: pd.DataFrame, train_until: str, valid_from: str, valid_until: str | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on rows up to `train_until` (whole day), validate `valid_from`..`valid_until`."""
    day = frame["created_at"].dt.normalize()
    train = frame[day <= pd.Timestamp(train_until)]
    valid_mask = day >= pd.Timestamp(valid_from)
    if valid_until:
        valid_mask &= day <= pd.Timestamp(valid_until)
    return train.reset_index(drop=True), frame[valid_mask].reset_index(drop=True)


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def check_date(value: str, name: str) -> str:
    if not _ISO_DATE.match(value):
        raise DataError(f"{name}: expected a date as YYYY-MM-DD, got {value!r}")
    return value


def prepare(
    frame: pd.DataFrame,
    taxonomy: Taxonomy,
    *,
    train_until: str,
    valid_from: str,
    valid_until: str | None,
    min_agency_rows: int,
) -> Splits:
    """Labels, de-duplication, the time split and rare-agency folding, in that order."""
    if pd.Timestamp(valid_from) <= pd.Timestamp(train_until):
        raise DataError(
            f"valid_from {valid_from} must come after train_until {train_until}: "
            "validation months must be newer than every training row"
        )
    labelled = add_labels(frame, taxonomy)
    deduped, dup_report = deduplicate(labelled)
    train, valid = time_split(deduped, train_until, valid_from, valid_until)
    if train.empty:
        raise DataError(f"no training rows on or before {train_until}")
    if valid.empty:
        raise DataError(f"no validation rows from {valid_from} to {valid_until or 'the end'}")
    agency_map = fold_rare_agencies(train, min_agency_rows)
    train, valid = apply_agency_map(train, agency_map), apply_agency_map(valid, agency_map)
    _check_classes(train)
    labels = {
        head: LabelSet.from_values(pd.concat([train[head], valid[head]]))
        for head in ("category", "agency")
    }
    report = {
        "rows_loaded": len(frame),
        **dup_report,
        "train_rows": len(train),
        "valid_rows": len(valid),
        "train_period": _period(train),
        "valid_period": _period(valid),
        "classes": {head: len(ls) for head, ls in labels.items()},
    }
    return Splits(train, valid, labels, agency_map, report)


def _check_classes(train: pd.DataFrame) -> None:
    """A classifier needs at least two classes per head in its training rows."""
    files = ", ".join(sorted({str(f) for f in train.get("source_file", pd.Series([])).unique()}))
    for head, column in (("agency", "agency"), ("category", "topic/category")):
        classes = train[head].dropna().unique()
        if len(classes) < 2:
            only = repr(str(classes[0])) if len(classes) else "none"
            raise DataError(
                f"{files or 'the data'}: column {column!r}: the training rows hold one {head} "
                f"class only ({only}, rows {int(train['source_row'].min())}-"
                f"{int(train['source_row'].max())}); a classifier needs at least two"
            )


def _period(frame: pd.DataFrame) -> list[str]:
    return [str(frame["created_at"].min().date()), str(frame["created_at"].max().date())]


def load_splits(config: TrainConfig) -> tuple[Splits, Taxonomy]:
    """The configured files, labelled, de-duplicated and split by time; and the taxonomy."""
    taxonomy = Taxonomy.load(config.taxonomy or None)
    frame = load_many(config.data, ColumnMap(**config.columns))
    splits = prepare(
        frame,
        taxonomy,
        train_until=config.train_until,
        valid_from=config.valid_from,
        valid_until=config.valid_until or None,
        min_agency_rows=config.min_agency_rows,
    )
    splits.files = {str(k): int(v) for k, v in frame.groupby("source_file").size().items()}
    log.info("data: %s", splits.report)
    return splits, taxonomy
