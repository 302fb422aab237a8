"""Property-based tests generated from the service's own OpenAPI schema (schemathesis): valid
and invalid requests for every operation (the JSON API, Open311, the review queue, admin,
health) against the real server on loopback. No answer may be a 5xx, and every answer must
be documented: its status, content type and body schema.

The default run tries a few examples per operation; `make reliability` many more
(`ADUAN_FUZZ_EXAMPLES`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.figures import record
from tests.test_server_process import AD, free_port, wait_http_ready

KEY = "rahasia-fuzz"
ADMIN = "adm-fuzz"
EXAMPLES = int(os.environ.get("ADUAN_FUZZ_EXAMPLES", "6"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
COUNTS: dict[str, int] = {"requests": 0, "5xx": 0}


@pytest.fixture(scope="module")
def served(tiny_model: Path, gazetteer_csv: Path, tmp_path_factory: pytest.TempPathFactory):
    """`aduan serve` with keys, on PostgreSQL-free SQLite, with a few stored requests."""
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    folder = tmp_path_factory.mktemp("fuzz")
    env = {
        **os.environ,
        "ADUAN_GAZETTEER": str(gazetteer_csv),
        "ADUAN_DATA_DIR": str(folder / "var"),
        "ADUAN_API_KEYS": KEY,
        "ADUAN_OPERATOR_KEYS": KEY,
        "ADUAN_ADMIN_KEYS": ADMIN,
        "ADUAN_LOG_LEVEL": "WARNING",
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
        f"ADUAN_FUZZ_EXAMPLES={EXAMPLES} pytest tests/test_fuzz.py",
    )


def _openapi() -> dict:
    """The schema the service publishes, built without loading a model (the routes alone
    define it; the test checks the served one is the same)."""
    from aduan.service.app import create_app
    from aduan.service.settings import Settings

    return create_app(Settings(api_keys=KEY, operator_keys=KEY, admin_keys=ADMIN)).openapi()


OPENAPI = _openapi()
schema = schemathesis.openapi.from_dict(OPENAPI)
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
