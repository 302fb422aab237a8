"""Training settings: a dataclass filled from a preset file plus `key=value` overrides."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
# The shared, read-only data beside the repository; ADUAN_SHARED_DATA points elsewhere.
SHARED_DATA = Path(
    os.environ.get("ADUAN_SHARED_DATA")
    or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)
DEFAULT_DATA = SHARED_DATA / "surabaya" / "complaints_2022-01_2023-03.csv"


@dataclass
class TrainConfig:
    """Everything that decides what a training run produces; saved with the model."""

    preset: str = "baseline"
    model_kind: str = "tfidf"  # "tfidf" or "transformer"
    data: list[str] = field(default_factory=lambda: [str(DEFAULT_DATA)])
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
    max_steps: int = 0  # stop after this many optimiser steps (0 = no limit; for smoke runs)
    base_cache: str = "models/base"  # where the default base encoder is built and cached
    adapt_steps: int = 0  # domain-adaptive MLM steps on the default base first (0 = none)
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


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_config(
    preset: str, overrides: dict[str, str] | None = None, **explicit: Any
) -> TrainConfig:
    """Preset file first, then `key=value` string overrides, then typed keyword values."""
    path = PRESETS_DIR / f"{preset}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown preset {preset!r}; choose one of {available_presets()}")
    values: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    values["preset"] = preset
    hints = get_type_hints(TrainConfig)
    for key, raw in (overrides or {}).items():
        if key not in hints:
            raise ValueError(f"unknown setting {key!r}")
        try:
            values[key] = _coerce(raw, hints[key])
        except (ValueError, json.JSONDecodeError) as exc:
            raise ValueError(f"setting {key!r}: {exc}") from exc
    values.update({k: v for k, v in explicit.items() if v is not None})
    unknown = set(values) - set(hints)
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {sorted(unknown)}")
    return TrainConfig(**values)
