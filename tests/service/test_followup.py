"""Follow-up on SQLite and PostgreSQL: the offices file, an office's day through the API
(acknowledge, note, close, send back), what operators see of it, deadlines, the sweep and its
escalation, and what Open311 tells the citizen."""

import logging
import os
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from aduan.cli import app as cli
from aduan.service.dispatch import DispatchMetrics, overdue_gauge
from aduan.service.followup import (
    OVERDUE,
    OutboxEvent,
    get,
    inbox,
    install,
    sweep,
)
from aduan.service.offices import Office, OfficeBook, OfficesFileError, parse_offices
from aduan.service.storage import NewRequest, Store, make_engine, upgrade

DLH = "Dinas Lingkungan Hidup"
OPS = {"Authorization": "Bearer kunci-ops"}
BUDI = {"Authorization": "Bearer kunci-budi"}
OFFICES = f"""\
offices:
  - name: {DLH}
    sla_hours: 24
    resolution_hours: 72
    staff: [budi]
  - name: Dinas Perhubungan
    staff: [rina]
"""


def test_offices_file_error_names_the_line(tmp_path):
    text = OFFICES + "  - name: Kelurahan Darmo\n    secret: not-a-secret\n"
    with pytest.raises(OfficesFileError, match=r"line 9: offices\.2\.secret: .*whsec_"):
        parse_offices(text, "offices.yaml")
    with pytest.raises(OfficesFileError, match=r"line 6: office 'Dinas Lingkungan Hidup' listed"):
        parse_offices(OFFICES.replace("Dinas Perhubungan", DLH), "o.yaml")
    with pytest.raises(OfficesFileError, match=r"line 3: offices\.0\.sla_hours"):
        parse_offices(OFFICES.replace("sla_hours: 24", "sla_hours: -1"), "o.yaml")
    with pytest.raises(OfficesFileError, match="line 2: not valid YAML"):
        parse_offices("offices:\n\t- name: x\n", "o.yaml")


def test_offices_file_is_read_again_when_it_changes_and_warns_unknown(tmp_path, caplog):
    path = tmp_path / "offices.yaml"
    path.write_text(OFFICES)
    book = OfficeBook(path)
    assert book.offices_of("budi") == [DLH] and book.sla_hours(DLH) == 24
    with caplog.at_level(logging.WARNING):
        assert book.warn_unknown({DLH}) == ["Dinas Perhubungan"]
    assert "Dinas Perhubungan" in caplog.text
    path.write_text(OFFICES.replace("staff: [budi]", "staff: [budi, siti]"))
    os.utime(path, ns=(2, 2))
    assert book.offices_of("siti") == [DLH]
    path.write_text("offices: 3\n")
    os.utime(path, ns=(3, 3))
    assert book.offices_of("siti") == [DLH] and book.broken  # the last good set stays


@pytest.fixture
def client(make_client, database_url, tmp_path):
    path = tmp_path / "offices.yaml"
    path.write_text(OFFICES)
    keys = "ops:kunci-ops,budi:kunci-budi,rina:kunci-rina"
    return make_client(
        api_keys=keys,
        operator_keys=keys,
        database_url=database_url,
        offices_file=path,
        followup_loop=False,
        public_read_rate=0,
    )


def _routed(client, text="sampah menumpuk di TPS bau busuk", agency=DLH):
    body = {"items": [{"text": text, "address": "Jalan Keputran Kejambon 3"}], "store": True}
    response = client.post("/v1/classify", json=body, headers=OPS)
    assert response.status_code == 200, response.text
    rid = response.json()["results"][0]["request_id"]
    # An operator routes it (whatever the model's route was): the follow-up starts.
    patch = client.patch(f"/v1/requests/{rid}", json={"corrected_agency": agency}, headers=OPS)
    assert patch.status_code == 200, patch.text
    return rid


def test_followup_an_offices_day_through_the_api(client):
    rid = _routed(client)
    assert client.get("/v1/office/complaints", headers=OPS).status_code == 403  # not staff
    assert client.get("/v1/requests", headers=BUDI).status_code == 403  # staff: no queue
    [item] = client.get("/v1/office/complaints", headers=BUDI).json()["items"]
    follow = item["followup"]
    assert item["request_id"] == rid and follow["status"] == "new" and follow["office"] == DLH
    assert follow["first_response_due"] and follow["expected_datetime"]
    rina = {"Authorization": "Bearer kunci-rina"}
    assert client.get("/v1/office/complaints", headers=rina).json()["items"] == []
    assert client.post(f"/v1/office/complaints/{rid}/acknowledge", headers=rina).status_code == 404

    base = f"/v1/office/complaints/{rid}"
    assert client.post(f"{base}/acknowledge", headers=BUDI).json()["followup"]["status"] == (
        "acknowledged"
    )
    assert client.post(f"{base}/status", json={}, headers=BUDI).status_code == 409  # no note
    done = client.post(f"{base}/status", json={"note": "Petugas menuju lokasi"}, headers=BUDI)
    assert done.json()["followup"]["status"] == "in_progress"
    [open311] = client.get(f"/open311/v2/requests/{rid}.json").json()
    assert open311["status"] == "open" and open311["status_notes"] == "Petugas menuju lokasi"
    assert open311["agency_responsible"] == DLH and open311["expected_datetime"]
    closed = client.post(f"{base}/close", json={"note": "Sampah sudah diangkut"}, headers=BUDI)
    assert closed.json()["followup"]["status"] == "closed"
    assert client.post(f"{base}/close", json={"note": "x"}, headers=BUDI).status_code == 409
    [open311] = client.get(f"/open311/v2/requests/{rid}.json").json()
    assert open311["status"] == "closed" and open311["status_notes"] == "Sampah sudah diangkut"
    assert open311["updated_datetime"] >= open311["requested_datetime"]
    assert client.get("/v1/office/complaints?status=closed", headers=BUDI).json()["items"]
    assert client.get("/v1/office/complaints?status=new", headers=BUDI).json()["items"] == []

    detail = client.get(f"/v1/requests/{rid}", headers=OPS).json()
    assert detail["followup"]["status"] == "closed" and detail["followup"]["office"] == DLH
    history = detail["history"]
    budi = [(e["field"], e["new"]) for e in history if e["actor"] == "budi"]
    assert ("followup", "acknowledged") in budi and ("followup", "closed") in budi
    assert ("note", "Sampah sudah diangkut") in budi


def test_followup_send_back_returns_to_the_queue_and_becomes_a_correction(
    client, database_url, tmp_path
):
    first = _routed(client, "lampu jalan mati")
    rid = _routed(client)
    answer = client.post(
        f"/v1/office/complaints/{rid}/return",
        json={"note": "bukan wewenang kami", "right_office": "Dinas Perhubungan"},
        headers=BUDI,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["followup"]["status"] == "returned"
    assert client.post(f"/v1/office/complaints/{first}/acknowledge", headers=BUDI).status_code == (
        200
    )
    escalated = client.get("/v1/followup/escalated", headers=OPS).json()["items"]
    assert [i["request_id"] for i in escalated] == [rid]
    assert escalated[0]["followup"]["returned_to"] == "Dinas Perhubungan"
    queue = client.get("/v1/requests?route=review&status=open", headers=OPS).json()["items"]
    assert rid in [i["request_id"] for i in queue]

    export = tmp_path / "feedback.csv"
    args = ["feedback", "export", "--output", str(export), "--database-url", database_url]
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert rid not in set(pd.read_csv(export)["id"])  # no longer a confirmed label
    client.patch(f"/v1/requests/{rid}", json={"corrected_agency": "Dinas Perhubungan"}, headers=OPS)
    assert CliRunner().invoke(cli, args).exit_code == 0
    rows = pd.read_csv(export).set_index("id")
    assert rows.loc[rid, "agency"] == "Dinas Perhubungan"
    assert rows.loc[rid, "predicted_agency"] == DLH
    rina = {"Authorization": "Bearer kunci-rina"}
    [item] = client.get("/v1/office/complaints", headers=rina).json()["items"]
    assert item["request_id"] == rid and item["followup"]["status"] == "new"
    assert client.get("/v1/followup/escalated", headers=OPS).json()["items"] == []
    history = client.get(f"/v1/requests/{rid}", headers=OPS).json()["history"]
    assert ("budi", "followup", "returned") in [(e["actor"], e["field"], e["new"]) for e in history]


def _store(database_url: str, offices: list[Office]) -> tuple[Store, OfficeBook]:
    upgrade(database_url)
    store = Store(make_engine(database_url))
    book = OfficeBook.of(offices)
    install(store, book)
    return store, book


def _auto(agency: str, **extra: object) -> NewRequest:
    values = {
        "text": "saluran mampet",
        "category": "DRAINASE",
        "category_score": 0.9,
        "agency": agency,
        "agency_score": 0.97,
        "model_version": "m-1",
        "route": "auto",
        **extra,
    }
    return NewRequest(**values)  # type: ignore[arg-type]


def test_followup_deadlines_sweep_and_escalation_to_the_kecamatan(database_url):
    keputran = Office(name="Kelurahan Keputran", sla_hours=4, webhook="http://127.0.0.1:9/k")
    tegalsari = Office(name="Kecamatan Tegalsari", webhook="http://127.0.0.1:9/t")
    store, book = _store(database_url, [keputran, tegalsari, Office(name=DLH)])
    kel, dlh, lainnya = store.save_requests(
        [
            _auto("Kelurahan", kelurahan="Keputran", kecamatan="Tegalsari"),
            _auto(DLH),
            _auto("Lainnya"),
        ]
    )
    assert get(store, lainnya) is None  # no concrete office: nothing to follow up
    follow = get(store, kel)
    assert follow is not None and follow.office == "Kelurahan Keputran"
    due = follow.first_response_due - follow.routed_at
    assert due == timedelta(hours=4)
    assert follow.expected_datetime - follow.routed_at == timedelta(days=7)
    assert get(store, dlh).first_response_due - get(store, dlh).routed_at == timedelta(hours=24)

    routed_at = follow.routed_at
    assert sweep(store, book, now=routed_at + timedelta(hours=3)) == []
    assert sweep(store, book, now=routed_at + timedelta(hours=5)) == [kel]
    assert sweep(store, book, now=routed_at + timedelta(hours=6)) == []  # marked once
    assert get(store, kel).status == OVERDUE
    assert [r.id for r, _ in inbox(store, ["Kecamatan Tegalsari"])] == [kel]
    assert [r.id for r, _ in inbox(store, ["Kelurahan Keputran"])] == [kel]
    with store.sessions.begin() as session:
        events = {(e.type, e.office) for e in session.query(OutboxEvent)}
    assert ("complaint.overdue", "Kelurahan Keputran") in events
    assert ("complaint.overdue", "Kecamatan Tegalsari") in events
    assert sweep(store, book, now=routed_at + timedelta(hours=25)) == [dlh]

    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    metrics = DispatchMetrics(registry)
    overdue_gauge(store, metrics)
    text = generate_latest(registry).decode()
    assert 'aduan_overdue_complaints{office="Kelurahan Keputran"} 1.0' in text
    assert f'aduan_overdue_complaints{{office="{DLH}"}} 1.0' in text


def test_followup_cli_sweep_and_dispatch_once(database_url, tmp_path: Path):
    path = tmp_path / "offices.yaml"
    path.write_text(OFFICES)
    _store(database_url, [])  # the schema
    args = ["--database-url", database_url, "--offices", str(path)]
    result = CliRunner().invoke(cli, ["followup", "sweep", *args])
    assert result.exit_code == 0, result.output
    assert "0 complaint(s) became overdue" in result.output
    result = CliRunner().invoke(cli, ["followup", "dispatch", "--once", *args])
    assert result.exit_code == 0 and "delivered 0" in result.output
    path.write_text("offices:\n  - nam: x\n")
    result = CliRunner().invoke(cli, ["followup", "sweep", *args])
    assert result.exit_code == 2 and "line 2" in result.output


def _csrf(html: str) -> str:
    import re

    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def _login(client, key: str) -> None:
    form = client.get("/ui/login")
    response = client.post(
        "/ui/login",
        data={"key": key, "csrf": _csrf(form.text), "next": "/ui/queue"},
        follow_redirects=False,
    )
    assert response.status_code == 303 and "aduan_session" in client.cookies


def test_followup_workbench_inbox_and_escalations(client):
    rid = _routed(client)
    _login(client, "kunci-budi")
    assert client.get("/ui/queue", follow_redirects=False).headers["location"] == "/ui/inbox"
    page = client.get("/ui/inbox")
    assert page.status_code == 200 and f'id="r-{rid}"' in page.text
    csrf = _csrf(page.text)
    action = f"/ui/inbox/{rid}"
    client.post(action, data={"action": "acknowledge", "csrf": csrf}, follow_redirects=False)
    assert get_status(client, rid) == "acknowledged"
    bad = client.post(action, data={"action": "progress", "csrf": csrf}, follow_redirects=False)
    assert "error=" in bad.headers["location"]  # a status update needs its note
    client.post(
        action,
        data={"action": "return", "csrf": csrf, "right_office": "Dinas Perhubungan"},
        follow_redirects=False,
    )
    assert get_status(client, rid) == "returned"
    assert f'id="r-{rid}"' not in client.get("/ui/inbox").text  # no longer open here
    client.cookies.clear()
    _login(client, "kunci-ops")
    queue = client.get("/ui/queue").text
    assert 'id="escalated"' in queue and f'id="e-{rid}"' in queue
    assert queue.index('id="escalated"') < queue.index('id="filters"')  # on top
    assert 'class="returned-to">Dinas Perhubungan' in queue
    assert 'id="dead-letters"' not in queue
    store = client.app.state.service.store
    from aduan.service.followup import emit
    from aduan.service.storage import utcnow

    book = OfficeBook.of([Office(name=DLH, webhook="http://127.0.0.1:9/x")])
    with store.sessions.begin() as session:
        [event] = emit(session, book, "complaint.routed", DLH, {"request_id": rid}, utcnow())
        event.dead_at, event.attempts = utcnow(), 20
    assert 'id="dead-letters"' in client.get("/ui/queue").text  # visible in the workbench
    assert 'id="routes-live"' in client.get("/ui/model").text
    accuracy = client.get("/v1/followup/route-accuracy", headers=OPS).json()
    assert accuracy["promise"] == 0.95 and accuracy["agencies"][0]["agency"] == "(all)"


def get_status(client, rid: str) -> str:
    detail = client.get(f"/v1/requests/{rid}", headers=OPS).json()
    return [e["new"] for e in detail["history"] if e["field"] == "followup"][-1]


def test_followup_intake_webhook_hears_routing_and_status_changes(database_url, tmp_path):
    path = tmp_path / "offices.yaml"
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    intake = f"intake:\n  webhook: http://127.0.0.1:9/app\n  secret: {secret}\n"
    path.write_text(OFFICES + intake)
    book = OfficeBook(path)
    assert [o.name for o in book.all()] == [DLH, "Dinas Perhubungan"]  # intake is no office
    with pytest.raises(OfficesFileError, match=r"line 9: intake: .*whsec_"):
        parse_offices(OFFICES + "intake:\n  webhook: http://x/\n  secret: nope\n", path)
    upgrade(database_url)
    store = Store(make_engine(database_url))
    install(store, book)
    [rid] = store.save_requests([_auto(DLH)])
    from aduan.service.followup import Action, act

    act(store, book, rid, [DLH], Action("acknowledge"), "budi")
    with store.sessions.begin() as session:
        events = [
            (e.type, e.office) for e in session.query(OutboxEvent).order_by(OutboxEvent.created_at)
        ]
        data = {e.payload["data"]["office"] for e in session.query(OutboxEvent)}
    assert ("complaint.routed", "(intake)") in events
    assert ("complaint.status_changed", "(intake)") in events
    assert data == {DLH}  # the intake system is told the complaint's office


def test_followup_live_accuracy_of_automatic_routes(database_url, caplog):
    from aduan.service.followup import Action, act
    from aduan.service.route_accuracy import LiveAccuracyMetrics, live_accuracy, wilson

    store, book = _store(database_url, [Office(name=DLH), Office(name="Dinas Perhubungan")])
    auto = store.save_requests([_auto(DLH) for _ in range(25)])
    reviewed = store.save_requests([_auto(DLH, route="review")])
    for rid in auto[:22]:
        act(store, book, rid, [DLH], Action("acknowledge"), "budi")
    act(store, book, auto[24], [DLH], Action("acknowledge"), "budi")
    for rid in auto[22:]:  # three sent back, one of them after acknowledging it
        act(store, book, rid, [DLH], Action("return"), "budi")
    assert get(store, reviewed[0]) is None  # never routed: judged by no one
    all_, dlh = live_accuracy(store)
    assert (all_.agency, dlh.agency) == ("(all)", DLH)
    assert (dlh.accepted, dlh.returned, dlh.total) == (22, 3, 25)
    assert dlh.accuracy == pytest.approx(0.88) and dlh.below_promise
    low, high = dlh.interval
    assert low < 0.88 < high and (low, high) == wilson(22, 25)
    assert wilson(95, 100)[0] == pytest.approx(0.8883, abs=1e-3)  # the textbook value

    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    metrics = LiveAccuracyMetrics(registry)
    with caplog.at_level(logging.WARNING):
        metrics.update([all_, dlh])
    assert "under the 95% promise" in caplog.text
    text = generate_latest(registry).decode()
    assert f'aduan_auto_route_live_accuracy{{agency="{DLH}"}} 0.88' in text
    assert f'aduan_auto_route_below_promise{{agency="{DLH}"}} 1.0' in text


def test_followup_admin_raises_the_auto_route_threshold_without_retraining(make_client):
    client = make_client(api_keys="k", admin_keys="adm")
    admin = {"Authorization": "Bearer adm"}
    own = client.app.state.service.classifier.thresholds["agency"]
    raised = client.post("/v1/admin/auto-route-threshold", json={"threshold": 1.01}, headers=admin)
    assert raised.status_code == 200 and raised.json()["threshold"] == 1.01
    body = {"items": [{"text": "sampah menumpuk di TPS bau busuk"}]}
    result = client.post("/v1/classify", json=body, headers={"Authorization": "Bearer k"})
    assert result.json()["results"][0]["route"] == "review"  # nothing passes 1.01
    back = client.post("/v1/admin/auto-route-threshold", json={"threshold": None}, headers=admin)
    assert back.json()["threshold"] == own
    bar = {"threshold": 0.5}
    assert client.post("/v1/admin/auto-route-threshold", json=bar).status_code == 401


def test_followup_purge_removes_follow_up_and_webhook_events(database_url):
    from datetime import UTC, datetime

    store, _ = _store(database_url, [Office(name=DLH, webhook="http://127.0.0.1:9/x")])
    [rid] = store.save_requests([_auto(DLH)])
    assert get(store, rid) is not None
    assert store.purge(datetime.now(UTC) + timedelta(seconds=1)) == 1
    assert get(store, rid) is None
    with store.sessions.begin() as session:
        assert session.query(OutboxEvent).count() == 0  # no complaint text left behind


def test_followup_migration_0005_reverts_and_applies_again(database_url):
    import sqlalchemy as sa

    from aduan.service.storage import downgrade

    upgrade(database_url)
    downgrade(database_url, "0004")
    engine = make_engine(database_url)
    assert not {"followups", "outbox"} & set(sa.inspect(engine).get_table_names())
    engine.dispose()
    upgrade(database_url)
    engine = make_engine(database_url)
    assert {"followups", "outbox"} <= set(sa.inspect(engine).get_table_names())
    engine.dispose()


def test_followup_only_for_offices_in_the_file(database_url):
    store, _ = _store(database_url, [Office(name=DLH)])
    listed, unlisted = store.save_requests([_auto(DLH), _auto("Dinas Sosial")])
    assert get(store, listed) is not None and get(store, unlisted) is None


def test_followup_a_merged_duplicate_leaves_the_inbox_and_is_never_routed_again(database_url):
    from aduan.service.merges import merge
    from aduan.service.review import Changes, update_request

    office = Office(name=DLH, webhook="http://127.0.0.1:9/dlh")
    store, _ = _store(database_url, [office])
    original, duplicate = store.save_requests([_auto(DLH), _auto(DLH)])
    assert {r.id for r, _ in inbox(store, [DLH])} == {original, duplicate}
    merge(store, duplicate, original, "siti")
    follow = get(store, duplicate)
    assert follow.status == "closed" and original in (follow.status_notes or "")
    assert [r.id for r, _ in inbox(store, [DLH], statuses=["new"])] == [original]
    with store.sessions.begin() as session:
        told = [e.type for e in session.query(OutboxEvent) if e.request_id == duplicate]
    assert told == ["complaint.routed", "complaint.status_changed"]  # the office hears it
    # an operator confirming the merged report routes nothing again
    update_request(store, duplicate, Changes(corrected_agency=DLH), "siti")
    with store.sessions.begin() as session:
        told = [e.type for e in session.query(OutboxEvent) if e.request_id == duplicate]
    assert told.count("complaint.routed") == 1 and get(store, duplicate).status == "closed"


def test_followup_an_operator_moving_an_auto_route_sends_it_back_and_tells_the_old_office(
    database_url,
):
    from aduan.service.followup import Action, act
    from aduan.service.review import Changes, update_request
    from aduan.service.route_accuracy import live_accuracy

    dishub = Office(name="Dinas Perhubungan", webhook="http://127.0.0.1:9/dishub")
    store, book = _store(database_url, [Office(name=DLH), dishub])
    [rid] = store.save_requests([_auto("Dinas Perhubungan")])
    update_request(store, rid, Changes(corrected_agency=DLH), "siti")
    follow = get(store, rid)
    assert follow.office == DLH and follow.verdict == "returned"
    act(store, book, rid, [DLH], Action("acknowledge"), "budi")  # the new office's action
    assert get(store, rid).verdict == "returned"  # keeps judging the model's route
    counts = {a.agency: (a.accepted, a.returned) for a in live_accuracy(store)}
    assert counts["Dinas Perhubungan"] == (0, 1)
    with store.sessions.begin() as session:
        told = [
            (e.type, e.payload["data"]["status"], e.payload["data"].get("reassigned_to"))
            for e in session.query(OutboxEvent).order_by(OutboxEvent.created_at)
            if e.office == "Dinas Perhubungan"
        ]
    assert told == [("complaint.routed", "new", None), ("complaint.returned", "returned", DLH)]


def test_followup_unmerge_routes_the_report_to_its_office_again(database_url):
    from aduan.service.duplicates import DuplicateVerdict
    from aduan.service.followup import Action, act
    from aduan.service.merges import merge, unmerge, verdicts

    office = Office(name=DLH, webhook="http://127.0.0.1:9/dlh")
    store, book = _store(database_url, [office])
    original, duplicate = store.save_requests([_auto(DLH), _auto(DLH)])
    merge(store, duplicate, original, "siti")
    assert get(store, duplicate).status == "closed"
    unmerge(store, duplicate, "siti")
    follow = get(store, duplicate)
    assert follow.status == "new" and follow.closed_at is None
    assert follow.first_response_due > follow.routed_at
    assert {r.id for r, _ in inbox(store, [DLH], statuses=["new"])} == {original, duplicate}
    act(store, book, duplicate, [DLH], Action("acknowledge"), "budi")  # no 409 any more
    assert get(store, duplicate).status == "acknowledged"
    with store.sessions.begin() as session:
        told = [e.type for e in session.query(OutboxEvent) if e.request_id == duplicate]
        kept = [v.verdict for v in session.query(DuplicateVerdict)]
    assert told.count("complaint.routed") == 2
    assert kept == [] and verdicts(store) == []  # the undone merge is no tuning evidence


def test_followup_unmerge_leaves_a_report_its_office_closed_closed(database_url):
    from aduan.service.followup import Action, act
    from aduan.service.merges import merge, unmerge

    store, book = _store(database_url, [Office(name=DLH)])
    original, duplicate = store.save_requests([_auto(DLH), _auto(DLH)])
    act(store, book, duplicate, [DLH], Action("close", note="sudah diangkut"), "budi")
    merge(store, duplicate, original, "siti")
    unmerge(store, duplicate, "siti")
    follow = get(store, duplicate)
    assert follow.status == "closed" and follow.status_notes == "sudah diangkut"


def test_followup_staff_keys_see_their_office_only_and_stay_staff_when_the_file_drops_them(
    client, tmp_path
):
    dlh = _routed(client)
    dishub = _routed(client, "lampu lalu lintas mati di perempatan", agency="Dinas Perhubungan")
    listed = client.get("/open311/v2/requests.json", headers=BUDI).json()
    shown = {r["service_request_id"]: r["description"] for r in listed}
    assert shown[dlh] and shown[dishub] is None  # only his office's texts
    [other] = client.get(f"/open311/v2/requests/{dishub}.json", headers=BUDI).json()
    assert other["description"] is None
    [everything] = client.get(f"/open311/v2/requests/{dishub}.json", headers=OPS).json()
    assert everything["description"]  # an operator sees every office's
    _login(client, "kunci-budi")
    assert client.get(f"/ui/requests/{dishub}/explanation").status_code == 403
    assert client.get(f"/ui/requests/{dlh}/explanation").status_code == 200

    # The file drops budi (his office renamed, his name gone): no operator by that.
    (tmp_path / "offices.yaml").write_text(OFFICES.replace("staff: [budi]", "staff: [wati]"))
    assert client.get("/v1/requests", headers=BUDI).status_code == 403
    assert client.get("/v1/office/complaints", headers=BUDI).status_code == 403
    assert client.get("/v1/followup/performance", headers=BUDI).status_code == 403
    listed = client.get("/open311/v2/requests.json", headers=BUDI).json()
    assert all(r["description"] is None for r in listed)
    assert client.get(f"/ui/requests/{dlh}/explanation").status_code == 403
    assert client.get("/ui/queue", follow_redirects=False).status_code == 303  # to the inbox
    assert client.get("/ui/inbox").status_code == 403
    assert client.get("/v1/requests", headers=OPS).status_code == 200


def test_followup_act_and_merge_lock_their_rows_on_postgresql(database_url):
    import sqlalchemy as sa

    from aduan.service.followup import Action, act
    from aduan.service.merges import merge

    if not database_url.startswith("postgresql"):
        pytest.skip("row locks are PostgreSQL's (SQLite has one writer)")
    store, book = _store(database_url, [Office(name=DLH)])
    first, second, third = store.save_requests([_auto(DLH), _auto(DLH), _auto(DLH)])
    seen: list[str] = []

    def remember(conn, cursor, statement, *args):
        seen.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", remember)
    try:
        act(store, book, first, [DLH], Action("acknowledge"), "budi")
        locked_by_act = [s for s in seen if "FOR UPDATE" in s]
        seen.clear()
        merge(store, third, second, "siti")
        locked_by_merge = [s for s in seen if "FOR UPDATE" in s]
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", remember)
    assert any("followups" in s for s in locked_by_act)
    assert any("requests" in s for s in locked_by_act)
    assert locked_by_merge and "ORDER BY" in locked_by_merge[0]


def test_followup_a_key_with_the_office_scope_is_no_operator_without_an_offices_file(
    make_client, tmp_path
):
    from aduan.service.keys import hash_key

    keys = tmp_path / "keys.txt"
    keys.write_text(
        f"ops operator,classify {hash_key('kunci-ops')}\n"
        f"budi operator,office {hash_key('kunci-budi')}\n"
    )
    client = make_client(keys_file=keys, followup_loop=False, public_read_rate=0)
    body = {"items": [{"text": "sampah menumpuk di TPS bau busuk"}], "store": True}
    [stored] = client.post("/v1/classify", json=body, headers=OPS).json()["results"]
    assert client.get("/v1/requests", headers=OPS).status_code == 200
    assert client.get("/v1/requests", headers=BUDI).status_code == 403  # no offices file
    rid = stored["request_id"]
    [shown] = client.get(f"/open311/v2/requests/{rid}.json", headers=BUDI).json()
    assert shown["description"] is None
    _login(client, "kunci-budi")
    assert client.get("/ui/queue", follow_redirects=False).status_code == 303
    assert client.get(f"/ui/requests/{rid}/explanation").status_code == 403


@pytest.mark.parametrize(
    "url", ["https://host:abc/x", "https://a..b/x", "https:///x", "ftp://dlh.example/x"]
)
def test_offices_file_refuses_a_webhook_url_httpx_cannot_use(url):
    text = OFFICES.replace("    staff: [rina]\n", f"    staff: [rina]\n    webhook: {url}\n")
    with pytest.raises(OfficesFileError, match=r"line 8: offices\.1\.webhook: .*(URL|host)"):
        parse_offices(text, "offices.yaml")
    assert parse_offices(text.replace(url, "https://dishub.example.go.id/x"), "o.yaml")


def test_offices_secret_stays_out_of_repr_and_plain_http_is_warned(tmp_path, caplog):
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    path = tmp_path / "offices.yaml"
    path.write_text(
        f"offices:\n  - name: {DLH}\n    webhook: http://dlh.example.go.id/aduan\n"
        f"    secret: {secret}\n"
        "  - name: Dinas Perhubungan\n    webhook: http://127.0.0.1:9/hook\n"
        f"    secret: {secret}\n"
        f"intake:\n  webhook: https://app.example.go.id/hook\n  secret: {secret}\n"
    )
    with caplog.at_level(logging.WARNING, logger="aduan.service.offices"):
        book = OfficeBook(path)
    office = book.get(DLH)
    assert office is not None and office.secret == secret  # still there to sign with
    assert secret not in repr(office) and secret not in str(office)
    assert secret not in repr(book.get("(intake)")) and secret not in caplog.text
    # Plain http to another host is said once, at load; loopback (tests, a sidecar) is not.
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and DLH in warnings[0] and "unencrypted" in warnings[0]
    caplog.clear()
    book.get(DLH)  # not re-read: not said again
    assert not caplog.records
    path.write_text(path.read_text().replace(f"    secret: {secret}\n", "", 1))
    os.utime(path, ns=(2, 2))
    with caplog.at_level(logging.WARNING, logger="aduan.service.offices"):
        book.get(DLH)
    assert "unsigned" in caplog.text


def test_followup_sweep_marks_a_late_complaint_once_per_deadline(database_url):
    """An office working on a late complaint is not put back to overdue (and its supervisor
    told again) after every acknowledge or note; each deadline is marked once."""
    from aduan.service.followup import Action, act

    office = Office(name=DLH, sla_hours=4, resolution_hours=48, webhook="http://127.0.0.1:9/d")
    store, book = _store(database_url, [office])
    [rid] = store.save_requests([_auto(DLH)])
    start = get(store, rid).routed_at

    def h(hours: float):
        return start + timedelta(hours=hours)

    def overdue_events() -> int:
        with store.sessions.begin() as session:
            return session.query(OutboxEvent).filter_by(type="complaint.overdue").count()

    assert sweep(store, book, now=h(5)) == [rid]  # first response missed
    act(store, book, rid, [DLH], Action("acknowledge"), "budi", now=h(6))
    assert sweep(store, book, now=h(7)) == []  # the resolution deadline (48 h) still holds
    assert sweep(store, book, now=h(49)) == [rid]  # resolution missed: marked, once
    act(store, book, rid, [DLH], Action("acknowledge"), "budi", now=h(50))
    assert sweep(store, book, now=h(51)) == []
    act(store, book, rid, [DLH], Action("progress", note="petugas dikirim"), "budi", now=h(52))
    assert sweep(store, book, now=h(53)) == []
    assert sweep(store, book, now=h(200)) == []
    assert get(store, rid).status == "in_progress" and overdue_events() == 2

    # Acknowledged only after the resolution deadline too: marked for it once more.
    [late] = store.save_requests([_auto(DLH)])
    start = get(store, late).routed_at
    assert sweep(store, book, now=h(5)) == [late]
    act(store, book, late, [DLH], Action("acknowledge"), "budi", now=h(60))
    assert sweep(store, book, now=h(61)) == [late]
    act(store, book, late, [DLH], Action("acknowledge"), "budi", now=h(62))
    assert sweep(store, book, now=h(63)) == []
