"""Where things live: the shared data folder and the files the package ships.

The one place that decides where `../shared/data` is: `ADUAN_SHARED_DATA` when set, else the
folder beside a source checkout, else `../shared/data` from the working directory (an installed
wheel knows no checkout).
"""

from __future__ import annotations

import os
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

COMPLAINTS_FILE = "surabaya/complaints_2022-01_2023-03.csv"
GAZETTEER_FILE = "surabaya/wilayah_surabaya.csv"


def shared_data() -> Path:
    """The shared, read-only data folder (labelled complaints, gazetteer, corpus)."""
    configured = os.environ.get("ADUAN_SHARED_DATA")
    if configured:
        return Path(configured)
    # <checkout>/model/resources.py -> <checkout>/../shared/data (resolve: editable installs
    # link the source files into a build folder).
    beside_checkout = Path(__file__).resolve().parents[2] / "shared" / "data"
    if beside_checkout.is_dir():
        return beside_checkout
    return Path.cwd().parent / "shared" / "data"


def default_data() -> Path:
    return shared_data() / COMPLAINTS_FILE


def default_gazetteer() -> Path:
    return shared_data() / GAZETTEER_FILE


def corpus_files() -> list[Path]:
    """The unlabelled Indonesian text files of the shared corpus."""
    return sorted((shared_data() / "corpus").glob("*.txt"))


def packaged(package: str, name: str) -> Traversable:
    """A data file shipped inside an `aduan` package (works from a wheel or a checkout)."""
    return files(package).joinpath(name)


def default_taxonomy() -> Traversable:
    return packaged("aduan.data", "taxonomy.yaml")
