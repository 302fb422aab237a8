"""The `aduan` command line: the root app assembling the training and service sub-apps.

`aduan train|retrain|evaluate|data|base` come from `aduan.training.cli`, `aduan
serve|db|requests|feedback` from `aduan.service.cli`, `aduan models` (registry and drift, which
need both sides) from `aduan.models_cli`; `classify` needs only `aduan.model`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aduan.models_cli import app as models_app
from aduan.service.cli import app as service_app
from aduan.training.cli import app as training_app

if TYPE_CHECKING:
    from aduan.model.batch import BatchColumns, BatchReport

# Nothing here may reach a model hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# PyTorch's OpenMP threads spin between parallel regions by default: with another process on
# one of two cores, a text took 100x longer (3.5 ms -> 356 ms). Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

app = typer.Typer(
    help="aduan: route Indonesian citizen complaints to a category and agency.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(training_app)
app.add_typer(service_app)
app.add_typer(models_app, name="models")


def _setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
    )  # no force: handlers already installed (an embedding app, pytest) keep working
    for noisy in ("httpx", "urllib3", "datasets", "filelock", "fsspec", "matplotlib", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    _setup_logging(verbose)


EngineOpt = Annotated[
    str,
    typer.Option(
        envvar="ADUAN_ENGINE",
        help="Transformer engine: auto (ONNX Runtime when exported, else PyTorch), onnx, torch",
    ),
]


# `serve` and `batch` spread the work over Ray (replicas or actors) with `--backend ray`; the
# old `--engine ray` still means that (`ray_runtime.resolve_backend`).
BackendOpt = Annotated[
    str | None,
    typer.Option(
        envvar="ADUAN_BACKEND",
        help="local (this process) or ray (Ray Data actors, each on --engine; Parquet output)",
    ),
]


@app.command()
def classify(
    text: Annotated[str, typer.Argument(help="The complaint text")],
    model: Annotated[Path, typer.Option(help="Model directory")] = Path("models/default"),
    address: Annotated[str | None, typer.Option(help="Optional address or landmark")] = None,
    top_k: Annotated[int, typer.Option(min=1, max=10)] = 3,
    engine: EngineOpt = "auto",
) -> None:
    """Classify one complaint and print what the HTTP service answers: category, agency,
    top-k, route and unit."""
    from aduan.model.artifacts import ModelDirError
    from aduan.model.pipeline import Pipeline

    if not text.strip():
        raise _fail("the complaint text is empty")
    try:
        pipeline = Pipeline.load(model, engine=engine)
    except (ModelDirError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    [answer] = pipeline.run([(text, address)], top_k=top_k)
    typer.echo(json.dumps(answer.to_dict(top_k), indent=2, ensure_ascii=False))


@app.command()
def up(
    registry: Annotated[Path, typer.Option(help="Model registry to serve")] = Path("models"),
    preset: Annotated[str, typer.Option(help="The preset to serve once trained")] = "fast",
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    data: Annotated[
        list[Path] | None, typer.Option(help="Labelled file(s) to train on (default: shared data)")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting of --preset's training")
    ] = None,
) -> None:
    """A newcomer's one command: serve at once, the best model when it is ready.

    An empty registry first gets the `baseline` preset (about a minute) and the service starts
    on it; when no version of `--preset` exists yet, that preset trains in a background
    process (log in REGISTRY/logs/) and is promoted when done: the running service swaps it in
    without a restart. A version of `--preset` that exists but is not live is promoted."""
    import subprocess
    import sys

    from aduan.model.registry import Registry
    from aduan.service.cli import serve
    from aduan.training.config import load_config
    from aduan.training.train import train_version

    store = Registry(registry)
    files = [str(p) for p in data] if data else None
    wanted = store.newest(preset)
    if wanted is None and store.live() is None:
        typer.echo(f"{registry} is empty: training the baseline first (about a minute)")
        train_version(load_config("baseline", data=files), store, promote=True)
        wanted = store.newest(preset)  # `--preset baseline`: the version just trained
    if wanted is not None and not wanted.live:
        store.promote(wanted.name)
    elif wanted is None:
        logs = registry / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log_file = logs / f"train-{preset}.log"
        command = [sys.executable, "-m", "aduan", "train", "--preset", preset]
        command += ["--registry", str(registry), "--promote"]
        command += [arg for path in data or [] for arg in ("--data", str(path))]
        command += [arg for item in set_ or [] for arg in ("--set", item)]
        with open(log_file, "ab") as handle:
            subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        typer.echo(
            f"training `{preset}` in the background (log: {log_file}); the service answers "
            f"with {store.live()} until it is promoted"
        )
    serve(model=None, registry=registry, host=host, port=port, engine=None)


@app.command()
def batch(
    model: Annotated[Path, typer.Option(help="Model directory")],
    input: Annotated[Path, typer.Option("--input", help="CSV, JSON Lines or Parquet file")],
    output: Annotated[Path, typer.Option(help="Where to write (.csv, .jsonl or .parquet)")],
    text_column: Annotated[str, typer.Option(help="Column holding the complaint")] = "text",
    id_column: Annotated[str, typer.Option(help="Column copied to the output as id")] = "id",
    address_column: Annotated[str, typer.Option(help="Optional address column")] = "address",
    chunk_rows: Annotated[int, typer.Option(min=1, help="Rows read and written at a time")] = 2048,
    top_k: Annotated[int, typer.Option(min=1, max=10)] = 3,
    engine: EngineOpt = "auto",
    backend: BackendOpt = None,
    actors: Annotated[
        int, typer.Option(min=0, help="--backend ray: classifier actors (0: one per CPU)")
    ] = 0,
    cpus_per_actor: Annotated[
        float, typer.Option(min=0, help="--backend ray: CPUs each actor reserves (0: shared out)")
    ] = 0.0,
) -> None:
    """Classify a whole file in bounded memory, with the same fields as the HTTP answer; a
    rerun after an interruption resumes where it stopped; bad rows go to OUTPUT.errors.csv.

    With --backend ray the file is classified on Ray Data (a local Ray instance, or the cluster
    at RAY_ADDRESS) by a pool of actors each holding the model (on --engine), into a Parquet
    OUTPUT; needs `pip install 'aduan[ray]'`; no resume: a rerun starts again."""
    from aduan.model.artifacts import ModelDirError
    from aduan.model.batch import BatchColumns, BatchError, classify_file
    from aduan.model.pipeline import Pipeline
    from aduan.model.ray_runtime import RAY, resolve_backend

    columns = BatchColumns(text_column, id_column, address_column)
    try:
        engine, backend = resolve_backend(engine, backend)
        if backend == RAY:
            report = _batch_on_ray(
                model, input, output, columns, top_k, actors, cpus_per_actor, engine
            )
        else:
            pipeline = Pipeline.load(model, engine=engine)
            report = classify_file(
                pipeline, input, output, columns=columns, chunk_rows=chunk_rows, top_k=top_k
            )
    except (ModelDirError, BatchError, ValueError, ImportError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(
        f"{report.classified} of {report.rows} row(s) classified into {output} "
        f"({report.texts_per_second:.0f} texts/s"
        + (f", {report.resumed_parts} chunk(s) resumed" if report.resumed_parts else "")
        + f"); {report.errors} error(s)"
        + (f" in {output}.errors.csv" if report.errors else "")
    )


def _batch_on_ray(
    model: Path,
    source: Path,
    output: Path,
    columns: BatchColumns,
    top_k: int,
    actors: int,
    cpus_per_actor: float,
    engine: str,
) -> BatchReport:
    from aduan.model.ray_batch import RayBatchOptions, classify_file_ray

    options = RayBatchOptions(actors=actors, cpus_per_actor=cpus_per_actor)
    return classify_file_ray(
        model, source, output, columns=columns, engine=engine, top_k=top_k, options=options
    )


@app.command()
def export(
    model: Annotated[Path, typer.Option(help="Transformer model directory")],
    quantize: Annotated[
        str, typer.Option(help="int8 (dynamic quantisation, the fast CPU engine) or fp32")
    ] = "int8",
) -> None:
    """Export a transformer directory's network to ONNX (model.onnx, and model.int8.onnx with
    --quantize int8) and record it in config.json: the `onnx` engine then serves it."""
    from aduan.model.artifacts import ModelDirError
    from aduan.model.onnx import export_model_dir

    try:
        entry = export_model_dir(model, quantize)
    except (ModelDirError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"exported {model / entry['file']}")


if __name__ == "__main__":
    app()
