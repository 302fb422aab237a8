"""`aduan followup import-history` on a slice of the shared history (SQLite and PostgreSQL):
imported once however often it runs, no text stored, and the performance API's figures equal
an independent pandas computation on the same rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from aduan.cli import app as cli
from aduan.model.resources import default_data
from aduan.service.followup import FollowUp
from aduan.service.storage import Store, StoredRequest, make_engine

SURABAYA = default_data()  # the shared data, where model/resources.py finds it
OPS = {"Authorization": "Bearer kunci-ops"}
HOURS = {"1 Sampai 3 Hari": 48.0, "4 Sampai 7 Hari": 132.0, "Lebih 7 Hari": 240.0}
LO, HI = pd.Timestamp("2022-03-07", tz="UTC"), pd.Timestamp("2022-05-23", tz="UTC")

pytestmark = pytest.mark.skipif(
    not SURABAYA.is_file(), reason="the shared data is not on this machine"
)


@pytest.fixture(scope="module")
def history_slice(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """Spring 2022 of the three agencies with most complaints, as the file has them."""
    raw = pd.read_csv(SURABAYA, dtype=str, keep_default_na=False)
    raw = raw[(raw["created_at"] >= "2022-03-01") & (raw["created_at"] < "2022-06-01")]
    top = raw["agency"].value_counts().index[:3]
    part = raw[raw["agency"].isin(top)]
    path = tmp_path_factory.mktemp("history") / "slice.csv"
    part.to_csv(path, index=False)
    return path, part


def _expected(part: pd.DataFrame) -> dict[str, dict[str, float]]:
    """The figures from the raw rows, computed apart from aduan: local WIB times, a 24 h
    first-response deadline, closes at the bucket's hours (not before the first response)."""

    def utc(column: pd.Series) -> pd.Series:
        parsed = pd.to_datetime(column.replace("", None), format="mixed")
        return parsed.dt.tz_localize("Asia/Jakarta").dt.tz_convert("UTC")

    created, responded = utc(part["created_at"]), utc(part["responded_at"])
    closed = created + pd.to_timedelta(part["response_days"].map(HOURS), unit="h")
    closed = closed.where(~(closed < responded), responded).fillna(responded)
    out = {}
    for agency in part["agency"].unique():
        mine = (part["agency"] == agency).to_numpy()
        new = mine & (created >= LO).to_numpy() & (created < HI).to_numpy()
        first_h = ((responded - created).dt.total_seconds() / 3600)[new].dropna()
        close_h = ((closed - created).dt.total_seconds() / 3600)[new].dropna()
        on_time = (responded <= created + pd.Timedelta(hours=24))[new]
        open_at_end = mine & (created < HI).to_numpy() & ~(closed < HI).to_numpy()
        out[agency] = {
            "received": int(new.sum()),
            "acknowledged_within_sla": float(on_time.mean()),
            "first_response_median_h": float(np.median(first_h)),
            "first_response_p90_h": float(np.percentile(first_h, 90)),
            "close_median_h": float(np.median(close_h)),
            "close_p90_h": float(np.percentile(close_h, 90)),
            "backlog": int(open_at_end.sum()),
        }
    return out


def test_import_history_once_and_figures_match_pandas(
    history_slice, database_url, make_client, tmp_path
):
    path, part = history_slice
    runner = CliRunner()
    command = ["followup", "import-history", "--data", str(path), "--database-url", database_url]
    first = runner.invoke(cli, command)
    assert first.exit_code == 0, first.output
    assert f"{len(part)} imported, 0 already there" in first.output
    again = runner.invoke(cli, command)
    assert again.exit_code == 0 and f"0 imported, {len(part)} already there" in again.output
    store = Store(make_engine(database_url))
    with store.sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(FollowUp)) == len(part)
        texts = set(session.scalars(select(StoredRequest.text).distinct()))
    store.close()
    assert texts == {""}  # no complaint text is imported

    offices = tmp_path / "offices.yaml"
    offices.write_text("offices: []\n")
    client = make_client(
        api_keys="ops:kunci-ops",
        operator_keys="ops:kunci-ops",
        database_url=database_url,
        offices_file=offices,
        followup_loop=False,
    )
    to = (HI - pd.Timedelta(days=1)).date().isoformat()  # a bare `to` day is the whole day
    answer = client.get(f"/v1/followup/performance?from={LO.date()}&to={to}", headers=OPS)
    assert answer.status_code == 200, answer.text
    got = {r["office"]: r for r in answer.json()["rows"]}
    expected = _expected(part)
    assert set(got) == set(expected)
    for agency, figures in expected.items():
        for name, value in figures.items():
            assert got[agency][name] == pytest.approx(value, abs=1e-3), (agency, name)
    assert all(r["sent_back"] == 0 for r in got.values())
