"""`aduan.service.backends`: the classify backend chosen once from `backend` (local or ray),
`engine` naming the model engine only, and the old `engine=ray` still meaning the ray
backend, with a deprecation warning."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError

from aduan.model.ray_runtime import resolve_backend
from aduan.service.backends import LocalBackend, make_backend
from aduan.service.settings import Settings

DEPRECATED = "--engine ray (ADUAN_ENGINE=ray) is deprecated: use --backend ray"


def test_backends_engine_ray_means_the_ray_backend_with_a_warning(caplog, monkeypatch):
    caplog.set_level(logging.WARNING)
    settings = Settings(engine="ray")
    assert (settings.engine, settings.backend) == ("auto", "ray")
    assert DEPRECATED in caplog.text
    monkeypatch.setenv("ADUAN_ENGINE", "ray")
    assert (Settings().engine, Settings().backend) == ("auto", "ray")
    monkeypatch.setenv("ADUAN_ENGINE", "onnx")
    monkeypatch.setenv("ADUAN_BACKEND", "ray")
    assert (Settings().engine, Settings().backend) == ("onnx", "ray")


def test_backends_engine_and_backend_take_only_their_own_values():
    assert (Settings().engine, Settings().backend) == ("auto", "local")
    with pytest.raises(ValidationError, match="engine"):
        Settings(engine="tensorrt")
    with pytest.raises(ValidationError, match="backend"):
        Settings(backend="onnx")
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("auto", "spark")
    assert resolve_backend("torch", None) == ("torch", "local")


def test_backends_chosen_once_from_the_setting():
    backend = make_backend(Settings(batching=False))
    assert isinstance(backend, LocalBackend) and backend.name == "local"
    assert backend.batcher.max_size == 1  # batching off: one request at a time
    pytest.importorskip("ray")
    from aduan.service.ray_serve import RayServeBackend

    ray = make_backend(Settings(backend="ray", engine="onnx", ray_replicas=3))
    assert isinstance(ray, RayServeBackend) and ray.name == "ray"
    assert (ray.options.replicas, ray.options.engine) == (3, "onnx")  # replicas use `engine`


def test_backends_service_answers_through_the_local_backend(make_client):
    client = make_client()
    state = client.app.state.service
    assert isinstance(state.backend, LocalBackend)
    info = client.get("/v1/info").json()
    assert (info["engine"], info["backend"]) == ("auto", "local")
    assert "ray_replicas" not in info["limits"]
    response = client.post("/v1/classify", json={"items": [{"text": "lampu PJU padam"}]})
    assert response.status_code == 200
