"""Hot reload in the service: a new model is loaded beside the old, warmed and swapped in on
`POST /v1/admin/reload` or when the registry's live pointer moves; in-flight requests finish on
the model they started with; a broken candidate is refused while the old model keeps serving."""

import gc
import random
import threading
import time
import weakref

import pytest

from aduan.model.artifacts import write_manifest
from aduan.model.pipeline import Pipeline
from aduan.model.registry import Registry
from tests.conftest import add_version

ADMIN = {"Authorization": "Bearer adm-1"}
# Texts the synthetic models are unsure about, so the two versions' scores differ for each.
TEXTS = [
    "mohon segera ditindaklanjuti terima kasih",
    "warga resah setiap malam",
    "lampu sampah jalan",
    "parkir bansos kelurahan",
    "di dekat rumah saya sejak kemarin",
    "sampah di jalan gelap",
]


@pytest.fixture
def registry(tmp_path, tiny_model, tiny_model_v2) -> Registry:
    """v1 (live) and v2, two models whose scores differ for every text."""
    registry = Registry(tmp_path / "reg")
    add_version(registry, tiny_model, "v1", "2024-01-01T00:00:00+00:00")
    add_version(registry, tiny_model_v2, "v2", "2024-02-01T00:00:00+00:00")
    registry.promote("v1")
    return registry


@pytest.fixture
def expected(registry, gazetteer_csv) -> dict[str, dict[str, float]]:
    """version -> text -> the agency score that version gives (as the API rounds it)."""
    out = {}
    for version in ("v1", "v2"):
        pipeline = Pipeline.load(registry.path(version), gazetteer_csv)
        answers = pipeline.run([(t, None) for t in TEXTS])
        out[version] = {
            t: round(a.prediction.best("agency").score, 6)
            for t, a in zip(TEXTS, answers, strict=True)
        }
    assert all(out["v1"][t] != out["v2"][t] for t in TEXTS)
    return out


def _classify(client, *texts, **extra):
    body = {"items": [{"text": t} for t in texts], **extra}
    return client.post("/v1/classify", json=body)


def _version(client) -> str:
    return client.get("/v1/info").json()["model_version"]


def test_reload_admin_route_swaps_the_model_and_needs_an_admin_key(make_client, registry):
    client = make_client(registry=registry.root, admin_keys="adm-1", reload_interval_s=3600)
    assert _version(client) == "v1"
    assert client.post("/v1/admin/reload").status_code == 401
    wrong = client.post("/v1/admin/reload", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error_type"] == "unauthorized"
    unchanged = client.post("/v1/admin/reload", headers=ADMIN)
    assert unchanged.status_code == 200 and unchanged.json()["outcome"] == "unchanged"
    registry.promote("v2")
    reloaded = client.post("/v1/admin/reload", headers=ADMIN).json()
    assert reloaded == {
        "outcome": "reloaded",
        "model_version": "v2",
        "previous": "v1",
        "target": "v2",
        "error": None,
    }
    answer = _classify(client, "lampu PJU padam")
    assert answer.json()["model_version"] == "v2" and answer.headers["x-model-version"] == "v2"
    info = client.get("/v1/info")
    assert info.json()["model_source"]["registry"] == str(registry.root)
    assert info.headers["x-model-version"] == "v2"
    metrics = client.get("/metrics").text
    assert 'aduan_model_info{version="v2"} 1.0' in metrics
    assert 'aduan_model_info{version="v1"}' not in metrics
    assert 'aduan_model_reloads_total{outcome="reloaded"} 1.0' in metrics


def test_reload_admin_routes_are_off_without_admin_keys(make_client):
    client = make_client(api_keys="k1")
    response = client.post("/v1/admin/reload", headers={"Authorization": "Bearer k1"})
    assert response.status_code == 403 and "ADUAN_ADMIN_KEYS" in response.json()["error"]


def test_reload_of_a_model_directory_reads_it_again(make_client, tiny_model):
    client = make_client(admin_keys="adm-1")
    before = client.app.state.service.pipeline
    response = client.post("/v1/admin/reload", headers=ADMIN)
    assert response.status_code == 200 and response.json()["outcome"] == "reloaded"
    assert client.app.state.service.pipeline is not before
    assert _classify(client, "lampu PJU padam").status_code == 200


def test_reload_follows_the_live_pointer_within_seconds(make_client, registry):
    client = make_client(registry=registry.root, reload_interval_s=0.2)
    assert _version(client) == "v1"
    started = time.monotonic()
    registry.promote("v2")
    while _version(client) != "v2":
        assert time.monotonic() - started < 10, "the pointer change was not noticed in 10 s"
        time.sleep(0.05)
    assert time.monotonic() - started < 2  # polled every 0.2 s
    registry.rollback()
    while _version(client) != "v1":
        assert time.monotonic() - started < 10
        time.sleep(0.05)


def test_reload_refuses_a_broken_candidate_and_the_old_model_keeps_serving(
    make_client, registry, tiny_model
):
    add_version(registry, tiny_model, "broken", "2024-03-01T00:00:00+00:00")
    weights = registry.path("broken") / "tfidf.json"
    weights.chmod(0o644)
    weights.write_text("{not json")
    # the manifest re-signed over the damage: the loader itself must find it
    registry.path("broken").chmod(0o755)
    write_manifest(registry.path("broken"))
    client = make_client(registry=registry.root, admin_keys="adm-1", reload_interval_s=0.1)
    registry.promote("broken", verify=False)  # past the CLI's check, as a hand-edited pointer
    deadline = time.monotonic() + 10
    while 'aduan_model_reloads_total{outcome="refused"} 1.0' not in client.get("/metrics").text:
        assert time.monotonic() < deadline, "the broken version was never tried"
        time.sleep(0.05)
    time.sleep(0.5)  # five more polls: a refused version is not retried every time
    metrics = client.get("/metrics").text
    assert 'aduan_model_reloads_total{outcome="refused"} 1.0' in metrics
    assert _classify(client, "lampu PJU padam").json()["model_version"] == "v1"
    assert client.get("/health/ready").status_code == 200
    response = client.post("/v1/admin/reload", headers=ADMIN)
    assert response.status_code == 409 and response.json()["error_type"] == "reload_refused"
    assert (
        "corrupt weights" in response.json()["error"]
        and "v1 keeps serving" in (response.json()["error"])
    )
    registry.promote("v2")  # a good version after the broken one is picked up
    while _version(client) != "v2":
        assert time.monotonic() < deadline + 10
        time.sleep(0.05)


def test_reload_in_flight_request_finishes_on_the_model_it_started_with(make_client, registry):
    client = make_client(registry=registry.root, admin_keys="adm-1", reload_interval_s=3600)
    state = client.app.state.service
    old = state.pipeline
    entered, release = threading.Event(), threading.Event()
    original = old.run

    def slow_run(items, top_k=10):
        entered.set()
        assert release.wait(10)
        return original(items, top_k)

    old.run = slow_run
    answers = {}
    worker = threading.Thread(
        target=lambda: answers.update(first=_classify(client, "lampu PJU padam", store=True))
    )
    worker.start()
    assert entered.wait(5)  # the request is inside v1's inference now
    registry.promote("v2")
    assert client.post("/v1/admin/reload", headers=ADMIN).json()["outcome"] == "reloaded"
    queued = threading.Thread(
        target=lambda: answers.update(second=_classify(client, "lampu PJU padam"))
    )
    queued.start()
    release.set()
    worker.join(10)
    queued.join(10)
    first = answers["first"]
    assert first.status_code == 200 and first.json()["model_version"] == "v1"
    assert first.headers["x-model-version"] == "v1"
    stored = state.store.get_request(first.json()["results"][0]["request_id"])
    assert stored.model_version == "v1"
    assert answers["second"].json()["model_version"] == "v2"


def test_reload_frees_the_old_model(make_client, registry):
    client = make_client(registry=registry.root, admin_keys="adm-1", reload_interval_s=3600)
    assert _classify(client, "lampu PJU padam").status_code == 200
    old = weakref.ref(client.app.state.service.pipeline)
    registry.promote("v2")
    assert client.post("/v1/admin/reload", headers=ADMIN).json()["outcome"] == "reloaded"
    assert _classify(client, "lampu PJU padam").json()["model_version"] == "v2"
    gc.collect()
    assert old() is None


def test_reload_under_concurrent_clients_fails_no_request_and_mixes_no_versions(
    make_client, registry, expected
):
    """Clients keep classifying (3 texts a request, stored) while the model is swapped back
    and forth: every request succeeds, and every answer, its header, each of its scores and
    its stored rows come from one version."""
    client = make_client(
        registry=registry.root, admin_keys="adm-1", reload_interval_s=3600, api_keys=""
    )
    stop = threading.Event()
    responses, errors = [], []

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            texts = rng.sample(TEXTS, 3)
            try:
                responses.append((texts, _classify(client, *texts, store=True)))
            except Exception as exc:  # a transport-level failure counts too
                errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    reloads = 0
    for version in ("v2", "v1", "v2", "v1", "v2", "v1"):
        time.sleep(0.3)
        registry.promote(version, verify=False)
        outcome = client.post("/v1/admin/reload", headers=ADMIN).json()
        assert outcome["outcome"] == "reloaded" and outcome["model_version"] == version
        reloads += 1
    time.sleep(0.3)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert [r.status_code for _, r in responses].count(200) == len(responses)
    seen = set()
    store = client.app.state.service.store
    for texts, response in responses:
        body = response.json()
        version = body["model_version"]
        seen.add(version)
        assert response.headers["x-model-version"] == version
        assert [r["agency"]["score"] for r in body["results"]] == [
            expected[version][t] for t in texts
        ]
    for _, response in responses[:: max(1, len(responses) // 40)]:
        body = response.json()
        for result in body["results"]:
            assert store.get_request(result["request_id"]).model_version == body["model_version"]
    assert seen == {"v1", "v2"} and reloads == 6
    print(f"\n{len(responses)} requests, {reloads} reloads, 0 failed")  # -s shows the figures
