"""Open311 GeoReport v2 as existing city clients call it: services and definitions, creating,
listing with the spec's filters and reading requests, JSON and XML, following the review."""

from xml.etree import ElementTree

import pytest
import sqlalchemy as sa

KEY = {"Authorization": "Bearer k1"}


@pytest.fixture
def client(make_client, database_url):
    # public reads unthrottled here: the tests read lists many times a second
    return make_client(
        api_keys="siti:k1", operator_keys="siti:k1", database_url=database_url, public_read_rate=0
    )


def _create(client, description, **fields):
    response = client.post(
        "/open311/v2/requests.json", data={"description": description, "api_key": "k1", **fields}
    )
    assert response.status_code == 201, response.text
    return response.json()[0]["service_request_id"]


def test_open311_service_definition_json_and_xml(client):
    assert client.get("/open311/v2/services/PJU.json").json() == {
        "service_code": "PJU",
        "attributes": [],
    }
    xml = ElementTree.fromstring(client.get("/open311/v2/services/PJU.xml").content)
    assert xml.tag == "service_definition" and xml.findtext("service_code") == "PJU"
    assert list(xml.find("attributes")) == []
    missing = client.get("/open311/v2/services/NOPE.xml")
    assert missing.status_code == 404
    assert ElementTree.fromstring(missing.content).findtext("error/code") == "404"


def test_open311_services_in_xml(client):
    root = ElementTree.fromstring(client.get("/open311/v2/services.xml").content)
    codes = [s.findtext("service_code") for s in root.findall("service")]
    assert "PJU" in codes and root.find("service").findtext("metadata") == "false"


def test_open311_request_follows_the_operators_review(client):
    rid = _create(client, "jalan rusak berlubang besar", address_string="Jalan Ngagel Jaya")
    [before] = client.get(f"/open311/v2/requests/{rid}.json").json()
    assert before["status"] == "open" and before["status_notes"] is None
    assert before["expected_datetime"] is None
    assert before["updated_datetime"] == before["requested_datetime"]
    assert before["description"] is None  # complaint text only for key holders
    client.patch(
        f"/v1/requests/{rid}",
        headers=KEY,
        json={
            "status": "closed",
            "note": "Sudah ditambal",
            "corrected_category": "DRAINASE",
            "corrected_agency": "Dinas Sumber Daya Air dan Bina Marga",
            "expected_datetime": "2030-01-31T10:00:00+07:00",
        },
    )
    [after] = client.get(f"/open311/v2/requests/{rid}.json?api_key=k1").json()
    assert after["status"] == "closed" and after["status_notes"] == "Sudah ditambal"
    assert after["service_code"] == "DRAINASE"
    assert after["service_name"] == "Saluran air dan banjir"
    assert after["agency_responsible"] == "Dinas Sumber Daya Air dan Bina Marga"
    assert after["expected_datetime"] == "2030-01-31T03:00:00+00:00"
    assert after["updated_datetime"] >= after["requested_datetime"]
    assert after["description"] == "jalan rusak berlubang besar"
    xml = ElementTree.fromstring(client.get(f"/open311/v2/requests/{rid}.xml", headers=KEY).content)
    request = xml.find("request")
    assert xml.tag == "service_requests" and request.findtext("status") == "closed"
    assert request.findtext("description") == "jalan rusak berlubang besar"


def test_open311_lists_with_the_spec_filters(client):
    lamp = _create(client, "lampu PJU padam gelap")
    trash = _create(client, "sampah menumpuk di TPS")
    road = _create(client, "jalan rusak berlubang", service_code="JALAN")
    client.patch(f"/v1/requests/{trash}", headers=KEY, json={"status": "closed"})

    def ids(query=""):
        response = client.get(f"/open311/v2/requests.json{query}")
        assert response.status_code == 200, response.text
        return [r["service_request_id"] for r in response.json()]

    assert ids() == [road, trash, lamp]  # newest first, the last 90 days
    assert ids("?status=closed") == [trash]
    assert ids("?status=open") == [road, lamp]
    assert ids("?service_code=JALAN,PJU") == [road, lamp]
    assert ids(f"?service_request_id={lamp},{trash}&status=open") == [trash, lamp]
    assert ids("?start_date=2000-01-01&end_date=2000-12-31") == []
    assert ids("?end_date=2999-01-01T00:00:00Z") == [road, trash, lamp]
    xml = ElementTree.fromstring(client.get("/open311/v2/requests.xml?status=closed").content)
    assert [r.findtext("service_request_id") for r in xml.findall("request")] == [trash]
    bad = client.get("/open311/v2/requests.json?status=pending")
    assert bad.status_code == 400 and bad.json()[0]["code"] == 400
    bad_date = client.get("/open311/v2/requests.xml?start_date=kemarin")
    assert bad_date.status_code == 400
    assert "start_date" in ElementTree.fromstring(bad_date.content).findtext("error/description")


def test_open311_create_answers_in_xml(client):
    response = client.post(
        "/open311/v2/requests.xml", data={"description": "lampu jalan mati", "api_key": "k1"}
    )
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/xml")
    root = ElementTree.fromstring(response.content)
    assert root.find("request/service_request_id").text
    refused = client.post("/open311/v2/requests.xml", data={"description": "x"})
    assert refused.status_code == 403
    assert ElementTree.fromstring(refused.content).findtext("error/code") == "403"


def test_open311_post_body_is_documented(client):
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/open311/v2/requests.{fmt}"]["post"]
    content = post["requestBody"]["content"]
    form = content["application/x-www-form-urlencoded"]["schema"]
    assert "application/json" in content
    assert form["required"] == ["description"]
    assert {"service_code", "lat", "long", "address_string", "api_key"} <= set(form["properties"])
    assert {"apiKey": []} in post["security"]


def _stored_rows(client):
    return client.app.state.service.store.counts()["requests"]


@pytest.mark.parametrize("keys", ["none", "configured"])
def test_open311_anonymous_list_shows_no_text_street_or_coordinates(
    make_client, database_url, keys
):
    """Issue 19 item 3: with or without keys configured, an anonymous caller reading the
    list gets no complaint text, no street address and no exact coordinates; an operator's
    key gets all three."""
    configured = "siti:k1" if keys == "configured" else ""
    client = make_client(api_keys=configured, operator_keys=configured, database_url=database_url)
    form = {
        "description": "sampah menumpuk di TPS Keputran",
        "address_string": "Jalan Keputran Kejambon no 12",
        "lat": "-7.2756",
        "long": "112.7403",
    }
    created = client.post("/open311/v2/requests.json", data={**form, "api_key": "k1"})
    assert created.status_code == 201, created.text
    for path in ("/open311/v2/requests.json", "/open311/v2/requests.xml"):
        answer = client.get(path)
        assert answer.status_code == 200
        assert form["description"] not in answer.text and "Kejambon" not in answer.text
        assert "7.2756" not in answer.text and "112.7403" not in answer.text
    [public] = client.get("/open311/v2/requests.json").json()
    assert public["description"] is None and (public["lat"], public["long"]) == (None, None)
    assert public["address"] == "Kelurahan Keputran, Kecamatan Tegalsari"  # the kelurahan only
    if keys == "configured":
        [full] = client.get("/open311/v2/requests.json?api_key=k1").json()
        assert full["description"] == form["description"]
        assert (full["address"], full["lat"]) == (form["address_string"], -7.2756)
        wrong = client.get("/open311/v2/requests.json?api_key=guess")
        assert wrong.status_code == 403 and wrong.json()[0]["code"] == 403


def test_open311_anonymous_list_is_rate_limited(make_client):
    """On by default, although the general rate_limit is off by default."""
    from aduan.service.settings import Settings

    assert Settings().rate_limit == 0 and Settings().public_read_rate > 0
    client = make_client(public_read_rate=0.01)  # a burst of one: deterministic
    answers = [client.get("/open311/v2/requests.xml") for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 429]
    refused = ElementTree.fromstring(answers[1].content)
    assert refused.findtext("error/code") == "429" and answers[1].headers["retry-after"]


def test_open311_xml_stays_well_formed_with_stored_control_characters(client):
    """Issue 19 item 10: intake refuses C0 controls; a row stored before that (or by another
    path) is rendered with U+FFFD, never making the whole document ill-formed."""
    refused = client.post(
        "/open311/v2/requests.xml",
        data={"description": "lampu\x0cmati", "api_key": "k1"},
    )
    assert refused.status_code == 400
    assert "U+000C" in ElementTree.fromstring(refused.content).findtext("error/description")
    rid = _create(client, "lampu jalan mati", address_string="Jalan Darmo")
    store = client.app.state.service.store
    with store.engine.begin() as conn:
        conn.execute(
            sa.text("update requests set address = :a, note = :n where id = :i"),
            {"a": "Jalan\x0bDarmo", "n": "catatan\x1b", "i": rid},
        )
    root = ElementTree.fromstring(client.get("/open311/v2/requests.xml?api_key=k1").content)
    assert root.find("request").findtext("address") == "Jalan\ufffdDarmo"
    assert root.find("request").findtext("status_notes") == "catatan\ufffd"


def test_open311_media_url_must_be_http_or_https(client):
    for bad in ("javascript:alert(1)", "data:text/html,<script>x</script>", "//no-scheme/a.jpg"):
        answer = client.post(
            "/open311/v2/requests.json",
            data={"description": "jalan rusak", "media_url": bad, "api_key": "k1"},
        )
        assert answer.status_code == 400, bad
        assert "http or https" in answer.json()[0]["description"]
    rid = _create(client, "jalan rusak", media_url="https://foto.example/jalan.jpg")
    [read] = client.get(f"/open311/v2/requests/{rid}.json").json()
    assert read["media_url"] == "https://foto.example/jalan.jpg"


def test_open311_retry_with_an_idempotency_key_returns_the_first_request(client):
    form = {"description": "lampu PJU padam gelap", "api_key": "k1"}
    retry = {"Idempotency-Key": "qlue-7781-attempt"}
    first = client.post("/open311/v2/requests.json", data=form, headers=retry)
    again = client.post("/open311/v2/requests.xml", data=form, headers=retry)
    assert first.status_code == again.status_code == 201
    rid = first.json()[0]["service_request_id"]
    assert ElementTree.fromstring(again.content).findtext("request/service_request_id") == rid
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert _stored_rows(client) == 1
    other = client.post(
        "/open311/v2/requests.json", data={**form, "description": "sampah"}, headers=retry
    )
    assert other.status_code == 400 and "Idempotency-Key" in other.json()[0]["description"]
    fresh = client.post("/open311/v2/requests.json", data=form)  # no key: a new request
    assert fresh.json()[0]["service_request_id"] != rid and _stored_rows(client) == 2


def test_open311_errors_are_the_services_api_errors(client):
    """Readiness and a backend with no replica answer as on /v1 (503, Retry-After), in the
    spec's form: Open311 raises the same ApiError the /v1 routes raise."""
    from aduan.service.batcher import BackendUnavailable

    state = client.app.state.service
    state.ready = False
    try:
        for path in ("/open311/v2/services.json", "/open311/v2/requests.xml"):
            answer = client.get(path)
            assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    finally:
        state.ready = True

    class Unavailable:
        async def classify(self, pipeline, items):
            raise BackendUnavailable("no classifier replica answered")

    local, state.backend = state.backend, Unavailable()
    try:
        answer = client.post(
            "/open311/v2/requests.json", data={"description": "lampu mati", "api_key": "k1"}
        )
    finally:
        state.backend = local
    assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
    assert "replica" in answer.json()[0]["description"]
