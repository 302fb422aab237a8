from pathlib import Path

import pandas as pd
import pytest

from aduan.model.taxonomy import Taxonomy
from aduan.training.data import (
    ColumnMap,
    DataError,
    deduplicate,
    load_complaints,
    prepare,
    time_split,
)
from tests.conftest import make_complaints


def _write(tmp_path: Path, frame: pd.DataFrame, name: str = "c.csv") -> Path:
    path = tmp_path / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    elif name.endswith(".jsonl"):
        frame.to_json(path, orient="records", lines=True, force_ascii=False)
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("name", ["c.csv", "c.jsonl", "c.parquet"])
def test_data_reads_csv_jsonl_and_parquet(tmp_path, name):
    frame = make_complaints(30)
    loaded = load_complaints(_write(tmp_path, frame, name))
    assert len(loaded) == 30
    assert loaded["text"].iloc[0] == frame["text"].iloc[0]
    assert str(loaded["created_at"].dtype).startswith("datetime64")


def test_data_column_mapping(tmp_path):
    frame = make_complaints(10).rename(columns={"text": "isi", "agency": "instansi"})
    loaded = load_complaints(_write(tmp_path, frame), ColumnMap(text="isi", agency="instansi"))
    assert len(loaded) == 10 and loaded["agency"].iloc[0]


def test_data_missing_column_names_file_and_column(tmp_path):
    path = _write(tmp_path, make_complaints(5).drop(columns=["agency"]))
    with pytest.raises(DataError, match=r"c\.csv: missing column\(s\) \['agency'\]"):
        load_complaints(path)


def test_data_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_complaints(path)


def test_data_header_only_file(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("text,agency,created_at\n")
    with pytest.raises(DataError, match="no rows"):
        load_complaints(path)


def test_data_undecodable_bytes_names_the_row_and_column(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(
        b"text,agency,created_at\nok,Dinas Sosial,2023-01-01\ncaf\xe9,Dinas Sosial,2023-01-02\n"
    )
    with pytest.raises(
        DataError, match=r"latin\.csv: row 3, column 'text': bytes that are not UTF-8"
    ):
        load_complaints(path)


def test_data_entirely_empty_label_column(tmp_path):
    frame = make_complaints(5).assign(agency="")
    with pytest.raises(DataError, match="'agency': the label column is entirely empty"):
        load_complaints(_write(tmp_path, frame))


def test_data_unparseable_date_names_row_and_column(tmp_path):
    frame = make_complaints(5)
    frame.loc[3, "created_at"] = "kemarin sore"
    with pytest.raises(DataError, match=r"row 5: column 'created_at': unparseable date"):
        load_complaints(_write(tmp_path, frame))


def test_data_no_usable_rows(tmp_path):
    frame = make_complaints(5).assign(text="   ")
    with pytest.raises(DataError, match="no usable rows"):
        load_complaints(_write(tmp_path, frame))


def test_data_unsupported_suffix(tmp_path):
    path = tmp_path / "c.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(DataError, match="unsupported file type"):
        load_complaints(path)


def test_data_normalises_text_on_load(tmp_path):
    frame = make_complaints(3)
    frame.loc[0, "text"] = "telp 0812 3456 7890   CafÃ©"
    loaded = load_complaints(_write(tmp_path, frame))
    assert loaded["text"].iloc[0] == "telp [TELEPON] Café"


def _frame(rows):
    return pd.DataFrame(rows, columns=["text", "agency", "category", "created_at"]).assign(
        created_at=lambda f: pd.to_datetime(f["created_at"], format="mixed")
    )


def test_data_dedup_keeps_earliest_row_with_majority_labels():
    frame = _frame(
        [
            ("a", "X", "C1", "2023-01-01"),
            ("a", "Y", "C1", "2023-01-05"),
            ("a", "Y", "C1", "2023-02-05"),
            ("b", "X", "C1", "2023-01-02"),
        ]
    )
    kept, report = deduplicate(frame)
    assert report == {"duplicates_removed": 2, "conflicting_groups": 1}
    row = kept[kept["text"] == "a"].iloc[0]
    assert (row["agency"], str(row["created_at"].date())) == ("Y", "2023-01-01")


def test_data_dedup_tie_goes_to_latest_label():
    kept, _ = deduplicate(_frame([("a", "X", "C", "2023-01-01"), ("a", "Y", "C", "2023-01-09")]))
    assert kept["agency"].tolist() == ["Y"]


def test_data_time_split_is_by_date_not_random():
    frame = _frame(
        [
            ("t1", "X", "C", "2023-01-31 23:59"),
            ("t2", "X", "C", "2023-02-01 00:00"),
            ("t3", "X", "C", "2023-04-01"),
        ]
    )
    train, valid = time_split(frame, "2023-01-31", "2023-02-01", "2023-03-31")
    assert train["text"].tolist() == ["t1"] and valid["text"].tolist() == ["t2"]


def test_data_prepare_folds_offices_and_rare_agencies(tmp_path):
    frame = make_complaints(360)
    frame.loc[0, "agency"] = "Badan Langka"  # a single training row
    frame.loc[359, "agency"] = "Badan Baru"  # seen only in validation
    loaded = load_complaints(_write(tmp_path, frame))
    splits = prepare(
        loaded,
        Taxonomy.load(),
        train_until="2023-01-31",
        valid_from="2023-02-01",
        valid_until="2023-03-31",
        min_agency_rows=5,
    )
    agencies = set(splits.labels["agency"].labels)
    assert "Kelurahan" in agencies and "Kelurahan Keputran" not in agencies
    assert "Lainnya" in agencies and "Badan Langka" not in agencies
    assert "Badan Baru" not in agencies
    assert splits.agency_map["Badan Langka"] == "Lainnya"
    assert set(splits.labels["category"].labels) >= {"SAMPAH", "PJU", "JALAN", "PARKIR"}
    assert splits.train["created_at"].max() < splits.valid["created_at"].min()


def test_data_prepare_refuses_overlapping_split(tmp_path):
    loaded = load_complaints(_write(tmp_path, make_complaints(30)))
    with pytest.raises(DataError, match="must come after train_until"):
        prepare(
            loaded,
            Taxonomy.load(),
            train_until="2023-02-28",
            valid_from="2023-02-01",
            valid_until=None,
            min_agency_rows=1,
        )
