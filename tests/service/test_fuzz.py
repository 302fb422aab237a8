"""Property-based tests generated from the service's own OpenAPI schema (schemathesis): valid
and invalid requests for every operation (the JSON API, Open311, the review queue, admin,
health) against the real server on loopback. No answer may be a 5xx, and every answer must
be documented: its status, content type and body schema.

The default run tries a few examples per operation; `make reliability` many more
(`ADUAN_FUZZ_EXAMPLES`)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.figures import record
from tests.service.test_server_process import AD, free_port, wait_http_ready

KEY = "rahasia-fuzz"
ADMIN = "adm-fuzz"
EXAMPLES = int(os.environ.get("ADUAN_FUZZ_EXAMPLES", "6"))
# ignored_auth: an operation whose schema declares a security requirement must refuse a
# request without a key (schemathesis sends one) with 401 or 403: the schema tells the truth
# about authentication in each configuration.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    ignored_auth,
]
COUNTS: dict[str, int] = {"requests": 0, "5xx": 0}


KEYED = {"ADUAN_API_KEYS": KEY, "ADUAN_OPERATOR_KEYS": KEY, "ADUAN_ADMIN_KEYS": ADMIN}


@contextlib.contextmanager
def _serve(tiny_model: Path, gazetteer_csv: Path, folder: Path, keys: dict[str, str]):
    """`aduan serve` with these keys (none: the open configuration), on SQLite, with a few
    stored requests."""
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "ADUAN_GAZETTEER": str(gazetteer_csv),
        "ADUAN_DATA_DIR": str(folder / "var"),
        "ADUAN_LOG_LEVEL": "WARNING",
        # schemathesis sends many invalid keys from one address: not a guesser to stop here
        "ADUAN_AUTH_FAILURES": "1000000",
        **keys,
    }
    proc = subprocess.Popen(
        [AD, "serve", "--model", str(tiny_model), "--port", str(port)],
        env=env,
        stdout=(folder / "server.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http_ready(base, proc)
        body = {"items": [{"text": "lampu PJU padam"}, {"text": "sampah menumpuk"}], "store": True}
        httpx.post(f"{base}/v1/classify", json=body, headers={"Authorization": f"Bearer {KEY}"})
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def served(tiny_model: Path, gazetteer_csv: Path, tmp_path_factory: pytest.TempPathFactory):
    """`aduan serve` with keys of every scope."""
    with _serve(tiny_model, gazetteer_csv, tmp_path_factory.mktemp("fuzz"), KEYED) as base:
        yield base
    record(
        "fuzz_openapi",
        "schemathesis, valid and invalid requests generated from /openapi.json for every "
        "operation (JSON API, Open311, review queue, admin, health): no 5xx, every status, "
        "content type and body as documented",
        {
            "operations": len(OPERATIONS),
            "examples per operation": EXAMPLES,
            "requests": COUNTS["requests"],
            "5xx": COUNTS["5xx"],
        },
        f"ADUAN_FUZZ_EXAMPLES={EXAMPLES} pytest tests/service/test_fuzz.py",
    )


def _openapi(**keys: str) -> dict:
    """The schema the service publishes in a configuration, built without loading a model
    (the routes and the keys define it; the tests check the served one is the same)."""
    from aduan.service.app import create_app
    from aduan.service.settings import Settings

    return create_app(Settings(**keys)).openapi()


OPENAPI = _openapi(api_keys=KEY, operator_keys=KEY, admin_keys=ADMIN)
schema = schemathesis.openapi.from_dict(OPENAPI)
OPEN_OPENAPI = _openapi()  # no key configured: /v1 open, review and admin routes off
open_schema = schemathesis.openapi.from_dict(OPEN_OPENAPI)
OPERATIONS: set[str] = set()


def test_fuzz_schema_is_the_one_served(served):
    import httpx

    assert httpx.get(f"{served}/openapi.json").json() == OPENAPI


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_fuzz_every_operation_answers_as_documented(case, served):
    OPERATIONS.add(case.operation.label)
    key = ADMIN if case.path.startswith("/v1/admin") else KEY
    headers = {"Authorization": f"Bearer {key}"}
    response = case.call(base_url=served, headers=headers, timeout=30)
    COUNTS["requests"] += 1
    COUNTS["5xx"] += response.status_code >= 500
    case.validate_response(response, checks=CHECKS)


@pytest.fixture(scope="module")
def served_open(tiny_model: Path, gazetteer_csv: Path, tmp_path_factory: pytest.TempPathFactory):
    """`aduan serve` with no key at all."""
    with _serve(tiny_model, gazetteer_csv, tmp_path_factory.mktemp("open"), {}) as base:
        yield base
    record(
        "fuzz_openapi_open",
        "schemathesis against the service with no key configured: every operation's "
        "security requirement (none on the open API, none on the routes that are off), "
        "status, content type and body as the served schema says",
        {
            "operations": len(OPEN_OPERATIONS),
            "examples per operation": EXAMPLES,
            "requests": OPEN_COUNTS["requests"],
            "conformance failures": OPEN_COUNTS["failures"],
        },
        f"ADUAN_FUZZ_EXAMPLES={EXAMPLES} pytest tests/service/test_fuzz.py -k open",
    )


def test_fuzz_open_schema_is_the_one_served(served_open):
    import httpx

    assert httpx.get(f"{served_open}/openapi.json").json() == OPEN_OPENAPI


OPEN_COUNTS: dict[str, int] = {"requests": 0, "failures": 0}
OPEN_OPERATIONS: set[str] = set()


@open_schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_fuzz_open_configuration_answers_as_documented(case, served_open):
    """No key anywhere: the schema must say so (no security requirement on the open API,
    the review and admin routes documented as off), and every answer conform to it."""
    OPEN_OPERATIONS.add(case.operation.label)
    response = case.call(base_url=served_open, timeout=30)
    OPEN_COUNTS["requests"] += 1
    try:
        case.validate_response(response, checks=CHECKS)
    except Exception:
        OPEN_COUNTS["failures"] += 1
        raise
