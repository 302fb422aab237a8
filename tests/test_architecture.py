"""The layout ARCHITECTURE.md describes: one import root, dependencies that point one way
(service -> model <- training), no import circles, and a lint rule against bare names."""

from __future__ import annotations

import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> the package it installs as
FOLDERS = {"aduan": "aduan", "model": "aduan.model", "service": "aduan.service"}
FOLDERS |= {"training": "aduan.training", "data": "aduan.data"}
BARE = ("model", "service", "training", "data")


def _modules() -> dict[str, Path]:
    modules = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            modules[name] = path
    return modules


def _imports(name: str, path: Path) -> set[str]:
    """Every module `path` imports (inside functions and TYPE_CHECKING blocks too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            out.add(base)
            out |= {f"{base}.{alias.name}" for alias in node.names}
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for target in _imports(name, path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
        graph[name] = targets
    return graph


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_architecture_dependencies_point_one_way():
    allowed = {
        "aduan.model": {"aduan.model"},
        "aduan.training": {"aduan.training", "aduan.model"},
        "aduan.service": {"aduan.service", "aduan.model"},
        "aduan.data": set(),
    }
    wrong = [
        f"{module} -> {target}"
        for module, targets in _graph().items()
        if _package(module) in allowed
        for target in targets
        if _package(target) not in allowed[_package(module)] and target != "aduan"
    ]
    assert wrong == []


def test_architecture_has_no_import_circles():
    graph = _graph()
    assert len(graph) > 40  # the walk found the code
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        pytest.fail(f"import circle: {' -> '.join(exc.args[1])}")


def test_architecture_no_module_imports_a_bare_folder_name():
    bare = [
        f"{path.relative_to(ROOT)}: {target}"
        for name, path in _modules().items()
        for target in _imports(name, path)
        if target.split(".")[0] in BARE
    ]
    assert bare == []


@pytest.mark.parametrize("statement", ["import model", "from training.config import X"])
def test_architecture_lint_rule_catches_a_bare_import(statement):
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--stdin-filename", "service/probe.py", "-"],
        input=f"{statement}\n\nprint(X if 0 else 1)\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 1
    assert "TID251" in result.stdout and "import aduan." in result.stdout


def test_architecture_lint_rule_allows_relative_imports_inside_a_package():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--stdin-filename", "training/probe.py", "-"],
        input="from .config import TrainConfig\n\nprint(TrainConfig)\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout
