"""The OpenAPI document tells the truth about authentication in the running configuration:
an operation carries a security requirement only while keys are configured that it checks.
With no key at all `/v1` is open and the document says so; the review and admin routes,
off then (403 whatever is sent), declare none either; Open311's reads take a key optionally
(`security: [{}, {apiKey: []}]`: an operator's key adds the descriptions).

The requirement of each operation is read from its dependencies (`deps.py` decides who may
call what, once), and the document is rebuilt whenever the keys change what is enforced (a
keys file edited while serving)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, routing

from .deps import (
    bearer,
    require_admin_key,
    require_api_key,
    require_operator,
    require_operator_or_staff,
    require_reader,
    require_staff,
)
from .keys import ADMIN, OPERATOR, KeyRing
from .routes.feedback import feedback_enabled

SCHEME = "apiKey"
API, OPERATORS, ADMINS, OPTIONAL = "api", "operator", "admin", "optional"
_KINDS: dict[Callable[..., Any], str] = {
    require_api_key: API,
    require_reader: API,
    require_operator: OPERATORS,
    require_staff: OPERATORS,  # an office's staff hold operator keys
    require_operator_or_staff: OPERATORS,
    feedback_enabled: OPERATORS,
    require_admin_key: ADMINS,
}


def _calls(dependant: Any) -> set[Any]:
    found, stack = set(), list(dependant.dependencies)
    while stack:
        dependency = stack.pop()
        found.add(dependency.call)
        stack.extend(dependency.dependencies)
    return found


def _routes(app: FastAPI) -> list[Any]:
    """Every route with its effective dependencies (FastAPI >= 0.160 keeps included routers
    lazily; `iter_route_contexts` sees through them)."""
    flatten = getattr(routing, "iter_route_contexts", None)
    return list(flatten(app.routes)) if flatten else list(app.routes)


def route_kind(route: Any) -> str | None:
    """Which keys an operation checks: `api` (classify or operator keys), `operator`,
    `admin`, `optional` (a key adds to the answer), or None (never a key)."""
    calls = _calls(route.dependant) if getattr(route, "dependant", None) else set()
    kinds = {_KINDS[call] for call in calls if call in _KINDS}
    for kind in (ADMINS, OPERATORS, API):
        if kind in kinds:
            return kind
    if bearer in calls:  # Open311: creating needs a classify key, reading takes one optionally
        return API if set(route.methods) & {"POST", "PUT", "PATCH", "DELETE"} else OPTIONAL
    return None


def _security(kind: str | None, keys: KeyRing) -> list[dict[str, list[str]]] | None:
    enforced = {
        API: keys.protects_api(),
        OPERATORS: keys.any_with(OPERATOR),
        ADMINS: keys.any_with(ADMIN),
        OPTIONAL: keys.any_with(OPERATOR),
    }
    if kind is None or not enforced[kind]:
        return None  # open, or off (403 whatever is sent)
    return [{}, {SCHEME: []}] if kind == OPTIONAL else [{SCHEME: []}]


def document_security(app: FastAPI, keys: KeyRing) -> None:
    """Make `app.openapi()` state each operation's security from the keys configured now."""
    build = app.openapi
    kinds = {
        (route.path_format, method.lower()): route_kind(route)
        for route in _routes(app)
        if getattr(route, "include_in_schema", False) and getattr(route, "dependant", None)
        for method in route.methods or ()
    }
    built: dict[tuple[bool, ...], dict[str, Any]] = {}

    def openapi() -> dict[str, Any]:
        state = (keys.protects_api(), keys.any_with(OPERATOR), keys.any_with(ADMIN))
        if state in built:
            return built[state]
        app.openapi_schema = None  # FastAPI's own cache: built again for this state
        schema = build()
        used = False
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                security = _security(kinds.get((path, method)), keys)
                operation.pop("security", None)
                if security is not None:
                    operation["security"] = security
                    used = True
        if not used:
            schema.get("components", {}).pop("securitySchemes", None)
        built[state] = app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
