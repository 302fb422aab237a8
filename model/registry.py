"""The model registry on disk: immutable version directories and a live pointer that moves
atomically. Training adds versions and promotes them; the service serves the live one and
reloads when the pointer moves.

    <root>/versions/<version>/   a complete model directory, made read-only when added
    <root>/live.json             {"version", "promoted_at", "history": [earlier live versions],
                                  "stand_in": true while it is `aduan up`'s first baseline}
    <root>/reports/<version>/    what the promotion gate measured for that candidate
    <root>/.staging/             directories being written (never listed)
    <root>/.lock                 serialises writers (add, promote, rollback, prune)
    <root>/training.json         the one training run writing a version now (pid, log path)

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
import socket
import threading
import time
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
TRAINING = "training.json"  # the training run writing into the registry now: pid, log
# The training run touches training.json this often; a lock from another host (whose process
# cannot be asked) holds only while touched within STALE_S, so a killed pod's lock expires.
HEARTBEAT_S = 60.0
STALE_S = 600.0
HISTORY_LIMIT = 50  # earlier live versions remembered for rollback
DEFAULT_KEEP = 5
# Where every command looks for the registry unless told: `--registry`, else ADUAN_REGISTRY,
# else models/ (what `make run` fills).
DEFAULT_ROOT = Path("models")
ROOT_ENV = "ADUAN_REGISTRY"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class RegistryError(ValueError):
    """A registry operation that cannot be done; the message says why."""


class TrainingBusy(RegistryError):
    """Another training run is writing into the registry; the message names it and its log."""


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

    def require(self) -> Registry:
        """This registry when its folder exists; else `RegistryError` (a read command given a
        mistyped path must not answer "no versions")."""
        if not self.root.is_dir():
            raise RegistryError(
                f"{self.root}: no such registry folder (give --registry or set {ROOT_ENV})"
            )
        return self

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

    def stand_in(self) -> bool:
        """Whether the live version is a stand-in: the baseline `aduan up` trained into an
        empty registry to answer while the preset it was asked for trains. Any promotion or
        rollback ends it; until then that preset's first version may replace it ungated."""
        return bool(self.state().get("stand_in"))

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

    def rollback_target(self) -> str | None:
        """The version `rollback` would make live now (the newest earlier live one still on
        disk), or None."""
        state = self.state()
        for candidate in reversed(state.get("history", [])):
            if candidate != state.get("version") and (self.versions_dir / candidate).is_dir():
                return str(candidate)
        return None

    def withdrawn(self) -> set[str]:
        """Versions an operator rolled back from (until one is promoted again by name)."""
        return {str(v) for v in self.state().get("withdrawn", [])}

    def verdict(self, version: str) -> str | None:
        """What the promotion gate decided for `version` ("promoted" or "refused"), or None
        when it was never judged."""
        path = self.report_dir(version) / "comparison.json"
        try:
            outcome = json.loads(path.read_text(encoding="utf-8")).get("outcome")
        except (OSError, ValueError, AttributeError):
            return None
        return str(outcome) if outcome else None

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

    def promote(self, version: str, *, verify: bool = True, stand_in: bool = False) -> str | None:
        """Point `live.json` at `version`; returns the version that was live before.

        With `verify`, the directory is loaded and asked one prediction first, so a broken
        version is refused before any service sees it. `stand_in` marks it as `aduan up`'s
        first baseline (see `stand_in()`).
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
            # promoting a version by name takes it off the rolled-back list
            withdrawn = [v for v in state.get("withdrawn", []) if v != version]
            self._write_pointer(
                {
                    "version": version,
                    "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "history": history[-HISTORY_LIMIT:],
                    **({"withdrawn": withdrawn[-HISTORY_LIMIT:]} if withdrawn else {}),
                    **({"stand_in": True} if stand_in else {}),
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
                    # remembered for good: `aduan up` must not promote it again behind the
                    # operator's back
                    withdrawn = [v for v in state.get("withdrawn", []) if v != candidate]
                    withdrawn += [current] if current else []
                    self._write_pointer(
                        {
                            "version": candidate,
                            "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
                            "history": history,
                            "rolled_back_from": current,
                            "withdrawn": withdrawn[-HISTORY_LIMIT:],
                        }
                    )
                    log.info(
                        "registry %s: rolled back from %s to %s", self.root, current, candidate
                    )
                    return str(candidate)
        raise RegistryError(f"{self.root}: no earlier live version to roll back to")

    def prune(self, keep: int = DEFAULT_KEEP, protect: Iterable[str] = ()) -> list[str]:
        """Delete versions except the live one, the one `rollback` would return to, the newest
        `keep` and those in `protect` (a candidate still to be judged); returns the deleted."""
        if keep < 0:
            raise RegistryError("keep must be 0 or more")
        with self._locked():
            names = self.names()
            kept = set(names[-keep:] if keep else []) | {self.live(), self.rollback_target()}
            kept |= set(protect)
            removed = [name for name in names if name not in kept]
            for name in removed:
                _remove(self.versions_dir / name)
        if removed:
            log.info("registry %s: pruned %s", self.root, ", ".join(removed))
        return removed

    # The one training run ---------------------------------------------------------------

    def running(self) -> dict[str, Any] | None:
        """The training run `training.json` names while its process is alive, else None."""
        held = self._read_training()
        return held if held and _holds(held) else None

    @contextlib.contextmanager
    def training(self, preset: str, log_path: Path | str | None = None) -> Iterator[None]:
        """Hold the registry's training lock while a version is trained: a second `aduan
        train --registry`, `retrain` or `up` is refused with `TrainingBusy` naming this one.
        A lock whose process is gone is taken over (WARNING); one held by this process's
        parent was handed to it (`aduan up` starts the training it holds the lock for)."""
        self._claim(preset, log_path)
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(stop,), daemon=True)
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join()
            with self._locked():
                held = self._read_training()
                if held and held.get("pid") == os.getpid():
                    (self.root / TRAINING).unlink(missing_ok=True)

    def _heartbeat(self, stop: threading.Event) -> None:
        """Touch training.json while this process trains, so that other hosts see it alive."""
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.root / TRAINING)

    def hand_over(self, pid: int, preset: str, log_path: Path | str | None) -> None:
        """Pass the training lock this process holds to the child `pid` that trains."""
        with self._locked():
            held = self._read_training()
            if held and held.get("pid") == os.getpid():
                self._write_training(pid, preset, log_path)

    def _claim(self, preset: str, log_path: Path | str | None) -> None:
        with self._locked():
            held = self._read_training()
            if held and held.get("pid") in (os.getpid(), os.getppid()):
                log_path = log_path or held.get("log")
            elif held and _holds(held):
                raise TrainingBusy(f"{self.root}: {describe_training(held)}; wait for it to end")
            elif held:
                log.warning(
                    "registry %s: taking over the training lock of pid %s (no longer running)",
                    self.root,
                    held.get("pid"),
                )
            self._write_training(os.getpid(), preset, log_path)

    def _read_training(self) -> dict[str, Any] | None:
        """training.json, with `beat`: when it was last written or touched."""
        path = self.root / TRAINING
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            beat = path.stat().st_mtime
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # torn or unreadable: nobody to wait for
        return {**data, "beat": beat} if isinstance(data, dict) else {}

    def _write_training(self, pid: int, preset: str, log_path: Path | str | None) -> None:
        data = {
            "pid": pid,
            "host": socket.gethostname(),
            "preset": preset,
            "log": str(log_path) if log_path else None,
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        tmp = self.root / f".{TRAINING}.{os.getpid()}"
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.root / TRAINING)

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
    return Registry(registry if registry is not None else DEFAULT_ROOT).require().live_path()


def describe_training(held: dict[str, Any]) -> str:
    """One line naming a training run: pid, host, preset, start and log."""
    where = held.get("log") or f"the output of pid {held.get('pid')}"
    return (
        f"a training run is already writing here: pid {held.get('pid')} on "
        f"{held.get('host') or '?'} (preset {held.get('preset')}, since {held.get('since')}), "
        f"log {where}"
    )


def _holds(held: dict[str, Any]) -> bool:
    """Whether the process of a training lock still runs. On another host that cannot be
    asked: while its heartbeat touched the file within STALE_S (a killed pod's lock expires)."""
    pid = held.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if held.get("host") not in (None, socket.gethostname()):
        beat = held.get("beat")
        return isinstance(beat, float) and time.time() - beat < STALE_S
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (ended, not yet reaped by its parent) trains nothing
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


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
