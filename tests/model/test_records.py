"""`aduan.model.records`: the one reader of CSV, JSON Lines and Parquet files that training,
`aduan batch` and the Ray backfill share: row numbers, spans, column mapping, undecodable
bytes, the errors file and the optional pyarrow."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from aduan.model import records
from aduan.model.records import ParquetMissing, RecordError
from tests.conftest import make_complaints


def _rows(path, chunk_rows=3, span=None):
    return [
        (first, frame)
        for first, frame in records.read_frames(path, chunk_rows=chunk_rows, span=span)
    ]


@pytest.fixture
def awkward_csv(tmp_path):
    """A quoted text over two lines, a blank line and a Windows-1252 byte in row 5."""
    path = tmp_path / "in.csv"
    path.write_bytes(
        b'id,text\na,"lampu\nmati"\nb,sampah\n\nc,jalan rusak\nd,caf\xe9 kotor\ne,banjir\n'
    )
    return path


def test_records_csv_rows_count_the_header_and_skip_blank_lines(awkward_csv):
    chunks = _rows(awkward_csv)
    assert [first for first, _ in chunks] == [2, 5]
    assert [len(frame) for _, frame in chunks] == [3, 2]
    picked = pd.concat(
        [
            records.pick(frame, {"key": "id", "body": "text", "none": "missing"}, first)
            for first, frame in chunks
        ],
        ignore_index=True,
    )
    assert picked["row"].tolist() == [2, 3, 4, 5, 6]
    assert picked.loc[0, "body"] == "lampu\nmati" and set(picked["none"]) == {""}
    assert records.undecodable_reason({"text": picked.loc[3, "body"]}) == (
        "bytes that are not UTF-8 in column 'text' (the file mixes encodings)"
    )
    [(_, frame)] = _rows(awkward_csv, chunk_rows=10)
    assert records.first_undecodable(frame, 2) == (5, "text")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_records_spans_keep_the_whole_files_row_numbers(tmp_path, suffix):
    path = tmp_path / f"in{suffix}"
    frame = pd.DataFrame({"text": [f"keluhan no {i}" for i in range(23)]})
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, row_group_size=4)
    whole = [(first + i, t) for first, f in _rows(path, 5) for i, t in enumerate(f["text"])]
    spans = records.plan_spans(path, rows_per_span=7)
    assert len(spans) > 2 and sum(s.rows for s in spans) == 23
    pieces = [
        (first + i, t)
        for span in spans
        for first, f in _rows(path, 3, span)
        for i, t in enumerate(f["text"])
    ]
    assert pieces == whole
    assert whole[0][0] == records.first_row_number(records.file_kind(path))


def test_records_jsonl_blank_line_is_an_empty_record_and_bad_lines_are_named(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\n')
    [(first, frame)] = _rows(path)
    assert first == 1 and records.pick(frame, {"text": "text"}, 1)["text"].tolist() == [
        "a",
        "",
        "b",
    ]
    path.write_text('{"text": "a"}\n[1, 2]\n')
    with pytest.raises(RecordError, match=r"in\.jsonl: line 2: expected a JSON object"):
        _rows(path)
    path.write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(RecordError, match=r"line 2: not valid JSON"):
        _rows(path)


def test_records_refuses_unknown_suffix_and_names_missing_columns(tmp_path):
    with pytest.raises(RecordError, match=r"unsupported file type '\.xlsx'"):
        records.file_kind(tmp_path / "a.xlsx")
    error = records.missing_columns(tmp_path / "a.csv", ["isi"], ["text", "id"], "use --x")
    assert str(error).endswith("a.csv: no column 'isi'; found ['text', 'id'] (use --x)")
    assert records.missing_columns(tmp_path / "a.csv", ["text"], ["text"], "") is None


def test_records_csv_parser_error_names_the_file(tmp_path):
    path = tmp_path / "broken.csv"
    path.write_text('text,id\n"unclosed,1\n')
    with pytest.raises(RecordError, match=r"broken\.csv: cannot be parsed as CSV"):
        _rows(path)


def test_records_errors_file_is_written_or_removed(tmp_path):
    output = tmp_path / "out.csv"
    errors = pd.DataFrame([{"row": 4, "id": "x", "reason": "empty text", "extra": 1}])
    assert records.write_errors(output, [errors, errors.iloc[:0]]) == 1
    written = pd.read_csv(records.errors_file(output), dtype=str)
    assert written.to_dict("records") == [{"row": "4", "id": "x", "reason": "empty text"}]
    assert records.write_errors(output, []) == 0
    assert not records.errors_file(output).exists()  # a rerun without errors leaves none stale


def test_records_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "in.parquet"
    pd.DataFrame({"text": ["lampu mati"]}).to_parquet(path)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import fails as if missing
    with pytest.raises(ParquetMissing, match=r"pip install 'aduan\[parquet\]'"):
        _rows(path)
    # CSV needs no pyarrow
    csv = tmp_path / "in.csv"
    csv.write_text("text\nlampu mati\n")
    assert len(_rows(csv)[0][1]) == 1


def test_records_training_reads_without_datasets(tmp_path):
    """Training reads its files through this reader: `datasets` is never imported."""
    path = tmp_path / "c.parquet"
    make_complaints(20).to_parquet(path)
    code = (
        "import sys\n"
        "from aduan.training.data import load_complaints\n"
        f"assert len(load_complaints({str(path)!r})) == 20\n"
        "assert 'datasets' not in sys.modules, 'datasets was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_records_csv_written_with_formula_guards_reads_back_as_written(tmp_path):
    """`aduan feedback export` guards cells against spreadsheet formulas; read back for
    training (the monthly retrain does), the texts are the citizens' own, apostrophe-free."""
    from aduan.model.records import read_frames
    from aduan.model.spreadsheet import write_csv

    texts = ["-- lampu mati", "=SUM(A1)", "'quoted already", "@camat tolong", "biasa"]
    path = tmp_path / "feedback.csv"
    write_csv(pd.DataFrame({"text": texts}), path)
    assert "'--" in path.read_text()  # guarded on disk
    [(_, frame)] = list(read_frames(path, 100))
    assert frame["text"].tolist() == texts
