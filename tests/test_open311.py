"""Open311 GeoReport v2 as existing city clients call it: services and definitions, creating,
listing with the spec's filters and reading requests, JSON and XML, following the review."""

from xml.etree import ElementTree

import pytest

KEY = {"Authorization": "Bearer k1"}


@pytest.fixture
def client(make_client, database_url):
    return make_client(api_keys="siti:k1", operator_keys="siti:k1", database_url=database_url)


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
