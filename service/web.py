"""What the service's web pages share: templates and static files shipped in the package, the
operator's session cookie and CSRF tokens, security headers, and the API docs served without a
CDN (the service may run air-gapped).

Sessions are signed cookies (HMAC-SHA256 with `ADUAN_SESSION_SECRET`, or a random secret per
process): they carry the operator's name, a fingerprint of the key used to log in (the session
ends when that key is removed from `ADUAN_API_KEYS`), an expiry and the CSRF token every form
must send back.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape

from .keys import OPERATOR, ApiKey, KeyRing
from .settings import Settings

SESSION_COOKIE = "aduan_session"
LOGIN_COOKIE = "aduan_login"  # the CSRF token of the login form (double submit)
SESSION_SECONDS = 8 * 3600
UI_PREFIX = "/ui"
STATIC_PREFIX = "/ui/static"
SWAGGER_PREFIX = "/static/swagger"
# swagger-ui 5 (OpenAPI 3.1) as files inside a PyPI package: no CDN at run time.
SWAGGER_PACKAGE = ("fastapi_offline", "static")

_PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
# swagger-ui sets inline styles from its script; nothing else is relaxed.
_DOCS_POLICY = _PAGE_POLICY.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
_API_POLICY = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"

templates = Jinja2Templates(
    env=Environment(
        loader=PackageLoader("aduan.service", "templates"),
        autoescape=select_autoescape(["html"]),
    )
)


@dataclass(frozen=True)
class Session:
    operator: str
    key_fingerprint: str
    csrf: str
    expires: int


class Sessions:
    """Signs and checks session cookies and CSRF tokens."""

    def __init__(self, settings: Settings, keys: KeyRing) -> None:
        self.settings = settings
        self.keys = keys
        self.secret = (settings.session_secret or secrets.token_hex(32)).encode()

    def _sign(self, payload: bytes) -> str:
        return hmac.new(self.secret, payload, hashlib.sha256).hexdigest()

    def issue(self, key: ApiKey) -> str:
        """A cookie value for a valid operator key."""
        data = {
            "op": key.name,
            "kf": key.fingerprint,
            "csrf": secrets.token_urlsafe(24),
            "exp": int(time.time()) + SESSION_SECONDS,
        }
        payload = base64.urlsafe_b64encode(json.dumps(data).encode())
        return f"{payload.decode()}.{self._sign(payload)}"

    @staticmethod
    def issue_login_token() -> str:
        return secrets.token_urlsafe(24)

    def read(self, cookie: str | None) -> Session | None:
        """The session of a cookie that is signed, unexpired and whose key is still
        configured; None otherwise."""
        if not cookie or "." not in cookie:
            return None
        payload, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(self._sign(payload.encode()), signature):
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(payload.encode()))
            session = Session(str(data["op"]), str(data["kf"]), str(data["csrf"]), int(data["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires < time.time():
            return None
        # The key must still be configured (revoked: the session ends) with the operator scope.
        key = self.keys.by_fingerprint(session.key_fingerprint)
        if key is None or key.name != session.operator or not key.allows(OPERATOR):
            return None
        return session


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())


def same_origin(request: Request) -> bool:
    """A state-changing request must not come from another site's page (when the browser
    says where it comes from)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("origin")
    if origin is None:
        return True  # an old browser or a non-browser client; the CSRF token still applies
    return origin.split("://", 1)[-1] == request.headers.get("host", "")


def set_cookie(response: Response, request: Request, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=age,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def install_web(app: FastAPI, settings: Settings) -> None:
    """Static files, the CDN-free API docs, session signing and security headers."""
    app.state.sessions = Sessions(settings, app.state.keys)
    # follow_symlink: a strict editable install links the package files into its build tree.
    ui_files = StaticFiles(packages=[("aduan.service", "static")], follow_symlink=True)
    app.mount(STATIC_PREFIX, ui_files, name="ui-static")
    swagger_files = StaticFiles(packages=[SWAGGER_PACKAGE], follow_symlink=True)
    app.mount(SWAGGER_PREFIX, swagger_files, name="swagger")

    @app.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        return templates.TemplateResponse(
            request, "docs.html", {"openapi_url": app.openapi_url, "title": app.title}
        )

    @app.middleware("http")
    async def _headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        path = request.url.path
        is_page = path.startswith(UI_PREFIX) and not path.startswith(STATIC_PREFIX)
        if path == "/docs":
            policy = _DOCS_POLICY
        elif is_page or path.startswith(STATIC_PREFIX) or path.startswith(SWAGGER_PREFIX):
            policy = _PAGE_POLICY
        else:
            policy = _API_POLICY
        headers: dict[str, Any] = {
            "Content-Security-Policy": policy,
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            # same-origin, not no-referrer: with no-referrer browsers send `Origin: null`.
            "Referrer-Policy": "same-origin",
        }
        if is_page:
            headers["Cache-Control"] = "no-store"  # pages carry complaint texts
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response
