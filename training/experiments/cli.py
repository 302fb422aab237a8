"""`python -m aduan.training.experiments`: the experiments of bench/quality.md, each a training
run like `aduan train --output DIR` plus what the experiment adds (never part of `aduan train`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from aduan.training.cli import pairs, print_summary
from aduan.training.config import TrainConfig, load_config

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Experiments kept out of the product trainer (bench/quality.md).",
)

PresetOpt = Annotated[str, typer.Option(help="Transformer preset in training/presets/")]
OutputOpt = Annotated[Path, typer.Option(help="Model directory to write")]
DataOpt = Annotated[list[Path] | None, typer.Option(help="Labelled file; repeat for several")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a setting: --set transformer.epochs=2")
]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=2)


def _config(preset: str, data: list[Path] | None, set_: list[str] | None) -> TrainConfig:
    files = [str(p) for p in data] if data else None
    return load_config(preset, pairs(set_, "--set"), data=files)


@app.callback()
def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")


@app.command()
def ablation(
    output: OutputOpt,
    preset: PresetOpt = "fast",
    data: DataOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train like `aduan train`, plus every component and combination of the mixture on the
    validation rows (metrics.json -> validation_variants; bench/quality.py renders them)."""
    from .ablation import train_with_ablation

    try:
        metrics = train_with_ablation(_config(preset, data, set_), output)
    except (ValueError, FileNotFoundError) as exc:  # bad settings, data, teacher
        raise _fail(str(exc)) from exc
    print_summary(metrics["validation"], f"validation metrics, model in {output}")


@app.command()
def distill(
    output: OutputOpt,
    teacher: Annotated[Path, typer.Option(help="Trained transformer directory, same data/split")],
    preset: PresetOpt = "fast",
    weight: Annotated[float, typer.Option(help="Weight of the KL term")] = 0.5,
    temperature: Annotated[float, typer.Option(help="Softening temperature")] = 2.0,
    data: DataOpt = None,
    set_: SetOpt = None,
) -> None:
    """Train a student on the labels and on the teacher's softened probabilities."""
    from .distillation import distill as run

    try:
        metrics = run(_config(preset, data, set_), teacher, output, weight, temperature)
    except (ValueError, FileNotFoundError) as exc:  # bad settings, data, teacher
        raise _fail(str(exc)) from exc
    print_summary(metrics["validation"], f"validation metrics, student in {output}")
