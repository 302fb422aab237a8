"""FastAPI dependencies: settings, the service state and API-key authentication."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import ApiError, not_ready, rate_limited, unauthorized
from .keys import ADMIN, CLASSIFY, OFFICE, OPERATOR, ApiKey, KeyRing
from .ratelimit import RateLimiter, retry_after
from .state import ServiceState


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_ready_state(state: StateDep) -> ServiceState:
    if not state.ready or state.classifier is None or state.backend is None:
        raise not_ready()
    return state


ReadyStateDep = Annotated[ServiceState, Depends(get_ready_state)]


def get_keys(request: Request) -> KeyRing:
    keys: KeyRing = request.app.state.keys
    return keys


def bearer_token(request: Request) -> str:
    """The key of an `Authorization: Bearer <key>` header, or ''."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def client_address(request: Request) -> str:
    """The client's address (from X-Forwarded-For when a trusted proxy sent the request)."""
    return request.client.host if request.client else "unknown"


def identify(request: Request, token: str) -> ApiKey | None:
    """The key `token` is, or None (a failure, counted against the client's address). An
    address that failed `auth_failures` times recently gets 429 until it regains one, and
    its key is then not even looked at: guessing gains nothing from the answer. Every
    surface that takes a key (Bearer, the workbench login, Open311's api_key) calls this."""
    failures: RateLimiter = request.app.state.auth_failures
    caller = f"address:{client_address(request)}"
    wait = failures.wait(caller)
    if wait > 0:
        raise ApiError(
            429,
            "rate_limited",
            "too many failed authentication attempts from this address; retry after "
            f"{retry_after(wait)} s",
            {"Retry-After": retry_after(wait)},
        )
    ring = get_keys(request)
    key = ring.find(token)
    # While the keys file cannot be used every key fails: the server's fault, not a guess, so
    # it is not counted (each client would be locked out long after the file is mended).
    if key is None and ring.broken is None:
        failures.take(caller)
    return key


def authenticate(request: Request, scopes: tuple[str, ...], token: str | None = None) -> ApiKey:
    """The key the request carries (`token`, as Open311's api_key field, else its Bearer
    header): 401 when missing, wrong or revoked (429 after too many failures, see
    `identify`); 403 when it holds none of `scopes`."""
    token = bearer_token(request) if token is None else token
    if not token:
        raise unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    key = identify(request, token)
    if key is None:
        raise unauthorized("invalid or revoked API key")
    if not any(key.allows(scope) for scope in scopes):
        raise ApiError(
            403, "forbidden", f"the key {key.name!r} lacks the {' or '.join(scopes)} scope"
        )
    return key


def throttle(request: Request, key: ApiKey | None) -> None:
    """429 with Retry-After when the caller (a key, or the client's address on an open API)
    exceeds its request rate."""
    limiter: RateLimiter = request.app.state.limiter
    if key is not None:
        caller, rate, who = f"key:{key.name}", key.rate, f"the key {key.name!r}"
    else:
        caller, rate, who = f"address:{client_address(request)}", None, "this address"
    wait = limiter.take(caller, rate)
    if wait > 0:
        raise rate_limited(who, retry_after(wait))


def throttle_public(request: Request) -> None:
    """429 with Retry-After when a keyless caller reads public documents (Open311 lists)
    faster than `public_read_rate` per address: on by default, unlike `rate_limit`."""
    throttle(request, None)
    limiter: RateLimiter = request.app.state.public_limiter
    wait = limiter.take(f"address:{client_address(request)}")
    if wait > 0:
        raise rate_limited("this address", retry_after(wait))


def throttle_explanations(request: Request, operator: str) -> None:
    """429 with Retry-After when `operator` asks for explanations faster than
    `explain_rate` (each is up to MAX_SPANS + 1 predictions of a text of up to max_chars)."""
    limiter: RateLimiter = request.app.state.explain_limiter
    wait = limiter.take(f"operator:{operator}")
    if wait > 0:
        raise rate_limited(f"explanations for {operator!r}", retry_after(wait))


# Declared as a security scheme, so the API docs' "Authorize" button sends the key.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="An API key (ADUAN_API_KEYS, ADUAN_OPERATOR_KEYS, ADUAN_ADMIN_KEYS or the keys "
    "file), sent as 'Authorization: Bearer <key>'",
)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def require_scope(*scopes: str) -> Callable[..., ApiKey | None]:
    """A dependency: when the API is protected (any classify or operator key configured) the
    request needs a key holding one of `scopes`; every caller is rate-limited."""

    def dependency(request: Request, credentials: BearerDep) -> ApiKey | None:
        key = authenticate(request, scopes) if get_keys(request).protects_api() else None
        throttle(request, key)
        return key

    return dependency


require_api_key = require_scope(CLASSIFY)
require_reader = require_scope(CLASSIFY, OPERATOR)


def require_admin_key(request: Request, credentials: BearerDep) -> ApiKey:
    """`/v1/admin` routes need a key with the admin scope; with none configured they are off."""
    if not get_keys(request).any_with(ADMIN):
        raise ApiError(
            403,
            "forbidden",
            "admin routes are disabled because no admin keys are configured; "
            "set ADUAN_ADMIN_KEYS (or add an admin key to the keys file) to enable them",
        )
    return authenticate(request, (ADMIN,))


def is_staff(request: Request, name: str) -> bool:
    """Whether the key named `name` is an office's staff, never a full operator: the offices
    file names it (now or in an earlier good read, `OfficeBook.is_staff`), or a key of that
    name carries the `office` scope (which holds with no offices file at all)."""
    if request.app.state.offices.is_staff(name):
        return True
    configured = get_keys(request).keys()
    return any(k.name == name and k.allows(OFFICE) for k in configured)


def require_operator(request: Request, credentials: BearerDep) -> str:
    """The review routes show complaint texts and record who changed what: they need operator
    keys configured (403 otherwise) and a valid one (401); returns the operator's name."""
    if not get_keys(request).any_with(OPERATOR):
        raise ApiError(
            403,
            "forbidden",
            "the review routes are disabled because no operator keys are configured; "
            "set ADUAN_OPERATOR_KEYS (or add an operator key to the keys file) to enable them",
        )
    key = authenticate(request, (OPERATOR,))
    throttle(request, key)
    book = request.app.state.offices
    if is_staff(request, key.name):
        # An office's staff see that office's complaints only (/v1/office), never the queue;
        # a key the offices file no longer lists stays staff (of no office) until a restart.
        staff_of = book.offices_of(key.name)
        where = ", ".join(staff_of) or "an office in an earlier offices file"
        raise ApiError(
            403, "forbidden", f"the key {key.name!r} is staff of {where}: use /v1/office"
        )
    return key.name


OperatorDep = Annotated[str, Depends(require_operator)]


def require_staff(request: Request, credentials: BearerDep) -> tuple[str, list[str]]:
    """The office routes need an operator key whose name the offices file lists as staff of
    an office (403 otherwise); returns (the key's name, its offices)."""
    if not get_keys(request).any_with(OPERATOR):
        raise ApiError(403, "forbidden", "no operator keys are configured: offices are off")
    key = authenticate(request, (OPERATOR,))
    throttle(request, key)
    offices = request.app.state.offices.offices_of(key.name)
    if not offices:
        raise ApiError(
            403, "forbidden", f"the key {key.name!r} is no office's staff (ADUAN_OFFICES_FILE)"
        )
    return key.name, offices


StaffDep = Annotated[tuple[str, list[str]], Depends(require_staff)]


def require_operator_or_staff(
    request: Request, credentials: BearerDep
) -> tuple[str, list[str] | None]:
    """Routes for operators and offices alike (the offices' figures): an operator key, which
    sees everything, or an office's staff key, which sees its offices only; returns (the
    key's name, its offices or None for everything)."""
    if not get_keys(request).any_with(OPERATOR):
        raise ApiError(
            403,
            "forbidden",
            "no operator keys are configured: set ADUAN_OPERATOR_KEYS (or the keys file)",
        )
    key = authenticate(request, (OPERATOR,))
    throttle(request, key)
    book = request.app.state.offices
    offices = book.offices_of(key.name)
    if not offices and is_staff(request, key.name):
        raise ApiError(403, "forbidden", f"the key {key.name!r} is no longer any office's staff")
    return key.name, (offices or None)


ViewerDep = Annotated[tuple[str, list[str] | None], Depends(require_operator_or_staff)]
