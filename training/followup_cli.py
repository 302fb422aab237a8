"""`aduan followup` from the history: SLAs, the deadline model, office figures.

`sla` measures each office's first-response p85 and writes it into an offices file, `deadlines
train` fits and measures the resolution-bucket predictor, `report` prints the office figures of
a labelled file's history. Each is a thin wrapper around a plain function (`aduan.model.sla`,
`aduan.training.deadlines`, `aduan.model.performance`); the service side adds its own
`followup` commands, merged under the same name by the root app.
"""

from __future__ import annotations

import json
import os
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from aduan.model.history import HistoryError, load_history
from aduan.model.resources import default_data
from aduan.model.sla import DEFAULT_MIN_ROWS, DEFAULT_QUANTILE, merge_offices, office_slas

PLAIN: dict[str, Any] = {"no_args_is_help": True, "rich_markup_mode": None}
followup_history = typer.Typer(
    help="Follow-up figures from the history: SLAs, deadlines, office performance.", **PLAIN
)
deadlines_app = typer.Typer(help="The resolution-time (deadline) model.", **PLAIN)
followup_history.add_typer(deadlines_app, name="deadlines")

DataOpt = Annotated[
    Path | None,
    typer.Option(help="Labelled complaints file with created_at, responded_at, response_days"),
]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _history(data: Path | None) -> Any:
    try:
        return load_history(data or default_data())
    except HistoryError as exc:
        raise _fail(str(exc)) from exc


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def write_offices(path: Path, table: list[Any], overwrite: bool = True) -> dict[str, Any]:
    """Merge `table` into the offices file at `path` (created when missing) and write it."""
    document: dict[str, Any] = {}
    if path.is_file():
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ValueError(f"{path}: not YAML ({exc})") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping with `offices:` at the top")
        document = loaded or {}
    merged = merge_offices(document, table, overwrite=overwrite)
    _write_atomic(path, yaml.safe_dump(merged, sort_keys=False, allow_unicode=True))
    return merged


@followup_history.command()
def sla(
    data: DataOpt = None,
    quantile: Annotated[
        float, typer.Option(min=0.01, max=0.99, help="Quantile of first-response hours")
    ] = DEFAULT_QUANTILE,
    min_rows: Annotated[
        int, typer.Option(min=1, help="Offices with fewer first responses get no SLA")
    ] = DEFAULT_MIN_ROWS,
    output: Annotated[
        Path | None, typer.Option(help="Offices YAML to write or merge into (other keys kept)")
    ] = None,
    keep_existing: Annotated[
        bool, typer.Option(help="Keep an office's sla_hours already in --output")
    ] = False,
) -> None:
    """Each office's first-response SLA from the history (the --quantile of hours from
    created_at to responded_at, rounded up), printed as a table; with --output, written into
    the offices file's `offices: [{name, sla_hours}]`. Comments in that file are not kept."""
    table = office_slas(_history(data), quantile, min_rows)
    typer.echo("sla_hours\trows\tmedian_hours\twithin_24h\toffice")
    for s in table:
        typer.echo(f"{s.sla_hours:g}\t{s.rows}\t{s.median_hours:.1f}\t{s.within_24h:.3f}\t{s.name}")
    if output is not None:
        try:
            write_offices(output, table, overwrite=not keep_existing)
        except ValueError as exc:
            raise _fail(str(exc)) from exc
        typer.secho(f"{len(table)} office SLA(s) written to {output}", err=True)


@deadlines_app.command("train")
def deadlines_train(
    output: Annotated[Path, typer.Option(help="Directory to write the deadline model into")],
    data: DataOpt = None,
    refit: Annotated[
        bool, typer.Option(help="Refit on every labelled row once measured (default)")
    ] = True,
) -> None:
    """Fit the resolution-bucket predictor (text, agency, unit), measure it on the newest two
    months against the agency baseline, and write the directory; the default predictor is the
    baseline unless the model beat it. Prints the measured figures as JSON."""
    from aduan.training.deadlines import fit_deadlines

    try:
        fitted = fit_deadlines(_history(data), refit=refit)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    fitted.model.save(output)
    summary = {
        "default": fitted.metrics["default"],
        "months": fitted.metrics["months"],
        "test": {
            name: {k: v for k, v in figures.items() if k not in ("reliability", "buckets")}
            for name, figures in fitted.metrics["test"].items()
        },
    }
    typer.echo(json.dumps(summary, indent=1))


class GroupBy(StrEnum):
    OFFICE = "office"
    KECAMATAN = "kecamatan"
    ALL = "all"


def _offices_sla(path: Path) -> dict[str, float]:
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {
        str(o["name"]): float(o["sla_hours"])
        for o in raw.get("offices") or []
        if isinstance(o, dict) and o.get("sla_hours") is not None
    }


@followup_history.command()
def report(
    data: DataOpt = None,
    from_: Annotated[
        str | None, typer.Option("--from", help="First day (ISO date), default the first")
    ] = None,
    to: Annotated[
        str | None, typer.Option(help="Day after the last (ISO date), default the last + 1")
    ] = None,
    by: Annotated[GroupBy, typer.Option(case_sensitive=False)] = GroupBy.OFFICE,
    weekly: Annotated[bool, typer.Option(help="One row per ISO week instead of the range")] = False,
    offices: Annotated[
        Path | None, typer.Option(help="Offices YAML whose sla_hours set the deadlines")
    ] = None,
    csv: Annotated[Path | None, typer.Option(help="Write the rows as CSV here")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write them as JSON")] = None,
    plot: Annotated[
        Path | None, typer.Option(help="PNG of the weekly figures (needs the plots extra)")
    ] = None,
) -> None:
    """Office figures on a labelled file's history, as closed complaints: received,
    acknowledged within the SLA, median/p90 hours to first response and to close, backlog,
    overdue, sent-back rate. SLAs from --offices, else measured from the same history."""
    from aduan.model.performance import (
        history_complaints,
        office_performance,
        plot_performance,
        to_records,
    )

    history = _history(data)
    slas = _offices_sla(offices) if offices else {s.name: s.sla_hours for s in office_slas(history)}
    complaints = history_complaints(history, slas)
    column = None if by is GroupBy.ALL else by.value
    try:
        table = office_performance(complaints, column, from_, to, weekly=weekly)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    table = table.sort_values(["period_start", "received"], ascending=[True, False], kind="stable")
    if csv:
        table.to_csv(csv, index=False)
    if json_out:
        _write_atomic(json_out, json.dumps(to_records(table), indent=1, ensure_ascii=False))
    if plot:
        weekly_table = table if weekly else office_performance(complaints, column, from_, to)
        plot_performance(weekly_table, plot, by=column or "group")
    shown = table.drop(columns=["period_start", "period_end"])
    typer.echo(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
