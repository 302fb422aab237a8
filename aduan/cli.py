"""The `aduan` command line: the root app assembling the training and service sub-apps.

`aduan train|retrain|evaluate|data|base` come from `aduan.training.cli`, `aduan
serve|db|requests|feedback` from `aduan.service.cli`, `aduan models` (registry and drift, which
need both sides) from `aduan.models_cli`, `aduan followup` from both `aduan.service.followup_cli`
(dispatch, sweep) and `aduan.training.followup_cli` (SLAs, deadline model, office figures from
the history); `classify` needs only
`aduan.model`.

Every command writes its data to stdout and its logs to stderr (`aduan.model.logs`), so a
command's output can be piped; a usage error (an unknown option value) exits 2.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from aduan import __version__
from aduan.model.extras import explain
from aduan.model.logs import FORMAT_ENV, LEVEL_ENV, LogFormat, LogLevel, configure_logging
from aduan.model.ray_runtime import BackendChoice, EngineChoice
from aduan.model.registry import DEFAULT_ROOT, ROOT_ENV
from aduan.model.transformer import EngineName
from aduan.models_cli import app as models_app
from aduan.service.cli import app as service_app
from aduan.service.followup_cli import followup_app
from aduan.training.cli import app as training_app
from aduan.training.followup_cli import followup_history

if TYPE_CHECKING:
    from aduan.model.batch import BatchColumns, BatchReport
    from aduan.model.registry import Registry

# Nothing here may reach a model hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# PyTorch's OpenMP threads spin between parallel regions by default: with another process on
# one of two cores, a text took 100x longer (3.5 ms -> 356 ms). Set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

log = logging.getLogger("aduan.cli")

# rich_markup_mode=None: help texts print as written (Rich markup ate `aduan[ray]`), and
# usage errors are plain lines a script can read.
app = typer.Typer(
    help="aduan: route Indonesian citizen complaints to a category and agency.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(training_app)
app.add_typer(service_app)
app.add_typer(models_app, name="models")
# One `aduan followup` group: the service's commands (dispatch, sweep, redeliver) beside the
# history's (sla, deadlines, report); neither package may import the other, so they meet here.
followup = typer.Typer(
    help="Follow-up of routed complaints: webhook dispatch and the overdue sweep (the "
    "database), SLAs, the deadline model and office figures (a labelled history).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
for part in (followup_app, followup_history):
    followup.registered_commands += part.registered_commands
    followup.registered_groups += part.registered_groups
app.add_typer(followup, name="followup")


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"aduan {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log at DEBUG (same as --log-level DEBUG)")
    ] = False,
    log_level: Annotated[
        LogLevel, typer.Option(envvar=LEVEL_ENV, case_sensitive=False, help="Log level")
    ] = LogLevel.INFO,
    log_format: Annotated[
        LogFormat,
        typer.Option(
            envvar=FORMAT_ENV,
            case_sensitive=False,
            help="Logs on stderr as plain lines or JSON objects, with the time zone",
        ),
    ] = LogFormat.PLAIN,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit"
        ),
    ] = False,
) -> None:
    configure_logging(LogLevel.DEBUG if verbose else log_level, log_format)


def main() -> None:
    """The `aduan` executable: the app, with a missing optional dependency reported as the
    extra to install (exit 2) instead of a traceback."""
    try:
        app()
    except ImportError as exc:
        missing = explain(exc)
        if missing is None:
            raise
        typer.secho(f"error: {missing}", fg=typer.colors.RED, err=True)
        sys.exit(2)


ModelOpt = Annotated[
    Path | None, typer.Option(help="Model directory (default: the live version of --registry)")
]
RegistryOpt = Annotated[
    Path,
    typer.Option(envvar=ROOT_ENV, help="Model registry whose live version is used without --model"),
]
EngineOpt = Annotated[
    EngineName,
    typer.Option(
        envvar="ADUAN_ENGINE",
        case_sensitive=False,
        help="Transformer engine: auto (ONNX Runtime when exported, else PyTorch), onnx, torch",
    ),
]


BatchEngineOpt = Annotated[
    EngineChoice,
    typer.Option(
        envvar="ADUAN_ENGINE",
        case_sensitive=False,
        help="Transformer engine: auto (ONNX Runtime when exported, else PyTorch), onnx, torch",
    ),
]
BackendOpt = Annotated[
    BackendChoice | None,
    typer.Option(
        envvar="ADUAN_BACKEND",
        case_sensitive=False,
        help="local (this process) or ray (Ray Data actors, each on --engine; Parquet output)",
    ),
]


def _servable(store: Registry, preset: str) -> str | None:
    """The version of `preset` that `up` may make live, when the live one is not of it: the
    newest the gate passed and no operator rolled back from; with nothing live (or only `up`'s
    stand-in baseline), the newest the gate did not refuse. None when the live version is of
    `preset` already, or none may be."""
    live = next((v for v in store.versions() if v.live), None)
    ungated = live is None or store.stand_in()
    if live is not None and live.config.get("preset") == preset:
        return None
    withdrawn = store.withdrawn()
    for version in reversed([v for v in store.versions() if v.config.get("preset") == preset]):
        verdict = store.verdict(version.name)
        if version.name in withdrawn or verdict == "refused":
            why = "an operator rolled back from it" if version.name in withdrawn else "refused"
            log.warning("not promoting %s (%s)", version.name, why)
            continue
        if verdict == "promoted" or ungated:
            return version.name
        log.warning(
            "not promoting %s: the gate never judged it (`aduan retrain --preset %s`, or "
            "`aduan models promote %s`)",
            version.name,
            preset,
            version.name,
        )
    return None


def _model_dir(model: Path | None, registry: Path) -> Path:
    """--model, else the registry's live version; exit 2 naming both when there is none."""
    from aduan.model.registry import RegistryError, model_dir_or_live

    try:
        return model_dir_or_live(model, registry)
    except RegistryError as exc:
        raise _fail(f"{exc}; or give --model DIR") from exc


@app.command()
def classify(
    text: Annotated[str, typer.Argument(help="The complaint text")],
    model: ModelOpt = None,
    registry: RegistryOpt = DEFAULT_ROOT,
    address: Annotated[str | None, typer.Option(help="Optional address or landmark")] = None,
    top_k: Annotated[int, typer.Option(min=1, max=10)] = 3,
    engine: EngineOpt = EngineName.AUTO,
) -> None:
    """Classify one complaint and print, as JSON on stdout, what the HTTP service answers:
    category, agency, top-k, route and unit."""
    from aduan.model.artifacts import ModelDirError
    from aduan.model.extras import MissingExtra
    from aduan.model.pipeline import Pipeline

    if not text.strip():
        raise _fail("the complaint text is empty")
    directory = _model_dir(model, registry)
    try:
        pipeline = Pipeline.load(directory, engine=engine)
    except (ModelDirError, ValueError, MissingExtra) as exc:
        raise _fail(str(exc)) from exc
    [answer] = pipeline.run([(text, address)], top_k=top_k)
    typer.echo(json.dumps(answer.to_dict(top_k), indent=2, ensure_ascii=False))


@app.command()
def up(
    registry: Annotated[
        Path, typer.Option(envvar=ROOT_ENV, help="Model registry to serve")
    ] = DEFAULT_ROOT,
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
    process (log in REGISTRY/logs/) and, when the live version is that stand-in baseline, is
    promoted when done: the running service swaps it in without a restart (a run stopped
    with Ctrl-C is started again by the next `up`, and still promoted). Into a registry whose
    live version was promoted otherwise it is added, not promoted: the gate or an operator
    decides. An existing version
    of `--preset` that is not live is promoted only when the promotion gate passed it (`aduan
    retrain`) and no operator rolled back from it; with nothing live or the stand-in, any
    version the gate did not refuse. While another training run writes into
    the registry, `up` starts none (it names that run and its log) and serves the live
    version; with none live it exits 2."""
    import subprocess

    from aduan.model.registry import Registry, RegistryError, TrainingBusy
    from aduan.service.cli import serve
    from aduan.training.config import load_config
    from aduan.training.train import train_version

    store = Registry(registry)
    files = [str(p) for p in data] if data else None
    logs = registry / "logs"
    log_file = logs / f"train-{preset}.log"
    # only into an empty registry, or over up's own stand-in, may what `up` trains go live ungated
    empty = store.live() is None
    try:
        with store.training("baseline" if empty else preset):
            if store.newest(preset) is None and empty:
                log.info("%s is empty: training the baseline first (about a minute)", registry)
                config = load_config("baseline", data=files)
                version, _ = train_version(config, store, promote=False, lock=False)
                store.promote(version, stand_in=preset != "baseline")
            ungated = store.stand_in()
            wanted = _servable(store, preset)
            if wanted is not None:
                store.promote(wanted)
            elif store.newest(preset) is None:
                logs.mkdir(parents=True, exist_ok=True)
                command = [sys.executable, "-m", "aduan", "train", "--preset", preset]
                command += ["--registry", str(registry)]
                # no flag: the child promotes only if the stand-in is still live when it ends
                command += [] if ungated else ["--no-promote"]
                command += [arg for path in data or [] for arg in ("--data", str(path))]
                command += [arg for item in set_ or [] for arg in ("--set", item)]
                with open(log_file, "ab") as handle:
                    child = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
                store.hand_over(child.pid, preset, log_file)
                log.info(
                    "training `%s` in the background (pid %d, log: %s); the service answers "
                    "with %s %s",
                    preset,
                    child.pid,
                    log_file,
                    store.live(),
                    "until it is promoted"
                    if ungated
                    else f"(a live version was there: judge the new one with `aduan retrain "
                    f"--preset {preset}` or promote it with `aduan models promote`)",
                )
    except TrainingBusy as exc:
        if store.live() is None:
            raise _fail(f"{exc}; nothing is live to serve meanwhile") from exc
        log.warning("%s: not starting another; serving %s", exc, store.live())
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    serve(model=None, registry=registry, host=host, port=port, engine=None)


@app.command()
def batch(
    input: Annotated[Path, typer.Option("--input", help="CSV, JSON Lines or Parquet file")],
    output: Annotated[Path, typer.Option(help="Where to write (.csv, .jsonl or .parquet)")],
    text_column: Annotated[str, typer.Option(help="Column holding the complaint")] = "text",
    id_column: Annotated[str, typer.Option(help="Column copied to the output as id")] = "id",
    address_column: Annotated[str, typer.Option(help="Optional address column")] = "address",
    chunk_rows: Annotated[int, typer.Option(min=1, help="Rows read and written at a time")] = 2048,
    top_k: Annotated[int, typer.Option(min=1, max=10)] = 3,
    model: ModelOpt = None,
    registry: RegistryOpt = DEFAULT_ROOT,
    engine: BatchEngineOpt = EngineChoice.AUTO,
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
    model = _model_dir(model, registry)
    try:
        engine_name, backend_name = resolve_backend(engine, backend)
        if backend_name == RAY:
            report = _batch_on_ray(
                model, input, output, columns, top_k, actors, cpus_per_actor, engine_name
            )
        else:
            pipeline = Pipeline.load(model, engine=engine_name)
            report = classify_file(
                pipeline, input, output, columns=columns, chunk_rows=chunk_rows, top_k=top_k
            )
    except (ModelDirError, BatchError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    except ImportError as exc:  # Ray, or pyarrow for Parquet, not installed
        raise _fail(str(explain(exc, "aduan batch") or exc)) from exc
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


class Quantization(StrEnum):
    INT8 = "int8"
    FP32 = "fp32"


@app.command()
def export(
    model: Annotated[
        Path,
        typer.Option(
            help="Model directory, rewritten in place: give it explicitly (a registry "
            "version is immutable; export a copy, then add it as a new version)"
        ),
    ],
    quantize: Annotated[
        Quantization,
        typer.Option(help="int8 (dynamic quantisation, the fast CPU engine) or fp32"),
    ] = Quantization.INT8,
) -> None:
    """Export a transformer directory's network to ONNX (model.onnx, and model.int8.onnx with
    --quantize int8) and record it in config.json: the `onnx` engine then serves it. Needs
    `pip install 'aduan[train]'` (torch and onnx); the exported directory serves without."""
    from aduan.model.artifacts import ModelDirError
    from aduan.model.onnx import export_model_dir

    try:
        entry = export_model_dir(model, quantize)
    except (ModelDirError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"exported {model / entry['file']}")


if __name__ == "__main__":
    main()
