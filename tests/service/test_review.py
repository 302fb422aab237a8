"""The review queue API on SQLite and PostgreSQL: filters, sorting, cursor pagination, changes
with their audit trail, the feedback they become, and explanations."""

import logging

import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from aduan.cli import app as cli

SITI = {"Authorization": "Bearer rahasia-siti"}
PLAIN = {"Authorization": "Bearer k2"}
KEYS = "siti:rahasia-siti,k2"


@pytest.fixture
def client(make_client, database_url):
    return make_client(api_keys=KEYS, operator_keys=KEYS, database_url=database_url)


def _store(client, *items):
    body = {"items": [i if isinstance(i, dict) else {"text": i} for i in items], "store": True}
    response = client.post("/v1/classify", json=body, headers=SITI)
    assert response.status_code == 200, response.text
    return [r["request_id"] for r in response.json()["results"]]


def _ids(response):
    assert response.status_code == 200, response.text
    return [item["request_id"] for item in response.json()["items"]]


def test_review_lists_filters_and_shows_predictions(client):
    sampah, pju, kel = _store(
        client,
        {"text": "sampah menumpuk di TPS bau busuk", "address": "Jalan Keputran Kejambon 3"},
        "lampu PJU padam gelap",
        {"text": "pelayanan kantor kelurahan lambat", "address": "Jl. Keputran Pasar Kecil"},
    )
    items = client.get("/v1/requests", headers=SITI).json()["items"]
    assert [i["request_id"] for i in items] == [sampah, pju, kel]  # oldest first
    first = items[0]
    assert first["text"] == "sampah menumpuk di TPS bau busuk" and first["status"] == "open"
    assert first["agency"]["label"] == "Dinas Lingkungan Hidup"
    assert len(first["agency_top_k"]) == 3 and first["agency_top_k"][0] == first["agency"]
    assert first["unit"]["kelurahan"] == "Keputran" and first["unit"]["source"]
    assert first["route_reason"] in ("confident", "low_confidence")
    by_agency = client.get("/v1/requests?agency=Dinas Perhubungan", headers=SITI)
    assert _ids(by_agency) == [pju]
    assert _ids(client.get("/v1/requests?category=PJU", headers=SITI)) == [pju]
    assert _ids(client.get("/v1/requests?kecamatan=Tegalsari", headers=SITI)) == [sampah, kel]
    assert _ids(client.get("/v1/requests?status=closed", headers=SITI)) == []
    assert _ids(client.get("/v1/requests?until=2000-01-01", headers=SITI)) == []
    assert len(_ids(client.get("/v1/requests?since=2000-01-01", headers=SITI))) == 3
    route = first["route"]
    assert sampah in _ids(client.get(f"/v1/requests?route={route}", headers=SITI))


def test_review_cursor_pagination_and_sorting(client):
    ids = _store(client, *[f"lampu jalan mati gelap no {i}" for i in range(5)])
    pages, cursor = [], None
    while True:
        url = "/v1/requests?limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url, headers=SITI).json()
        pages.append([i["request_id"] for i in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [i for page in pages for i in page] == ids
    newest = _ids(client.get("/v1/requests?sort=-received_at", headers=SITI))
    assert newest == sorted(ids, key=ids.index, reverse=True)
    scored = client.get("/v1/requests?sort=-agency_score&limit=5", headers=SITI).json()["items"]
    scores = [i["agency"]["score"] for i in scored]
    assert scores == sorted(scores, reverse=True)
    wrong = client.get(f"/v1/requests?sort=agency_score&cursor={cursor or 'x'}", headers=SITI)
    assert wrong.status_code == 422
    bad_sort = client.get("/v1/requests?sort=text", headers=SITI)
    assert bad_sort.status_code == 422 and "sort must be one of" in bad_sort.json()["error"]


def test_review_patch_records_who_and_when_and_exports(client, database_url, tmp_path):
    confirmed, corrected = _store(client, "sampah tidak diangkut sudah seminggu", "jalan rusak")
    first = client.get(f"/v1/requests/{confirmed}", headers=SITI).json()
    agency, category = first["agency"]["label"], first["category"]["label"]
    response = client.patch(
        f"/v1/requests/{confirmed}",
        headers=SITI,
        json={"status": "in_progress", "corrected_agency": agency, "corrected_category": category},
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "in_progress"
    assert response.json()["corrected_by"] == "siti"
    changed = client.patch(
        f"/v1/requests/{corrected}",
        headers=PLAIN,
        json={
            "corrected_agency": "Dinas Sumber Daya Air dan Bina Marga",
            "corrected_category": "DRAINASE",
            "note": "Diteruskan ke DSDABM",
        },
    ).json()
    assert changed["corrected_agency"] == "Dinas Sumber Daya Air dan Bina Marga"
    actors = {e["actor"] for e in changed["history"]}
    assert len(actors) == 1 and actors.pop().startswith("key-")  # never the key itself
    assert {e["field"] for e in changed["history"]} == {
        "note",
        "corrected_agency",
        "corrected_category",
    }
    closed = client.patch(f"/v1/requests/{corrected}", headers=SITI, json={"status": "closed"})
    history = closed.json()["history"]
    assert [e["field"] for e in history][-1] == "status"
    assert history[-1] == {**history[-1], "actor": "siti", "old": "open", "new": "closed"}
    assert history[-1]["at"] >= history[0]["at"]
    listed = client.get("/v1/requests?corrected_agency=Dinas Sumber Daya Air dan Bina Marga")
    assert listed.status_code == 401
    assert _ids(
        client.get("/v1/requests?corrected_category=DRAINASE&reviewed=true", headers=SITI)
    ) == [corrected]
    assert _ids(client.get("/v1/requests?reviewed=false", headers=SITI)) == []

    export = tmp_path / "feedback.csv"
    result = CliRunner().invoke(
        cli, ["feedback", "export", "--output", str(export), "--database-url", database_url]
    )
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(export).set_index("id")
    assert rows.loc[confirmed, "agency"] == agency and rows.loc[confirmed, "operator"] == "siti"
    assert rows.loc[corrected, "category"] == "DRAINASE"


def test_review_patch_validates(client):
    [rid] = _store(client, "lampu padam")
    for body, text in [
        ({"status": "done"}, "status"),
        ({"corrected_agency": "Dinas Khayalan"}, "Dinas Khayalan"),
        ({"corrected_category": "XYZ"}, "XYZ"),
        ({"status": None}, "cannot be null"),
        ({"colour": "red"}, "colour"),
    ]:
        response = client.patch(f"/v1/requests/{rid}", headers=SITI, json=body)
        assert response.status_code == 422 and text in response.json()["error"], body
    missing = client.patch("/v1/requests/nope", headers=SITI, json={"status": "closed"})
    assert missing.status_code == 404
    assert client.get("/v1/requests/nope", headers=SITI).status_code == 404
    assert client.patch(f"/v1/requests/{rid}", json={"status": "closed"}).status_code == 401
    assert client.get(f"/v1/requests/{rid}", headers=SITI).json()["history"] == []


def test_review_audit_table_refuses_updates(client):
    [rid] = _store(client, "lampu padam")
    client.patch(f"/v1/requests/{rid}", headers=SITI, json={"status": "closed"})
    store = client.app.state.service.store
    with pytest.raises(sa.exc.DatabaseError, match="append-only"), store.engine.begin() as conn:
        conn.execute(sa.text("update request_events set actor = 'someone else'"))
    events = client.get(f"/v1/requests/{rid}", headers=SITI).json()["history"]
    assert [e["actor"] for e in events] == ["siti"]


def test_review_routes_need_configured_keys(make_client):
    client = make_client()
    response = client.get("/v1/requests")
    assert response.status_code == 403 and "ADUAN_OPERATOR_KEYS" in response.json()["error"]


def test_review_feedback_route_also_sets_corrected_labels(client):
    [rid] = _store(client, "genangan air di jalan")
    body = {
        "request_id": rid,
        "agency": "Dinas Sumber Daya Air dan Bina Marga",
        "category": "DRAINASE",
        "operator": "op1",
    }
    assert client.post("/v1/feedback", json=body, headers=SITI).status_code == 201
    item = client.get(f"/v1/requests/{rid}", headers=SITI).json()
    # recorded under the key's name, not the body's "operator" (issue 19: a forgeable audit trail)
    assert (item["corrected_category"], item["corrected_by"]) == ("DRAINASE", "siti")


def test_review_explanation_names_the_driving_words(client):
    [rid] = _store(client, "lampu PJU padam gelap sekali")
    body = client.get(f"/v1/requests/{rid}/explanation", headers=SITI).json()
    assert body["method"] == "tfidf_ngrams" and body["label"] == "Dinas Perhubungan"
    terms = [t["term"] for t in body["terms"]]
    assert {"lampu", "pju", "padam"} & set(terms[:3])
    loo = client.get(
        f"/v1/requests/{rid}/explanation?method=leave_one_word_out&head=category", headers=SITI
    ).json()
    assert loo["method"] == "leave_one_word_out" and loo["label"] == "PJU"
    assert all(t["weight"] > 0 for t in loo["terms"])


def test_review_logs_never_carry_text_or_note(client, caplog):
    [rid] = _store(client, "rahasia Budi Santoso lampu padam")
    with caplog.at_level(logging.DEBUG):
        client.get("/v1/requests", headers=SITI)
        client.patch(f"/v1/requests/{rid}", headers=SITI, json={"note": "hubungi Bu Ani"})
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "Budi" not in messages and "Ani" not in messages
    assert f'"request_id": "{rid}"' in messages and '"changed": ["note"]' in messages
