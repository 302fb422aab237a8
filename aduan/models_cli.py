"""`aduan models`: the model registry (list, promote, rollback, prune) and the drift of the
stored traffic. The one command group that needs both sides, so the root assembles it:
registry operations come from `aduan.model.registry`, drift from `aduan.service.drift`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from aduan.model.registry import (
    DEFAULT_KEEP,
    DEFAULT_ROOT,
    ROOT_ENV,
    Registry,
    RegistryError,
    model_dir_or_live,
)

app = typer.Typer(
    help="The model registry: versions, promotion, rollback, pruning and drift.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

RegistryOpt = Annotated[
    Path,
    typer.Option(envvar=ROOT_ENV, help="Model registry folder (versions + live pointer)"),
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print JSON on stdout instead of the text summary")
]
# A model directory as an argument; without it, the registry's live version.
ModelArg = Annotated[
    Path | None,
    typer.Argument(help="Model directory (default: the live version of --registry)"),
]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _fmt(value: Any, percent: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:.1%}" if percent else f"{value:.3f}"


@app.command("list")
def list_versions(registry: RegistryOpt = DEFAULT_ROOT, as_json: JsonOpt = False) -> None:
    """Versions, oldest first: data range, preset, key validation figures, which is live."""
    try:
        versions = [v.summary() for v in Registry(registry).require().versions()]
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps(versions, indent=2, ensure_ascii=False))
        return
    if not versions:
        typer.echo(f"no versions in {registry}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"model registry {registry}")
    columns = ("live", "version", "preset", "train", "valid", "rows", "fb", "agency acc.")
    for name in (*columns, "macro-F1", "auto-routed"):
        table.add_column(name, no_wrap=name in ("version", "train", "valid"))
    for v in versions:
        span = v["data_range"]
        agency = v["metrics"]["agency"]
        feedback = v["provenance"]["feedback_rows"]
        table.add_row(
            "*" if v["live"] else "",
            v["version"],
            v["preset"] or "?",
            "..".join(span["train"]) if span and span.get("train") else "?",
            "..".join(span["validation"]) if span and span.get("validation") else "?",
            str(v["rows"] or "?"),
            "?" if feedback is None else str(feedback),
            _fmt(agency["accuracy"]),
            _fmt(agency["macro_f1"]),
            _fmt(agency["auto_route_coverage"], percent=True),
        )
    console = Console()
    if not console.is_terminal:  # piped or captured: no terminal width to fit, keep each row
        console.width = max(console.width, 160)
    console.print(table)
    typer.echo("rows: rows the shipped weights saw; fb: operators' corrections among them")


@app.command()
def path(
    registry: RegistryOpt = DEFAULT_ROOT,
    preset: Annotated[
        str | None, typer.Option(help="The newest version of this preset instead of the live one")
    ] = None,
) -> None:
    """Print the directory of the live version (or of the newest version of `--preset`)."""
    try:
        store = Registry(registry).require()
        if preset is None:
            typer.echo(str(store.live_path()))
            return
        found = store.newest(preset)
        if found is None:
            raise RegistryError(f"{registry}: no version of preset {preset!r}")
        typer.echo(str(found.path))
    except RegistryError as exc:
        raise _fail(str(exc)) from exc


@app.command()
def promote(
    version: Annotated[str, typer.Argument(help="The version to make live")],
    registry: RegistryOpt = DEFAULT_ROOT,
    verify: Annotated[
        bool, typer.Option(help="Load the version and predict once before promoting it")
    ] = True,
) -> None:
    """Make a version live (the pointer moves atomically; running services reload)."""
    try:
        previous = Registry(registry).require().promote(version, verify=verify)
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"{version} is live (was {previous or 'none'})")


@app.command()
def rollback(registry: RegistryOpt = DEFAULT_ROOT) -> None:
    """Make the previously live version live again."""
    try:
        version = Registry(registry).require().rollback()
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"rolled back: {version} is live")


@app.command()
def prune(
    registry: RegistryOpt = DEFAULT_ROOT,
    keep: Annotated[
        int, typer.Option(min=0, help="Versions kept besides the live one")
    ] = DEFAULT_KEEP,
) -> None:
    """Delete old versions, keeping the live one, the one `rollback` would return to and the
    newest KEEP."""
    try:
        removed = Registry(registry).require().prune(keep)
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"pruned {len(removed)} version(s){': ' + ', '.join(removed) if removed else ''}")


def _model_dir(model: Path | None, registry: Path) -> Path:
    try:
        return model_dir_or_live(model, registry)
    except RegistryError as exc:
        raise _fail(f"{exc}; or give the model directory") from exc


@app.command()
def verify(model: ModelArg = None, registry: RegistryOpt = DEFAULT_ROOT) -> None:
    """Check a model directory without loading it: config.json, the kind's files, no pickle
    files, every file as manifest.json recorded it and none it does not list. Exit 2 naming
    the file that is wrong (or the missing manifest)."""
    from aduan.model.artifacts import ModelDirError, verify_model_dir

    model = _model_dir(model, registry)
    try:
        verify_model_dir(model)
    except ModelDirError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"{model}: ok")


@app.command()
def rehash(
    model: Annotated[
        Path,
        typer.Argument(
            help="Model directory to re-sign: given explicitly, never the live version by "
            "default (re-signing whatever is live would bless a tampered directory)"
        ),
    ],
) -> None:
    """Record the files' checksums in manifest.json: after a deliberate edit (e.g. of
    routing.json or config.json), or once for a trusted directory written before manifests
    (it is refused until it has one). Refuses a directory holding pickle files, without
    valid labels or whose config.json points outside it."""
    from aduan.model.artifacts import ModelDirError, read_config, refuse_pickles, write_manifest

    try:
        read_config(model)
        refuse_pickles(model)
        manifest = write_manifest(model)
    except (ModelDirError, OSError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"{model}/manifest.json: {len(manifest['files'])} file(s) recorded")


def _date(value: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{name} must be a date like 2023-04-01, got {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command()
def drift(
    since: Annotated[str, typer.Option(help="Stored requests received on/after this date")],
    until: Annotated[str | None, typer.Option(help="... and before this date")] = None,
    registry: RegistryOpt = DEFAULT_ROOT,
    model: Annotated[
        Path | None,
        typer.Option(help="Compare with this model directory (default: the registry's live one)"),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="SQLAlchemy URL (default: ADUAN_DATABASE_URL, else SQLite in var/)"),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(help="Write the drift plot (PNG) here; needs aduan[plots] (matplotlib)"),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Drift of the stored traffic against the model's training reference: predicted-agency
    PSI, review share, words outside the vocabulary and feedback disagreement, overall, per
    week and per model version that answered. With --json the figures go to stdout as JSON
    (and the summary to stderr)."""
    from aduan.model.artifacts import ModelDirError
    from aduan.service.drift import drift_report
    from aduan.service.settings import Settings
    from aduan.service.storage import open_store

    start = _date(since, "--since")
    end = _date(until, "--until") if until else None
    try:
        model_dir = model_dir_or_live(model, registry)
    except RegistryError as exc:
        raise _fail(f"{exc}; or give --model DIR") from exc
    settings = Settings(database_url=database_url) if database_url else Settings()
    store = open_store(settings)
    try:
        report = drift_report(store, model_dir, start, end, plot)
    except (ValueError, ModelDirError) as exc:
        raise _fail(str(exc)) from exc
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
    _print_drift(report, err=as_json)


def _print_drift(report: dict[str, Any], err: bool = False) -> None:
    feedback = report["feedback"]
    lines = [
        f"{report['predictions']} stored requests since {report['since']}, "
        f"compared with model {report['reference_model']}",
        f"  agency PSI: {_fmt(report['agency_psi'])} "
        f"({report['agency_psi_level'] or 'no reference'})",
    ]
    for key, label in (
        ("review_share", "routed to review"),
        ("unknown_word_share", "words outside the vocabulary"),
        ("many_unknown_share", "texts mostly unknown words"),
    ):
        figures = report[key]
        lines.append(
            f"  {label}: {_fmt(figures['window'], True)} "
            f"(training reference {_fmt(figures['reference'], True)})"
        )
    lines.append(
        f"  operators' feedback: {feedback['feedback']} correction(s), agency disagreement "
        f"{_fmt(feedback['agency_disagreement_rate'], True)}"
    )
    for week, figures in report["weeks"].items():
        lines.append(
            f"  {week}: {figures['predictions']} requests, PSI {_fmt(figures['agency_psi'])}, "
            f"review {_fmt(figures['review_share'], True)}"
        )
    if report.get("plot"):
        lines.append(f"plot: {report['plot']}")
    typer.echo("\n".join(lines), err=err)
