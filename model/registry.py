"""The model registry on disk: immutable version directories and a live pointer that moves
atomically. Training adds versions and promotes them; the service serves the live one and
reloads when the pointer moves.

    <root>/versions/<version>/   a complete model directory, made read-only when added
    <root>/live.json             {"version", "promoted_at", "history": [earlier live versions]}
    <root>/reports/<version>/    what the promotion gate measured for that candidate
    <root>/.staging/             directories being written (never listed)
    <root>/.lock                 serialises writers (add, promote, rollback, prune)

The pointer is one small JSON file replaced with `os.replace` (atomic on POSIX), so a reader
sees the old or the new version, never a torn one; a version directory is renamed into
`versions/` whole, so a reader never sees a half-written one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import artifacts
from .artifacts import ModelDirError

log = logging.getLogger(__name__)

VERSIONS = "versions"
POINTER = "live.json"
REPORTS = "reports"
STAGING = ".staging"
LOCK = ".lock"
HISTORY_LIMIT = 50  # earlier live versions remembered for rollback
DEFAULT_KEEP = 5
# Where every command looks for the registry unless told: `--registry`, else ADUAN_REGISTRY,
# else models/ (what `make run` fills).
DEFAULT_ROOT = Path("models")
ROOT_ENV = "ADUAN_REGISTRY"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RegistryError(ValueError):
    """A registry operation that cannot be done; the message says why."""


def check_name(version: str) -> str:
    """A version name is a plain directory name (no path separators, no leading dot)."""
    if not _NAME.match(version):
        raise RegistryError(f"{version!r} is not a valid version name")
    return version


@dataclass(frozen=True)
class Version:
    """One version directory with what `aduan models list` shows about it."""

    name: str
    path: Path
    config: dict[str, Any]
    metrics: dict[str, Any]
    live: bool

    @property
    def created_at(self) -> str:
        return str(self.config.get("created_at") or "")

    def summary(self) -> dict[str, Any]:
        """Version, live flag, preset, data range and split, what it was trained on (files,
        months, operators' corrections) and the key validation figures."""
        validation = self.metrics.get("validation") or {}
        key = {}
        for head in ("agency", "category"):
            figures = validation.get(head) or {}
            key[head] = {
                name: figures.get(name)
                for name in ("accuracy", "macro_f1", "auto_route_coverage", "auto_route_accuracy")
            }
        recorded = self.config.get("provenance") or {}
        return {
            "version": self.name,
            "live": self.live,
            "created_at": self.created_at or None,
            "preset": self.config.get("preset"),
            "model_type": self.config.get("model_type"),
            "data_range": artifacts.data_range(self.config, self.metrics),
            "split": self.metrics.get("split"),
            "trained_on": self.config.get("trained_on"),
            # Rows the shipped weights saw: the refit's, else the training months'.
            "rows": ((self.config.get("trained_on") or {}).get("rows"))
            or (self.metrics.get("data") or {}).get("train_rows"),
            "provenance": {
                "files": [
                    {k: f.get(k) for k in ("name", "sha256", "rows", "rows_used", "feedback")}
                    for f in recorded.get("data") or []
                ],
                "months": recorded.get("months"),
                "feedback_rows": recorded.get("feedback_rows"),
                "excluded": recorded.get("excluded"),
            },
            "metrics": key,
        }


class Registry:
    """A registry folder; every method re-reads the disk, so several processes can share it."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / VERSIONS
        self.pointer = self.root / POINTER
        self.reports_dir = self.root / REPORTS

    # Reading -------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Version names, oldest first (by the `created_at` each directory records)."""
        if not self.versions_dir.is_dir():
            return []
        found = [
            p for p in self.versions_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        ]
        return [p.name for p in sorted(found, key=lambda p: (_created(p), p.name))]

    def path(self, version: str) -> Path:
        """The directory of `version`; raises `RegistryError` when there is none."""
        path = self.versions_dir / check_name(version)
        if not path.is_dir():
            known = ", ".join(self.names()) or "none"
            raise RegistryError(f"{self.root}: no version {version!r} (versions: {known})")
        return path

    def state(self) -> dict[str, Any]:
        """The pointer's content; `{}` when nothing was ever promoted."""
        try:
            data = json.loads(self.pointer.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RegistryError(f"{self.pointer}: unreadable live pointer ({exc})") from exc
        if not isinstance(data, dict):
            raise RegistryError(f"{self.pointer}: expected a JSON object")
        return data

    def live(self) -> str | None:
        """The live version's name, or None before the first promotion."""
        version = self.state().get("version")
        return str(version) if version else None

    def live_path(self) -> Path:
        """The live version's directory; raises `RegistryError` when there is none."""
        version = self.live()
        if version is None:
            raise RegistryError(
                f"{self.root}: no live version (train one with `aduan train --registry "
                f"{self.root}` or promote one with `aduan models promote`)"
            )
        return self.path(version)

    def versions(self) -> list[Version]:
        """Every version, oldest first, with its config, metrics and live flag."""
        live = self.live()
        out = []
        for name in self.names():
            path = self.versions_dir / name
            out.append(
                Version(
                    name,
                    path,
                    _read(path / artifacts.CONFIG),
                    _read(path / artifacts.METRICS),
                    name == live,
                )
            )
        return out

    def newest(self, preset: str) -> Version | None:
        """The newest version trained with `preset`, or None."""
        found = [v for v in self.versions() if v.config.get("preset") == preset]
        return found[-1] if found else None

    def report_dir(self, version: str) -> Path:
        return self.reports_dir / check_name(version)

    # Writing -------------------------------------------------------------------------------

    def new_version(self, preset: str) -> str:
        """A fresh version name, `<preset>-<UTC timestamp>` (suffixed when taken)."""
        stamp = datetime.now(UTC)
        base = check_name(f"{preset}-{stamp:%Y%m%d-%H%M%S}")
        taken = set(self.names())
        staging = self.root / STAGING
        if staging.is_dir():
            taken |= {p.name for p in staging.iterdir()}
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        return name

    def staging(self, version: str) -> Path:
        """Where a new version's directory is written before `add` moves it in."""
        staging = self.root / STAGING
        staging.mkdir(parents=True, exist_ok=True)
        return staging / check_name(version)

    def add(self, directory: Path | str) -> str:
        """Move a complete model directory into the registry, read-only, under the
        `model_version` its config.json names; returns that name."""
        directory = Path(directory)
        config = artifacts.read_config(directory)
        version = check_name(str(config.get("model_version") or directory.name))
        with self._locked():
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            target = self.versions_dir / version
            if target.exists():
                raise RegistryError(f"{target}: version already exists (versions are immutable)")
            os.rename(directory, target)
            _read_only(target)
        log.info("registry %s: added version %s", self.root, version)
        return version

    def promote(self, version: str, *, verify: bool = True) -> str | None:
        """Point `live.json` at `version`; returns the version that was live before.

        With `verify`, the directory is loaded and asked one prediction first, so a broken
        version is refused before any service sees it.
        """
        path = self.path(version)
        if verify:
            _verify(path)
        with self._locked():
            state = self.state()
            previous = state.get("version")
            if previous == version:
                return previous
            history = [v for v in state.get("history", []) if v != version]
            if previous:
                history.append(previous)
            self._write_pointer(
                {
                    "version": version,
                    "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "history": history[-HISTORY_LIMIT:],
                }
            )
        log.info("registry %s: %s is live (was %s)", self.root, version, previous)
        return str(previous) if previous else None

    def rollback(self) -> str:
        """Make the previous live version live again (skipping pruned ones); returns it."""
        with self._locked():
            state = self.state()
            current = state.get("version")
            history = list(state.get("history", []))
            while history:
                candidate = history.pop()
                if (self.versions_dir / candidate).is_dir() and candidate != current:
                    self._write_pointer(
                        {
                            "version": candidate,
                            "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
                            "history": history,
                            "rolled_back_from": current,
                        }
                    )
                    log.info(
                        "registry %s: rolled back from %s to %s", self.root, current, candidate
                    )
                    return str(candidate)
        raise RegistryError(f"{self.root}: no earlier live version to roll back to")

    def prune(self, keep: int = DEFAULT_KEEP, protect: Iterable[str] = ()) -> list[str]:
        """Delete versions except the live one, the newest `keep` and those in `protect` (a
        candidate still to be judged); returns the deleted."""
        if keep < 0:
            raise RegistryError("keep must be 0 or more")
        with self._locked():
            names = self.names()
            kept = set(names[-keep:] if keep else []) | {self.live()} | set(protect)
            removed = [name for name in names if name not in kept]
            for name in removed:
                _remove(self.versions_dir / name)
        if removed:
            log.info("registry %s: pruned %s", self.root, ", ".join(removed))
        return removed

    def _write_pointer(self, data: dict[str, Any]) -> None:
        tmp = self.root / f".{POINTER}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        tmp.chmod(0o644)
        os.replace(tmp, self.pointer)
        _fsync_dir(self.root)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def model_dir_or_live(model: Path | None, registry: Path | str | None) -> Path:
    """The model directory a command works on: `model` when given, else the live version of
    `registry` (default models/); raises `RegistryError` when that has none."""
    if model is not None:
        return model
    return Registry(registry if registry is not None else DEFAULT_ROOT).live_path()


def _read(path: Path) -> dict[str, Any]:
    try:
        data = artifacts.read_json(path)
    except ModelDirError:
        return {}
    return data if isinstance(data, dict) else {}


def _created(path: Path) -> str:
    created = _read(path / artifacts.CONFIG).get("created_at")
    if created:
        return str(created)
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")


def _verify(path: Path) -> None:
    from .classifier import ComplaintClassifier

    try:
        ComplaintClassifier.load(path).predict(["uji: lampu jalan padam"])
    except ModelDirError as exc:
        raise RegistryError(f"refusing to promote a broken version: {exc}") from exc
    except Exception as exc:
        raise RegistryError(f"refusing to promote {path.name}: prediction failed ({exc})") from exc


def _read_only(directory: Path) -> None:
    for path in directory.rglob("*"):
        path.chmod(0o555 if path.is_dir() else 0o444)
    directory.chmod(0o555)


def _remove(directory: Path) -> None:
    directory.chmod(0o755)
    for path in directory.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
    shutil.rmtree(directory)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
