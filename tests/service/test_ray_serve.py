"""`aduan serve --backend ray` (`aduan.service.ray_serve`): the same HTTP contract with the model
in Ray Serve replicas on a real local Ray instance (2 replicas, half a CPU each)."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import wait_ready

pytest.importorskip("ray")

TEXTS = [
    ("lampu PJU padam gelap sudah seminggu", "Jalan Raya Darmo Indah no 5"),
    ("sampah menumpuk di TPS bau busuk", "Jalan Keputran Kejambon no 12"),
    ("jalan rusak berlubang besar warga resah", None),
    ("jukir liar minta uang parkir di trotoar", "Jalan Tunjungan"),
    ("bansos tidak diterima warga miskin", "Jalan Kalibokor Timur no 3"),
    ("surat pengantar kelurahan lama sekali", "Jalan Keputran Pasar Kecil"),
    ("mohon segera ditindaklanjuti terima kasih", None),
]


@pytest.fixture(scope="module")
def ray_client(ray_cluster, tiny_model, gazetteer_csv, tmp_path_factory):
    from fastapi.testclient import TestClient

    from aduan.service.app import create_app
    from aduan.service.settings import Settings

    settings = Settings(
        model_dir=tiny_model,
        gazetteer=gazetteer_csv,
        data_dir=tmp_path_factory.mktemp("ray-var"),
        backend="ray",
        ray_replicas=2,
        ray_cpus_per_replica=0.5,
        batch_max_wait_ms=2,
    )
    client = TestClient(create_app(settings))
    client.__enter__()
    wait_ready(client, timeout=120)
    yield client
    client.__exit__(None, None, None)


def _body(items):
    return {"items": [{"text": t, "address": a} for t, a in items], "top_k": 3}


def _results(response):
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_ray_serve_answers_equal_the_single_process_service(ray_client, make_client):
    single = make_client()
    assert _results(ray_client.post("/v1/classify", json=_body(TEXTS))) == _results(
        single.post("/v1/classify", json=_body(TEXTS))
    )
    # one text per request, concurrently: merged by the replicas' batching, same answers
    with ThreadPoolExecutor(8) as pool:
        ours = list(pool.map(lambda i: ray_client.post("/v1/classify", json=_body([i])), TEXTS))
    theirs = [single.post("/v1/classify", json=_body([i])) for i in TEXTS]
    assert [_results(r) for r in ours] == [_results(r) for r in theirs]
    assert ray_client.get("/v1/labels").json() == single.get("/v1/labels").json()
    info = ray_client.get("/v1/info").json()
    assert (info["backend"], info["engine"]) == ("ray", "auto")
    assert info["limits"]["ray_replicas"] == 2
    assert info["model_version"] == single.get("/v1/info").json()["model_version"]
    assert ray_client.get("/health/live").status_code == 200


def test_ray_serve_runs_two_replicas_in_their_own_processes(ray_client):
    replicas = ray_client.app.state.service.backend.replicas()
    assert len(replicas) == 2
    pids = {r["pid"] for r in replicas}
    assert len(pids) == 2 and os.getpid() not in pids


def _replicas_running(remote, count: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            replicas = remote.replicas()
        except Exception:  # the router may still name the dead replica for a moment
            replicas = []
        if len(replicas) == count:
            return replicas
        time.sleep(0.5)
    raise AssertionError(f"{count} replicas never ran again")


def test_ray_serve_killing_a_replica_loses_no_retried_request(ray_client):
    remote = ray_client.app.state.service.backend
    victim = remote.replicas()[0]["pid"]
    expected = {
        text: result
        for (text, _), result in zip(
            TEXTS, _results(ray_client.post("/v1/classify", json=_body(TEXTS))), strict=True
        )
    }
    done = threading.Event()
    answered = []
    retried = []

    def client(n: int) -> dict:
        # 8 copies of a text per request: the replicas stay busy, so the kill finds calls
        # inside the victim
        item = TEXTS[n % len(TEXTS)]
        for _ in range(40):  # what an intake client does with a 503 or a 429
            response = ray_client.post("/v1/classify", json=_body([item] * 8))
            if response.status_code in (429, 503):
                assert response.headers["retry-after"] == "1"
                retried.append(n)
                time.sleep(0.25)
                continue
            result, *others = _results(response)
            assert others == [result] * 7
            answered.append(n)
            if len(answered) == 40:
                done.set()
            return result
        raise AssertionError(f"request {n} never answered in 40 tries")

    answered_at_kill = []

    def kill_mid_load() -> None:
        done.wait(60)
        answered_at_kill.append(len(answered))
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill_mid_load)
    killer.start()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(client, range(240)))
    killer.join()
    assert len(results) == 240
    assert answered_at_kill[0] < 200  # the replica died with most of the load still to come
    for n, result in enumerate(results):
        assert result == expected[TEXTS[n % len(TEXTS)][0]]
    # Ray Serve replaced the dead replica
    pids = {r["pid"] for r in _replicas_running(remote, 2, timeout=90)}
    assert victim not in pids


class _DyingHandle:
    """A deployment handle whose replica dies on the first `deaths` calls."""

    def __init__(self, deaths: int, answer: list) -> None:
        self.deaths, self.answer, self.calls = deaths, answer, 0

    def remote(self, items):
        from ray.exceptions import ActorDiedError

        self.calls += 1
        failing = self.calls <= self.deaths

        async def reply():
            if failing:
                raise ActorDiedError()
            return self.answer

        return reply()


def test_ray_serve_front_retries_a_dead_replica_then_answers_503(make_client):
    from aduan.service.ray_serve import RayServeBackend, RayServeOptions

    client = make_client()
    state = client.app.state.service
    [answer] = state.pipeline.run([("lampu PJU padam", None)])
    local = state.backend
    remote = RayServeBackend(RayServeOptions(retries=2))
    state.backend = remote
    remote.handle = _DyingHandle(deaths=2, answer=[answer])  # the third try answers
    response = client.post("/v1/classify", json=_body([("lampu PJU padam", None)]))
    assert response.status_code == 200
    assert (remote.handle.calls, remote.failed_calls) == (3, 2)
    remote.handle = _DyingHandle(deaths=5, answer=[answer])  # every try fails: 503, retry later
    response = client.post("/v1/classify", json=_body([("lampu PJU padam", None)]))
    assert response.status_code == 503
    assert response.json()["error_type"] == "not_ready"
    assert response.headers["retry-after"] == "1"
    assert remote.handle.calls == 3
    state.backend = local
