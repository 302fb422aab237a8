"""What the service's web pages share: templates and static files shipped in the package, the
operator's session and CSRF tokens, security headers, and the API docs served without a CDN
(the service may run air-gapped).

Sessions live in the database (`operator_sessions`, migration 0004), so every replica knows
them and logging out ends them everywhere. The cookie is a random token and nothing else; the
table keeps its SHA-256, the operator's name, the CSRF token every form must send back, an
expiry, and an HMAC of the operator key's hash keyed with the token, so the session ends when
that key is revoked while neither a leaked cookie nor a leaked table says anything about the
key. Cookies are `Secure` when the request came over HTTPS (as a trusted proxy says, see
`ADUAN_TRUSTED_PROXIES`) or `ADUAN_PUBLIC_HTTPS` is set; so is HSTS.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape

from .keys import OPERATOR, ApiKey, KeyRing
from .settings import Settings
from .storage import OperatorSession, Store, utcnow

SESSION_COOKIE = "aduan_session"
LOGIN_COOKIE = "aduan_login"  # the CSRF token of the login form (double submit)
SESSION_SECONDS = 8 * 3600
HSTS = "max-age=31536000"
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
    csrf: str


def _session_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _key_check(token: str, key: ApiKey) -> str:
    return hmac.new(token.encode(), key.digest.encode(), hashlib.sha256).hexdigest()


class Sessions:
    """Opens, reads and ends workbench sessions (blocking: call from a worker thread)."""

    def __init__(self, ring: KeyRing, store: Callable[[], Store | None]) -> None:
        self.ring = ring
        self.store = store

    def _store(self) -> Store:
        store = self.store()
        assert store is not None, "sessions need the database"
        return store

    def issue(self, key: ApiKey) -> str:
        """A new session for a valid operator key; returns the cookie's value."""
        token = secrets.token_urlsafe(32)
        now = utcnow()
        self._store().add_session(
            OperatorSession(
                id=_session_id(token),
                operator=key.name,
                key_check=_key_check(token, key),
                csrf=secrets.token_urlsafe(24),
                created_at=now,
                expires_at=now + timedelta(seconds=SESSION_SECONDS),
            )
        )
        return token

    @staticmethod
    def issue_login_token() -> str:
        return secrets.token_urlsafe(24)

    def read(self, cookie: str | None) -> Session | None:
        """The session of a cookie that is stored, unexpired and whose key is still
        configured with the operator scope; None otherwise."""
        if not cookie or len(cookie) > 100:
            return None
        row = self._store().get_session(_session_id(cookie))
        if row is None:
            return None
        configured = self.ring.keys()
        for key in configured:
            if key.name != row.operator or not key.allows(OPERATOR):
                continue
            if hmac.compare_digest(_key_check(cookie, key), row.key_check):
                return Session(row.operator, row.csrf)
        return None  # its key was revoked or lost the operator scope

    def end(self, cookie: str | None) -> None:
        """Forget the session (logout): its cookie is worth nothing afterwards."""
        if cookie and len(cookie) <= 100:
            self._store().end_session(_session_id(cookie))


def is_https(request: Request) -> bool:
    """Whether the client reached the service over HTTPS: the request's scheme (a trusted
    proxy's X-Forwarded-Proto sets it) or `ADUAN_PUBLIC_HTTPS`."""
    settings: Settings = request.app.state.service.settings
    return settings.public_https or request.url.scheme == "https"


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
        secure=is_https(request),
        path="/",
    )


def install_web(app: FastAPI, settings: Settings) -> None:
    """Static files, the CDN-free API docs, session signing and security headers."""
    app.state.sessions = Sessions(app.state.keys, lambda: app.state.service.store)
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
        if is_https(request):  # browsers never come back over plain HTTP
            headers["Strict-Transport-Security"] = HSTS
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response
