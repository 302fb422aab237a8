"""`aduan batch --backend ray`: a backfill of a large CSV, JSON Lines or Parquet file on Ray Data.

The file is planned into read tasks (`records.plan_spans`: Parquet row groups; CSV and JSON
Lines byte ranges that end on record boundaries, found by one pass over the bytes), each read
by `aduan batch`'s own reader, so every row keeps the row number `aduan batch` gives it. Ray
Data streams the blocks through `map_batches` into a pool of actors, each holding one loaded
`Pipeline` (the same `classify_frame` as `aduan batch`), with back pressure, so memory stays
bounded whatever the file's size. The driver receives the classified blocks in input order and
writes one Parquet file with `aduan batch`'s columns, and the rows that could not be classified
to `<output>.errors.csv`.

On a cluster (`RAY_ADDRESS`), the model directory and the input must be readable at the same
path on every node (a shared volume); the output is written by the driver.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd

from . import records
from .artifacts import read_config
from .batch import (
    FLAT_COLUMNS,
    BatchColumns,
    BatchError,
    BatchReport,
    classify_frame,
    flat_answer,
    read_chunks,
)
from .pipeline import Pipeline
from .progress import on_terminal
from .ray_runtime import connect, require_ray
from .records import RecordError, Span
from .resources import default_gazetteer

log = logging.getLogger(__name__)

PROBLEM = "problem"  # a read task's verdict on a row ("" or the error reason)
ERROR = "error"  # the classifier actors' verdict, the same way
READ_TASK_CPUS = 0.1  # reading is light; the actors get the cores
SCORES = ("category_score", "agency_score")


@dataclass(frozen=True)
class RayBatchOptions:
    actors: int = 0  # 0: one per CPU of the cluster
    cpus_per_actor: float = 0.0  # 0: the cluster's CPUs (less the readers') shared out
    rows_per_task: int = 20_000
    batch_rows: int = 1024
    address: str | None = None


def _check_columns(path: Path, columns: BatchColumns) -> None:
    """Fail before any task runs when the text column is missing (JSON Lines objects may
    differ per line: there the read task checks each block)."""
    found = records.header_columns(path)
    missing = None
    if found is not None:
        missing = records.missing_columns(
            path, [columns.text], found, "choose one with --text-column"
        )
    if missing is not None:
        raise missing


def _safe(value: str) -> str:
    """A string Arrow can hold: bytes that were not UTF-8 shown as replacement characters."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _mark_problems(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with undecodable bytes are flagged here, where the bytes are still known, and their
    strings made safe for the Arrow blocks Ray Data moves between processes."""
    reasons = [
        records.undecodable_reason({"text": t, "address": a})
        for t, a in zip(frame.text, frame.address, strict=True)
    ]
    frame[PROBLEM] = [reason or "" for reason in reasons]
    for column in ("text", "address", "id"):
        frame[column] = [_safe(v) for v in frame[column]]
    frame.loc[frame[PROBLEM] != "", ["text", "address"]] = ""
    frame["row"] = frame["row"].astype("int64")
    return frame


def read_slice(
    path: Path, piece: Span, columns: BatchColumns, batch_rows: int
) -> Iterator[pd.DataFrame]:
    """One read task: its rows as blocks of at most `batch_rows` (columns `row`, `text`, `id`,
    `address`, `problem`), numbered as `aduan batch` numbers them (the same reader)."""
    for frame in read_chunks(path, batch_rows, columns, piece):
        yield _mark_problems(frame)


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
    records.file_kind(source)
    if not source.is_file():
        raise BatchError(f"{source}: no such file")
    read_config(model_dir)  # refuse a directory without labels before any work
    slices = records.plan_spans(source, options.rows_per_task)
    _check_columns(source, columns)
    actors, per_actor = _pool(connect(options.address), options)
    started = time.perf_counter()  # from a running cluster on: actors start, then classify
    gazetteer = gazetteer or default_gazetteer()
    log.info("%d read task(s), %d actor(s) with %.2f CPU each", len(slices), actors, per_actor)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # output rows in input order
    context.enable_progress_bars = on_terminal()  # bars redrawn into a log file pile up
    source_ds = ray.data.read_datasource(
        _source(source, slices, columns, options.batch_rows),
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


def _batch_error(exc: BaseException | None) -> RecordError | None:
    """The `BatchError` a read task or actor raised, inside Ray's task error."""
    seen = 0
    while exc is not None and seen < 10:
        # Ray re-raises a task's error as a subclass of it: the original is the exact type.
        if type(exc) in (RecordError, BatchError):
            assert isinstance(exc, RecordError)
            return exc
        exc = getattr(exc, "cause", None) or exc.__cause__
        seen += 1
    return None


def _write(dataset: Any, output: Path) -> BatchReport:
    """Stream the classified blocks into `output` and the errors file, in input order."""
    import pyarrow as pa

    pq = records.parquet()
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
    records.write_errors(output, errors)
    return report


def _source(path: Path, slices: list[Span], columns: BatchColumns, rows: int) -> Any:
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
                    partial(read_slice, path, piece, columns, rows),
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
