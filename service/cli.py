"""The service side of the `aduan` command line: serve, the database, stored requests and
operator feedback. The root `aduan` app (`aduan/cli.py`) assembles this sub-app."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from aduan.model.ray_runtime import BackendChoice, EngineChoice

if TYPE_CHECKING:
    from .settings import Settings
    from .storage import Store

# rich_markup_mode=None: help texts print as written (see aduan/cli.py)
PLAIN: dict[str, Any] = {"no_args_is_help": True, "rich_markup_mode": None}
app = typer.Typer(pretty_exceptions_enable=False, **PLAIN)
db_app = typer.Typer(help="The request database (SQLite by default).", **PLAIN)
app.add_typer(db_app, name="db")
requests_app = typer.Typer(help="Stored requests and their retention.", **PLAIN)
app.add_typer(requests_app, name="requests")
feedback_app = typer.Typer(help="Operator feedback for retraining.", **PLAIN)
app.add_typer(feedback_app, name="feedback")
keys_app = typer.Typer(
    help="API keys: make one, or hash an existing one, for ADUAN_KEYS_FILE.", **PLAIN
)
app.add_typer(keys_app, name="keys")
# `followup_app` joins the history commands under one `aduan followup` group in aduan/cli.py


DbOpt = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL (default: ADUAN_DATABASE_URL, else SQLite in ADUAN_DATA_DIR)",
    ),
]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


@app.command()
def serve(
    model: Annotated[Path | None, typer.Option(help="Model directory (ADUAN_MODEL_DIR)")] = None,
    registry: Annotated[
        Path | None,
        typer.Option(
            help="Serve the live version of this registry (ADUAN_REGISTRY), reloaded "
            "when its pointer moves; without either, the registry models/"
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    engine: Annotated[
        EngineChoice | None,
        typer.Option(
            case_sensitive=False,
            help="Transformer engine: auto, onnx or torch (ADUAN_ENGINE; the old `ray` means "
            "--backend ray)",
        ),
    ] = None,
    backend: Annotated[
        BackendChoice | None,
        typer.Option(
            case_sensitive=False,
            help="Where classify runs: local (in-process batcher) or ray (Ray Serve replicas, "
            "each on --engine) (ADUAN_BACKEND)",
        ),
    ] = None,
    replicas: Annotated[
        int | None,
        typer.Option(min=1, help="--backend ray: replicas kept running (ADUAN_RAY_REPLICAS)"),
    ] = None,
    max_replicas: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="--backend ray: autoscale up to this many replicas (ADUAN_RAY_MAX_REPLICAS)",
        ),
    ] = None,
) -> None:
    """Serve a model directory, or a registry's live version, over HTTP (FastAPI + uvicorn).

    With a registry, the service reloads without a restart when the live pointer moves, on
    `POST /v1/admin/reload` and on SIGHUP; SIGTERM drains gracefully and exits 0. With --backend
    ray (needs `pip install 'aduan[ray]'`) the model runs in Ray Serve replicas on a local Ray
    instance, or on the cluster at RAY_ADDRESS, behind this same HTTP service (the old
    `--engine ray` still means this, with a deprecation warning)."""
    from aduan.model.artifacts import ModelDirError, read_config, verify_model_dir
    from aduan.model.extras import MissingExtra
    from aduan.model.registry import DEFAULT_ROOT, RegistryError
    from aduan.model.transformer import require_engine

    from .app import create_app
    from .keys import KeysFileError
    from .server import run
    from .settings import Settings
    from .state import ServiceState

    if model and registry:
        raise _fail("give --model or --registry, not both")
    given: dict[str, Any] = {"model_dir": model, "registry": registry, "engine": engine}
    given |= {"backend": backend, "ray_replicas": replicas, "ray_max_replicas": max_replicas}
    overrides = {k: v for k, v in given.items() if v is not None}
    if model is not None:  # an explicit directory wins over ADUAN_REGISTRY
        overrides["registry"] = None
    settings = Settings(**overrides)
    if settings.registry is None and "model_dir" not in settings.model_fields_set:
        # neither flag nor setting names a model: the registry `make run` and `aduan train` fill
        settings = Settings(**overrides, registry=DEFAULT_ROOT)
    if settings.backend == "ray":
        from aduan.model.ray_runtime import RayMissing, require_ray

        try:
            require_ray()
        except RayMissing as exc:
            raise _fail(str(exc)) from exc
    try:
        # Refuse a directory without labels, or with a missing, truncated, tampered or pickled
        # file, before binding the port.
        _, path = ServiceState(settings).target()
        verify_model_dir(path)
        # a transformer without an ONNX export needs torch: say so before binding the port
        require_engine(path, read_config(path), settings.engine)
    except (ModelDirError, RegistryError, MissingExtra) as exc:
        where = settings.registry or settings.model_dir
        raise _fail(f"cannot serve {where}: {exc}") from exc
    try:
        settings_logging(settings)
    except ValueError as exc:  # a bad ADUAN_LOG_LEVEL / ADUAN_LOG_FORMAT
        raise _fail(str(exc)) from exc
    try:
        application = create_app(settings)
    except KeysFileError as exc:
        raise _fail(f"cannot serve: {exc}") from exc
    if not run(application, settings, host, port):  # the lifespan refused the model
        raise typer.Exit(code=3)


def settings_logging(settings: Settings) -> None:
    """The root options (-v, --log-level, --log-format) configured logging already; a level
    or format the settings name explicitly (the environment or a .env file) wins, the rest
    stay as they are."""
    from aduan.model.logs import configure_logging

    given = settings.model_fields_set & {"log_level", "log_format"}
    if not given:
        return
    configure_logging(
        settings.log_level if "log_level" in given else logging.getLevelName(logging.root.level),
        settings.log_format if "log_format" in given else None,
        replace=True,
    )


def _store(database_url: str | None, migrate: bool = True) -> Store:
    from .settings import Settings
    from .storage import open_store

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


@requests_app.command("duplicate-verdicts")
def requests_duplicate_verdicts(database_url: DbOpt = None) -> None:
    """The operators' merges and "not a duplicate" verdicts by similarity: how often a
    suggestion at or above each threshold was merged (to tune ADUAN_DUPLICATE_THRESHOLD)."""
    from .merges import threshold_table, verdicts

    store = _store(database_url)
    judged = verdicts(store)
    store.close()
    typer.echo(f"{len(judged)} judged suggestion(s)")
    for row in threshold_table(judged):
        share = row["merged_share"]
        shown = "-" if share is None else f"{share:.2f}"
        typer.echo(f"  >= {row['threshold']:.2f}: {row['judged']:5d} judged, {shown} merged")


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
        from aduan.model.spreadsheet import write_csv

        write_csv(frame, output)  # citizens' texts in a spreadsheet: none runs as a formula
    elif suffix in (".jsonl", ".json"):
        frame.to_json(output, orient="records", lines=True, force_ascii=False)
    elif suffix == ".parquet":
        frame.to_parquet(output, index=False)
    else:
        raise _fail(f"unsupported output type {suffix!r}; use .csv, .jsonl or .parquet")
    typer.echo(f"wrote {len(frame)} corrected request(s) to {output}")


@keys_app.command("new")
def keys_new(
    name: Annotated[str, typer.Option(help="Who holds the key (recorded in audit trails)")],
    scopes: Annotated[
        str, typer.Option(help="Comma-separated: classify, operator, admin")
    ] = "classify",
) -> None:
    """Make a random key: prints the key (give it to its holder; it is shown only now) on
    stderr and the line for the keys file on stdout (`>> keys.txt`)."""
    from .keys import SCOPES, hash_key, new_key

    wanted = [s.strip() for s in scopes.split(",") if s.strip()]
    if not wanted or any(s not in SCOPES for s in wanted):
        raise _fail(f"--scopes must be among {', '.join(SCOPES)}, got {scopes!r}")
    key = new_key()
    typer.echo(f"key for {name} (shown once): {key}", err=True)
    typer.echo(f"{name} {','.join(wanted)} {hash_key(key)}")


@keys_app.command("hash")
def keys_hash() -> None:
    """Hash a key read from stdin (one line), for ADUAN_API_KEYS (`name:sha256:...`) or the
    keys file; the key never appears in a command line or shell history."""
    import sys

    from .keys import hash_key

    key = sys.stdin.readline().strip()
    if not key:
        raise _fail("give the key on stdin, e.g. `aduan keys hash < key.txt`")
    typer.echo(hash_key(key))
