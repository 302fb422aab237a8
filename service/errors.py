"""The service's closed set of errors, each a status code with a JSON body."""

from __future__ import annotations

import logging
from xml.etree import ElementTree

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered as `{"error": message, "error_type": kind}` with `status`."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message


def too_large(message: str) -> ApiError:
    return ApiError(413, "payload_too_large", message)


def overloaded(message: str = "the inference queue is full; retry shortly") -> ApiError:
    return ApiError(429, "overloaded", message)


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
    415: "unsupported_media",
    422: "validation_error",
    429: "overloaded",
    503: "not_ready",
}


def error_body(message: str, error_type: str) -> dict[str, str]:
    return {"error": message, "error_type": error_type}


def open311_error(status: int, description: str, xml: bool = False) -> Response:
    """GeoReport v2's error form: a list of {code, description}, or `<errors>` in XML."""
    if xml:
        root = ElementTree.Element("errors")
        error = ElementTree.SubElement(root, "error")
        ElementTree.SubElement(error, "code").text = str(status)
        ElementTree.SubElement(error, "description").text = description
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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if exc.status in (429, 503):  # overloaded, or no model to answer yet: come back
            headers = {"Retry-After": "1"}
        return _respond(request, exc.status, exc.message, exc.error_type, headers)

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
        log.exception("unhandled error on %s", request.url.path)
        return _respond(request, 500, "internal error", "internal_error")
