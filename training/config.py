"""Training settings: a dataclass filled from a preset file plus `key=value` overrides."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_type_hints

import yaml

from aduan.model.resources import default_data, packaged

T = TypeVar("T")
PRESETS = "presets"  # *.yaml inside this package


@dataclass
class TrainConfig:
    """Everything that decides what a training run produces; saved with the model."""

    preset: str = "baseline"
    model_kind: str = "tfidf"  # "tfidf" or "transformer"
    data: list[str] = field(default_factory=lambda: [str(default_data())])
    columns: dict[str, str] = field(default_factory=dict)
    taxonomy: str = ""  # empty: the project's data/taxonomy.yaml
    train_until: str = "2023-01-31"
    valid_from: str = "2023-02-01"
    valid_until: str = "2023-03-31"
    min_agency_rows: int = 30
    route_accuracy: float = 0.95
    # After validation has chosen temperatures and thresholds, fit the shipped weights again on
    # every row (training + validation months): the newest complaints matter (time drift).
    refit_all: bool = False
    seed: int = 13
    # TF-IDF baseline
    word_ngram_max: int = 2
    char_ngram_min: int = 2
    char_ngram_max: int = 5
    min_df: int = 2
    max_features: int = 300_000
    svm_c: float = 0.5
    class_weight: str = ""  # "" or "balanced"
    # Transformer (see the transformer presets)
    base: str = ""
    max_length: int = 128
    epochs: int = 3
    batch_size: int = 32
    lr_encoder: float = 1e-4
    lr_head: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    bf16: bool = True
    patience: int = 2
    dropout: float = 0.1
    class_weight_power: float = 0.5  # loss weight per class ~ count^-power; 0 = unweighted
    topic_head: bool = True  # a fine topic head plus the topic -> agency routing table
    min_topic_rows: int = 5
    ensemble_tfidf: bool = True  # mix the TF-IDF baseline in, weight fitted on validation
    # Logit adjustment of the mixed probabilities: minus t * log(training class frequency).
    prior_correction: float = 0.0
    # Keep only the lowest N layers of the base encoder (0 = all): a smaller, faster network.
    encoder_layers: int = 0
    # Freeze the embeddings and the lowest N layers; their outputs are computed once per text.
    frozen_layers: int = 0
    # How the encoder, routing table and TF-IDF model are mixed: "nll" (log-likelihood) or
    # "metrics" (accuracy + macro-F1 + auto-routed share, prior correction searched too).
    mixing_objective: str = "nll"
    # The ONNX file shipped in the model directory and used to fit the calibration:
    # "" (none: PyTorch serves), "fp32" or "int8".
    export: str = ""
    # Distillation: a trained transformer directory (same data and split) whose softened
    # probabilities the network also learns (KL weight, temperature).
    distill_from: str = ""
    distill_weight: float = 0.5
    distill_temperature: float = 2.0
    device: str = "auto"  # "cpu", "cuda" or "auto" (a GPU when CUDA is there)
    max_steps: int = 0  # stop after this many optimiser steps (0 = no limit; for smoke runs)
    base_cache: str = "models/base"  # where the default base encoder is built and cached
    adapt_steps: int = 0  # domain-adaptive MLM steps on the default base first (0 = none)
    adapt_lr: float = 5e-5  # the adaptation's learning rate once the MLM head is warm
    # The share of `adapt_steps` that trains the fresh MLM head alone (encoder frozen) first.
    adapt_head_warmup: float = 0.5
    threads: int = 0  # torch threads (0 = all cores)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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
    settings dataclass `kind`; unknown keys and bad values raise `ValueError` naming them.
    The one parser of settings overrides (training, pretraining, adaptation)."""
    hints = get_type_hints(kind)
    out = dict(values)
    for key, raw in (overrides or {}).items():
        if key not in hints:
            raise ValueError(f"{where}: unknown setting {key!r}; choose from {sorted(hints)}")
        try:
            out[key] = _coerce(raw, hints[key])
        except (ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"{where}: setting {key!r}: {exc}") from exc
    return out


def settings(kind: type[T], overrides: dict[str, str] | None) -> T:
    """A settings dataclass from its defaults and `key=value` overrides."""
    return kind(**apply_overrides(kind, {}, overrides))


def available_presets() -> list[str]:
    return sorted(
        p.name.removesuffix(".yaml")
        for p in packaged("aduan.training", PRESETS).iterdir()
        if p.name.endswith(".yaml")
    )


def load_config(
    preset: str, overrides: dict[str, str] | None = None, **explicit: Any
) -> TrainConfig:
    """Preset file first, then `key=value` string overrides, then typed keyword values."""
    path = packaged("aduan.training", PRESETS).joinpath(f"{preset}.yaml")
    if not path.is_file():
        raise ValueError(f"unknown preset {preset!r}; choose one of {available_presets()}")
    values: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = set(values) - set(get_type_hints(TrainConfig))
    if unknown:
        raise ValueError(f"preset {preset!r}: unknown setting(s) {sorted(unknown)}")
    values["preset"] = preset
    values = apply_overrides(TrainConfig, values, overrides)
    values.update({k: v for k, v in explicit.items() if v is not None})
    return TrainConfig(**values)
