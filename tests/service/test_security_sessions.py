"""Workbench sessions and failed authentication: logout ends a session on the server, the
cookie is a random token that says nothing about the key, cookies are Secure and HSTS is sent
behind a TLS-terminating proxy (and only when it is trusted), the API docs keep no key in
localStorage, and wrong keys (Bearer or the login form) are throttled per address."""

from __future__ import annotations

import base64
import re
import time

import sqlalchemy as sa

from aduan.service.keys import digest
from tests.figures import record

KEY = "siti-sesi-rahasia"
TEXT = {"items": [{"text": "lampu PJU padam gelap"}]}


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:300]
    return found.group(1)


def _login(client, key: str = KEY, headers: dict[str, str] | None = None):
    form = client.get("/ui/login", headers=headers)
    return client.post(
        "/ui/login",
        data={"key": key, "csrf": _csrf(form.text)},
        headers=headers,
        follow_redirects=False,
    )


def test_security_logout_ends_the_session_on_the_server(make_client, database_url):
    client = make_client(operator_keys=f"siti:{KEY}", database_url=database_url)
    assert _login(client).status_code == 303
    cookie = client.cookies["aduan_session"]
    page = client.get("/ui/queue")
    assert page.status_code == 200
    logout = client.post("/ui/logout", data={"csrf": _csrf(page.text)}, follow_redirects=False)
    assert logout.status_code == 303
    # the old cookie, replayed (a copy kept by an attacker, a shared computer's browser)
    client.cookies.set("aduan_session", cookie)
    replayed = client.get("/ui/queue", follow_redirects=False)
    assert replayed.status_code == 303 and "/ui/login" in replayed.headers["location"]
    fetch = client.get("/ui/queue", headers={"X-Requested-With": "fetch"}, follow_redirects=False)
    assert fetch.status_code == 401
    record(
        f"security_logout_{database_url.split(':')[0].split('+')[0]}",
        "log in, log out, replay the old session cookie: the workbench sends it to the login "
        "page (the session is deleted on the server)",
        {"replayed cookie": "refused (303 to login, 401 to fetch)"},
        "pytest tests/service/test_security_sessions.py -k logout",
    )


def test_security_session_cookie_and_table_say_nothing_about_the_key(make_client, database_url):
    client = make_client(operator_keys=f"siti:{KEY}", database_url=database_url)
    _login(client)
    first = client.cookies["aduan_session"]
    client.cookies.clear()
    _login(client)
    second = client.cookies["aduan_session"]
    hashed = digest(KEY)
    assert first != second
    # no piece of the key's hash, in the cookie or in anything it decodes to
    decoded = base64.urlsafe_b64decode(first + "=" * (-len(first) % 4))
    for piece in (hashed[i : i + 8] for i in range(0, 64, 8)):
        assert piece not in first and piece.encode() not in decoded
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM operator_sessions")).fetchall()
    engine.dispose()
    assert len(rows) == 2
    stored = " ".join(str(value) for row in rows for value in row)
    assert first not in stored and second not in stored  # only their SHA-256
    assert not any(hashed[i : i + 8] in stored for i in range(0, 64, 8))
    assert client.get("/ui/queue").status_code == 200


def _cookie_is_secure(response) -> bool:
    return "secure" in response.headers["set-cookie"].lower()


def test_security_cookies_are_secure_and_hsts_is_sent_behind_tls(make_client):
    # ADUAN_PUBLIC_HTTPS: TLS ends at a proxy, the service sees plain HTTP
    behind_tls = make_client(operator_keys=f"siti:{KEY}", public_https=True)
    assert _cookie_is_secure(behind_tls.get("/ui/login"))
    for path in ("/ui/login", "/v1/info", "/docs"):
        answer = behind_tls.get(path)
        assert answer.headers["strict-transport-security"].startswith("max-age=")
    behind_tls.base_url = "https://testserver"  # so the client sends Secure cookies back
    login = _login(behind_tls)
    assert login.status_code == 303 and _cookie_is_secure(login)
    assert "aduan_session" in login.headers["set-cookie"]
    # a trusted proxy says the client came over https
    proxied = make_client(operator_keys=f"siti:{KEY}", trusted_proxies="testclient")
    tls = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
    form = proxied.get("/ui/login", headers=tls)
    assert _cookie_is_secure(form) and "strict-transport-security" in form.headers
    # the same headers from a peer nobody trusts change nothing
    direct = make_client(operator_keys=f"siti:{KEY}")
    form = direct.get("/ui/login", headers=tls)
    assert not _cookie_is_secure(form) and "strict-transport-security" not in form.headers
    login = _login(direct, headers=tls)
    assert login.status_code == 303 and not _cookie_is_secure(login)


def test_security_api_docs_keep_no_key_in_local_storage(make_client):
    script = make_client().get("/ui/static/docs.js").text
    assert "persistAuthorization: false" in script
    assert "persistAuthorization: true" not in script and "localStorage" not in script


def test_security_failed_authentication_is_throttled_per_address(make_client):
    client = make_client(
        api_keys="qlue:qlue-rahasia",
        operator_keys=f"siti:{KEY}",
        auth_failures=5,
        auth_failure_period_s=2.5,  # an address regains one attempt every 0.5 s
        trusted_proxies="testclient",
    )
    guesser = {"X-Forwarded-For": "198.51.100.7"}
    statuses = [
        client.post(
            "/v1/classify", json=TEXT, headers={**guesser, "Authorization": f"Bearer guess{i}"}
        ).status_code
        for i in range(8)
    ]
    assert statuses[:5] == [401] * 5 and set(statuses[5:]) == {429}
    # while throttled even the right key gets 429: the answer tells a guesser nothing
    right = {**guesser, "Authorization": "Bearer qlue-rahasia"}
    throttled = client.post("/v1/classify", json=TEXT, headers=right)
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
    assert "failed authentication" in throttled.json()["error"]
    # another address is served meanwhile
    other = {"X-Forwarded-For": "192.0.2.1", "Authorization": "Bearer qlue-rahasia"}
    assert client.post("/v1/classify", json=TEXT, headers=other).status_code == 200
    # the workbench login form counts too
    logins = [_login(client, f"tebakan-{i}", {"X-Forwarded-For": "198.51.100.8"}) for i in range(6)]
    assert [r.status_code for r in logins[:5]] == [303] * 5
    assert logins[5].status_code == 429 and "Terlalu banyak percobaan" in logins[5].text
    blocked = _login(client, KEY, {"X-Forwarded-For": "198.51.100.8"})
    assert blocked.status_code == 429 and "aduan_session" not in client.cookies
    time.sleep(0.6)  # one attempt regained
    assert client.post("/v1/classify", json=TEXT, headers=right).status_code == 200
    record(
        "security_auth_failures_throttled",
        "wrong Bearer keys and workbench logins from one address (ADUAN_AUTH_FAILURES=5): "
        "then 429 with Retry-After for every key, the right one included, while another "
        "address is served",
        {
            "wrong keys answered 401": statuses.count(401),
            "then 429": statuses.count(429),
            "failed logins before 429": 5,
            "other address": "served",
        },
        "pytest tests/service/test_security_sessions.py -k throttled",
    )
