"""Starting or joining a Ray cluster for the optional Ray backend (`aduan serve --backend ray`,
`aduan batch --backend ray`); Ray comes with the extra `aduan[ray]` and is imported only here
and by the modules that run on it. Also the one reading of the old spelling `--engine ray`."""

from __future__ import annotations

import logging
import os
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)

INSTALL_HINT = "the ray backend needs the extra: pip install 'aduan[ray]'"
# Where the model calls run (`--backend`); the engine (`--engine`) is what runs them.
LOCAL, RAY = "local", "ray"
BACKENDS = (LOCAL, RAY)
ENGINE_RAY_DEPRECATED = (
    "--engine ray (ADUAN_ENGINE=ray) is deprecated: use --backend ray (ADUAN_BACKEND=ray); "
    "--engine now names the model engine only (auto, onnx or torch)"
)


class EngineChoice(StrEnum):
    """What `--engine` accepts: the model engine, and `ray`, the old spelling of
    `--backend ray` (kept, with a deprecation warning: `resolve_backend`)."""

    AUTO = "auto"
    ONNX = "onnx"
    TORCH = "torch"
    RAY = RAY


class BackendChoice(StrEnum):
    """What `--backend` accepts."""

    LOCAL = LOCAL
    RAY = RAY


# A local instance keeps its shared-memory object store small: the streaming executor holds
# only a few blocks at a time, and the machine is shared with the service and training.
LOCAL_OBJECT_STORE_BYTES = 1 << 30


class RayMissing(ImportError):
    """Ray is not installed; the message says which extra brings it."""


def resolve_backend(engine: str, backend: str | None) -> tuple[str, str]:
    """(engine, backend) from the options as given. The old `engine=ray` meant the ray backend
    on the auto engine: it still does, with a deprecation warning."""
    if engine == RAY:
        log.warning(ENGINE_RAY_DEPRECATED)
        return "auto", RAY
    if backend not in (None, *BACKENDS):
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return engine, backend or LOCAL


def require_ray() -> Any:
    """The `ray` module, or `RayMissing` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise RayMissing(INSTALL_HINT) from exc
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> dict[str, float]:
    """Join the cluster at `address` (else `RAY_ADDRESS`), or start a local instance with
    `num_cpus` (default: every core); an already-initialised Ray (tests, notebooks) is kept.
    Returns the cluster's resources."""
    ray = require_ray()
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        options: dict[str, Any] = {
            "include_dashboard": False,
            "logging_level": logging.WARNING,
            "configure_logging": False,
        }
        if address:
            ray.init(address=address, **options)
            log.info("joined the Ray cluster at %s", address)
        else:
            ray.init(
                num_cpus=num_cpus or os.cpu_count() or 1,
                object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                **options,
            )
            log.info("started a local Ray instance")
    return dict(ray.cluster_resources())
