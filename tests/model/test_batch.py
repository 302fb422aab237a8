"""`aduan batch`: whole files in chunks, the HTTP answer's fields, bad rows reported, resume."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from aduan.cli import app
from aduan.model import batch as batch_module
from aduan.model.batch import BatchColumns, classify_file
from aduan.model.pipeline import Pipeline

runner = CliRunner()


def _texts(n: int) -> list[str]:
    phrases = ["lampu PJU padam gelap", "sampah menumpuk di TPS", "jalan rusak berlubang"]
    return [f"{phrases[i % 3]} no {i}" for i in range(n)]


@pytest.fixture
def csv_with_bad_rows(tmp_path):
    """A CSV whose row 4 (counting the header) is empty and row 6 holds bytes that are not
    UTF-8."""
    path = tmp_path / "in.csv"
    lines = ["nomor,isi,alamat"]
    for i, text in enumerate(_texts(8)):
        lines.append(f"q{i},{text},Jalan Tunjungan")
    lines[3] = "q2,,Jalan Tunjungan"
    raw = ("\n".join(lines) + "\n").encode()
    raw = raw.replace(b"q4,", b"q4,\xff\xfe ")
    path.write_bytes(raw)
    return path


def test_batch_csv_keeps_ids_and_reports_bad_rows(tiny_model, gazetteer_csv, csv_with_bad_rows):
    output = csv_with_bad_rows.with_name("out.csv")
    result = runner.invoke(
        app,
        [
            "batch",
            "--model",
            str(tiny_model),
            "--input",
            str(csv_with_bad_rows),
            "--output",
            str(output),
            "--text-column",
            "isi",
            "--id-column",
            "nomor",
            "--address-column",
            "alamat",
            "--chunk-rows",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "6 of 8 row(s) classified" in result.output and "2 error(s)" in result.output
    out = pd.read_csv(output, dtype=str, keep_default_na=False)
    assert out["id"].tolist() == ["q0", "q1", "q3", "q5", "q6", "q7"]
    assert out["row"].tolist() == ["2", "3", "5", "7", "8", "9"]
    assert set(out["route"]) <= {"auto", "review"} and out["agency"].str.len().min() > 0
    assert json.loads(out["agency_top_k"][0])[0]["label"] == out["agency"][0]
    errors = pd.read_csv(output.with_name("out.csv.errors.csv"), dtype=str)
    assert errors.to_dict("records") == [
        {"row": "4", "id": "q2", "reason": "empty text"},
        {
            "row": "6",
            "id": "q4",
            "reason": "bytes that are not UTF-8 in column 'text' (the file mixes encodings)",
        },
    ]
    assert not output.with_name("out.csv.parts").exists()


def test_batch_jsonl_answers_equal_the_pipeline(tiny_model, gazetteer_csv, tmp_path):
    source = tmp_path / "in.jsonl"
    texts = _texts(7)
    source.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    pipeline = Pipeline.load(tiny_model, gazetteer_csv)
    report = classify_file(pipeline, source, tmp_path / "out.jsonl", chunk_rows=4, progress=False)
    assert (report.rows, report.classified, report.errors) == (7, 7, 0)
    answers = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    expected = [r.to_dict(3) for r in pipeline.run([(t, None) for t in texts], top_k=3)]
    for answer, reference in zip(answers, expected, strict=True):
        assert {k: answer[k] for k in reference} == reference
    assert [a["id"] for a in answers] == [str(i) for i in range(7)]


def test_batch_parquet_in_and_out(tiny_model, gazetteer_csv, tmp_path):
    source = tmp_path / "in.parquet"
    pd.DataFrame({"id": range(5), "text": _texts(5)}).to_parquet(source)
    pipeline = Pipeline.load(tiny_model, gazetteer_csv)
    classify_file(pipeline, source, tmp_path / "out.parquet", chunk_rows=2, progress=False)
    out = pd.read_parquet(tmp_path / "out.parquet")
    assert out["id"].tolist() == ["0", "1", "2", "3", "4"] and len(out.columns) == 14


def test_batch_resumes_after_an_interruption(tiny_model, gazetteer_csv, tmp_path, monkeypatch):
    source = tmp_path / "in.csv"
    pd.DataFrame({"id": range(10), "text": _texts(10)}).to_csv(source, index=False)
    pipeline = Pipeline.load(tiny_model, gazetteer_csv)
    original = batch_module.classify_frame
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(batch_module, "classify_frame", interrupted)
    with pytest.raises(KeyboardInterrupt):
        classify_file(pipeline, source, tmp_path / "out.csv", chunk_rows=3, progress=False)
    assert not (tmp_path / "out.csv").exists()
    monkeypatch.setattr(batch_module, "classify_frame", original)
    report = classify_file(pipeline, source, tmp_path / "out.csv", chunk_rows=3, progress=False)
    assert report.resumed_parts == 2 and report.processed == 4 and report.classified == 10
    classify_file(pipeline, source, tmp_path / "again.csv", chunk_rows=3, progress=False)
    assert (tmp_path / "out.csv").read_text() == (tmp_path / "again.csv").read_text()


def test_batch_missing_text_column_is_a_clear_error(tiny_model, tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("id,body\n1,lampu mati\n")
    result = runner.invoke(
        app,
        [
            "batch",
            "--model",
            str(tiny_model),
            "--input",
            str(source),
            "--output",
            str(tmp_path / "o.csv"),
        ],
    )
    assert result.exit_code == 2 and "no column 'text'" in result.output
    assert BatchColumns().text == "text"
