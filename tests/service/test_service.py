"""The classify service through FastAPI's TestClient: contract, errors, auth, metrics, logs."""

import json
import logging
import shutil

import pytest

from aduan.model.artifacts import ModelDirError, write_manifest


def _classify(client, *texts, headers=None, **extra):
    body = {"items": [{"text": t} if isinstance(t, str) else t for t in texts], **extra}
    return client.post("/v1/classify", json=body, headers=headers)


def test_service_classify_contract(make_client):
    client = make_client()
    response = _classify(
        client,
        {"text": "lampu PJU padam gelap", "id": "a-1"},
        {"text": "bansos belum cair sudah lama", "id": "a-2"},
        top_k=2,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"].startswith("baseline-")
    first, second = body["results"]
    assert (first["id"], second["id"]) == ("a-1", "a-2")
    assert first["category"]["label"] == "PJU"
    assert second["agency"]["label"] == "Dinas Sosial"
    for result in body["results"]:
        assert len(result["category_top_k"]) == 2 and len(result["agency_top_k"]) == 2
        assert result["agency_top_k"][0] == result["agency"]
        assert 0 < result["agency"]["score"] <= 1
        assert result["agency_top_k"][0]["score"] >= result["agency_top_k"][1]["score"]
        assert result["route"] in ("auto", "review")


def test_service_route_follows_the_stored_threshold(make_client):
    client = make_client()
    state = client.app.state.service
    result = _classify(client, "jalan rusak berlubang besar").json()["results"][0]
    expected = (
        "auto" if result["agency"]["score"] >= state.classifier.thresholds["agency"] else "review"
    )
    assert result["route"] == expected
    state.classifier.thresholds["agency"] = 1.01
    assert (
        _classify(client, "jalan rusak berlubang besar").json()["results"][0]["route"] == "review"
    )


def test_service_resolves_unit_and_names_the_office(make_client):
    client = make_client()
    result = _classify(
        client,
        {
            "text": "pelayanan kantor kelurahan lambat sekali",
            "address": "Jl. Keputran Pasar Kecil no 3",
        },
    ).json()["results"][0]
    assert result["agency"]["label"] == "Kelurahan"
    assert result["unit"] == {
        "kelurahan": "Keputran",
        "kecamatan": "Tegalsari",
        "office": "Kelurahan Keputran",
        "source": "gazetteer",
        "confidence": 1.0,
    }
    nowhere = _classify(client, "lampu PJU padam").json()["results"][0]
    assert nowhere["unit"] is None


def test_service_kelurahan_without_unit_goes_to_review_whatever_its_score(make_client):
    client = make_client()
    client.app.state.service.classifier.thresholds["agency"] = 0.0  # everything is confident
    placed, unplaced = _classify(
        client,
        {"text": "pelayanan kantor kelurahan lambat", "address": "Jl. Keputran Pasar Kecil"},
        "pelayanan kantor kelurahan lambat sekali",
    ).json()["results"]
    assert (placed["route"], placed["route_reason"]) == ("auto", "confident")
    assert unplaced["agency"]["label"] == "Kelurahan" and unplaced["unit"] is None
    assert (unplaced["route"], unplaced["route_reason"]) == ("review", "unit_unresolved")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"items": []},
        {"items": [{}]},
        {"items": [{"text": ""}]},
        {"items": [{"text": "   \n\t"}]},
        {"items": [{"text": 5}]},
        {"items": "lampu"},
        {"items": [{"text": "lampu padam", "colour": "red"}]},
        {"items": [{"text": "lampu padam"}], "top_k": 0},
        {"items": [{"text": "lampu padam"}], "top_k": 11},
        {"items": [{"text": "lampu padam"}], "extra": 1},
    ],
)
def test_service_invalid_bodies_are_422(make_client, body):
    response = make_client().post("/v1/classify", json=body)
    assert response.status_code == 422
    assert response.json()["error_type"] == "validation_error"
    assert response.json()["error"]


def test_service_malformed_json_is_422(make_client):
    response = make_client().post(
        "/v1/classify", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422 and response.json()["error_type"] == "validation_error"


def test_service_limits_are_413(make_client):
    client = make_client(max_batch=3, max_chars=50)
    too_many = _classify(client, *["lampu padam"] * 4)
    assert too_many.status_code == 413 and "max_batch 3" in too_many.json()["error"]
    too_long = _classify(client, "a" * 51)
    assert too_long.status_code == 413
    assert too_long.json() == {
        "error": "items.0.text has 51 characters; the limit is 50",
        "error_type": "payload_too_large",
    }


def test_service_full_queue_is_429(make_client):
    client = make_client(queue_size=2)
    response = _classify(client, "a b c", "d e f", "g h i")
    assert response.status_code == 429 and response.json()["error_type"] == "overloaded"
    assert int(response.headers["retry-after"]) >= 1
    assert _classify(client, "lampu padam").status_code == 200


def test_service_not_ready_is_503(make_client):
    client = make_client()
    client.app.state.service.ready = False
    assert client.get("/health/ready").status_code == 503
    response = _classify(client, "lampu padam")
    assert response.status_code == 503 and response.json()["error_type"] == "not_ready"
    assert client.get("/health/live").status_code == 200


def test_service_trace_ids_are_fresh_unless_a_plain_token_is_given(make_client):
    client = make_client()
    first, second = (_classify(client, "lampu padam") for _ in range(2))
    assert first.headers["x-trace-id"] != second.headers["x-trace-id"]
    assert first.json()["trace_id"] == first.headers["x-trace-id"]
    forged = _classify(client, "lampu padam", headers={"X-Trace-ID": 'x" injected'})
    assert forged.headers["x-trace-id"] != 'x" injected'


def test_service_unknown_route_is_json_404(make_client):
    response = make_client().get("/v1/nothing")
    assert response.status_code == 404 and response.json()["error_type"] == "not_found"


def test_service_api_keys(make_client):
    client = make_client(api_keys="k-one, k-two")
    assert _classify(client, "lampu padam").status_code == 401
    wrong = _classify(client, "lampu padam", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error_type"] == "unauthorized"
    assert client.get("/v1/info", headers={"Authorization": "Basic k-one"}).status_code == 401
    ok = _classify(client, "lampu padam", headers={"Authorization": "Bearer k-two"})
    assert ok.status_code == 200
    assert client.get("/v1/labels").status_code == 401
    assert client.get("/health/ready").status_code == 200
    assert client.get("/metrics").status_code == 200


def test_service_labels_and_info(make_client):
    client = make_client(max_batch=7)
    labels = client.get("/v1/labels").json()
    pju = next(c for c in labels["categories"] if c["code"] == "PJU")
    assert pju["name"] == "Penerangan jalan umum" and pju["description"]
    dishub = next(a for a in labels["agencies"] if a["name"] == "Dinas Perhubungan")
    assert dishub["code"] == "Dishub"
    info = client.get("/v1/info").json()
    assert info["model_type"] == "aduan-tfidf"
    assert "Kelurahan" in info["labels"]["agency"]
    assert info["limits"]["max_batch"] == 7
    assert 0 < info["thresholds"]["agency"] <= 1.01
    assert info["validation_metrics"]["agency"]["accuracy"] > 0.5


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample called `name` in a /metrics page, as (labels, value)."""
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def _sample(text: str, name: str, **labels: str) -> float | None:
    return next((v for found, v in _samples(text, name) if found == labels), None)


def test_service_metrics_count_requests_and_predictions(make_client):
    client = make_client()
    _classify(client, "lampu PJU padam gelap", "lampu jalan mati gelap")
    _classify(client, {"text": ""})
    text = client.get("/metrics").text
    http = {"method": "POST", "handler": "/v1/classify"}
    assert _sample(text, "aduan_http_requests_total", **http, status="200") == 1.0
    assert _sample(text, "aduan_http_requests_total", **http, status="422") == 1.0
    assert _sample(text, "aduan_http_request_duration_seconds_count", **http, status="200") == 1.0
    decisions = _samples(text, "aduan_route_decisions_total")
    assert {labels["route"] for labels, _ in decisions} <= {"auto", "review"}
    assert sum(value for _, value in decisions) == 2.0
    assert 'aduan_predictions_total{head="category",label="PJU"} 2.0' in text
    assert "aduan_inference_batch_size_bucket" in text
    assert "aduan_auto_route_share" in text
    assert "aduan_request_items_count 1.0" in text


def test_service_logs_labels_never_text(make_client, caplog):
    client = make_client()
    secret = "rahasia pribadi lampu PJU padam Budi Santoso"
    with caplog.at_level(logging.DEBUG):
        response = _classify(client, secret, headers={"X-Trace-ID": "trace-42"}, store=True)
    assert response.headers["x-trace-id"] == "trace-42"
    assert response.json()["trace_id"] == "trace-42"
    request_id = response.json()["results"][0]["request_id"]
    records = [json.loads(r.getMessage()) for r in caplog.records if r.name == "aduan.access"]
    entry = next(r for r in records if r["trace_id"] == "trace-42")
    assert entry["request_ids"] == [request_id] != ["trace-42"]
    assert entry["handler"] == "/v1/classify" and entry["status"] == 200
    assert entry["predictions"][0]["category"] == "PJU" and "duration_ms" in entry
    assert all("Budi" not in r.getMessage() for r in caplog.records)


def test_service_openapi_has_indonesian_examples(make_client):
    spec = make_client().get("/openapi.json").json()
    assert "/v1/classify" in spec["paths"]
    assert "Jukir liar" in json.dumps(spec)
    assert "413" in spec["paths"]["/v1/classify"]["post"]["responses"]


def test_service_refuses_directory_without_labels(tiny_model, gazetteer_csv, tmp_path):
    from fastapi.testclient import TestClient

    from aduan.service.app import create_app
    from aduan.service.settings import Settings

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    config = json.loads((broken / "config.json").read_text())
    del config["heads"]["agency"]["id2label"]
    (broken / "config.json").write_text(json.dumps(config))
    write_manifest(broken)  # signed or not, a directory without labels is refused
    app = create_app(Settings(model_dir=broken, gazetteer=gazetteer_csv))
    with pytest.raises(ModelDirError, match="id2label"), TestClient(app):
        pass


def test_service_refuses_corrupt_weights(tiny_model, gazetteer_csv, tmp_path):
    from fastapi.testclient import TestClient

    from aduan.service.app import create_app
    from aduan.service.settings import Settings

    broken = tmp_path / "corrupt"
    shutil.copytree(tiny_model, broken)
    (broken / "tfidf.safetensors").write_bytes(b"\x00garbage" * 10)
    write_manifest(broken)  # the damage re-signed: the loader itself must find it
    app = create_app(Settings(model_dir=broken, gazetteer=gazetteer_csv))
    with pytest.raises(ModelDirError, match="corrupt"), TestClient(app):
        pass
