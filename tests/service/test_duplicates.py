"""Duplicate and repeated reports on SQLite and PostgreSQL: the likely duplicates found at
intake (/v1 and Open311), merge / unmerge / not-a-duplicate with their audit trail, the
Open311 status of a merged report, the queue counting a merged case once, and the repeat
reporter flag."""

from datetime import timedelta

import pytest
import sqlalchemy as sa

from aduan.service import duplicates, merges
from aduan.service.storage import utcnow

SITI = {"Authorization": "Bearer rahasia-siti"}
KEYS = "siti:rahasia-siti,k2"
SAMPAH = "sampah menumpuk di TPS pasar Keputran bau busuk tidak diangkut seminggu"
SAMPAH_AGAIN = "tumpukan sampah di TPS pasar Keputran sudah seminggu tidak diangkut, bau busuk"
KEPUTRAN = "Jalan Keputran Kejambon 3"
PJU = "lampu penerangan jalan umum padam total di gang tiga, gelap gulita rawan kejahatan"


@pytest.fixture
def client(make_client, database_url):
    return make_client(
        api_keys=KEYS,
        operator_keys=KEYS,
        database_url=database_url,
        reporter_secret="garam-rahasia",
        reporter_max_reports=2,
    )


def _store(client, *items):
    body = {"items": [i if isinstance(i, dict) else {"text": i} for i in items], "store": True}
    response = client.post("/v1/classify", json=body, headers=SITI)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def _found(result):
    return [d["request_id"] for d in result["possible_duplicates"]]


def _age(client, request_id, days):
    """Move a stored request (and its signature) `days` into the past."""
    engine = client.app.state.service.store.engine
    with engine.begin() as conn:
        for table, column in (("requests", "id"), ("request_signatures", "request_id")):
            moment = conn.execute(
                sa.text(f"select received_at from {table} where {column} = :i"), {"i": request_id}
            ).scalar()
            if isinstance(moment, str):  # SQLite hands back text
                from datetime import datetime

                moment = datetime.fromisoformat(moment)
            conn.execute(
                sa.text(f"update {table} set received_at = :t where {column} = :i"),
                {"t": moment - timedelta(days=days), "i": request_id},
            )


def test_vectors_are_unit_length_and_similar_texts_score_higher():
    similar, dissimilar = duplicates.vectors([SAMPAH, SAMPAH_AGAIN, PJU])[[1, 2]]
    first = duplicates.vectors([SAMPAH])[0]
    assert abs(float(first @ first) - 1) < 1e-5
    assert float(first @ similar) > 0.5 > float(first @ dissimilar)
    [blob] = duplicates.embed([SAMPAH])
    assert len(blob) == duplicates.DIMENSIONS * 2  # float16


def test_intake_finds_the_same_problem_at_the_same_place(client):
    [first] = _store(client, {"text": SAMPAH, "address": KEPUTRAN})
    assert first["possible_duplicates"] == []
    [second] = _store(client, {"text": SAMPAH_AGAIN, "address": KEPUTRAN})
    assert second["unit"]["kelurahan"] == "Keputran"
    [found] = second["possible_duplicates"]
    assert found["request_id"] == first["request_id"] and found["status"] == "open"
    assert 0.5 <= found["similarity"] <= 1 and found["received_at"]
    # A classify without store answers no duplicates at all.
    plain = client.post("/v1/classify", json={"items": [{"text": SAMPAH}]}, headers=SITI)
    assert plain.json()["results"][0].get("possible_duplicates") is None
    detail = client.get(f"/v1/requests/{second['request_id']}", headers=SITI).json()
    assert [d["request_id"] for d in detail["possible_duplicates"]] == [first["request_id"]]
    # The earlier report shows the later one that looks like it.
    original = client.get(f"/v1/requests/{first['request_id']}", headers=SITI).json()
    assert original["possible_duplicates"] == []
    assert [d["request_id"] for d in original["later_reports"]] == [second["request_id"]]


def test_intake_leaves_out_other_units_old_closed_and_dissimilar(client):
    [elsewhere] = _store(client, {"text": SAMPAH, "address": "Jalan Ngagel Jaya Tengah 5"})
    [old] = _store(client, {"text": SAMPAH, "address": KEPUTRAN})
    _age(client, old["request_id"], 15)
    [closed] = _store(client, {"text": SAMPAH, "address": KEPUTRAN})
    patched = client.patch(
        f"/v1/requests/{closed['request_id']}", json={"status": "closed"}, headers=SITI
    )
    assert patched.status_code == 200
    [other_text] = _store(client, {"text": PJU, "address": KEPUTRAN})
    [new] = _store(client, {"text": SAMPAH_AGAIN, "address": KEPUTRAN})
    assert elsewhere["unit"]["kelurahan"] != "Keputran"
    assert _found(new) == []
    assert _found(other_text) == []


def test_the_same_address_counts_as_evidence(client):
    [same_street] = _store(client, {"text": SAMPAH, "address": KEPUTRAN})
    [other_street] = _store(client, {"text": SAMPAH, "address": "Jalan Keputran Pasar Kecil 20"})
    [new] = _store(client, {"text": SAMPAH_AGAIN, "address": KEPUTRAN})
    assert other_street["unit"]["kelurahan"] == "Keputran"
    found = {d["request_id"]: d["similarity"] for d in new["possible_duplicates"]}
    assert found[same_street["request_id"]] > found[other_street["request_id"]]
    config = duplicates.Config()
    assert duplicates.similarity(0.6, False, None, config) == 0.6
    assert duplicates.similarity(0.6, True, 0.5, config) == pytest.approx(0.65)
    assert duplicates.similarity(0.9, True, 1.0, config) == 1.0


def test_intake_by_coordinates_within_the_radius(client):
    form = {"description": SAMPAH, "lat": "-7.2700", "long": "112.7400"}
    first = client.post("/open311/v2/requests.json", data=form, headers=SITI).json()[0]
    near = {"description": SAMPAH_AGAIN, "lat": "-7.2705", "long": "112.7402"}  # ~60 m
    second = client.post("/open311/v2/requests.json", data=near, headers=SITI).json()[0]
    far = {"description": SAMPAH_AGAIN, "lat": "-7.2800", "long": "112.7400"}  # ~1.1 km
    third = client.post("/open311/v2/requests.json", data=far, headers=SITI).json()[0]
    assert first["possible_duplicates"] == []
    assert [d["request_id"] for d in second["possible_duplicates"]] == [first["service_request_id"]]
    assert third["possible_duplicates"] == []
    xml = client.post("/open311/v2/requests.xml", data=near, headers=SITI)
    assert xml.status_code == 201 and b"<possible_duplicates>" in xml.content


def test_a_retry_answers_the_same_duplicates(client):
    [first] = _store(client, {"text": SAMPAH, "address": KEPUTRAN})
    body = {"items": [{"text": SAMPAH_AGAIN, "address": KEPUTRAN}], "store": True}
    retry = {**SITI, "Idempotency-Key": "dup-1"}
    once = client.post("/v1/classify", json=body, headers=retry).json()["results"][0]
    again = client.post("/v1/classify", json=body, headers=retry).json()["results"][0]
    assert once["request_id"] == again["request_id"]
    assert _found(once) == _found(again) == [first["request_id"]]


def _merge(client, duplicate, original):
    return client.post(
        f"/v1/requests/{duplicate}/merge", json={"original_id": original}, headers=SITI
    )


def test_merge_closes_with_a_note_follows_the_original_and_counts_once(client):
    [original, duplicate] = [
        r["request_id"]
        for r in _store(
            client,
            {"text": SAMPAH, "address": KEPUTRAN},
            {"text": SAMPAH_AGAIN, "address": KEPUTRAN},
        )
    ]
    merged = _merge(client, duplicate, original)
    assert merged.status_code == 200, merged.text
    body = merged.json()
    assert body["status"] == "closed" and original in body["note"]
    assert body["duplicate_of"] == original
    fields = {e["field"] for e in body["history"]}
    assert {"duplicate_of", "status", "note"} <= fields
    detail = client.get(f"/v1/requests/{original}", headers=SITI).json()
    assert detail["duplicates"] == 1 and detail["reports"] == 2
    assert detail["later_reports"] == []  # merged: no longer a suggestion
    queue = client.get("/v1/requests", headers=SITI).json()["items"]
    assert [i["request_id"] for i in queue] == [original]
    assert queue[0]["reports"] == 2
    everything = client.get("/v1/requests?include_merged=true", headers=SITI).json()["items"]
    assert {i["request_id"] for i in everything} == {original, duplicate}
    # Open311: the duplicate follows its original's status and points to it.
    shown = client.get(f"/open311/v2/requests/{duplicate}.json").json()[0]
    assert shown["status"] == "open" and original in shown["status_notes"]
    client.patch(f"/v1/requests/{original}", json={"status": "closed"}, headers=SITI)
    listed = client.get(f"/open311/v2/requests.json?service_request_id={duplicate}").json()
    assert listed[0]["status"] == "closed"
    closed = client.get("/open311/v2/requests.json?status=closed").json()
    assert {r["service_request_id"] for r in closed} == {original, duplicate}
    client.patch(f"/v1/requests/{original}", json={"status": "in_progress"}, headers=SITI)
    still_open = client.get("/open311/v2/requests.json?status=open").json()
    assert {r["service_request_id"] for r in still_open} == {original, duplicate}
    assert client.get("/open311/v2/requests.json?status=closed").json() == []
    # A new report of the same problem is not matched to the merged duplicate.
    client.patch(f"/v1/requests/{original}", json={"status": "open"}, headers=SITI)
    [later] = _store(client, {"text": SAMPAH_AGAIN, "address": KEPUTRAN})
    assert _found(later) == [original]


def test_merge_refuses_chains_loops_and_missing_requests(client):
    a, b, c = [r["request_id"] for r in _store(client, SAMPAH, SAMPAH_AGAIN, PJU)]
    assert _merge(client, a, a).status_code == 422
    assert _merge(client, a, "missing").status_code == 404
    assert _merge(client, b, a).status_code == 200
    assert _merge(client, c, b).status_code == 422  # b is merged: merge into a
    assert _merge(client, a, c).status_code == 422  # a has duplicates
    assert _merge(client, b, c).status_code == 422  # merged already


def test_unmerge_restores_status_and_note(client):
    a, b = [r["request_id"] for r in _store(client, SAMPAH, SAMPAH_AGAIN)]
    client.patch(f"/v1/requests/{b}", json={"status": "in_progress", "note": "dicek"}, headers=SITI)
    assert _merge(client, b, a).status_code == 200
    undone = client.post(f"/v1/requests/{b}/unmerge", headers=SITI)
    assert undone.status_code == 200, undone.text
    body = undone.json()
    assert body["status"] == "in_progress" and body["note"] == "dicek"
    assert body["duplicate_of"] is None
    assert [e["field"] for e in body["history"]].count("duplicate_of") == 2
    assert client.get(f"/v1/requests/{a}", headers=SITI).json()["duplicates"] == 0
    assert client.post(f"/v1/requests/{b}/unmerge", headers=SITI).status_code == 422


def test_not_a_duplicate_is_recorded_and_hidden(client):
    [first] = _store(client, {"text": SAMPAH, "address": KEPUTRAN})
    [second] = _store(client, {"text": SAMPAH_AGAIN, "address": KEPUTRAN})
    a, b = first["request_id"], second["request_id"]
    answer = client.post(f"/v1/requests/{b}/not-duplicate", json={"candidate_id": a}, headers=SITI)
    assert answer.status_code == 200, answer.text
    assert answer.json()["possible_duplicates"] == []
    assert answer.json()["history"][-1]["field"] == "not_duplicate_of"
    assert client.get(f"/v1/requests/{a}", headers=SITI).json()["later_reports"] == []
    store = client.app.state.service.store
    [(similarity, same)] = merges.verdicts(store)
    assert same is False and similarity == second["possible_duplicates"][0]["similarity"]
    missing = client.post(
        f"/v1/requests/{b}/not-duplicate", json={"candidate_id": "nope"}, headers=SITI
    )
    assert missing.status_code == 404


def test_repeat_reporter_is_flagged_never_refused_and_filterable(client):
    sent = [
        _store(client, {"text": f"{PJU} nomor {i}", "reporter": "Budi@Example.com"})[0]
        for i in range(3)
    ]
    [other] = _store(client, {"text": PJU, "reporter": "ani@example.com"})
    flags = client.get("/v1/requests", headers=SITI).json()["items"]
    by_id = {i["request_id"]: i["repeat_reporter"] for i in flags}
    assert [by_id[r["request_id"]] for r in sent] == [False, False, True]
    assert by_id[other["request_id"]] is False
    flagged = client.get("/v1/requests?repeat_reporter=true", headers=SITI).json()["items"]
    assert [i["request_id"] for i in flagged] == [sent[2]["request_id"]]
    # Open311: device_id counts the same way; only a keyed hash is stored.
    for i in range(3):
        form = {"description": f"{PJU} {i}", "device_id": "hp-1"}
        created = client.post("/open311/v2/requests.json", data=form, headers=SITI)
        assert created.status_code == 201
    engine = client.app.state.service.store.engine
    with engine.connect() as conn:
        stored = [r for (r,) in conn.execute(sa.text("select reporter from request_signatures"))]
    assert all(r is None or len(r) == 64 for r in stored)
    assert not any(r and ("budi" in r or "hp-1" in r) for r in stored)
    assert duplicates.reporter_hash("s", "email", " A@b.c ") == duplicates.reporter_hash(
        "s", "email", "a@b.c"
    )
    assert duplicates.reporter_hash("", "email", "a@b.c") is None


def _ui_login(client):
    import re

    form = client.get("/ui/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    client.post("/ui/login", data={"key": "rahasia-siti", "csrf": token, "next": "/ui/queue"})
    page = client.get("/ui/queue?route=&status=")
    return page, re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def test_workbench_shows_duplicates_and_merges_with_the_csrf_token(client):
    [first] = _store(client, {"text": SAMPAH, "address": KEPUTRAN})
    [second] = _store(client, {"text": SAMPAH_AGAIN, "address": KEPUTRAN})
    a, b = first["request_id"], second["request_id"]
    page, token = _ui_login(client)
    assert f'class="candidate" data-id="{a}"' in page.text and "Bukan duplikat" in page.text
    assert f'class="candidate later" data-id="{b}"' in page.text  # beside the original
    forged = client.post(f"/ui/requests/{b}", data={"action": "merge", "other": a, "csrf": "x"})
    assert forged.status_code == 403
    merged = client.post(
        f"/ui/requests/{b}",
        data={"action": "merge", "other": a, "csrf": token, "next": "/ui/queue"},
        follow_redirects=False,
    )
    assert merged.status_code == 303
    assert client.get(f"/v1/requests/{b}", headers=SITI).json()["duplicate_of"] == a
    page = client.get("/ui/queue?route=&status=").text
    assert "2 laporan" in page and f'id="r-{b}"' not in page
    shown = client.get("/ui/queue?route=&status=&merged=yes").text
    assert f'id="r-{b}"' in shown and "Batalkan gabung" in shown
    undone = client.post(
        f"/ui/requests/{b}",
        data={"action": "unmerge", "csrf": token},
        headers={"X-Requested-With": "fetch"},
    )
    assert undone.json() == {"ok": True}
    rejected = client.post(
        f"/ui/requests/{b}",
        data={"action": "not_duplicate", "other": a, "csrf": token},
        headers={"X-Requested-With": "fetch"},
    )
    assert rejected.status_code == 200
    assert client.get(f"/v1/requests/{b}", headers=SITI).json()["possible_duplicates"] == []


def test_purge_takes_signatures_merges_and_verdicts_with_the_requests(client):
    a, b, c = [
        r["request_id"]
        for r in _store(
            client,
            {"text": SAMPAH, "address": KEPUTRAN, "reporter": "budi"},
            {"text": SAMPAH_AGAIN, "address": KEPUTRAN},
            {"text": SAMPAH_AGAIN, "address": KEPUTRAN},
        )
    ]
    assert _merge(client, b, a).status_code == 200
    client.post(f"/v1/requests/{c}/not-duplicate", json={"candidate_id": a}, headers=SITI)
    store = client.app.state.service.store
    assert store.purge(utcnow() + timedelta(days=1)) == 3
    with store.engine.connect() as conn:
        for table in (
            "request_signatures",
            "duplicate_candidates",
            "request_duplicates",
            "duplicate_verdicts",
        ):
            assert conn.execute(sa.text(f"select count(*) from {table}")).scalar() == 0


def test_the_search_reads_candidates_through_the_unit_and_time_index(client):
    store = client.app.state.service.store
    signature = duplicates.RequestSignature
    query = sa.select(signature.request_id).where(
        signature.kelurahan == "Keputran", signature.received_at >= utcnow()
    )
    compiled = str(query.compile(store.engine, compile_kwargs={"literal_binds": True}))
    sqlite = store.engine.dialect.name == "sqlite"
    with store.engine.connect() as conn:
        if not sqlite:
            conn.exec_driver_sql("SET enable_seqscan = off")  # an empty table: force the choice
        plan = conn.exec_driver_sql(("EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN ") + compiled)
        text = " ".join(str(row[-1]) for row in plan)
    assert "ix_request_signatures_kelurahan" in text


def test_duplicate_verdicts_command_shows_the_merged_share_by_threshold(client, database_url):
    from typer.testing import CliRunner

    from aduan.cli import app as cli

    a, b, c = [
        r["request_id"]
        for r in _store(
            client,
            {"text": SAMPAH, "address": KEPUTRAN},
            {"text": SAMPAH_AGAIN, "address": KEPUTRAN},
            {"text": SAMPAH_AGAIN, "address": KEPUTRAN},
        )
    ]
    assert _merge(client, b, a).status_code == 200
    client.post(f"/v1/requests/{c}/not-duplicate", json={"candidate_id": a}, headers=SITI)
    table = merges.threshold_table(merges.verdicts(client.app.state.service.store), [0.0, 1.01])
    assert table == [
        {"threshold": 0.0, "judged": 2, "merged_share": 0.5},
        {"threshold": 1.01, "judged": 0, "merged_share": None},
    ]
    result = CliRunner().invoke(
        cli, ["requests", "duplicate-verdicts", "--database-url", database_url]
    )
    assert result.exit_code == 0, result.output
    assert "2 judged suggestion(s)" in result.output and "0.50 merged" in result.output


def test_a_failed_duplicate_lookup_answers_the_stored_complaint_without_candidates(
    client, monkeypatch, caplog
):
    def broken(*args, **kwargs):
        raise RuntimeError("database busy " + SAMPAH)

    monkeypatch.setattr(duplicates, "record", broken)
    with caplog.at_level("WARNING", logger="aduan.service.intake"):
        [result] = _store(client, {"text": SAMPAH, "address": KEPUTRAN})
    assert result["possible_duplicates"] == [] and not result.get("repeat_reporter")
    stored = client.get(f"/v1/requests/{result['request_id']}", headers=SITI)
    assert stored.status_code == 200
    warned = [r for r in caplog.records if r.name == "aduan.service.intake"]
    assert warned and all(r.levelname == "WARNING" for r in warned)
    assert all("sampah" not in r.getMessage().lower() for r in caplog.records)
