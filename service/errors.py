"""The service's closed set of errors, each a status code with a JSON body."""

from __future__ import annotations

import logging
import re
from typing import Any
from xml.etree import ElementTree

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered as `{"error": message, "error_type": kind}` with `status`."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers or {}


def too_large(message: str) -> ApiError:
    return ApiError(413, "payload_too_large", message)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def overloaded(
    message: str = "the inference queue is full; retry shortly", retry_after: str = "1"
) -> ApiError:
    return ApiError(429, "overloaded", message, {"Retry-After": retry_after})


def rate_limited(name: str, retry_after: str) -> ApiError:
    return ApiError(
        429,
        "rate_limited",
        f"{name} sent more requests than its rate limit allows; retry after {retry_after} s",
        {"Retry-After": retry_after},
    )


DATABASE_RETRY_AFTER = "5"


def database_unavailable() -> ApiError:
    return ApiError(
        503,
        "database_unavailable",
        "the database is unavailable: nothing was stored or changed; retry later",
        {"Retry-After": DATABASE_RETRY_AFTER},
    )


def not_ready(message: str = "the model is not loaded yet") -> ApiError:
    return ApiError(503, "not_ready", message)


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message)


_STATUS_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    408: "timeout",
    415: "unsupported_media",
    422: "validation_error",
    429: "overloaded",
    431: "headers_too_large",
    503: "not_ready",
}


def error_body(message: str, error_type: str) -> dict[str, str]:
    return {"error": message, "error_type": error_type}


# What XML 1.0 cannot hold, even escaped: C0 controls but tab and line breaks, lone surrogates
# and U+FFFE/U+FFFF. Intake refuses them; rows stored before that are rendered with U+FFFD.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: str) -> str:
    """`value` with every character XML cannot hold replaced by U+FFFD, so that one stored
    character never makes a whole document ill-formed."""
    return _NOT_XML.sub("\ufffd", value)


def open311_error(status: int, description: str, xml: bool = False) -> Response:
    """GeoReport v2's error form: a list of {code, description}, or `<errors>` in XML."""
    if xml:
        root = ElementTree.Element("errors")
        error = ElementTree.SubElement(root, "error")
        ElementTree.SubElement(error, "code").text = str(status)
        ElementTree.SubElement(error, "description").text = xml_text(description)
        body = ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
        return Response(body, status, media_type="application/xml")
    return JSONResponse([{"code": status, "description": description}], status)


def _respond(
    request: Request,
    status: int,
    message: str,
    error_type: str,
    headers: dict[str, str] | None = None,
) -> Response:
    if request.url.path.startswith("/open311/"):
        # GeoReport v2 has no 422: an invalid field is its 400 (as the guard answers too).
        status = 400 if status == 422 else status
        response = open311_error(status, message, xml=request.url.path.endswith(".xml"))
        if headers:
            response.headers.update(headers)
        return response
    return JSONResponse(error_body(message, error_type), status, headers=headers)


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def is_unavailable(exc: BaseException) -> bool:
    """A database error that says the database cannot be reached or written (connection
    refused or lost, disk full, locked, pool exhausted), not a bug in a query."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeout):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        headers = dict(exc.headers)
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        if exc.status in (429, 503):  # overloaded, or no model to answer yet: come back
            headers.setdefault("Retry-After", "1")
        return _respond(request, exc.status, exc.message, exc.error_type, headers or None)

    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> Response:
        if not is_unavailable(exc):
            return await _unexpected(request, exc)
        # The driver's message names the host or says "disk is full"; engines are created
        # with hide_parameters, so no stored text can appear in it.
        cause = getattr(exc, "orig", None) or exc
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        log.error("database unavailable on %s: %s: %s", _path(request), type(cause).__name__, first)
        state = getattr(request.app.state, "service", None)
        store = getattr(state, "store", None)
        if store is not None and hasattr(store, "mark_unavailable"):
            store.mark_unavailable(f"{type(cause).__name__}: {first}")
        error = database_unavailable()
        return _respond(request, error.status, error.message, error.error_type, error.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        return _respond(request, 422, _describe(exc), "validation_error")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _STATUS_TYPES.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(str(exc.detail), kind),
            exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", _path(request))
        return _respond(request, 500, "internal error", "internal_error")


def _path(request: Request) -> str:
    # The route template, not the path: a path may carry anything a client typed.
    route = request.scope.get("route")
    return getattr(route, "path", None) or "unmatched"


# What any operation may answer besides its own responses: the guard (400 NUL in the URL,
# 408 slow body, 413 body too large, 415 not JSON, 422 bad JSON, 431 head too large), keys
# (401, 403), limits (429) and readiness or the database (503).
_COMMON = {
    400: "Bad request (e.g. NUL in the URL)",
    401: "Missing, wrong or revoked API key",
    403: "Key lacks the scope, or the feature is off",
    404: "Not found",
    408: "The body did not arrive in time",
    413: "Body, text or batch too large",
    415: "Body not sent as application/json",
    422: "Invalid body or parameters",
    429: "Rate limit or overload: retry after Retry-After seconds",
    431: "Request head too large",
    503: "Not ready, shutting down, or the database is unavailable",
}
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "error_type"],
    "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}},
}
_OPEN311_ERROR_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["code", "description"],
        "properties": {"code": {"type": "integer"}, "description": {"type": "string"}},
    },
}


def document_errors(app: FastAPI) -> None:
    """Add the errors every operation can answer to the OpenAPI schema, so a client (and the
    property-based tests generated from it) knows each status and its body."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = build()
        for path, operations in schema.get("paths", {}).items():
            body = _OPEN311_ERROR_SCHEMA if path.startswith("/open311/") else _ERROR_SCHEMA
            content: dict[str, Any] = {"application/json": {"schema": body}}
            if path.startswith("/open311/"):
                content["application/xml"] = {"schema": {"type": "string"}}
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for status, text in _COMMON.items():
                    responses.setdefault(str(status), {"description": text, "content": content})
                # FastAPI documents its own validation body; ours is the closed error form.
                responses["422"] = {"description": _COMMON[422], "content": content}
                if path.startswith("/open311/"):  # every answer comes as .json or .xml
                    for status, response in responses.items():
                        if status.startswith("2"):
                            formats = response.setdefault("content", {})
                            formats.setdefault("application/json", {"schema": {}})
                            formats.setdefault("application/xml", {"schema": {"type": "string"}})
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
