"""What a model directory records so that it can be reproduced: its data files by portable
name with sha256 and row counts, the code version and the seed. No absolute path of the
training machine is written: a model directory travels (registry, container, colleague)."""

from __future__ import annotations

import hashlib
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd

from aduan.model.resources import shared_data

from .config import TrainConfig
from .data import Splits

MAX_FEEDBACK_IDS = 10_000  # a model directory stays small; the count above is exact

# How a portable name is to be read: relative to the shared data folder (`ADUAN_SHARED_DATA`),
# to the working directory training ran in, or a bare file name.
SHARED, WORKDIR, NAME = "shared-data", "working-dir", "file-name"


def portable_path(path: Path | str) -> tuple[str, str]:
    """(name, root): the path relative to the shared data folder when inside it, else to the
    working directory, else the file name alone."""
    resolved = Path(path).resolve()
    for root, base in ((SHARED, shared_data()), (WORKDIR, Path.cwd())):
        try:
            return str(resolved.relative_to(base.resolve())), root
        except ValueError:
            continue
    return resolved.name, NAME


def portable(path: str) -> str:
    """`portable_path`'s name for a path, or the value unchanged when it is no path on disk
    (a hub id, an empty setting)."""
    return portable_path(path)[0] if path and Path(path).exists() else path


def sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_files(
    paths: list[str],
    rows: dict[str, int],
    used: dict[str, int] | None = None,
    feedback: set[str] | None = None,
) -> list[dict[str, Any]]:
    """Each data file: portable name, its root, sha256, the usable rows read from it and (when
    known) the rows the run kept from it, and whether it holds operators' corrections."""
    out = []
    for path in paths:
        name, root = portable_path(path)
        item: dict[str, Any] = {
            "name": name,
            "root": root,
            "sha256": sha256(path),
            "rows": rows.get(path, 0),
        }
        if used is not None:
            item["rows_used"] = used.get(path, 0)
        if feedback is not None:
            item["feedback"] = path in feedback
        out.append(item)
    return out


def code_version() -> dict[str, Any]:
    """The aduan version, and the git commit (with a dirty flag) when run from a checkout."""
    try:
        out: dict[str, Any] = {"aduan": version("aduan")}
    except PackageNotFoundError:
        out = {"aduan": "unknown"}
    source = str(Path(__file__).resolve().parent)
    try:
        head = _git(source, "rev-parse", "HEAD")
        if head.returncode == 0:
            out["git_commit"] = head.stdout.strip()
            status = _git(source, "status", "--porcelain", "--untracked-files=no")
            out["git_dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):  # no git, or it hung
        pass
    return out


def _git(cwd: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", cwd, *args], capture_output=True, text=True, timeout=10, check=False
    )


def provenance(config: TrainConfig, splits: Splits) -> dict[str, Any]:
    """The `provenance` entry of config.json: the data files (sha256, rows read and kept), the
    months the kept rows fall in with their counts, how many of them are operators'
    corrections (`aduan feedback export` files), the rows left out and why, code and seed:
    enough to answer "why did this version change" against the one before."""
    report = splits.report
    rows = pd.concat([splits.train, splits.valid], ignore_index=True)
    ids: list[str] = []
    if "feedback" in rows and "id" in rows:
        ids = sorted(str(i) for i in rows.loc[rows["feedback"].astype(bool), "id"] if str(i))
    return {
        "data": data_files(config.data, splits.files, splits.used or None, splits.feedback_files),
        "months": report.get("months", {}),
        "feedback_rows": int(report.get("feedback_rows", 0)),
        # which corrections: the stored requests' ids (never their texts)
        "feedback_ids": ids[:MAX_FEEDBACK_IDS],
        "excluded": report.get("excluded", {}),
        "code": code_version(),
        "seed": config.seed,
    }


def portable_settings(config: TrainConfig) -> dict[str, Any]:
    """The resolved settings for training_config.json (sectioned), paths made portable."""
    values = config.to_dict()
    values["data"] = [portable_path(p)[0] for p in config.data]
    values["taxonomy"] = portable(values["taxonomy"])
    values["transformer"]["base"] = portable(values["transformer"]["base"])
    return values
