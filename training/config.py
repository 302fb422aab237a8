"""Training settings: one small dataclass per component with its defaults beside it (spaCy's
`default_config`), filled from a preset file plus `--set` overrides; the resolved copy is saved
with the model (`training_config.json`).

A preset (`training/presets/*.yaml`) holds the run's own settings at the top (model kind, data,
time split, the routing promise, refit) and one section per component:

    model_kind: transformer
    refit_all: true
    tfidf: {class_weight: balanced}
    transformer: {epochs: 4, frozen_layers: 10, export: int8}
    mixing: {objective: metrics}

`--set tfidf.svm_c=0.3` overrides a section's setting, `--set refit_all=false` a run setting.
Presets, `--set` keys and `training_config.json` files from before the sections (every setting
at the top: `svm_c: 0.3`) are still read: each flat name moves into its section, and a WARNING
names the new spelling. Settings that moved to `aduan.training.experiments` are refused with
a pointer there (an old file that recorded them is read with a warning).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

import yaml

from aduan.model.resources import default_data, packaged

log = logging.getLogger(__name__)

T = TypeVar("T")
PRESETS = "presets"  # *.yaml inside this package
# How the auto-route threshold may be chosen (`metrics.choose_threshold`).
THRESHOLD_METHODS = ("point", "lcb")


@dataclass
class TfidfConfig:
    """TF-IDF word + character n-grams with a linear SVM per head: the `tfidf` kind, and the
    part the transformer mixes in."""

    word_ngram_max: int = 2
    char_ngram_min: int = 2
    char_ngram_max: int = 5
    min_df: int = 2
    max_features: int = 300_000
    svm_c: float = 0.5
    class_weight: str = ""  # "" or "balanced"


@dataclass
class TransformerConfig:
    """The fine-tuned encoder with heads for category, agency and (with `topic_head`) topic."""

    # A base directory or hub id; empty: the default e5-small, built once in `base_cache`.
    base: str = ""
    base_cache: str = "models/base"
    adapt_steps: int = 0  # domain-adaptive MLM steps on the default base first (0 = none)
    adapt_lr: float = 5e-5  # the adaptation's learning rate once the MLM head is warm
    # The share of `adapt_steps` that trains the fresh MLM head alone (encoder frozen) first.
    adapt_head_warmup: float = 0.5
    # Keep only the lowest N layers of the base encoder (0 = all): a smaller, faster network.
    encoder_layers: int = 0
    # Freeze the embeddings and the lowest N layers; their outputs are computed once per text.
    frozen_layers: int = 0
    max_length: int = 128
    epochs: int = 3  # at most: the best epoch on the validation months is kept
    patience: int = 2
    batch_size: int = 32
    lr_encoder: float = 1e-4
    lr_head: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    dropout: float = 0.1
    class_weight_power: float = 0.5  # loss weight per class ~ count^-power; 0 = unweighted
    topic_head: bool = True  # a fine topic head plus the topic -> agency routing table
    min_topic_rows: int = 5
    bf16: bool = True
    max_steps: int = 0  # stop after this many optimiser steps (0 = no limit; for smoke runs)
    # The ONNX file shipped in the model directory, on which mixing and calibration are
    # fitted: "" (none: PyTorch serves), "fp32" or "int8".
    export: str = ""


@dataclass
class MixingConfig:
    """How the encoder, the topic routing table and the TF-IDF model are mixed; the weights
    are chosen on the validation months."""

    tfidf: bool = True  # mix a TF-IDF model in
    # What the weights are chosen for: "nll" (log-likelihood) or "metrics" (accuracy +
    # macro-F1 + auto-routed share, the figures the product reports).
    objective: str = "nll"


@dataclass
class CalibrationConfig:
    """How the auto-route threshold is chosen on the validation months for the promised
    `route_accuracy` (docs/quality.md, bench/rolling.py measures it on later months)."""

    # "point": the lowest threshold whose routed validation rows are `route_accuracy`
    # accurate as measured; "lcb": whose one-sided lower confidence bound reaches it.
    threshold_method: str = "point"
    confidence: float = 0.95  # the bound's confidence level ("lcb")
    margin: float = 0.0  # added to `route_accuracy` for the choice (a drift allowance)

    def __post_init__(self) -> None:
        # Refused when the settings are read, not after a training run has spent its time.
        if self.threshold_method not in THRESHOLD_METHODS:
            raise ValueError(
                f"calibration.threshold_method must be one of {THRESHOLD_METHODS}, "
                f"got {self.threshold_method!r}"
            )
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"calibration.confidence must be in (0, 1), got {self.confidence}")
        if not 0.0 <= self.margin < 1.0:
            raise ValueError(f"calibration.margin must be in [0, 1), got {self.margin}")


@dataclass
class TrainConfig:
    """Everything that decides what a training run produces; saved with the model."""

    preset: str = "baseline"
    model_kind: str = "tfidf"  # "tfidf" or "transformer"
    data: list[str] = field(default_factory=lambda: [str(default_data())])
    columns: dict[str, str] = field(default_factory=dict)
    taxonomy: str = ""  # empty: the project's data/taxonomy.yaml
    # The time split: train on the older months, choose and calibrate on the newer ones. By
    # default the validation window is the newest `valid_months` months present in the data
    # (`data.plan_split`); the dates override it (`aduan train --train-until/--valid-from`).
    # The model records the dates the run resolved.
    valid_months: int = 2
    train_until: str = ""
    valid_from: str = ""
    valid_until: str = ""
    min_agency_rows: int = 30
    route_accuracy: float = 0.95
    # After validation has chosen epochs, mixing, temperatures and thresholds, fit the shipped
    # weights again on every row (training + validation months): the newest complaints matter.
    refit_all: bool = False
    seed: int = 13
    device: str = "auto"  # "cpu", "cuda" or "auto" (a GPU when CUDA is there)
    threads: int = 0  # torch threads (0 = all cores)
    tfidf: TfidfConfig = field(default_factory=TfidfConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS: dict[str, type] = {
    name: kind
    for name, kind in get_type_hints(TrainConfig).items()
    if isinstance(kind, type) and dataclasses.is_dataclass(kind)
}
RUN_SETTINGS: dict[str, Any] = {
    name: kind for name, kind in get_type_hints(TrainConfig).items() if name not in SECTIONS
}
# Flat names of before the sections -> (section, name); the two that changed their name.
FLAT: dict[str, tuple[str, str]] = {
    name: (section, name)
    for section, kind in SECTIONS.items()
    for name in get_type_hints(kind)
    if name not in SECTIONS and name not in RUN_SETTINGS
}
FLAT |= {"ensemble_tfidf": ("mixing", "tfidf"), "mixing_objective": ("mixing", "objective")}
# Settings of experiments that left the product trainer: their old default, and where they went.
_DISTILL = "distillation is an experiment: aduan.training.experiments.distillation"
RETIRED: dict[str, tuple[Any, str]] = {
    "prior_correction": (0.0, "prior correction is an experiment: aduan.training.experiments"),
    "distill_from": ("", _DISTILL),
    "distill_weight": (0.5, _DISTILL),
    "distill_temperature": (2.0, _DISTILL),
}


def _coerce(value: str, kind: Any) -> Any:
    if kind is bool:
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if kind in (int, float, str):
        return kind(value)
    # Lists and dicts are given as JSON: data=["a.csv","b.csv"]
    return json.loads(value)


def apply_overrides(
    kind: type, values: dict[str, Any], overrides: dict[str, str] | None, where: str = "--set"
) -> dict[str, Any]:
    """`values` with `key=value` strings applied, each coerced to the type of the field of the
    flat settings dataclass `kind`; unknown keys and bad values raise `ValueError` naming them
    (pretraining, adaptation and the gate; training's sections go through `load_config`)."""
    hints = get_type_hints(kind)
    out = dict(values)
    for key, raw in (overrides or {}).items():
        if key not in hints:
            raise ValueError(f"{where}: unknown setting {key!r}; choose from {sorted(hints)}")
        out[key] = _typed(where, key, raw, hints[key])
    return out


def _typed(where: str, key: str, raw: str, kind: Any) -> Any:
    try:
        return _coerce(raw, kind)
    except (ValueError, json.JSONDecodeError) as exc:
        raise ValueError(f"{where}: setting {key!r}: {exc}") from exc


def settings(kind: type[T], overrides: dict[str, str] | None) -> T:
    """A flat settings dataclass from its defaults and `key=value` overrides."""
    return kind(**apply_overrides(kind, {}, overrides))


def setting_names() -> list[str]:
    """Every training setting as `--set` spells it: run settings, then `section.name`."""
    names = sorted(RUN_SETTINGS)
    for section, kind in SECTIONS.items():
        names += [f"{section}.{name}" for name in get_type_hints(kind)]
    return names


def _locate(key: str, where: str) -> tuple[str | None, str]:
    """(section or None for a run setting, name) of a `--set` key, flat spellings included."""
    section, dot, name = key.partition(".")
    if dot and section in SECTIONS and name in get_type_hints(SECTIONS[section]):
        return section, name
    if not dot and key in RUN_SETTINGS:
        return None, key
    if not dot and key in FLAT:
        section, name = FLAT[key]
        log.warning("%s: the flat setting %r is deprecated; write %s.%s", where, key, section, name)
        return section, name
    if key in RETIRED:
        raise ValueError(f"{where}: setting {key!r} left the product trainer: {RETIRED[key][1]}")
    raise ValueError(f"{where}: unknown setting {key!r}; choose from {setting_names()}")


def nest(values: dict[str, Any], where: str, *, recorded: bool = False) -> dict[str, Any]:
    """Settings as read from a preset or a saved file, sections as mappings: flat names of
    before the sections moved into theirs (with a deprecation WARNING), unknown names refused
    naming them. Retired experiment settings at their old default are dropped; otherwise
    refused, or, for a `recorded` file (what a model was trained with), dropped with a
    warning."""
    out: dict[str, Any] = {section: {} for section in SECTIONS}
    moved, unknown = [], []
    for key, value in values.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                raise ValueError(f"{where}: section {key!r} must be a mapping, got {value!r}")
            known = get_type_hints(SECTIONS[key])
            unknown += [f"{key}.{name}" for name in value if name not in known]
            out[key].update(value)
        elif key in RUN_SETTINGS:
            out[key] = value
        elif key in FLAT:
            section, name = FLAT[key]
            out[section][name] = value
            moved.append(f"{key} -> {section}.{name}")
        elif key in RETIRED:
            default, moved_to = RETIRED[key]
            if value != default and not recorded:
                raise ValueError(f"{where}: setting {key!r} left the product trainer: {moved_to}")
            if value != default:
                log.warning("%s: %s=%r is ignored: %s", where, key, value, moved_to)
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {sorted(unknown)}")
    if moved:
        log.warning(
            "%s: flat settings are deprecated; write them in their sections: %s",
            where,
            ", ".join(moved),
        )
    return out


def _build(nested: dict[str, Any]) -> TrainConfig:
    sections = {name: kind(**nested[name]) for name, kind in SECTIONS.items()}
    run = {k: v for k, v in nested.items() if k not in SECTIONS}
    return TrainConfig(**run, **sections)


def available_presets() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml")
        for p in packaged("aduan.training", PRESETS).iterdir()
        if p.name.endswith(".yaml")
    )


def load_config(
    preset: str,
    overrides: dict[str, str] | None = None,
    *,
    data: list[str] | None = None,
    base: str | None = None,
) -> TrainConfig:
    """Preset file first, then `key=value` string overrides (`section.name=value` or a run
    setting), then the files `data` and the base encoder `base` when given."""
    path = packaged("aduan.training", PRESETS).joinpath(f"{preset}.yaml")
    if not path.is_file():
        raise ValueError(f"unknown preset {preset!r}; choose one of {available_presets()}")
    values: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    nested = nest(values, f"preset {preset!r}")
    nested["preset"] = preset
    for key, raw in (overrides or {}).items():
        section, name = _locate(key, "--set")
        kind = get_type_hints(SECTIONS[section] if section else TrainConfig)[name]
        (nested[section] if section else nested)[name] = _typed("--set", key, raw, kind)
    if data is not None:
        nested["data"] = data
    if base is not None:
        nested["transformer"]["base"] = base
    return _build(nested)


def config_from_file(path: Path) -> TrainConfig:
    """The settings a model directory's `training_config.json` recorded, sectioned or flat
    (written before the sections; read with a deprecation warning)."""
    values = json.loads(Path(path).read_text(encoding="utf-8"))
    return _build(nest(values, str(path), recorded=True))


def dotted(values: dict[str, Any]) -> dict[str, Any]:
    """Sectioned settings (`TrainConfig.to_dict()`) as `name`/`section.name` -> value, for
    experiment trackers."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECTIONS:
            out.update({f"{key}.{name}": v for name, v in value.items()})
        else:
            out[key] = value
    return out
