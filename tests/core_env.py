"""A virtual environment holding what `pip install aduan` (no extras) installs, without the
network: the wheel's own `Requires-Dist` (the core dependencies), followed through every
dependency's metadata, decides which distributions of the test environment are linked into
the new environment's site-packages. Nothing else is there: a module the core imports but does
not declare, or an extra's module (torch), fails to import, as in a real core install."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from collections import defaultdict
from email.parser import Parser
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def wheel_requirements(wheel: Path) -> list[str]:
    """The `Requires-Dist` lines of a wheel's METADATA (extras' lines included, with markers)."""
    with zipfile.ZipFile(wheel) as archive:
        [name] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        text = archive.read(name).decode()
    return Parser().parsestr(text).get_all("Requires-Dist") or []


def _applies(requirement: Requirement, extras: frozenset[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({"extra": e}) for e in extras or {""})


def closure(requirements: list[str], site_packages: Path) -> dict[str, metadata.Distribution]:
    """Every distribution (by canonical name) the requirements pull in, with no extra asked
    for at the top, found in `site_packages`; a missing one is a KeyError naming it."""
    installed = {_name(d): d for d in metadata.distributions(path=[str(site_packages)])}
    found: dict[str, metadata.Distribution] = {}
    done: set[tuple[str, frozenset[str]]] = set()
    queue = [(text, frozenset[str]()) for text in requirements]
    while queue:
        text, extras = queue.pop()
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if not _applies(requirement, extras) or key in done:
            continue
        done.add(key)
        found[name] = dist = installed[name]
        queue += [(child, frozenset(requirement.extras)) for child in dist.requires or []]
    return found


def _name(dist: metadata.Distribution) -> str:
    return canonicalize_name(dist.metadata["Name"])


def _top_levels(dist: metadata.Distribution) -> dict[str, list[str]]:
    """The distribution's files in site-packages (RECORD) grouped by their first path part."""
    out: dict[str, list[str]] = defaultdict(list)
    for file in dist.files or []:
        parts = Path(file).parts
        if parts and parts[0] != "..":  # scripts in bin/
            out[parts[0]].append(str(file))
    return out


def link_closure(dists: dict[str, metadata.Distribution], source: Path, target: Path) -> None:
    """Symlink the distributions' files from `source` into `target`: a whole folder where
    only these distributions own it, file by file where others share it (a namespace
    package, the top-level __pycache__)."""
    owners: dict[str, set[str]] = defaultdict(set)
    for dist in metadata.distributions(path=[str(source)]):
        for top in _top_levels(dist):
            owners[top].add(_name(dist))
    wanted: dict[str, list[str]] = defaultdict(list)
    for dist in dists.values():
        if dist.files is None:
            raise RuntimeError(f"{dist.metadata['Name']} has no RECORD: its files are unknown")
        for top, files in _top_levels(dist).items():
            wanted[top] += files
    for top, files in wanted.items():
        if owners[top] <= dists.keys():
            if (source / top).exists():
                (target / top).symlink_to(source / top)
            continue
        for file in files:
            if (source / file).exists():
                (target / file).parent.mkdir(parents=True, exist_ok=True)
                (target / file).symlink_to(source / file)


def core_venv(root: Path, wheel: Path, site_packages: Path) -> Path:
    """A fresh virtual environment at `root` with the wheel installed (its `aduan` script
    too) and the core dependencies linked from `site_packages`; returns its site-packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    [purelib] = root.glob("lib/python*/site-packages")
    link_closure(closure(wheel_requirements(wheel), site_packages), site_packages, purelib)
    pip = [sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"), "install"]
    subprocess.run([*pip, "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    return purelib
