"""How offices perform, through the API and the workbench, on SQLite and PostgreSQL: a
hand-worked week of follow-ups (one sent back and routed elsewhere) as JSON and CSV, by
office, kecamatan and all; an office's staff see their own office only."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from aduan.service.followup import Action, act, route
from aduan.service.offices import Office, OfficeBook
from aduan.service.storage import NewRequest, Store, StoredRequest, make_engine

DLH, DISHUB = "Dinas Lingkungan Hidup", "Dinas Perhubungan"
T0 = datetime(2024, 3, 4, 8, 0, tzinfo=UTC)  # a Monday: ISO week 2024-W10
OPS = {"Authorization": "Bearer kunci-ops"}
BUDI = {"Authorization": "Bearer kunci-budi"}
OFFICES = f"offices:\n  - name: {DLH}\n    staff: [budi]\n  - name: {DISHUB}\n    staff: [rina]\n"
RANGE = "from=2024-03-04&to=2024-03-10"


def h(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def _week(store: Store, book: OfficeBook) -> None:
    """A: DLH answers in 2 h, closes at 30 h. B: DLH answers late (29 h after, SLA 24).
    C: DLH sends it back after 1 h, the operator routes it to Dishub, which answers in 1 h.
    D: Dishub never answers."""
    items = [
        NewRequest(
            text="x",
            category="c",
            category_score=0.5,
            agency=agency,
            agency_score=0.5,
            model_version="m",
            route="review",
            kecamatan=kecamatan,
        )
        for agency, kecamatan in (
            (DLH, "Gubeng"),
            (DLH, "Gubeng"),
            (DLH, "Tandes"),
            (DISHUB, "Tandes"),
        )
    ]
    a, b, c, d = store.save_requests(items)
    for rid, at in ((a, h(0)), (b, h(1)), (c, h(2)), (d, h(0))):
        with store.sessions.begin() as session:
            route(session, session.get(StoredRequest, rid), book, "ops", at=at)
    act(store, book, a, [DLH], Action("acknowledge"), "budi", now=h(2))
    act(store, book, a, [DLH], Action("close", "diangkut"), "budi", now=h(30))
    act(store, book, b, [DLH], Action("acknowledge"), "budi", now=h(30))
    act(store, book, c, [DLH], Action("return", right_office=DISHUB), "budi", now=h(3))
    with store.sessions.begin() as session:
        row = session.get(StoredRequest, c)
        row.corrected_agency = DISHUB
        route(session, row, book, "ops", at=h(4))
    act(store, book, c, [DISHUB], Action("acknowledge"), "rina", now=h(5))


@pytest.fixture
def client(make_client, database_url, tmp_path):
    path = tmp_path / "offices.yaml"
    path.write_text(OFFICES)
    keys = "ops:kunci-ops,budi:kunci-budi,rina:kunci-rina"
    client = make_client(
        api_keys=keys,
        operator_keys=keys,
        database_url=database_url,
        offices_file=path,
        followup_loop=False,
    )
    store = Store(make_engine(database_url))
    _week(store, OfficeBook.of([Office(name=DLH), Office(name=DISHUB)]))
    store.close()
    return client


def test_performance_api_hand_worked_week(client):
    answer = client.get(f"/v1/followup/performance?{RANGE}", headers=OPS)
    assert answer.status_code == 200, answer.text
    rows = {r["office"]: r for r in answer.json()["rows"]}
    dlh, dishub = rows[DLH], rows[DISHUB]
    assert (dlh["received"], dlh["acknowledged"]) == (3, 2)  # A, B and C's first stint
    assert dlh["acknowledged_within_sla"] == 0.5  # A on time, B late; C's stint has no deadline
    assert dlh["first_response_median_h"] == pytest.approx(15.5)  # 2 h and 29 h
    assert dlh["first_response_p90_h"] == pytest.approx(26.3)
    assert dlh["close_median_h"] == pytest.approx(30.0)  # sent back is no close
    assert (dlh["backlog"], dlh["overdue"]) == (1, 0)  # B: open, but answered
    assert dlh["sent_back"] == 1 and dlh["sent_back_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert (dishub["received"], dishub["acknowledged_within_sla"]) == (2, 0.5)
    assert dishub["first_response_median_h"] == pytest.approx(1.0)
    assert (dishub["backlog"], dishub["overdue"], dishub["sent_back"]) == (2, 1, 0)  # D late

    [whole] = client.get(f"/v1/followup/performance?{RANGE}&by=all", headers=OPS).json()["rows"]
    assert (whole["group"], whole["received"], whole["backlog"]) == ("all", 5, 3)
    by_kec = client.get(f"/v1/followup/performance?{RANGE}&by=kecamatan", headers=OPS).json()
    assert {r["kecamatan"]: r["received"] for r in by_kec["rows"]} == {"Gubeng": 2, "Tandes": 3}
    weekly = client.get(f"/v1/followup/performance?{RANGE}&weekly=true", headers=OPS).json()
    assert {r["period"] for r in weekly["rows"]} == {"2024-W10"}

    csv = client.get(f"/v1/followup/performance?{RANGE}&format=csv", headers=OPS)
    assert csv.headers["content-type"].startswith("text/csv")
    table = pd.read_csv(io.StringIO(csv.text))
    assert dict(zip(table["office"], table["received"], strict=True)) == {DLH: 3, DISHUB: 2}
    assert table.set_index("office").loc[DLH, "sent_back"] == 1

    # Up to 3.5 h: C's stint at DLH is in, its move to Dishub (4 h) is not.
    early = client.get("/v1/followup/performance?to=2024-03-04T11:30:00Z", headers=OPS).json()
    counts = {r["office"]: (r["received"], r["sent_back"]) for r in early["rows"]}
    assert counts == {DLH: (3, 1), DISHUB: (1, 0)}

    later = client.get("/v1/followup/performance?from=2024-03-11&to=2024-03-17", headers=OPS)
    backlog = {r["office"]: (r["received"], r["backlog"]) for r in later.json()["rows"]}
    assert backlog == {DLH: (0, 1), DISHUB: (0, 2)}  # nothing new, still open


def test_performance_api_scope_and_errors(client):
    mine = client.get(f"/v1/followup/performance?{RANGE}", headers=BUDI).json()
    assert mine["offices"] == [DLH] and [r["office"] for r in mine["rows"]] == [DLH]
    [whole] = client.get(f"/v1/followup/performance?{RANGE}&by=all", headers=BUDI).json()["rows"]
    assert whole["received"] == 3  # only DLH's complaints
    assert client.get("/v1/followup/performance").status_code == 401
    bad = client.get("/v1/followup/performance?by=kelurahan", headers=OPS)
    assert bad.status_code == 422
    assert client.get("/v1/followup/performance?from=kemarin", headers=OPS).status_code == 422
    assert client.get("/v1/followup/performance?format=xml", headers=OPS).status_code == 422


def _login(client, key: str) -> None:
    page = client.get("/ui/login")
    token = page.text.split('name="csrf" value="')[1].split('"')[0]
    answer = client.post(
        "/ui/login",
        data={"key": key, "csrf": token, "next": "/ui/performance"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text


def test_performance_workbench_page_and_plot(client):
    _login(client, "kunci-ops")
    page = client.get(f"/ui/performance?{RANGE.replace('from', 'from')}")
    assert page.status_code == 200
    assert DLH in page.text and DISHUB in page.text and "33%" in page.text  # DLH sent back 1/3
    assert '<script src="http' not in page.text  # no CDN
    by_kec = client.get(f"/ui/performance?by=kecamatan&{RANGE}")
    assert "Gubeng" in by_kec.text and "Tandes" in by_kec.text
    # Two weeks to draw: the plot is a PNG (the plots extra is installed in the dev env).
    plot = client.get("/ui/performance/plot.png?from=2024-03-04&to=2024-03-17")
    assert plot.status_code == 200 and plot.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get(f"/ui/performance/plot.png?{RANGE}").status_code == 404  # one week
    csv = pd.read_csv(io.StringIO(client.get(f"/ui/performance.csv?{RANGE}").text))
    assert dict(zip(csv["office"], csv["received"], strict=True)) == {DLH: 3, DISHUB: 2}

    client.cookies.clear()
    _login(client, "kunci-budi")
    mine = client.get(f"/ui/performance?{RANGE}")
    assert DLH in mine.text and DISHUB not in mine.text.split("<table")[1]
    assert 'href="/ui/queue"' not in mine.text  # staff: their inbox, not the queue
    csv = pd.read_csv(io.StringIO(client.get(f"/ui/performance.csv?{RANGE}").text))
    assert csv["office"].tolist() == [DLH]
