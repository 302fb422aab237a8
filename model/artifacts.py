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

import hashlib
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
# sha256 and size of every file in the directory (weights, vocabularies, tokenizer, the
# street index, config.json, routing.json, the card, plots, hidden files too), written last
# by training and rewritten by `aduan export` and `aduan models rehash`: a file changed,
# truncated, swapped or added afterwards is refused, naming it, and so is a directory
# without a manifest.
MANIFEST = "manifest.json"
# config.json entries that name a file or folder of the directory: each must stay inside it.
PATH_ENTRIES = (("encoder",), ("onnx", "file"), ("onnx", "fp32"), ("onnx", "int8"))
REHASH = "aduan models rehash"
# Pickle-based weight files (torch.save, joblib, numpy object arrays): loading one runs code.
PICKLE_SUFFIXES = (".bin", ".pkl", ".pickle", ".pt", ".pth", ".joblib", ".ckpt", ".npy", ".npz")
# Pickle streams start with PROTO (0x80) and a protocol number; torch.save files are zips.
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")

# 1: directories written before the version was recorded (no `format_version` key).
# 2: `format_version` and `versions` recorded; the kinds' files are unchanged from 1.
# 3: the transformer's files of `layout.py` (encoder/ folder, heads.safetensors, routing.json);
#    TF-IDF unchanged. Versions 1-2 still load (`layout.is_legacy` tells the transformer's
#    apart); a directory claiming a newer one is refused by name, not misread.
FORMAT_VERSION = 3

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
    """Load the kind named in a validated config, after checking its files: all there, none a
    pickle, each as the manifest recorded it."""
    kind = check_files(model_dir, config)
    return kind.load(model_dir, config, **options)


def check_files(model_dir: Path, config: dict[str, Any]) -> type[ModelKind]:
    """`ModelDirError` naming the file when a required one is missing, a pickle lies where
    weights are kept, or a file differs from `manifest.json`; returns the kind's class."""
    kind = kind_class(config["model_type"])
    missing = [name for name in kind.required_files(config) if not (model_dir / name).is_file()]
    if missing:
        raise ModelDirError(f"{model_dir / missing[0]}: required file is missing")
    refuse_pickles(model_dir)
    verify_manifest(model_dir)
    return kind


def verify_model_dir(model_dir: Path | str) -> dict[str, Any]:
    """Everything that can be checked without loading the weights: config.json, the kind's
    files, no pickles, the manifest. Returns the config."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    check_files(model_dir, config)
    return config


def _model_files(model_dir: Path) -> list[Path]:
    """Every file under the directory but the manifest itself: hidden ones and plots too
    (anything there could be read by a loader), each refused when it resolves outside."""
    root = model_dir.resolve()
    out = []
    for path in sorted(model_dir.rglob("*")):
        if path.relative_to(model_dir).as_posix() == MANIFEST:
            continue
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            raise ModelDirError(f"{path}: a link to {path.resolve()}, outside the directory")
        if path.is_file():
            out.append(path)
    return out


def inside(model_dir: Path, name: str, where: str) -> Path:
    """`model_dir / name`, refused (`ModelDirError` naming `where`) unless it is a relative
    path that stays inside the directory: config.json must not point a loader at any other
    file on the machine."""
    candidate = Path(name)
    target = (model_dir / candidate).resolve()
    if candidate.is_absolute() or not target.is_relative_to(model_dir.resolve()):
        raise ModelDirError(f"{where}: {name!r} points outside the model directory")
    return model_dir / candidate


def check_paths(model_dir: Path, config: dict[str, Any]) -> None:
    """Every file or folder config.json names (`encoder`, `onnx.file`, ...) stays inside."""
    for keys in PATH_ENTRIES:
        value: Any = config
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None or isinstance(value, dict):  # absent, or format 1-2's inline encoder
            continue
        where = f"{model_dir / CONFIG}: {'.'.join(keys)}"
        if not isinstance(value, str) or not value:
            raise ModelDirError(f"{where}: expected a file name, got {value!r}")
        inside(model_dir, value, where)


def _is_safetensors(head: bytes, size: int) -> bool:
    """A safetensors file: an 8-byte little-endian header length that fits the file, then the
    JSON header. Its length can begin with a pickle's magic bytes (a 640-byte header is
    80 02 00 ..), so such a file must not be judged by them."""
    if len(head) < 9:
        return False
    length = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 8 + length <= size


def refuse_pickles(model_dir: Path) -> None:
    """Weights come only as safetensors, ONNX or JSON: a pickle-based file anywhere in the
    directory (by name or by its first bytes) is refused, never loaded."""
    for path in _model_files(model_dir):
        with open(path, "rb") as handle:
            head = handle.read(9)
        magic = head.startswith(_PICKLE_MAGIC) and not _is_safetensors(head, path.stat().st_size)
        if path.suffix.lower() in PICKLE_SUFFIXES or magic:
            raise ModelDirError(
                f"{path}: a pickle-based file (weights must be safetensors, ONNX or JSON; "
                "loading a pickle can run arbitrary code)"
            )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(model_dir: Path) -> dict[str, Any]:
    """Record the sha256 and size of every file of the directory in `manifest.json`; call it
    when the directory is complete (training does; `aduan export` and `aduan models rehash`
    rewrite it)."""
    files = {
        path.relative_to(model_dir).as_posix(): {
            "sha256": _sha256(path),
            "bytes": path.stat().st_size,
        }
        for path in _model_files(model_dir)
    }
    # "coverage": "all" says every file is listed (older manifests listed the learned files
    # only: see `verify_manifest`).
    manifest = {"algorithm": "sha256", "coverage": "all", "files": files}
    write_json(model_dir / MANIFEST, manifest)
    return manifest


def verify_manifest(model_dir: Path) -> None:
    """Check the directory against `manifest.json`: every file it lists present, of the same
    size and sha256, and no file it does not list. `ModelDirError` naming the first file that
    differs, or the missing manifest (with the command that writes one for a directory made
    before manifests, once it is trusted)."""
    path = model_dir / MANIFEST
    if not path.is_file():
        raise ModelDirError(
            f"{path}: missing, so no file of the directory can be checked; a directory written "
            f"before aduan recorded checksums: once you trust it, run `{REHASH} {model_dir}`"
        )
    manifest = read_json(path)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or manifest.get("algorithm") != "sha256":
        raise ModelDirError(f"{path}: not a manifest (expected algorithm sha256 and files)")
    for name, expected in sorted(files.items()):
        target = inside(model_dir, name, f"{path}: {name!r}")
        if not target.is_file() or not isinstance(expected, dict):
            raise ModelDirError(f"{target}: listed in {MANIFEST} but missing")
        size = target.stat().st_size
        if size != expected.get("bytes"):
            raise ModelDirError(
                f"{target}: {size} bytes, {MANIFEST} records {expected.get('bytes')}: "
                "truncated or replaced after training"
            )
        if _sha256(target) != expected.get("sha256"):
            raise ModelDirError(
                f"{target}: its sha256 differs from {MANIFEST}: changed after training "
                f"(tampered, or edited by hand: run `{REHASH}` after a deliberate edit)"
            )
    listed = set(files)
    unlisted = [
        p for p in _model_files(model_dir) if p.relative_to(model_dir).as_posix() not in listed
    ]
    if not unlisted:
        return
    if manifest.get("coverage") != "all":
        # Written by an aduan that listed only the learned files: those are checked, the rest
        # (config.json, metrics, card...) cannot be. Still served, so that an upgrade does not
        # refuse every existing version (a registry mounted read-only cannot be re-signed).
        log.warning(
            "%s: written by an older aduan, %d file(s) it does not list (such as %s) are not "
            "checked; run `%s %s` once you trust the directory",
            path,
            len(unlisted),
            unlisted[0].relative_to(model_dir).as_posix(),
            REHASH,
            model_dir,
        )
        return
    raise ModelDirError(
        f"{unlisted[0]}: not recorded in {MANIFEST}: added after training (run `{REHASH}` "
        "if you put it there on purpose)"
    )


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
    check_paths(model_dir, config)
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
