"""The model-directory contract shared by every model kind: file names, format version,
validation, and the registry of model kinds.

A model directory describes itself:

    config.json            model_type, format_version, heads (id2label/label2id), temperatures,
                           thresholds, library versions, and what the kind adds
    training_config.json   the resolved training settings
    metrics.json           validation metrics written at training time
    README.md              the model card
    taxonomy.yaml          the taxonomy the labels were derived with
    locations.json         street/landmark -> kelurahan index learned from training addresses
    + the files of its kind: each kind (`tfidf.py`, `network.py`) owns a symmetric
      `save(dir)` / `load(dir, config)` pair and declares the files it needs.
"""

from __future__ import annotations

import importlib
import json
import logging
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from .labels import HEADS, LabelSet

log = logging.getLogger(__name__)

CONFIG = "config.json"
TRAINING_CONFIG = "training_config.json"
METRICS = "metrics.json"
CARD = "README.md"
TAXONOMY = "taxonomy.yaml"
LOCATIONS = "locations.json"
PLOTS = "plots"

# 1: directories written before the version was recorded (no `format_version` key).
# 2: `format_version` and `versions` recorded; the kinds' files are unchanged from 1.
FORMAT_VERSION = 2

# model_type -> "module:class" inside this package, imported only when that kind is loaded
# (a TF-IDF directory never imports torch).
KINDS = {
    "aduan-tfidf": "tfidf:TfidfBackend",
    "aduan-transformer": "transformer:TransformerBackend",
}
MODEL_TYPES = tuple(KINDS)
# Libraries whose major version must match the one that wrote the directory.
CHECKED_LIBRARIES = ("scikit-learn", "transformers", "torch", "onnxruntime")


class ModelDirError(ValueError):
    """A model directory that cannot be loaded; the message says what is wrong and where."""


class ModelKind(Protocol):
    """One model kind: maps texts to raw per-head scores and owns its files."""

    model_type: ClassVar[str]

    def logits(self, texts: list[str]) -> dict[str, np.ndarray]: ...

    def save(self, model_dir: Path) -> dict[str, Any]:
        """Write the kind's files into `model_dir`; return its entries for config.json."""
        ...

    @classmethod
    def required_files(cls, config: dict[str, Any]) -> tuple[str, ...]: ...

    @classmethod
    def load(cls, model_dir: Path, config: dict[str, Any], **options: Any) -> ModelKind:
        """Read the kind's files; `options` (e.g. `engine`, `threads`) tune how it runs."""
        ...


def kind_class(model_type: str) -> type[ModelKind]:
    """The class that saves and loads directories of `model_type`."""
    try:
        module, name = KINDS[model_type].split(":")
    except KeyError as exc:
        raise ModelDirError(f"model_type must be one of {MODEL_TYPES}, got {model_type!r}") from exc
    kind: type[ModelKind] = getattr(importlib.import_module(f".{module}", __package__), name)
    return kind


def load_kind(model_dir: Path, config: dict[str, Any], **options: Any) -> ModelKind:
    """Load the kind named in a validated config, after checking its files are there."""
    kind = kind_class(config["model_type"])
    missing = [name for name in kind.required_files(config) if not (model_dir / name).is_file()]
    if missing:
        raise ModelDirError(f"{model_dir / missing[0]}: required file is missing")
    return kind.load(model_dir, config, **options)


def library_versions(packages: tuple[str, ...] = CHECKED_LIBRARIES) -> dict[str, str]:
    """Installed versions of the libraries a model directory depends on."""
    out = {}
    for package in packages:
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            continue
    return out


def check_versions(config: dict[str, Any], path: Path) -> list[str]:
    """Warnings for libraries whose major version differs from the one that wrote `path`."""
    installed = library_versions()
    warnings = []
    for package, written in (config.get("versions") or {}).items():
        now = installed.get(package)
        if now and now.split(".")[0] != str(written).split(".")[0]:
            warnings.append(
                f"{path}: written with {package} {written}, this environment has {now}; "
                "predictions may differ"
            )
    for warning in warnings:
        log.warning(warning)
    return warnings


def write_json(path: Path, data: Any) -> None:
    path.write_text(
        json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8"
    )


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ModelDirError(f"{path}: file is missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelDirError(f"{path}: not valid JSON ({exc})") from exc


def read_config(model_dir: Path | str) -> dict[str, Any]:
    """Read and validate `config.json`: a known kind and format version, and a dense id2label
    map for every head. Library version differences are logged as warnings."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError(f"{model_dir}: not a model directory")
    path = model_dir / CONFIG
    config = read_json(path)
    if not isinstance(config, dict):
        raise ModelDirError(f"{path}: expected a JSON object")
    if config.get("model_type") not in MODEL_TYPES:
        raise ModelDirError(
            f"{path}: model_type must be one of {MODEL_TYPES}, got {config.get('model_type')!r}"
        )
    found = config.get("format_version", 1)
    if not isinstance(found, int) or not 1 <= found <= FORMAT_VERSION:
        raise ModelDirError(
            f"{path}: format_version {found!r} is not one this aduan reads (1..{FORMAT_VERSION}); "
            "a newer aduan wrote it: upgrade aduan to load it"
        )
    heads = config.get("heads")
    if not isinstance(heads, dict):
        raise ModelDirError(f"{path}: config.json does not contain heads")
    for head in HEADS:
        if head not in heads:
            raise ModelDirError(f"{path}: head {head!r} is missing")
        try:
            LabelSet.from_json(heads[head])
        except (ValueError, TypeError, AttributeError) as exc:
            raise ModelDirError(
                f"{path}: head {head!r}: config.json does not contain a valid id2label ({exc})"
            ) from exc
    check_versions(config, model_dir)
    return config


def head_labels(config: dict[str, Any]) -> dict[str, LabelSet]:
    """The label set of every head in a validated config."""
    return {head: LabelSet.from_json(spec) for head, spec in config["heads"].items()}


def data_range(config: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The dates a model directory learned from, from its config and metrics: `train` and
    `validation` periods, and `seen_until`, the newest day of any row that shaped it (the
    validation months chose its temperatures and thresholds; `refit_all` fitted the weights
    on them too). Rows after `seen_until` are the only honest test rows. None when unknown."""
    data = (metrics or {}).get("data") or {}
    train, valid = data.get("train_period"), data.get("valid_period")
    if not train:
        return None
    seen = max(str(period[1]) for period in (train, valid) if period)
    refit = (config or {}).get("trained_on") or {}
    if refit.get("until"):
        seen = max(seen, str(refit["until"]))
    return {"from": str(train[0]), "train": train, "validation": valid, "seen_until": seen}
