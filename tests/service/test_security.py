"""Security promises: hashed, scoped keys from a keys file read again on change (missing,
wrong, revoked, out-of-scope), per-key rate limits, CORS off unless configured, security
headers on every page, and the `aduan keys` commands."""

from __future__ import annotations

import os
import re
import time

import pytest
from typer.testing import CliRunner

from aduan.service.keys import KeyRing, KeysFileError, hash_key, parse_keys_file
from tests.figures import record

CLERK, SITI, ROOT = "clerk-secret-1", "siti-secret-2", "root-secret-3"
TEXT = {"items": [{"text": "lampu PJU padam gelap"}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def write_keys(path, *lines: str) -> None:
    """Replace the keys file atomically (as an editor or a config manager would), with a
    new modification time even within the same clock tick."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("# name scopes hash\n" + "\n".join(lines) + "\n")
    tmp.replace(path)
    stamp = time.time_ns() + 1_000_000
    os.utime(path, ns=(stamp, stamp))


@pytest.fixture
def keys_file(tmp_path):
    path = tmp_path / "keys.txt"
    write_keys(
        path,
        f"clerk classify {hash_key(CLERK)}",
        f"siti operator {hash_key(SITI)}",
        f"root admin {hash_key(ROOT)}",
    )
    return path


def test_security_missing_wrong_and_out_of_scope_keys(make_client, keys_file):
    client = make_client(keys_file=keys_file)
    missing = client.post("/v1/classify", json=TEXT)
    assert missing.status_code == 401 and missing.json()["error_type"] == "unauthorized"
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = client.post("/v1/classify", json=TEXT, headers=bearer("nope"))
    assert wrong.status_code == 401 and "invalid or revoked" in wrong.json()["error"]
    # the hash itself is not a key
    hashed = client.post("/v1/classify", json=TEXT, headers=bearer(hash_key(CLERK)))
    assert hashed.status_code == 401
    assert client.post("/v1/classify", json=TEXT, headers=bearer(CLERK)).status_code == 200
    # classify may not read the queue, operator may not classify, neither may reload
    scope = client.get("/v1/requests", headers=bearer(CLERK))
    assert scope.status_code == 403 and "lacks the operator scope" in scope.json()["error"]
    assert client.post("/v1/classify", json=TEXT, headers=bearer(SITI)).status_code == 403
    assert client.get("/v1/requests", headers=bearer(SITI)).status_code == 200
    assert client.post("/v1/admin/reload", headers=bearer(SITI)).status_code == 403
    assert client.post("/v1/admin/reload", headers=bearer(CLERK)).status_code == 403
    assert client.post("/v1/admin/reload", headers=bearer(ROOT)).status_code == 200
    assert client.post("/v1/classify", json=TEXT, headers=bearer(ROOT)).status_code == 403
    # labels and info: any classify or operator key
    assert client.get("/v1/info", headers=bearer(SITI)).status_code == 200
    assert client.get("/v1/info", headers=bearer(CLERK)).status_code == 200
    assert client.get("/v1/info", headers=bearer(ROOT)).status_code == 403


def test_security_keys_file_changes_apply_without_restart(make_client, keys_file):
    client = make_client(keys_file=keys_file)
    late = "late-secret-4"
    assert client.post("/v1/classify", json=TEXT, headers=bearer(late)).status_code == 401
    write_keys(keys_file, f"clerk classify {hash_key(CLERK)}", f"late classify {hash_key(late)}")
    assert client.post("/v1/classify", json=TEXT, headers=bearer(late)).status_code == 200
    # revoke clerk: the next request is refused, no restart
    write_keys(keys_file, f"late classify {hash_key(late)}")
    revoked = client.post("/v1/classify", json=TEXT, headers=bearer(CLERK))
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]


def test_security_a_broken_keys_file_fails_closed_and_loudly(make_client, keys_file, caplog):
    """A syntax error in the keys file: none of its keys is accepted (the previous set would
    keep a key revoked in the same edit alive), the API stays protected, readiness and the
    log say so; fixing the file restores the keys."""
    client = make_client(keys_file=keys_file)
    assert client.post("/v1/classify", json=TEXT, headers=bearer(CLERK)).status_code == 200
    # revoke siti and break the syntax in the same edit
    write_keys(keys_file, f"clerk classify {hash_key(CLERK)}", "late classify not-a-hash")
    with caplog.at_level("ERROR", logger="aduan.service.keys"):
        refused = {
            "classify": client.post("/v1/classify", json=TEXT, headers=bearer(CLERK)),
            "revoked": client.get("/v1/requests", headers=bearer(SITI)),
            "anonymous": client.post("/v1/classify", json=TEXT),
            "admin": client.post("/v1/admin/reload", headers=bearer(ROOT)),
        }
    assert {name: r.status_code for name, r in refused.items()} == dict.fromkeys(refused, 401)
    assert any("NONE of its keys is accepted" in r.message for r in caplog.records)
    ready = client.get("/health/ready").json()
    assert ready["status"] == "degraded" and ready["keys_file"] == "unusable"
    write_keys(keys_file, f"clerk classify {hash_key(CLERK)}")
    assert client.post("/v1/classify", json=TEXT, headers=bearer(CLERK)).status_code == 200
    assert "keys_file" not in client.get("/health/ready").json()
    # a keys file that disappears fails closed too (the API does not turn open)
    keys_file.unlink()
    assert client.post("/v1/classify", json=TEXT).status_code == 401
    assert client.post("/v1/classify", json=TEXT, headers=bearer(CLERK)).status_code == 401
    record(
        "security_keys_file_fails_closed",
        "the keys file gets a syntax error in the edit that revokes a key, then disappears: "
        "no key of it is accepted (revoked or not), nothing turns open, readiness and an "
        "ERROR log say so",
        {
            "requests refused (401)": len(refused) + 2,
            "accepted": 0,
            "error logged": "yes",
        },
        "pytest tests/service/test_security.py -k fails_closed",
    )


def test_security_a_broken_keys_file_does_not_count_as_failed_guesses(make_client, keys_file):
    """While the keys file cannot be used every key fails; those failures are not counted
    against the callers, so once the file is mended no address is locked out."""
    client = make_client(keys_file=keys_file, auth_failures=3)
    write_keys(keys_file, f"clerk classify {hash_key(CLERK)}", "late classify not-a-hash")
    statuses = [
        client.post("/v1/classify", json=TEXT, headers=bearer(CLERK)).status_code for _ in range(6)
    ]
    assert statuses == [401] * 6
    write_keys(keys_file, f"clerk classify {hash_key(CLERK)}")
    assert client.post("/v1/classify", json=TEXT, headers=bearer(CLERK)).status_code == 200


def test_security_revoking_an_operator_key_ends_its_workbench_session(make_client, keys_file):
    client = make_client(keys_file=keys_file)
    form = client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    client.post("/ui/login", data={"key": SITI, "csrf": csrf}, follow_redirects=False)
    assert client.get("/ui/queue", follow_redirects=False).status_code == 200
    write_keys(keys_file, f"clerk classify {hash_key(CLERK)}")
    assert client.get("/ui/queue", follow_redirects=False).status_code == 303


def test_security_classify_key_cannot_log_in_to_the_workbench(make_client, keys_file):
    client = make_client(keys_file=keys_file)
    form = client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    login = client.post("/ui/login", data={"key": CLERK, "csrf": csrf}, follow_redirects=False)
    assert "failed=1" in login.headers["location"]


def test_security_env_keys_may_be_hashes_and_plain_keys_keep_working(make_client):
    client = make_client(
        api_keys=f"siti:{hash_key(SITI)},plain-key",
        operator_keys="plain-key",
        admin_keys=f"root:{hash_key(ROOT)}",
    )
    assert client.post("/v1/classify", json=TEXT, headers=bearer(SITI)).status_code == 200
    assert client.post("/v1/classify", json=TEXT, headers=bearer("plain-key")).status_code == 200
    # a key in ADUAN_API_KEYS and ADUAN_OPERATOR_KEYS holds both scopes
    assert client.get("/v1/requests", headers=bearer("plain-key")).status_code == 200
    assert client.post("/v1/admin/reload", headers=bearer(ROOT)).status_code == 200
    assert client.post("/v1/admin/reload", headers=bearer(SITI)).status_code == 403


def test_security_api_keys_hold_the_classify_scope_only(make_client):
    """An intake partner's key from ADUAN_API_KEYS classifies; it reads no stored complaint,
    corrects nothing and cannot open the workbench."""
    client = make_client(api_keys="qlue:qlue-secret", operator_keys="siti:siti-secret")
    partner = bearer("qlue-secret")
    stored = client.post("/v1/classify", json={**TEXT, "store": True}, headers=partner)
    assert stored.status_code == 200
    rid = stored.json()["results"][0]["request_id"]
    refused = {
        "queue": client.get("/v1/requests", headers=partner),
        "one": client.get(f"/v1/requests/{rid}", headers=partner),
        "feedback": client.post(
            "/v1/feedback",
            json={"request_id": rid, "agency": "Dinas Perhubungan", "category": "PJU"},
            headers=partner,
        ),
    }
    assert {k: r.status_code for k, r in refused.items()} == dict.fromkeys(refused, 403)
    form = client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    login = client.post(
        "/ui/login", data={"key": "qlue-secret", "csrf": csrf}, follow_redirects=False
    )
    assert "failed=1" in login.headers["location"]
    described = client.get(f"/open311/v2/requests/{rid}.json?api_key=qlue-secret").json()[0]
    assert described["description"] is None
    assert client.get("/v1/requests", headers=bearer("siti-secret")).status_code == 200
    record(
        "security_api_keys_least_scope",
        "a key from ADUAN_API_KEYS (an intake partner's) classifies and stores, and is "
        "refused the review queue, a stored request, feedback, the workbench and Open311 "
        "descriptions",
        {"refused": len(refused) + 2, "allowed": 1},
        "pytest tests/service/test_security.py -k classify_scope_only",
    )


def test_security_open311_create_needs_the_classify_scope(make_client, keys_file):
    client = make_client(keys_file=keys_file)
    form = {"description": "lampu PJU padam gelap", "service_code": "PJU"}
    assert client.post("/open311/v2/requests.json", data=form).status_code == 403
    out = client.post("/open311/v2/requests.json", data={**form, "api_key": SITI})
    assert out.status_code == 403 and "classify scope" in out.json()[0]["description"]
    created = client.post("/open311/v2/requests.json", data={**form, "api_key": CLERK})
    assert created.status_code == 201
    rid = created.json()[0]["service_request_id"]
    # descriptions (personal data) only to operators
    as_clerk = client.get(f"/open311/v2/requests/{rid}.json?api_key={CLERK}").json()[0]
    as_siti = client.get(f"/open311/v2/requests/{rid}.json?api_key={SITI}").json()[0]
    assert as_clerk["description"] is None and as_siti["description"] == form["description"]


def test_security_keys_file_is_checked_at_start(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text(f"siti operator {SITI}\n")
    settings = type("S", (), {"api_keys": "", "admin_keys": "", "keys_file": path})()
    with pytest.raises(KeysFileError, match=r"keys.txt: line 1: the key must be given as its hash"):
        KeyRing(settings)
    with pytest.raises(KeysFileError, match="line 2: scopes must be among"):
        parse_keys_file(f"a classify {hash_key('x')}\nb everything {hash_key('y')}\n", path)


def test_security_rate_limit_answers_429_to_the_flooding_key_only(make_client, keys_file):
    client = make_client(keys_file=keys_file, rate_limit=2, rate_burst=3)
    answers = [
        client.post("/v1/classify", json=TEXT, headers=bearer(CLERK)).status_code for _ in range(8)
    ]
    assert answers[:3] == [200, 200, 200] and 429 in answers[3:]
    flooded = client.post("/v1/classify", json=TEXT, headers=bearer(CLERK))
    assert flooded.status_code == 429 and flooded.json()["error_type"] == "rate_limited"
    assert int(flooded.headers["retry-after"]) >= 1
    # another key is served meanwhile
    assert client.get("/v1/requests", headers=bearer(SITI)).status_code == 200
    time.sleep(0.6)  # 2 requests/s: a token comes back
    assert client.post("/v1/classify", json=TEXT, headers=bearer(CLERK)).status_code == 200


def test_security_rate_limit_per_key_override_from_the_keys_file(make_client, keys_file):
    write_keys(
        keys_file, f"clerk classify {hash_key(CLERK)} rate=1", f"siti classify {hash_key(SITI)}"
    )
    client = make_client(keys_file=keys_file, rate_limit=100)
    statuses = [
        client.post("/v1/classify", json=TEXT, headers=bearer(CLERK)).status_code for _ in range(4)
    ]
    assert statuses.count(429) >= 1
    assert all(
        client.post("/v1/classify", json=TEXT, headers=bearer(SITI)).status_code == 200
        for _ in range(4)
    )


def test_security_cors_is_off_by_default(make_client):
    client = make_client()
    preflight = client.options(
        "/v1/classify",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    plain = client.post("/v1/classify", json=TEXT, headers={"Origin": "https://evil.example"})
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers


def test_security_cors_allows_only_configured_origins(make_client):
    client = make_client(cors_origins="https://lapor.example, https://qlue.example")
    asks = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    allowed = client.options("/v1/classify", headers={"Origin": "https://qlue.example", **asks})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://qlue.example"
    assert "access-control-allow-credentials" not in allowed.headers
    other = client.options("/v1/classify", headers={"Origin": "https://evil.example", **asks})
    assert "access-control-allow-origin" not in other.headers
    plain = client.post("/v1/classify", json=TEXT, headers={"Origin": "https://lapor.example"})
    assert plain.headers["access-control-allow-origin"] == "https://lapor.example"
    assert "x-model-version" in plain.headers["access-control-expose-headers"].lower()


@pytest.mark.parametrize(
    "path", ["/docs", "/ui/login", "/ui/static/workbench.css", "/openapi.json", "/v1/info"]
)
def test_security_pages_and_answers_send_security_headers(make_client, path):
    response = make_client(api_keys="k").get(path, headers=bearer("k"))
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"
    if path == "/docs":
        policy = response.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy.split("style-src")[0]


def test_security_keys_commands_make_and_hash_keys():
    from aduan.cli import app

    made = CliRunner().invoke(app, ["keys", "new", "--name", "siti", "--scopes", "operator"])
    assert made.exit_code == 0, made.output
    line = made.stdout.strip().splitlines()[-1]
    key = re.search(r"shown once\): (\S+)", made.stderr).group(1)
    [parsed] = parse_keys_file(line, "stdout")
    assert parsed.name == "siti" and parsed.scopes == {"operator"}
    assert key not in made.stdout
    hashed = CliRunner().invoke(app, ["keys", "hash"], input=key + "\n")
    assert hashed.exit_code == 0 and hashed.stdout.strip() == line.split()[-1]
    bad = CliRunner().invoke(app, ["keys", "new", "--name", "x", "--scopes", "root"])
    assert bad.exit_code == 2


def test_security_no_complaint_text_or_address_in_any_log_line(tiny_model, gazetteer_csv, tmp_path):
    """The real server at DEBUG level (every logger): classify with store, feedback, the review
    API, the workbench, Open311 in both encodings, and refused bodies. None of the complaint
    texts, addresses or notes appears anywhere in its output."""
    import subprocess

    import httpx

    from tests.service.test_server_process import AD, free_port, wait_http_ready

    secrets_ = {
        "text": "Budi Santoso di rumah nomor 17 lampu PJU padam",
        "address": "Jl. Rahasia Kenanga 99",
        "text2": "Siti Aminah mengadukan sampah TPS menumpuk",
        "open311": "Pak Harjo melapor jalan berlubang besar",
        "address311": "Gang Melati Tersembunyi 3",
        "json311": "Ibu Ratna melapor bansos belum cair",
        "note": "hubungi Bu Ani 08123456789",
        "ui_note": "catatan Pak Joko rahasia",
        "refused": "Teks Ditolak Rahasia Sekali",
    }
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "ADUAN_GAZETTEER": str(gazetteer_csv),
        "ADUAN_DATA_DIR": str(tmp_path / "var"),
        "ADUAN_API_KEYS": "siti:rahasia-log",
        "ADUAN_OPERATOR_KEYS": "siti:rahasia-log",
        "ADUAN_LOG_LEVEL": "DEBUG",
        "ADUAN_LOG_FORMAT": "json",
    }
    log_file = tmp_path / "server.log"
    proc = subprocess.Popen(
        [AD, "serve", "--model", str(tiny_model), "--port", str(port)],
        env={**os.environ, **env},
        stdout=log_file.open("wb"),
        stderr=subprocess.STDOUT,
    )
    key = {"Authorization": "Bearer rahasia-log"}
    try:
        wait_http_ready(base, proc)
        with httpx.Client(base_url=base, headers=key, timeout=20) as c:
            body = {
                "items": [
                    {"text": secrets_["text"], "address": secrets_["address"]},
                    {"text": secrets_["text2"]},
                ],
                "store": True,
            }
            stored = c.post("/v1/classify", json=body).json()["results"]
            rid = stored[0]["request_id"]
            feedback = {
                "request_id": rid,
                "agency": stored[0]["agency"]["label"],
                "category": stored[0]["category"]["label"],
                "operator": "siti",
            }
            assert c.post("/v1/feedback", json=feedback).status_code in (200, 201)
            assert c.get("/v1/requests").status_code == 200
            assert (
                c.patch(f"/v1/requests/{rid}", json={"note": secrets_["note"]}).status_code == 200
            )
            assert c.get(f"/v1/requests/{rid}").status_code == 200
            assert c.get(f"/v1/requests/{rid}/explanation").status_code == 200
            created = c.post(
                "/open311/v2/requests.xml",
                data={
                    "description": secrets_["open311"],
                    "address_string": secrets_["address311"],
                    "api_key": "rahasia-log",
                },
            )
            assert created.status_code == 201
            assert (
                c.post(
                    "/open311/v2/requests.json",
                    json={"description": secrets_["json311"], "api_key": "rahasia-log"},
                ).status_code
                == 201
            )
            assert c.get(f"/open311/v2/requests/{rid}.json?api_key=rahasia-log").status_code == 200
            assert c.get("/open311/v2/requests.xml").status_code == 200
            # refused bodies carrying text
            extra = {"items": [{"text": secrets_["refused"], "x": 1}]}
            assert c.post("/v1/classify", json=extra).status_code == 422
            dup = '{"items": [{"text": "' + secrets_["refused"] + '"}], "items": []}'
            headers = {"Content-Type": "application/json"}
            assert c.post("/v1/classify", content=dup, headers=headers).status_code == 422
        # the workbench, as a browser: login, queue, correct with a note
        with httpx.Client(base_url=base, timeout=20) as browser:
            form = browser.get("/ui/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
            browser.post("/ui/login", data={"key": "rahasia-log", "csrf": csrf})
            page = browser.get("/ui/queue?route=&status=")
            assert page.status_code == 200 and secrets_["text2"][:10] in page.text
            token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
            act = browser.post(
                f"/ui/requests/{rid}",
                data={"action": "save", "csrf": token, "note": secrets_["ui_note"]},
                headers={"Origin": base},
            )
            assert act.status_code in (200, 303)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    output = log_file.read_text(errors="replace")
    assert '"level": "DEBUG"' in output or '"level": "INFO"' in output
    assert '"handler": "/v1/classify"' in output
    assert '"handler": "/ui/requests/{request_id}"' in output
    leaked = {name: value for name, value in secrets_.items() if value in output}
    # parts of texts too (a tokeniser or a truncated message could leak a piece)
    words = {w for v in secrets_.values() for w in v.split() if len(w) >= 5 and w[0].isupper()}
    leaked_words = sorted(w for w in words if w in output)
    assert leaked == {} and leaked_words == []
    record(
        "security_logs_without_text",
        "the real server logging at DEBUG: classify+store, feedback, review API, workbench, "
        "Open311 JSON/XML and refused bodies; its whole output searched for the texts, "
        "addresses and notes sent",
        {
            "log lines": output.count("\n"),
            "strings searched": len(secrets_) + len(words),
            "found": len(leaked) + len(leaked_words),
        },
        "pytest tests/service/test_security.py -k log",
    )


def test_security_an_empty_keys_file_setting_means_none(monkeypatch):
    from aduan.service.settings import Settings

    monkeypatch.setenv("ADUAN_KEYS_FILE", "")
    assert Settings().keys_file is None


def test_security_explanations_run_in_the_inference_queue_and_are_throttled(
    make_client, monkeypatch
):
    """An explanation is up to 49 predictions of a text of up to 10,000 characters: it runs
    in the inference thread, queued with classify (never beside it on other threads), and
    each operator may ask for ADUAN_EXPLAIN_RATE a second, in the workbench and the API."""
    import threading

    from aduan.service import intake

    threads: list[str] = []
    real = intake.explain

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(intake, "explain", spy)
    client = make_client(api_keys=CLERK, operator_keys=f"siti:{SITI}", explain_rate=0.2)
    text = " ".join(["lampu PJU padam gelap di jalan"] * 300)  # ~9,000 characters
    stored = client.post(
        "/v1/classify", json={"items": [{"text": text}], "store": True}, headers=bearer(CLERK)
    )
    rid = stored.json()["results"][0]["request_id"]
    form = client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    client.post("/ui/login", data={"key": SITI, "csrf": csrf})
    fetch = {"X-Requested-With": "fetch"}
    url = f"/ui/requests/{rid}/explanation"
    first = client.get(url, headers=fetch)
    assert first.status_code == 200 and first.json()["method"] == "leave_one_word_out"
    again = client.get(url, headers=fetch)
    assert again.status_code == 429 and again.json()["error_type"] == "rate_limited"
    assert int(again.headers["retry-after"]) >= 1
    api = client.get(
        f"/v1/requests/{rid}/explanation?method=leave_one_word_out", headers=bearer(SITI)
    )
    assert api.status_code == 429  # the same operator, the same budget
    assert threads and all(name.startswith("inference") for name in threads), threads
    record(
        "security_explanations_queued_and_throttled",
        "leave-one-word-out explanations of a 9,000-character text: computed in the "
        "inference thread (queued with classify, shed like it); a second one within the "
        "operator's budget (ADUAN_EXPLAIN_RATE) gets 429, in the workbench and the API",
        {
            "explanations computed": len(threads),
            "outside the inference thread": sum(not n.startswith("inference") for n in threads),
            "throttled (429)": 2,
        },
        "pytest tests/service/test_security.py -k explanations_run",
    )


def _secured(schema: dict) -> dict[str, list]:
    return {
        f"{method.upper()} {path}": operation["security"]
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if "security" in operation
    }


def test_security_openapi_states_the_authentication_of_the_running_configuration(
    make_client, keys_file
):
    """No key: nothing is declared secured (the API is open, review and admin are off and
    answer 403 as documented). A classify key only: classify, labels, info and Open311
    creation. An operator key added to the keys file while serving: the review routes too."""
    open_api = make_client().get("/openapi.json").json()
    assert _secured(open_api) == {} and "securitySchemes" not in open_api["components"]
    off = make_client().post("/v1/admin/reload")
    assert off.status_code == 403
    assert "403" in open_api["paths"]["/v1/admin/reload"]["post"]["responses"]

    write_keys(keys_file, f"clerk classify {hash_key(CLERK)}")
    client = make_client(keys_file=keys_file)
    secured = _secured(client.get("/openapi.json").json())
    assert set(secured) == {
        "POST /v1/classify",
        "GET /v1/labels",
        "GET /v1/info",
        "POST /open311/v2/requests.{fmt}",
    }
    write_keys(keys_file, f"clerk classify {hash_key(CLERK)}", f"siti operator {hash_key(SITI)}")
    secured = _secured(client.get("/openapi.json").json())
    assert secured["GET /v1/requests"] == [{"apiKey": []}]
    assert secured["GET /open311/v2/requests.{fmt}"] == [{}, {"apiKey": []}]  # optional
    assert "POST /v1/admin/reload" not in secured  # still no admin key: off
