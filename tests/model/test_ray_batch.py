"""`aduan batch --backend ray` (`aduan.model.ray_batch`): Ray Data read tasks that keep row
numbers, a pool of classifier actors, and the same output as the single-process `aduan batch`."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from aduan.cli import app
from aduan.model.batch import BatchColumns, classify_file, read_chunks
from aduan.model.pipeline import Pipeline
from aduan.model.ray_batch import RayBatchOptions, classify_file_ray, read_slice
from aduan.model.records import plan_spans

runner = CliRunner()
COLUMNS = BatchColumns("isi", "nomor", "alamat")
PHRASES = ["lampu PJU padam gelap", "sampah menumpuk di TPS", "jalan rusak berlubang"]


@pytest.fixture
def awkward_csv(tmp_path):
    """A CSV with what splits a file wrongly when cut at line ends: a quoted text spanning two
    lines, a blank line, an empty text (row 6) and bytes that are not UTF-8 (row 9)."""
    lines = ["nomor,isi,alamat"]
    for i in range(14):
        lines.append(f"q{i},{PHRASES[i % 3]} no {i},Jalan Tunjungan")
    lines[2] = 'q1,"lampu jalan mati\ndi gang ""buntu"" no 1",Jalan Tunjungan'
    lines[5] = "q4,,Jalan Tunjungan"
    lines.insert(7, "")
    raw = ("\n".join(lines) + "\n").encode().replace(b"q7,", b"q7,\xff\xfe ")
    path = tmp_path / "in.csv"
    path.write_bytes(raw)
    return path


def _read_back(path):
    # a column of nulls only is typed null by one writer and string by the other
    frame = pd.read_parquet(path).astype(object)
    return frame.where(frame.notna(), None)


def test_ray_batch_slices_end_on_record_boundaries(awkward_csv):
    slices = plan_spans(awkward_csv, rows_per_span=4)
    assert [s.rows for s in slices] == [4, 4, 4, 2]
    pieces = [
        frame for piece in slices for frame in read_slice(awkward_csv, piece, COLUMNS, batch_rows=3)
    ]
    ours = pd.concat(pieces, ignore_index=True)
    whole = pd.concat(read_chunks(awkward_csv, 100, COLUMNS), ignore_index=True)
    assert ours["row"].tolist() == whole["row"].tolist()  # the numbers `aduan batch` reports
    assert ours["id"].tolist() == whole["id"].tolist()
    assert ours.loc[ours["id"] == "q1", "text"].item() == whole.loc[1, "text"]
    assert ours.loc[ours["problem"] != "", "id"].tolist() == ["q7"]


def test_ray_batch_jsonl_slices_count_every_line(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\n{"text": "c"}\n{"text": "d"}\n')
    slices = plan_spans(path, rows_per_span=2)
    assert [(s.first_row, s.rows) for s in slices] == [(1, 2), (3, 2), (5, 1)]


def test_ray_batch_equals_single_process_batch(ray_cluster, tiny_model, gazetteer_csv, awkward_csv):
    single = awkward_csv.with_name("single.parquet")
    classify_file(
        Pipeline.load(tiny_model, gazetteer_csv),
        awkward_csv,
        single,
        columns=COLUMNS,
        chunk_rows=5,
        progress=False,
    )
    distributed = awkward_csv.with_name("ray.parquet")
    report = classify_file_ray(
        tiny_model,
        awkward_csv,
        distributed,
        columns=COLUMNS,
        gazetteer=gazetteer_csv,
        options=RayBatchOptions(actors=2, cpus_per_actor=0.5, rows_per_task=4, batch_rows=3),
    )
    assert (report.rows, report.classified, report.errors) == (14, 12, 2)
    pd.testing.assert_frame_equal(_read_back(distributed), _read_back(single))
    ours = pd.read_csv(f"{distributed}.errors.csv", dtype=str)
    theirs = pd.read_csv(f"{single}.errors.csv", dtype=str)
    pd.testing.assert_frame_equal(ours, theirs)
    assert set(ours["reason"]) == {
        "empty text",
        "bytes that are not UTF-8 in column 'text' (the file mixes encodings)",
    }


def test_ray_batch_parquet_row_groups_keep_row_numbers(ray_cluster, tiny_model, tmp_path, caplog):
    """Also the old spelling `--engine ray`: the ray backend, with a deprecation warning."""
    texts = [f"{PHRASES[i % 3]} no {i}" for i in range(23)]
    source = tmp_path / "in.parquet"
    pd.DataFrame({"text": texts, "id": [f"x{i}" for i in range(23)]}).to_parquet(
        source, row_group_size=5
    )
    output = tmp_path / "out.parquet"
    result = runner.invoke(
        app,
        [
            "batch",
            "--engine",
            "ray",
            "--backend",
            "ray",
            "--model",
            str(tiny_model),
            "--input",
            str(source),
            "--output",
            str(output),
            "--actors",
            "1",
            "--cpus-per-actor",
            "0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "23 of 23 row(s) classified" in result.output
    assert "--engine ray (ADUAN_ENGINE=ray) is deprecated: use --backend ray" in caplog.text
    frame = pd.read_parquet(output)
    assert frame["row"].tolist() == list(range(1, 24))
    assert frame["id"].tolist() == [f"x{i}" for i in range(23)]
    pipeline = Pipeline.load(tiny_model)
    expected = [r.prediction.best("agency").label for r in pipeline.run([(t, None) for t in texts])]
    assert frame["agency"].tolist() == expected


def test_ray_batch_refuses_other_outputs_and_missing_columns(tiny_model, tmp_path):
    pytest.importorskip("ray")
    source = tmp_path / "in.csv"
    pd.DataFrame({"isi": ["sampah menumpuk"]}).to_csv(source, index=False)
    wrong_suffix = runner.invoke(
        app,
        [
            "batch",
            "--backend",
            "ray",
            "--model",
            str(tiny_model),
            "--input",
            str(source),
            "--output",
            str(tmp_path / "out.csv"),
        ],
    )
    assert wrong_suffix.exit_code == 2
    assert "writes Parquet" in wrong_suffix.output
    no_text = runner.invoke(
        app,
        [
            "batch",
            "--backend",
            "ray",
            "--model",
            str(tiny_model),
            "--input",
            str(source),
            "--output",
            str(tmp_path / "out.parquet"),
        ],
    )
    assert no_text.exit_code == 2
    assert "no column 'text'" in no_text.output


def test_ray_batch_a_read_task_error_names_the_file(ray_cluster, tiny_model, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"isi": "sampah menumpuk"}\n{"isi": "lampu mati"}\n')
    result = runner.invoke(
        app,
        [
            "batch",
            "--backend",
            "ray",
            "--model",
            str(tiny_model),
            "--input",
            str(source),
            "--output",
            str(tmp_path / "out.parquet"),
        ],
    )
    assert result.exit_code == 2
    assert f"error: {source}: no column 'text'" in result.output


@pytest.mark.slow
def test_ray_batch_archive_of_216k_real_rows_equals_single_process(
    ray_cluster, tiny_model, gazetteer_csv, tmp_path
):
    """The backfill at archive size: the shared complaints repeated to 216,180 rows
    (`ADUAN_BACKFILL_ROWS` for another size), Parquet in row groups of 50,000; bench/backfill.py
    times the same on the real baseline model."""
    import os

    from tests.conftest import SURABAYA

    if not SURABAYA.is_file():
        pytest.skip("the shared data is not here")
    rows = int(os.environ.get("ADUAN_BACKFILL_ROWS", "216180"))
    real = pd.read_csv(SURABAYA, usecols=["text", "address"], dtype=str)
    archive = pd.concat([real] * -(-rows // len(real)), ignore_index=True).iloc[:rows]
    archive.insert(0, "id", [f"a{i}" for i in range(rows)])
    source = tmp_path / "archive.parquet"
    archive.to_parquet(source, index=False, row_group_size=50_000)
    del archive, real
    single = tmp_path / "single.parquet"
    expected = classify_file(
        Pipeline.load(tiny_model, gazetteer_csv), source, single, chunk_rows=8192, progress=False
    )
    distributed = tmp_path / "ray.parquet"
    report = classify_file_ray(
        tiny_model,
        source,
        distributed,
        gazetteer=gazetteer_csv,
        options=RayBatchOptions(actors=2, cpus_per_actor=0.9),
    )
    assert report.rows == expected.rows == rows
    assert report.errors == expected.errors
    pd.testing.assert_frame_equal(_read_back(distributed), _read_back(single))
