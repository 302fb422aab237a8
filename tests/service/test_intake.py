"""Stored classifications, operator feedback, Open311 and the retraining loop."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from aduan.cli import app as cli

KEY = {"Authorization": "Bearer k1"}


@pytest.fixture
def client(make_client, database_url):
    return make_client(api_keys="k1", operator_keys="k1", database_url=database_url)


def _store_one(client, text="sampah menumpuk di TPS bau busuk", **item):
    body = {"items": [{"text": text, **item}], "store": True}
    response = client.post("/v1/classify", json=body, headers=KEY)
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def test_intake_classify_store_returns_request_id(client):
    result = _store_one(client, id="client-7", address="Jalan Keputran Kejambon 4")
    stored = client.app.state.service.store.get_request(result["request_id"])
    assert stored.text == "sampah menumpuk di TPS bau busuk"
    assert stored.client_id == "client-7" and stored.agency == result["agency"]["label"]
    assert stored.kelurahan == "Keputran"
    unstored = client.post(
        "/v1/classify", json={"items": [{"text": "lampu padam"}]}, headers=KEY
    ).json()["results"][0]
    assert unstored["request_id"] is None


def test_intake_feedback_validates_and_is_idempotent(client):
    rid = _store_one(client)["request_id"]
    body = {
        "request_id": rid,
        "agency": "Dinas Sumber Daya Air dan Bina Marga",
        "category": "DRAINASE",
        "operator": "op-siti",
    }
    first = client.post("/v1/feedback", json=body, headers=KEY)
    assert first.status_code == 201 and first.json()["created"] is True
    again = client.post("/v1/feedback", json=body, headers=KEY)
    assert again.status_code == 200 and again.json()["feedback_id"] == first.json()["feedback_id"]
    bad_agency = client.post("/v1/feedback", json={**body, "agency": "Dinas Khayalan"}, headers=KEY)
    assert bad_agency.status_code == 422 and "Dinas Khayalan" in bad_agency.json()["error"]
    bad_category = client.post("/v1/feedback", json={**body, "category": "XYZ"}, headers=KEY)
    assert bad_category.status_code == 422
    missing = client.post("/v1/feedback", json={**body, "request_id": "nope"}, headers=KEY)
    assert missing.status_code == 404 and missing.json()["error_type"] == "not_found"
    assert client.post("/v1/feedback", json=body).status_code == 401


def test_intake_feedback_disabled_without_keys(make_client):
    client = make_client()
    response = client.post(
        "/v1/feedback", json={"request_id": "x", "agency": "a", "category": "b", "operator": "o"}
    )
    assert response.status_code == 403
    assert "ADUAN_OPERATOR_KEYS" in response.json()["error"]


def test_intake_open311_services(client):
    services = client.get("/open311/v2/services.json").json()
    pju = next(s for s in services if s["service_code"] == "PJU")
    assert pju["service_name"] == "Penerangan jalan umum"
    assert pju["metadata"] is False and pju["type"] == "realtime"
    assert pju["group"] == "Infrastruktur" and "pju" in pju["keywords"]


def test_intake_open311_create_form_and_read_back(client):
    response = client.post(
        "/open311/v2/requests.json",
        data={
            "description": "lampu PJU padam gelap sekali",
            "lat": "-7.29",
            "long": "112.71",
            "address_string": "Jalan Raya Darmo Indah",
            "api_key": "k1",
        },
    )
    assert response.status_code == 201, response.text
    [created] = response.json()
    # GeoReport's three fields, and the likely duplicates found (none in an empty store).
    assert set(created) == {
        "service_request_id",
        "service_notice",
        "account_id",
        "possible_duplicates",
    }
    assert created["possible_duplicates"] == []
    assert "Dinas Perhubungan" in created["service_notice"]
    path = f"/open311/v2/requests/{created['service_request_id']}.json"
    [read] = client.get(f"{path}?api_key=k1").json()  # an operator's key: the exact location
    assert read["service_code"] == "PJU" and read["service_name"] == "Penerangan jalan umum"
    assert read["agency_responsible"] == "Dinas Perhubungan"
    assert (read["lat"], read["long"]) == (-7.29, 112.71)
    assert read["address"] == "Jalan Raya Darmo Indah" and read["status"] == "open"
    assert read["requested_datetime"].endswith("+00:00")
    [public] = client.get(path).json()  # anonymous: no street, no coordinates
    assert (public["lat"], public["long"], public["description"]) == (None, None, None)
    assert public["address"] != read["address"] and public["service_code"] == "PJU"


def test_intake_open311_json_with_service_code(client):
    response = client.post(
        "/open311/v2/requests.json",
        headers=KEY,
        json={"description": "jalan berlubang", "service_code": "JALAN"},
    )
    assert response.status_code == 201
    rid = response.json()[0]["service_request_id"]
    assert client.get(f"/open311/v2/requests/{rid}.json").json()[0]["service_code"] == "JALAN"


@pytest.mark.parametrize(
    ("data", "status", "text"),
    [
        ({"api_key": "k1"}, 400, "description is required"),
        (
            {"description": "x", "service_code": "NOPE", "api_key": "k1"},
            400,
            "unknown service_code",
        ),
        ({"description": "x", "lat": "utara", "api_key": "k1"}, 400, "lat must be a number"),
        ({"description": "x", "long": "200", "api_key": "k1"}, 400, "long must lie within"),
        ({"description": "x"}, 403, "api_key"),
        ({"description": "x", "api_key": "wrong"}, 403, "api_key"),
    ],
)
def test_intake_open311_errors_in_spec_form(client, data, status, text):
    response = client.post("/open311/v2/requests.json", data=data)
    assert response.status_code == status
    [error] = response.json()
    assert error["code"] == status and text in error["description"]


def test_intake_open311_unknown_request_is_404_list(client):
    response = client.get("/open311/v2/requests/does-not-exist.json")
    assert response.status_code == 404 and response.json()[0]["code"] == 404


def test_intake_export_and_retrain_on_two_files(client, database_url, complaints_csv, tmp_path):
    rid = _store_one(client, "genangan air setinggi lutut di jalan")["request_id"]
    client.post(
        "/v1/feedback",
        headers=KEY,
        json={
            "request_id": rid,
            "agency": "Dinas Sumber Daya Air dan Bina Marga",
            "category": "DRAINASE",
            "operator": "op1",
        },
    )
    export = tmp_path / "feedback.csv"
    runner = CliRunner()
    result = runner.invoke(
        cli, ["feedback", "export", "--output", str(export), "--database-url", database_url]
    )
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(export)
    assert rows["text"].tolist() == ["genangan air setinggi lutut di jalan"]
    assert rows["category"].tolist() == ["DRAINASE"]
    # The export is a training file: train on the original data plus the corrections.
    model = tmp_path / "retrained"
    result = runner.invoke(
        cli,
        [
            "train",
            "--data",
            str(complaints_csv),
            "--data",
            str(export),
            "--output",
            str(model),
            "--set",
            "min_df=1",
            "--set",
            "min_agency_rows=1",
            "--set",
            "valid_until=2030-01-01",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["data"]["rows_loaded"] == 361
    assert (
        "DRAINASE"
        in json.loads((model / "config.json").read_text())["heads"]["category"]["label2id"]
    )


def test_intake_purge_command(client, database_url):
    _store_one(client)
    runner = CliRunner()
    result = runner.invoke(
        cli, ["requests", "purge", "--before", "2999-01-01", "--database-url", database_url]
    )
    assert result.exit_code == 0 and "deleted 1 request(s)" in result.output
    assert client.app.state.service.store.counts()["requests"] == 0
    bad = runner.invoke(cli, ["requests", "purge", "--before", "kemarin"])
    assert bad.exit_code != 0


def test_intake_nul_characters_are_refused_not_stored(client):
    """PostgreSQL text cannot hold NUL: such input is a 4xx on every route, never a 500."""
    body = {"items": [{"text": "lampu\x00 padam"}], "store": True}
    response = client.post("/v1/classify", json=body, headers=KEY)
    assert response.status_code == 422 and "NUL" in response.json()["error"]
    open311 = client.post(
        "/open311/v2/requests.json", headers=KEY, data={"description": "jalan\x00 rusak"}
    )
    assert open311.status_code == 400 and "NUL" in open311.json()[0]["description"]
    rid = _store_one(client)["request_id"]
    feedback = client.post(
        "/v1/feedback",
        headers=KEY,
        json={
            "request_id": rid,
            "agency": "Dinas Sosial",
            "category": "BANSOS",
            "operator": "op\x00",
        },
    )
    assert feedback.status_code == 422


def test_intake_classify_retry_with_an_idempotency_key_stores_once(client, make_client):
    """Issue 19 item 17: a retry of `POST /v1/classify` with `store` and the same
    Idempotency-Key (after an answer lost past the commit) returns the first request ids and
    stores nothing again; other texts under the key are refused; keys are per caller."""
    body = {"items": [{"text": "lampu padam"}, {"text": "sampah menumpuk"}], "store": True}
    retry = {**KEY, "Idempotency-Key": "batch-2026-12-03-001"}
    first = client.post("/v1/classify", json=body, headers=retry)
    again = client.post("/v1/classify", json=body, headers=retry)
    assert first.status_code == again.status_code == 200
    ids = [r["request_id"] for r in first.json()["results"]]
    assert [r["request_id"] for r in again.json()["results"]] == ids and None not in ids
    assert again.headers["idempotent-replayed"] == "true"
    store = client.app.state.service.store
    assert store.counts()["requests"] == 2
    fewer = client.post("/v1/classify", json={**body, "items": body["items"][:1]}, headers=retry)
    other = client.post(
        "/v1/classify", json={**body, "items": [{"text": "x"}, {"text": "y"}]}, headers=retry
    )
    assert fewer.status_code == other.status_code == 422
    assert "Idempotency-Key" in other.json()["error"]
    client.post("/v1/classify", json=body, headers=KEY)  # no key: stored again
    assert store.counts()["requests"] == 4
    bad = client.post("/v1/classify", json=body, headers={**KEY, "Idempotency-Key": "k" * 256})
    assert bad.status_code == 422 and "visible ASCII" in bad.json()["error"]


def test_intake_idempotency_key_is_scoped_to_the_caller_and_survives_a_race(client, monkeypatch):
    from starlette.requests import Request

    from aduan.service import idempotency
    from aduan.service.keys import ApiKey
    from aduan.service.storage import NewRequest

    store = client.app.state.service.store
    record = NewRequest(
        text="banjir",
        category="DRAINASE",
        category_score=0.9,
        agency="A",
        agency_score=0.9,
        model_version="m",
        route="auto",
    )
    request = Request({"type": "http", "headers": [(b"idempotency-key", b"attempt-1")]})
    siti, budi = (ApiKey(name, "0" * 64, frozenset({"classify"})) for name in ("siti", "budi"))
    mine = idempotency.idempotency_key(request, siti)
    assert mine not in (idempotency.idempotency_key(request, budi), None)
    [first], replayed = idempotency.save_once(store, [record], mine)
    assert not replayed
    assert idempotency.save_once(store, [record], mine) == ([first], True)
    theirs = idempotency.idempotency_key(request, budi)  # the same header from another key
    assert idempotency.save_once(store, [record], theirs)[0] != [first]
    # A concurrent attempt that looked before the first committed: the unique key refuses
    # its insert and it answers with the first request.
    real = idempotency._earlier
    calls = []

    def late(store_, key, records):
        calls.append(key)
        return None if len(calls) == 1 else real(store_, key, records)

    monkeypatch.setattr(idempotency, "_earlier", late)
    assert idempotency.save_once(store, [record], mine) == ([first], True)
    assert len(calls) == 2
    assert store.counts()["requests"] == 2
