"""`aduan batch --engine ray`: a backfill of a large CSV, JSON Lines or Parquet file on Ray Data.

The file is planned into read tasks (Parquet row groups; CSV and JSON Lines byte ranges that
end on record boundaries, found by one pass over the bytes), so every row keeps the row number
`aduan batch` gives it. Ray Data streams the blocks through `map_batches` into a pool of actors,
each holding one loaded `Pipeline` (the same `classify_frame` as `aduan batch`), with back
pressure, so memory stays bounded whatever the file's size. The driver receives the classified
blocks in input order and writes one Parquet file with `aduan batch`'s columns, and the rows that
could not be classified to `<output>.errors.csv`.

On a cluster (`RAY_ADDRESS`), the model directory and the input must be readable at the same
path on every node (a shared volume); the output is written by the driver.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from .artifacts import read_config
from .batch import (
    ERROR_COLUMNS,
    FLAT_COLUMNS,
    BatchColumns,
    BatchError,
    BatchReport,
    classify_frame,
    first_row_number,
    flat_answer,
    standard_frame,
    undecodable_reason,
)
from .pipeline import Pipeline
from .ray_runtime import connect, require_ray
from .resources import default_gazetteer
from .spreadsheet import write_csv

log = logging.getLogger(__name__)

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
PROBLEM = "problem"  # a read task's verdict on a row ("" or the error reason)
ERROR = "error"  # the classifier actors' verdict, the same way
READ_TASK_CPUS = 0.1  # reading is light; the actors get the cores
SCORES = ("category_score", "agency_score")


@dataclass(frozen=True)
class Slice:
    """One read task's part of the input: rows `first_row`.. (the numbers users see), found at
    bytes [start, end) (CSV, JSON Lines) or in row groups [start, end) (Parquet)."""

    first_row: int
    rows: int
    start: int
    end: int


@dataclass(frozen=True)
class RayBatchOptions:
    actors: int = 0  # 0: one per CPU of the cluster
    cpus_per_actor: float = 0.0  # 0: the cluster's CPUs (less the readers') shared out
    rows_per_task: int = 20_000
    batch_rows: int = 1024
    address: str | None = None


def _kind(path: Path) -> str:
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise BatchError(f"{path}: unsupported file type {path.suffix!r} (use {sorted(FORMATS)})")
    return kind


def plan_slices(path: Path, kind: str, rows_per_task: int) -> tuple[list[Slice], bytes]:
    """The read tasks of `path` and, for CSV, its header line."""
    if kind == "parquet":
        return _parquet_slices(path, rows_per_task), b""
    with open(path, "rb") as handle:
        header = handle.readline() if kind == "csv" else b""
        return _line_slices(handle, kind, rows_per_task, len(header)), header


def _parquet_slices(path: Path, rows_per_task: int) -> list[Slice]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    slices: list[Slice] = []
    first, start, rows = first_row_number("parquet"), 0, 0
    for group in range(meta.num_row_groups):
        rows += meta.row_group(group).num_rows
        if rows >= rows_per_task or group == meta.num_row_groups - 1:
            slices.append(Slice(first, rows, start, group + 1))
            first, start, rows = first + rows, group + 1, 0
    return slices


def _line_slices(handle: Any, kind: str, rows_per_task: int, offset: int) -> list[Slice]:
    """Byte ranges of `rows_per_task` records each. A CSV record ends at a line end outside
    quotes (a quoted field may hold newlines); blank CSV lines are no records, as for pandas.
    Every JSON Lines line is a record (a blank one is reported as empty text)."""
    slices: list[Slice] = []
    first = next_first = first_row_number(kind)
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
        if rows == rows_per_task:
            slices.append(Slice(first, rows, start, position))
            next_first = first + rows
            first, start, rows = next_first, position, 0
    if rows or not slices:
        slices.append(Slice(first, rows, start, position))
    return slices


def _check_columns(path: Path, kind: str, header: bytes, columns: BatchColumns) -> None:
    """Fail before any task runs when the text column is missing."""
    if kind == "parquet":
        import pyarrow.parquet as pq

        found = list(pq.ParquetFile(path).schema_arrow.names)
    elif kind == "csv":
        found = list(pd.read_csv(io.BytesIO(header), dtype=object, nrows=0).columns)
    else:
        return  # JSON Lines objects may differ per line; the read task checks each block
    if columns.text not in found:
        raise BatchError(
            f"{path}: no column {columns.text!r}; found {found} (choose one with --text-column)"
        )


def _safe(value: str) -> str:
    """A string Arrow can hold: bytes that were not UTF-8 shown as replacement characters."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _mark_problems(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with undecodable bytes are flagged here, where the bytes are still known, and their
    strings made safe for the Arrow blocks Ray Data moves between processes."""
    reasons = [undecodable_reason(t, a) for t, a in zip(frame.text, frame.address, strict=True)]
    frame[PROBLEM] = [reason or "" for reason in reasons]
    for column in ("text", "address", "id"):
        frame[column] = [_safe(v) for v in frame[column]]
    frame.loc[frame[PROBLEM] != "", ["text", "address"]] = ""
    frame["row"] = frame["row"].astype("int64")
    return frame


def read_slice(
    path: Path, kind: str, piece: Slice, header: bytes, columns: BatchColumns, batch_rows: int
) -> Iterator[pd.DataFrame]:
    """One read task: its rows as blocks of at most `batch_rows` (columns `row`, `text`, `id`,
    `address`, `problem`)."""
    first = piece.first_row
    for frame in _raw_slice(path, kind, piece, header, batch_rows):
        yield _mark_problems(standard_frame(path, frame, columns, first))
        first += len(frame)


def _raw_slice(
    path: Path, kind: str, piece: Slice, header: bytes, batch_rows: int
) -> Iterator[pd.DataFrame]:
    if kind == "parquet":
        import pyarrow.parquet as pq

        groups = list(range(piece.start, piece.end))
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows, row_groups=groups):
            yield batch.to_pandas()
        return
    with open(path, "rb") as handle:
        handle.seek(piece.start)
        data = handle.read(piece.end - piece.start)
    if kind == "csv":
        yield from pd.read_csv(
            io.BytesIO(header + data),
            dtype=object,
            keep_default_na=False,
            chunksize=batch_rows,
            encoding="utf-8",
            encoding_errors="surrogateescape",
        )
        return
    records: list[dict[str, Any]] = []
    for number, raw in enumerate(data.splitlines(), start=piece.first_row):
        line = raw.decode("utf-8", errors="surrogateescape").strip()
        try:
            record = json.loads(line) if line else {}
        except json.JSONDecodeError as exc:
            raise BatchError(f"{path}: line {number}: not valid JSON ({exc})") from exc
        if not isinstance(record, dict):
            raise BatchError(f"{path}: line {number}: expected a JSON object")
        records.append(record)
        if len(records) == batch_rows:
            yield pd.DataFrame.from_records(records)
            records = []
    if records:
        yield pd.DataFrame.from_records(records)


class Predictor:
    """The stateful `map_batches` function: one loaded pipeline per actor, reused for every
    block it is handed."""

    def __init__(
        self, model_dir: str, gazetteer: str | None, engine: str, threads: int, top_k: int
    ) -> None:
        self.pipeline = Pipeline.load(
            Path(model_dir), Path(gazetteer) if gazetteer else None, engine, threads
        )
        self.top_k = top_k

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        problem = frame[PROBLEM] != ""
        errors = [
            {"row": int(r.row), "id": r.id, "reason": r.problem}
            for r in frame[problem].itertuples(index=False)
        ]
        good = frame[~problem]
        answers, more = classify_frame(self.pipeline, good, self.top_k) if len(good) else ([], [])
        rows = [{**flat_answer(a), ERROR: None} for a in answers]
        rows += [{"row": e["row"], "id": e["id"], ERROR: e["reason"]} for e in [*errors, *more]]
        out = pd.DataFrame(rows, columns=[*FLAT_COLUMNS, ERROR])
        out["row"] = out["row"].astype("int64")
        for column in SCORES:
            out[column] = out[column].astype("float64")
        return out.sort_values("row", kind="stable").reset_index(drop=True)


def _schema() -> Any:
    import pyarrow as pa

    types = {"row": pa.int64(), **{c: pa.float64() for c in SCORES}}
    return pa.schema([(c, types.get(c, pa.string())) for c in FLAT_COLUMNS])


def _pool(resources: dict[str, float], options: RayBatchOptions) -> tuple[int, float]:
    """(actors, CPUs per actor): by default one actor per CPU, the CPUs less what the read
    tasks need shared out, so readers and actors never wait for each other's cores."""
    cpus = max(float(resources.get("CPU", 1.0)), 1.0)
    actors = options.actors or max(1, int(cpus))
    per_actor = options.cpus_per_actor or min(1.0, (cpus - READ_TASK_CPUS * 2) / actors)
    return actors, max(per_actor, 0.05)


def classify_file_ray(
    model_dir: Path,
    source: Path,
    output: Path,
    *,
    columns: BatchColumns | None = None,
    engine: str = "auto",
    gazetteer: Path | None = None,
    top_k: int = 3,
    options: RayBatchOptions | None = None,
) -> BatchReport:
    """Classify `source` into the Parquet file `output` on Ray Data; bad rows go to
    `<output>.errors.csv` as with `aduan batch`."""
    ray = require_ray()
    columns = columns or BatchColumns()
    options = options or RayBatchOptions()
    if output.suffix.lower() != ".parquet":
        raise BatchError(f"{output}: the ray engine writes Parquet (give a .parquet output)")
    kind = _kind(source)
    if not source.is_file():
        raise BatchError(f"{source}: no such file")
    read_config(model_dir)  # refuse a directory without labels before any work
    slices, header = plan_slices(source, kind, options.rows_per_task)
    _check_columns(source, kind, header, columns)
    actors, per_actor = _pool(connect(options.address), options)
    started = time.perf_counter()  # from a running cluster on: actors start, then classify
    gazetteer = gazetteer or default_gazetteer()
    log.info("%d read task(s), %d actor(s) with %.2f CPU each", len(slices), actors, per_actor)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # output rows in input order
    source_ds = ray.data.read_datasource(
        _source(source, kind, slices, header, columns, options.batch_rows),
        ray_remote_args={"num_cpus": READ_TASK_CPUS},
    )
    classified = source_ds.map_batches(
        Predictor,
        fn_constructor_kwargs={
            "model_dir": str(model_dir.resolve()),
            "gazetteer": str(gazetteer.resolve()) if gazetteer.is_file() else None,
            "engine": engine,
            "threads": max(1, round(per_actor)),
            "top_k": top_k,
        },
        batch_size=options.batch_rows,
        batch_format="pandas",
        concurrency=actors,
        num_cpus=per_actor,
    )
    try:
        report = _write(classified, output)
    except Exception as exc:
        found = _batch_error(exc)
        if found is None:
            raise
        raise BatchError(str(found)) from None  # the file's problem, not Ray's traceback
    report.seconds = time.perf_counter() - started
    return report


def _batch_error(exc: BaseException | None) -> BatchError | None:
    """The `BatchError` a read task or actor raised, inside Ray's task error."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, BatchError) and type(exc) is BatchError:
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
        seen += 1
    return None


def _write(dataset: Any, output: Path) -> BatchReport:
    """Stream the classified blocks into `output` and the errors file, in input order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    output.parent.mkdir(parents=True, exist_ok=True)
    schema = _schema()
    tmp = output.with_name(output.name + ".tmp")
    errors: list[pd.DataFrame] = []
    report = BatchReport()
    with pq.ParquetWriter(tmp, schema) as writer:
        for block in dataset.iter_batches(batch_size=None, batch_format="pandas"):
            bad = block[ERROR].notna()
            good = block.loc[~bad, list(FLAT_COLUMNS)]
            if len(good):
                writer.write_table(pa.Table.from_pandas(good, schema=schema, preserve_index=False))
            if bad.any():
                errors.append(
                    block.loc[bad, ["row", "id", ERROR]].rename(columns={ERROR: "reason"})
                )
            report.rows += len(block)
            report.errors += int(bad.sum())
    tmp.replace(output)
    report.classified = report.rows - report.errors
    report.processed = report.rows
    error_file = output.with_name(output.name + ".errors.csv")
    if errors:
        merged = pd.concat(errors)[ERROR_COLUMNS]
        write_csv(merged, error_file)
        log.warning("%d row(s) could not be classified: see %s", len(merged), error_file)
    elif error_file.exists():
        error_file.unlink()
    return report


def _source(
    path: Path, kind: str, slices: list[Slice], header: bytes, columns: BatchColumns, rows: int
) -> Any:
    """The input file as a Ray Data datasource, one read task per `Slice` (the class is made
    here so that importing this module needs no Ray)."""
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class ComplaintSource(Datasource):
        def estimate_inmemory_data_size(self) -> int:
            return path.stat().st_size

        def get_read_tasks(
            self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
        ) -> list[Any]:
            return [
                ReadTask(
                    partial(read_slice, path, kind, piece, header, columns, rows),
                    BlockMetadata(
                        num_rows=piece.rows,
                        size_bytes=None,
                        exec_stats=None,
                        input_files=(str(path),),
                    ),
                )
                for piece in slices
            ]

    return ComplaintSource()
