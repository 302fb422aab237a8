"""`aduan serve --backend ray --registry DIR`: a reload rolls the Ray Serve replicas over to the new
live version, and the answers name it (a real local Ray instance, one replica)."""

from __future__ import annotations

import pytest

from aduan.model.registry import Registry
from tests.conftest import add_version, wait_ready

pytest.importorskip("ray")

ADMIN = {"Authorization": "Bearer adm-1"}
BODY = {"items": [{"text": "mohon segera ditindaklanjuti warga resah", "address": None}]}


def test_ray_reload_rolls_the_replicas_to_the_new_version(
    ray_cluster, tiny_model, tiny_model_v2, gazetteer_csv, tmp_path
):
    from fastapi.testclient import TestClient

    from aduan.service.app import create_app
    from aduan.service.settings import Settings

    registry = Registry(tmp_path / "reg")
    add_version(registry, tiny_model, "v1", "2024-01-01T00:00:00+00:00")
    add_version(registry, tiny_model_v2, "v2", "2024-02-01T00:00:00+00:00")
    registry.promote("v1")
    settings = Settings(
        registry=registry.root,
        gazetteer=gazetteer_csv,
        data_dir=tmp_path / "var",
        admin_keys="adm-1",
        reload_interval_s=3600,  # only the admin route reloads here
        backend="ray",
        ray_replicas=1,
        ray_cpus_per_replica=0.5,
    )
    with TestClient(create_app(settings)) as client:
        wait_ready(client, timeout=120)
        before = client.post("/v1/classify", json=BODY).json()
        assert before["model_version"] == "v1"
        registry.promote("v2")
        reloaded = client.post("/v1/admin/reload", headers=ADMIN)
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["outcome"] == "reloaded"
        after = client.post("/v1/classify", json=BODY).json()
        assert after["model_version"] == "v2"  # answered by a replica that loaded v2
        assert after["results"][0] != before["results"][0]  # v2's scores differ from v1's
        replicas = client.app.state.service.backend.replicas()
        assert {r["model_version"] for r in replicas} == {"v2"}
        assert client.get("/v1/info").json()["model_version"] == "v2"
