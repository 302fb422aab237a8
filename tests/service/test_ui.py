"""The workbench pages through TestClient: login by key, sessions, CSRF, the queue and its
actions, the model page, security headers, and the API docs without a CDN."""

import re

import pytest

KEY = "rahasia-siti"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
def client(make_client):
    return make_client(api_keys=f"siti:{KEY},k2", operator_keys=f"siti:{KEY},k2")


def _store(client, *texts):
    body = {"items": [{"text": t} for t in texts], "store": True}
    response = client.post("/v1/classify", json=body, headers=AUTH)
    return [r["request_id"] for r in response.json()["results"]]


def _csrf(html):
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def _login(client, key=KEY):
    form = client.get("/ui/login")
    return client.post(
        "/ui/login",
        data={"key": key, "csrf": _csrf(form.text), "next": "/ui/queue"},
        follow_redirects=False,
    )


def test_ui_pages_need_a_login(client):
    response = client.get("/ui/queue?route=auto", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/ui/login?next=%2Fui%2Fqueue%3Froute%3Dauto")
    assert client.get("/ui/model", follow_redirects=False).status_code == 303


def test_ui_login_sets_a_strict_httponly_session(client):
    wrong = _login(client, "nope")
    assert wrong.status_code == 303 and "failed=1" in wrong.headers["location"]
    response = _login(client)
    assert response.status_code == 303 and response.headers["location"] == "/ui/queue"
    cookie = response.headers["set-cookie"]
    assert "aduan_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    page = client.get("/ui/queue")
    assert page.status_code == 200 and "siti" in page.text


def test_ui_login_refuses_a_form_without_its_token(client):
    client.get("/ui/login")
    forged = client.post("/ui/login", data={"key": KEY, "csrf": "guess"})
    assert forged.status_code == 403
    assert "aduan_session" not in client.cookies


def test_ui_session_ends_when_its_key_is_removed(client):
    _login(client)
    assert client.get("/ui/queue").status_code == 200
    client.app.state.service.settings.api_keys = "k2"
    client.app.state.service.settings.operator_keys = "k2"
    assert client.get("/ui/queue", follow_redirects=False).status_code == 303


def test_ui_queue_shows_review_items_with_explanations(client):
    client.app.state.service.classifier.thresholds["agency"] = 1.01  # everything to review
    _store(client, "lampu PJU padam gelap sekali", "sampah menumpuk di TPS")
    _login(client)
    page = client.get("/ui/queue").text
    assert page.count('class="item') == 2
    assert "lampu PJU padam gelap sekali" in page and "low_confidence" in page
    assert re.search(r'<span class="term">(pju|padam|lampu)</span>', page)
    assert "Dinas Perhubungan" in page and "tidak diketahui" in page
    only = client.get("/ui/queue?category=SAMPAH").text
    assert only.count('class="item') == 1 and "sampah menumpuk" in only
    nothing = client.get("/ui/queue?route=auto").text
    assert 'class="item' not in nothing and "Tidak ada aduan" in nothing


def test_ui_confirm_and_correct_need_the_csrf_token(client):
    confirm_id, correct_id = _store(client, "lampu PJU padam", "jalan rusak berlubang besar")
    _login(client)
    token = _csrf(client.get("/ui/queue?route=").text)
    stale = client.post(f"/ui/requests/{confirm_id}", data={"action": "confirm", "csrf": "old"})
    assert stale.status_code == 403
    cross = client.post(
        f"/ui/requests/{confirm_id}",
        data={"action": "confirm", "csrf": token},
        headers={"Origin": "https://evil.example"},
    )
    assert cross.status_code == 403
    done = client.post(
        f"/ui/requests/{confirm_id}",
        data={"action": "confirm", "csrf": token, "next": "/ui/queue"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == "/ui/queue"
    fetched = client.post(
        f"/ui/requests/{correct_id}",
        data={
            "action": "save",
            "csrf": token,
            "agency": "Dinas Sumber Daya Air dan Bina Marga",
            "category": "DRAINASE",
            "status": "closed",
            "note": "Sudah diperbaiki",
        },
        headers={"X-Requested-With": "fetch"},
    ).json()
    assert fetched["request"]["corrected_category"] == "DRAINASE"
    assert fetched["request"]["status"] == "closed" and "text" not in fetched["request"]
    confirmed = client.get(f"/v1/requests/{confirm_id}", headers=AUTH).json()
    assert confirmed["status"] == "in_progress"
    assert confirmed["corrected_agency"] == confirmed["agency"]["label"]
    assert {e["actor"] for e in confirmed["history"]} == {"siti"}
    evil = client.post(
        f"/ui/requests/{correct_id}",
        data={"action": "save", "csrf": token, "agency": "Dinas Khayalan"},
    )
    assert evil.status_code == 422


def test_ui_model_page_shows_metrics_plots_and_a_drift_hook(client):
    _login(client)
    page = client.get("/ui/model").text
    version = client.app.state.service.classifier.version
    assert version in page and "Macro-F1" in page
    assert "/ui/model/plots/confusion_agency.png" in page
    assert 'id="drift"' in page and "drift*.png" in page
    image = client.get("/ui/model/plots/confusion_agency.png")
    assert image.status_code == 200 and image.content[:4] == b"\x89PNG"
    assert client.get("/ui/model/plots/..%2Fconfig.json").status_code == 404


def test_ui_security_headers(client):
    _login(client)
    page = client.get("/ui/queue")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    assert "<script>" not in page.text and " style=" not in page.text  # nothing inline
    api = client.get("/health/live")
    assert "default-src 'none'" in api.headers["content-security-policy"]


def test_ui_docs_are_served_without_a_cdn(client):
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "cdn" not in docs.text.lower() and "http" not in docs.text.replace("http-equiv", "")
    for src in re.findall(r'(?:src|href)="([^"]+)"', docs.text):
        asset = client.get(src)
        assert asset.status_code == 200 and len(asset.content) > 100, src
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert {"apiKey": []} in spec["paths"]["/v1/classify"]["post"]["security"]
    assert client.get("/redoc").status_code == 404
