"""`aduan batch`: classify a CSV, JSON Lines or Parquet file of any size in bounded memory.

The input is read in chunks of `chunk_rows`; each chunk is classified in one pipeline call
(tokenised once, length-sorted batches inside) and written as one part file under
`<output>.parts/`, so an interrupted run resumes at the first missing part. When every part
is there they are joined into the output, in input order. Rows that cannot be classified (empty
text, bytes that are not UTF-8) go to `<output>.errors.csv` with their row number and reason,
never silently dropped. Reading (formats, row numbers, column mapping, the errors file) is
`records.py`'s, shared with training and the Ray backfill.

JSON Lines output holds the HTTP answer's objects as they are (plus `row`); CSV and Parquet get
flat columns, with the top-k lists and the unit as JSON text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import records
from .pipeline import Pipeline, flat_labels
from .records import ERROR_COLUMNS, RecordError, Span
from .spreadsheet import write_csv
from .text import MAX_TEXT_CHARS, normalize_text

log = logging.getLogger(__name__)

# The columns of CSV and Parquet output (`flat_answer`), in order.
FLAT_COLUMNS = (
    "row",
    "id",
    "category",
    "category_score",
    "agency",
    "agency_score",
    "route",
    "route_reason",
    "kelurahan",
    "kecamatan",
    "office",
    "category_top_k",
    "agency_top_k",
    "model_version",
)


class BatchError(RecordError):
    """A batch job that cannot run; the message names the file and what is wrong."""


@dataclass(frozen=True)
class BatchColumns:
    text: str = "text"
    id: str = "id"
    address: str = "address"


@dataclass
class BatchReport:
    rows: int = 0  # input rows
    classified: int = 0  # rows in the output
    errors: int = 0  # rows in the errors file
    resumed_parts: int = 0  # chunks an earlier run had finished
    processed: int = 0  # rows classified by this run
    seconds: float = 0.0

    @property
    def texts_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds else 0.0


def read_chunks(
    path: Path, chunk_rows: int, columns: BatchColumns, span: Span | None = None
) -> Iterator[pd.DataFrame]:
    """The input (or one `span` of it) as string columns `row` (the row number a user sees),
    `text`, `id` and `address`, `chunk_rows` rows at a time."""
    for first, frame in records.read_frames(path, chunk_rows, span):
        yield standard_frame(path, frame, columns, first)


def standard_frame(
    path: Path, frame: pd.DataFrame, columns: BatchColumns, first_row: int
) -> pd.DataFrame:
    """A raw chunk as string columns `row`, `text`, `id`, `address`."""
    missing = records.missing_columns(
        path, [columns.text], frame.columns, "choose one with --text-column"
    )
    if missing is not None:
        raise missing
    return records.pick(frame, asdict(columns), first_row)


def classify_frame(
    pipeline: Pipeline, frame: pd.DataFrame, top_k: int = 3
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One chunk (columns row, id, text, address) -> (answers, errors)."""
    answers: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    good = []
    for record in frame.itertuples(index=False):
        reason = records.undecodable_reason({"text": record.text, "address": record.address})
        if reason:
            errors.append({"row": record.row, "id": record.id, "reason": reason})
        elif len(record.text) > MAX_TEXT_CHARS:
            reason = f"column 'text' has {len(record.text):,} characters (limit {MAX_TEXT_CHARS:,})"
            errors.append({"row": record.row, "id": record.id, "reason": reason})
        elif not normalize_text(record.text):
            errors.append({"row": record.row, "id": record.id, "reason": "empty text"})
        else:
            good.append(record)
    routed = pipeline.run([(r.text, r.address or None) for r in good], top_k=top_k) if good else []
    for record, answer in zip(good, routed, strict=True):
        answers.append(
            {
                "row": record.row,
                "id": record.id or None,
                **answer.to_dict(top_k),
                "model_version": answer.model_version,
            }
        )
    return answers, errors


def flat_answer(answer: dict[str, Any]) -> dict[str, Any]:
    """CSV/Parquet columns of one answer."""
    unit = answer.get("unit") or {}
    return {
        "row": answer["row"],
        "id": answer["id"],
        **flat_labels(answer),
        "kelurahan": unit.get("kelurahan"),
        "kecamatan": unit.get("kecamatan"),
        "office": unit.get("office"),
        "category_top_k": json.dumps(answer["category_top_k"], ensure_ascii=False),
        "agency_top_k": json.dumps(answer["agency_top_k"], ensure_ascii=False),
        "model_version": answer["model_version"],
    }


def _write_part(path: Path, kind: str, answers: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    if kind == "jsonl":
        lines = "".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers)
        tmp.write_text(lines, encoding="utf-8")
    else:
        frame = pd.DataFrame([flat_answer(a) for a in answers], columns=list(FLAT_COLUMNS))
        if kind == "csv":  # ids and labels opened in a spreadsheet: no live formulas
            write_csv(frame, tmp, header=False)
        else:
            frame.to_parquet(tmp, index=False)
    tmp.replace(path)  # a part exists only when complete


def _join(parts: list[Path], output: Path, kind: str) -> None:
    tmp = output.with_name(output.name + ".tmp")
    if kind == "parquet":
        pq = records.parquet()
        writer = None
        for part in parts:
            table = pq.read_table(part)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table.cast(writer.schema))
        if writer is None:
            pd.DataFrame(columns=list(FLAT_COLUMNS)).to_parquet(tmp, index=False)
        else:
            writer.close()
    else:
        with open(tmp, "wb") as out:
            if kind == "csv":
                out.write((",".join(FLAT_COLUMNS) + "\n").encode())
            for part in parts:
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, out)
    tmp.replace(output)


def _fingerprint(path: Path, settings: dict[str, Any]) -> str:
    stat = path.stat()
    payload = json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, settings])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def classify_file(
    pipeline: Pipeline,
    source: Path,
    output: Path,
    *,
    columns: BatchColumns | None = None,
    chunk_rows: int = 2048,
    top_k: int = 3,
    progress: bool = True,
) -> BatchReport:
    """Classify `source` into `output` (format by suffix), resuming an interrupted run."""
    from .progress import progress as progress_bar

    columns = columns or BatchColumns()
    kind = records.file_kind(output)
    if "parquet" in (kind, records.file_kind(source)):
        records.parquet()  # pyarrow missing: say so before any work
    settings = {"columns": asdict(columns), "chunk_rows": chunk_rows, "top_k": top_k}
    settings["model_version"] = pipeline.version
    parts_dir = output.with_name(output.name + ".parts")
    stamp = parts_dir / "job.json"
    fingerprint = _fingerprint(source, settings)
    if parts_dir.is_dir():
        known = json.loads(stamp.read_text()) if stamp.is_file() else {}
        if known.get("fingerprint") != fingerprint:
            log.info("%s holds another job's parts; starting afresh", parts_dir)
            shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"fingerprint": fingerprint, **settings}))
    report = BatchReport()
    started = time.perf_counter()
    parts: list[Path] = []
    errors: list[Path] = []
    bar = progress_bar(desc=f"classifying {source.name}", unit=" texts", disable=not progress)
    for number, frame in enumerate(read_chunks(source, chunk_rows, columns)):
        part = parts_dir / f"part-{number:06d}.{kind}"
        part_errors = parts_dir / f"errors-{number:06d}.csv"
        parts.append(part)
        errors.append(part_errors)
        report.rows += len(frame)
        if part.is_file() and part_errors.is_file():
            report.resumed_parts += 1
            bar.update(len(frame))
            continue
        answers, bad = classify_frame(pipeline, frame, top_k)
        report.processed += len(frame)
        _write_part(part, kind, answers)
        pd.DataFrame(bad, columns=list(ERROR_COLUMNS)).to_csv(part_errors, index=False)
        bar.update(len(frame))
        bar.set_postfix(errors=report.errors + len(bad))
    bar.close()
    _join(parts, output, kind)
    frames = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in errors]
    report.errors = records.write_errors(output, frames)
    report.classified = report.rows - report.errors
    shutil.rmtree(parts_dir)
    report.seconds = time.perf_counter() - started
    return report
