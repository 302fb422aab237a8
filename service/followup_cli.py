"""`aduan followup`: deliver the outbox and sweep deadlines from cron (or a CronJob), for a
deployment that runs the service with `ADUAN_FOLLOWUP_LOOP=false`, and dead-letter care."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

PLAIN: dict[str, Any] = {"no_args_is_help": True, "rich_markup_mode": None}
followup_app = typer.Typer(
    help="Follow-up of routed complaints: webhook dispatch, the overdue sweep.", **PLAIN
)

DbOpt = Annotated[
    str | None,
    typer.Option("--database-url", help="SQLAlchemy URL (default: ADUAN_DATABASE_URL)"),
]
OfficesOpt = Annotated[
    Path | None, typer.Option("--offices", help="Offices file (default: ADUAN_OFFICES_FILE)")
]


def _open(database_url: str | None, offices: Path | None) -> tuple[Any, Any, Any]:
    from .offices import OfficeBook, OfficesFileError
    from .settings import Settings
    from .storage import open_store

    overrides: dict[str, Any] = {}
    if database_url:
        overrides["database_url"] = database_url
    if offices:
        overrides["offices_file"] = offices
    settings = Settings(**overrides)
    if settings.offices_file is None:
        typer.secho("error: no offices file (--offices or ADUAN_OFFICES_FILE)", err=True)
        raise typer.Exit(code=2)
    try:
        book = OfficeBook(settings.offices_file)
    except OfficesFileError as exc:
        typer.secho(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    return settings, open_store(settings), book


@followup_app.command("dispatch")
def dispatch(
    once: Annotated[bool, typer.Option("--once", help="One round, then exit")] = False,
    database_url: DbOpt = None,
    offices: OfficesOpt = None,
) -> None:
    """Deliver due webhook events (claimed safely beside the service's own dispatchers)."""
    from .dispatch import Dispatcher, DispatchSettings

    settings, store, book = _open(database_url, offices)
    dispatcher = Dispatcher(
        store,
        book,
        DispatchSettings.of(settings),
    )
    try:
        while True:
            outcome = dispatcher.run_once()
            typer.echo(
                f"delivered {outcome.delivered}, failed {outcome.failed}, dead {outcome.dead}"
            )
            if once:
                break
            time.sleep(settings.dispatch_interval_s)
    finally:
        dispatcher.close()
        store.close()


@followup_app.command("sweep")
def sweep_command(database_url: DbOpt = None, offices: OfficesOpt = None) -> None:
    """Mark complaints past their deadline overdue, queue `complaint.overdue`, escalate."""
    from .followup import sweep

    _, store, book = _open(database_url, offices)
    marked = sweep(store, book)
    store.close()
    typer.echo(f"{len(marked)} complaint(s) became overdue")


@followup_app.command("redeliver")
def redeliver_command(
    event_id: Annotated[str, typer.Argument(help="A dead-lettered event's id (msg_...)")],
    database_url: DbOpt = None,
    offices: OfficesOpt = None,
) -> None:
    """Put a dead-lettered event back in the queue (same webhook-id)."""
    from .dispatch import redeliver

    _, store, _ = _open(database_url, offices)
    done = redeliver(store, event_id)
    store.close()
    if not done:
        typer.secho(f"error: no dead-lettered event {event_id!r}", err=True)
        raise typer.Exit(code=1)
    typer.echo(f"{event_id} queued again")


@followup_app.command("import-history")
def import_history_command(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="The labelled complaints file (default: the shared one)"),
    ] = None,
    database_url: DbOpt = None,
    offices: OfficesOpt = None,
    timezone: Annotated[
        str, typer.Option(help="The zone the file's times are in (Surabaya: WIB)")
    ] = "Asia/Jakarta",
) -> None:
    """Import the file's handling history (arrival, first response, resolution bucket) as
    closed complaints, so the performance page starts from the real history. Texts are not
    imported; running it again imports nothing twice. The offices file, when given, sets
    each office's first-response deadline (its `sla_hours`; else 24 h)."""
    from aduan.model.history import HistoryError
    from aduan.model.resources import default_data

    from .history_import import history_frame, import_history
    from .offices import OfficeBook, OfficesFileError
    from .settings import Settings
    from .storage import open_store

    overrides: dict[str, Any] = {"database_url": database_url} if database_url else {}
    settings = Settings(**overrides)
    sla: dict[str, float] = {}
    path = offices or settings.offices_file
    try:
        if path is not None:
            sla = {o.name: o.sla_hours for o in OfficeBook(path).all()}
        frame = history_frame(data or default_data(), sla, timezone)
    except (OfficesFileError, HistoryError) as exc:
        typer.secho(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    store = open_store(settings)
    try:
        outcome = import_history(store, frame)
    finally:
        store.close()
    typer.echo(
        f"{outcome.rows} complaint(s) in the file: {outcome.imported} imported, "
        f"{outcome.already} already there"
    )
