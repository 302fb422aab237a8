"""Loading, validating, normalising, de-duplicating and splitting labelled complaint files.

Duplicate policy (documented in data/README.md): rows are grouped by their normalised text.
Each group keeps one row, the earliest (so a later re-post cannot leak a training text into
the validation period). Its labels are the group's most frequent (agency, category) pair;
ties go to the most recent row, whose routing reflects the newest practice.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from aduan.model import records
from aduan.model.labels import LabelSet
from aduan.model.records import RecordError
from aduan.model.taxonomy import OTHER_AGENCY, Taxonomy, agency_class
from aduan.model.text import MAX_TEXT_CHARS, normalize_text

from .config import TrainConfig

log = logging.getLogger(__name__)

# Rows read at a time: the whole file ends up in memory, but never twice (raw and prepared).
CHUNK_ROWS = 10_000
_STANDARD = (
    "text",
    "agency",
    "topic",
    "category",
    "created_at",
    "address",
    "kelurahan",
    "kecamatan",
    "id",
)


# Shorter texts (after normalisation) carry nothing to learn from; such rows are skipped.
MIN_TEXT_CHARS = 3
# The column only `aduan feedback export` writes: its rows are operators' corrections.
FEEDBACK_COLUMN = "predicted_agency"
# Why rows are left out of a run (the keys of the report's `excluded`; card and log name them).
NO_TEXT_OR_AGENCY = "no usable text or agency"
DUPLICATE = "duplicate text (the earliest row kept)"
IN_GAP = "dated between train_until and valid_from"
AFTER_VALID = "dated after valid_until"


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
    # Optional: the row's id (in a feedback export, the stored request's), recorded for the
    # operators' corrections a model learned from.
    id: str = "id"

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
    split: Split | None = None  # the time split the rows were divided by
    # Rows of each data file the run kept (training + validation, after de-duplication).
    used: dict[str, int] = field(default_factory=dict)
    feedback_files: set[str] = field(default_factory=set)  # operators' corrections


def read_table(path: Path | str, columns: ColumnMap) -> pd.DataFrame:
    """The file's records in the standard columns (stripped strings, "" where missing) with
    `source_row`, the row number a user sees, read by the project's one record reader
    (`aduan.model.records`). `DataError` names the file, and the row and column where it can."""
    path = Path(path)
    fields = {name: getattr(columns, name) for name in _STANDARD}
    found: dict[str, None] = {}  # every column seen, in file order (JSON Lines may vary)
    parts = []
    try:
        _check_file(path)
        # A label file's `NA` or `N/A` cell means "no value", as pandas reads it by default.
        for first, frame in records.read_frames(path, CHUNK_ROWS, na_markers=True):
            _refuse_undecodable(path, frame, first)
            found.update(dict.fromkeys(str(c) for c in frame.columns))
            parts.append(records.pick(frame, fields, first))
    except RecordError as exc:
        raise DataError(str(exc)) from exc
    if not sum(len(part) for part in parts):
        raise DataError(f"{path}: the file has no rows")
    missing = [c for c in columns.required() if c not in found]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; found {list(found)} "
            "(map them with --column FIELD=NAME)"
        )
    out = pd.concat(parts, ignore_index=True)
    for name in _STANDARD:
        out[name] = out[name].map(str.strip)
    return out.rename(columns={"row": "source_row"}).astype({"source_row": "int64"})


def _check_file(path: Path) -> None:
    kind = records.file_kind(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if records.is_blank(path):
        raise DataError(f"{path}: the file is empty")
    if kind == "csv" and not records.header_columns(path):
        raise DataError(f"{path}: the file has no header row")


def _refuse_undecodable(path: Path, frame: pd.DataFrame, first_row: int) -> None:
    """Training refuses a file with bytes that are not UTF-8 (a backfill lists such rows in
    its errors file instead): its labels cannot be trusted either."""
    found = records.first_undecodable(frame, first_row)
    if found is None:
        return
    row, column = found
    value = frame[column].iat[row - first_row]
    raw = bytes(ord(ch) - 0xDC00 for ch in value if "\udc80" <= ch <= "\udcff")[:4]
    raise DataError(
        f"{path}: row {row}, column {column!r}: bytes that are not UTF-8 ({raw!r}); the file "
        "mixes encodings: save it as UTF-8"
    )


def load_complaints(
    path: Path | str, columns: ColumnMap | None = None, skipped: Counter[str] | None = None
) -> pd.DataFrame:
    """Load one labelled file into the standard columns, validated and normalised; rows
    without usable text or agency are skipped (a WARNING, and counted into `skipped` by
    reason when given). A file exported by `aduan feedback export` (it has the column
    `predicted_agency`) marks its rows `feedback`.

    Raises `DataError` naming file, row and column for anything that cannot be used.
    """
    columns = columns or ColumnMap()
    path = Path(path)
    out = read_table(path, columns)
    out["source_file"] = str(path)
    out["feedback"] = _is_feedback(path)
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
        if skipped is not None:
            skipped[NO_TEXT_OR_AGENCY] += dropped
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


def _is_feedback(path: Path) -> bool:
    """Whether the file is operators' corrections (`aduan feedback export` writes the
    model's answer beside the operator's in `predicted_agency`)."""
    names = records.header_columns(path)
    if names is None:  # JSON Lines: the first object's keys
        first = next(iter(records.read_frames(path, 1)), None)
        names = [str(c) for c in first[1].columns] if first is not None else []
    return FEEDBACK_COLUMN in names


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
        # the complaint's own wall-clock time: its month is the city's month, not UTC's (a
        # complaint at 03:00 WIB on the 1st belongs to that month's window)
        parsed = parsed.dt.tz_localize(None)
    return parsed


def load_many(
    paths: list[Path] | list[str],
    columns: ColumnMap | None = None,
    skipped: Counter[str] | None = None,
) -> pd.DataFrame:
    """Load and concatenate several labelled files (e.g. the export plus operator feedback)."""
    if not paths:
        raise DataError("no data file given")
    frames = [load_complaints(p, columns, skipped) for p in paths]
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


@dataclass(frozen=True)
class Split:
    """The time split of a run (inclusive days): training up to `train_until`, validation
    `valid_from`..`valid_until`; `basis` says how it was chosen."""

    train_until: str
    valid_from: str
    valid_until: str
    basis: str

    def to_dict(self) -> dict[str, str]:
        return {
            "train_until": self.train_until,
            "valid_from": self.valid_from,
            "valid_until": self.valid_until,
            "basis": self.basis,
        }


def plan_split(
    dates: pd.Series,
    *,
    valid_months: int = 2,
    train_until: str | None = None,
    valid_from: str | None = None,
    valid_until: str | None = None,
) -> Split:
    """The split a run uses. By default the validation window is the newest `valid_months`
    months present in `dates` (up to `valid_until` when given) and training is every month
    before it. A month is present when any row is dated in it: the newest month of an export
    usually ends mid-month and still counts as one (validation then ends on the newest row's
    day). `train_until` and/or `valid_from` override: given one, the other is the next (or
    previous) day."""
    if dates.empty:
        raise DataError("no dated rows to split")
    newest = dates.max().normalize()
    end = pd.Timestamp(valid_until) if valid_until else newest
    day = pd.Timedelta(days=1)
    if train_until or valid_from:
        start = pd.Timestamp(valid_from) if valid_from else pd.Timestamp(train_until) + day
        last = pd.Timestamp(train_until) if train_until else start - day
        basis = "given"
    else:
        if valid_months < 1:
            raise DataError(f"valid_months must be 1 or more, got {valid_months}")
        months = sorted(dates[dates.dt.normalize() <= end].dt.to_period("M").unique())
        if len(months) <= valid_months:
            span = f" ({months[0]}..{months[-1]})" if months else ""
            raise DataError(
                f"the data spans {len(months)} month(s){span}: {valid_months} validation "
                "month(s) leave none to train on (--valid-months N, --valid-from DATE)"
            )
        chosen = months[-valid_months:]
        start, last = chosen[0].start_time, chosen[0].start_time - day
        basis = f"newest {valid_months} month(s) present: {chosen[0]}..{chosen[-1]}"
        if end < chosen[-1].end_time.normalize():
            basis += f" ({chosen[-1]} partial, to {end.date()})"
    return Split(str(last.date()), str(start.date()), str(end.date()), basis)


def prepare(
    frame: pd.DataFrame,
    taxonomy: Taxonomy,
    *,
    train_until: str | None = None,
    valid_from: str | None = None,
    valid_until: str | None = None,
    min_agency_rows: int,
    valid_months: int = 2,
    skipped: Counter[str] | None = None,
) -> Splits:
    """Labels, de-duplication, the time split (`plan_split`) and rare-agency folding, in that
    order. Every row left out is counted by reason (`skipped`: rows the files' reading
    dropped) in the report's `excluded` and logged as a WARNING."""
    labelled = add_labels(frame, taxonomy)
    deduped, dup_report = deduplicate(labelled)
    split = plan_split(
        deduped["created_at"],
        valid_months=valid_months,
        train_until=train_until or None,
        valid_from=valid_from or None,
        valid_until=valid_until or None,
    )
    if pd.Timestamp(split.valid_from) <= pd.Timestamp(split.train_until):
        raise DataError(
            f"valid_from {split.valid_from} must come after train_until {split.train_until}: "
            "validation months must be newer than every training row"
        )
    train, valid = time_split(deduped, split.train_until, split.valid_from, split.valid_until)
    if train.empty:
        raise DataError(f"no training rows on or before {split.train_until}")
    if valid.empty:
        raise DataError(f"no validation rows from {split.valid_from} to {split.valid_until}")
    day = deduped["created_at"].dt.normalize()
    excluded = Counter(skipped or {})
    excluded[DUPLICATE] += dup_report["duplicates_removed"]
    excluded[IN_GAP] += int(
        ((day > pd.Timestamp(split.train_until)) & (day < pd.Timestamp(split.valid_from))).sum()
    )
    excluded[AFTER_VALID] += int((day > pd.Timestamp(split.valid_until)).sum())
    excluded = Counter({reason: n for reason, n in excluded.items() if n})
    for reason, n in excluded.items():
        log.warning("%d row(s) left out: %s", n, reason)
    agency_map = fold_rare_agencies(train, min_agency_rows)
    train, valid = apply_agency_map(train, agency_map), apply_agency_map(valid, agency_map)
    _check_classes(train)
    labels = {
        head: LabelSet.from_values(pd.concat([train[head], valid[head]]))
        for head in ("category", "agency")
    }
    used = pd.concat([train, valid], ignore_index=True)
    report = {
        "rows_loaded": len(frame),
        **dup_report,
        "train_rows": len(train),
        "valid_rows": len(valid),
        "train_period": _period(train),
        "valid_period": _period(valid),
        "split": split.to_dict(),
        "excluded": dict(excluded),
        "months": {
            str(k): int(v)
            for k, v in used["created_at"].dt.to_period("M").value_counts().sort_index().items()
        },
        "feedback_rows": int(used["feedback"].sum()) if "feedback" in used else 0,
        "classes": {head: len(ls) for head, ls in labels.items()},
    }
    log.info(
        "split: train <= %s (%d rows), validate %s..%s (%d rows); %s",
        split.train_until,
        len(train),
        split.valid_from,
        split.valid_until,
        len(valid),
        split.basis,
    )
    splits = Splits(train, valid, labels, agency_map, report, split=split)
    if "source_file" in used:
        splits.used = {str(k): int(v) for k, v in used.groupby("source_file").size().items()}
    return splits


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
    """The configured files, labelled, de-duplicated and split by time (the settings' dates,
    else the newest `valid_months` months of the data); and the taxonomy."""
    taxonomy = Taxonomy.load(config.taxonomy or None)
    skipped: Counter[str] = Counter()
    frame = load_many(config.data, ColumnMap(**config.columns), skipped)
    splits = prepare(
        frame,
        taxonomy,
        train_until=config.train_until or None,
        valid_from=config.valid_from or None,
        valid_until=config.valid_until or None,
        min_agency_rows=config.min_agency_rows,
        valid_months=config.valid_months,
        skipped=skipped,
    )
    splits.files = {str(k): int(v) for k, v in frame.groupby("source_file").size().items()}
    splits.feedback_files = {str(f) for f in frame.loc[frame["feedback"], "source_file"].unique()}
    log.info("data: %s", splits.report)
    return splits, taxonomy
