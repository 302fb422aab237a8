"""FastAPI dependencies: settings, the service state and API-key authentication."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import ApiError, not_ready, unauthorized
from .settings import Settings, get_settings
from .state import ServiceState

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_state(request: Request) -> ServiceState:
    state: ServiceState = request.app.state.service
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


def get_ready_state(state: StateDep) -> ServiceState:
    if not state.ready or state.classifier is None or state.batcher is None:
        raise not_ready()
    return state


ReadyStateDep = Annotated[ServiceState, Depends(get_ready_state)]


def key_matches(token: str, keys: list[str]) -> bool:
    # Compare against every key, always, so timing does not reveal which one nearly matched.
    found = False
    for key in keys:
        found |= hmac.compare_digest(token.encode(), key.encode())
    return found


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthorized("missing key: send 'Authorization: Bearer <key>'")
    return token.strip()


def require_admin_key(request: Request, settings: SettingsDep) -> str:
    """`/v1/admin` routes need one of the admin keys; with none configured they are off."""
    keys = settings.admin_key_list()
    if not keys:
        raise ApiError(
            403,
            "forbidden",
            "admin routes are disabled because no admin keys are configured; "
            "set ADUAN_ADMIN_KEYS to enable them",
        )
    token = _bearer(request)
    if not key_matches(token, keys):
        raise unauthorized("invalid admin key")
    return token


# Declared as a security scheme, so the API docs' "Authorize" button sends the key.
bearer = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="An operator key from ADUAN_API_KEYS, sent as 'Authorization: Bearer <key>'",
)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def require_api_key(request: Request, settings: SettingsDep, credentials: BearerDep) -> str | None:
    """When API keys are configured, `Authorization: Bearer <key>` must carry one of them."""
    keys = settings.keys()
    if not keys:
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    if not key_matches(token.strip(), keys):
        raise unauthorized("invalid API key")
    return token.strip()


def operator_of(key: str, settings: Settings) -> str:
    """Who a (valid) key names in the audit trail."""
    for candidate, name in settings.operators().items():
        if hmac.compare_digest(candidate.encode(), key.encode()):
            return name
    raise unauthorized("invalid API key")


def require_operator(request: Request, settings: SettingsDep, credentials: BearerDep) -> str:
    """The review routes show complaint texts and record who changed what: they need keys
    configured (403 otherwise) and a valid one (401); returns the operator's name."""
    if not settings.keys():
        raise ApiError(
            403,
            "forbidden",
            "the review routes are disabled because no API keys are configured; "
            "set ADUAN_API_KEYS to enable them",
        )
    key = require_api_key(request, settings, credentials)
    assert key is not None
    return operator_of(key, settings)


OperatorDep = Annotated[str, Depends(require_operator)]
