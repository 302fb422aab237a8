"""Open311 GeoReport v2: services and service definitions, creating, listing and reading
service requests, each in JSON or XML (`.json`/`.xml`). Read requests follow the operators'
review (status, note, corrected category and agency, expected date).

Errors use the spec's form, `[{"code": ..., "description": ...}]` (or `<errors>` in XML), with
the matching status.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from aduan.service import intake
from aduan.service.batcher import QueueFull
from aduan.service.deps import (
    BearerDep,
    StateDep,
    bearer_token,
    get_keys,
    identify,
    throttle,
)
from aduan.service.errors import ApiError, open311_error
from aduan.service.keys import CLASSIFY, OPERATOR
from aduan.service.open311_format import (
    create_body_openapi,
    render,
    render_one,
    request_fields,
)
from aduan.service.open311_format import notice as service_notice
from aduan.service.ratelimit import retry_after
from aduan.service.review import ReviewError, open311_requests, parse_moment
from aduan.service.state import ServiceState
from aduan.service.storage import utcnow

router = APIRouter(prefix="/open311/v2", tags=["open311"])
DEFAULT_WINDOW = timedelta(days=90)
MAX_REQUESTS = 1000

_FIELDS = (
    "description",
    "service_code",
    "lat",
    "long",
    "address_string",
    "media_url",
    "api_key",
    "email",
    "first_name",
    "last_name",
    "phone",
    "device_id",
    "account_id",
)


class Open311Error(Exception):
    def __init__(self, status: int, description: str, headers: dict[str, str] | None = None):
        super().__init__(description)
        self.status = status
        self.description = description
        self.headers = headers or {}


Fmt = Annotated[Literal["json", "xml"], Path(description="json or xml")]


@router.get("/services.{fmt}", summary="One service per complaint category (JSON or XML)")
def services(state: StateDep, fmt: Fmt) -> Response:
    if state.taxonomy is None:
        return open311_error(503, "the model is not loaded yet", xml=fmt == "xml")
    return render(
        [
            {
                "service_code": c.code,
                "service_name": c.name,
                "description": c.description,
                "metadata": False,
                "type": "realtime",
                "keywords": ", ".join(t.lower() for t in c.topics[:12]),
                "group": c.group or "Lainnya",
            }
            for c in state.taxonomy.categories
        ],
        fmt,
        "services",
        "service",
    )


@router.get(
    "/services/{service_code}.{fmt}",
    summary="A service definition: no service asks extra questions, so attributes are empty",
)
def service_definition(service_code: str, state: StateDep, fmt: Fmt) -> Response:
    if state.taxonomy is None:
        return open311_error(503, "the model is not loaded yet", xml=fmt == "xml")
    if state.taxonomy.category(service_code) is None:
        return open311_error(404, f"no service {service_code!r}", xml=fmt == "xml")
    return render_one({"service_code": service_code, "attributes": []}, fmt, "service_definition")


async def _read_fields(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("application/json"):
            raw = await request.json()
            if not isinstance(raw, dict):
                raise Open311Error(400, "the JSON body must be an object")
        else:
            raw = dict(await request.form())
    except Open311Error:
        raise
    except Exception as exc:
        raise Open311Error(400, f"unreadable body: {exc}") from exc
    fields = {k: str(v).strip() for k, v in raw.items() if k in _FIELDS and v is not None}
    if any("\x00" in v for v in fields.values()):
        raise Open311Error(400, "NUL characters are not allowed")
    return fields


def _coordinate(fields: dict[str, str], name: str, limit: float) -> float | None:
    value = fields.get(name)
    if not value:
        return None
    try:
        number = float(value)
    except ValueError as exc:
        raise Open311Error(400, f"{name} must be a number, got {value!r}") from exc
    if not math.isfinite(number) or abs(number) > limit:
        raise Open311Error(400, f"{name} must lie within ±{limit}")
    return number


def _check_key(request: Request, fields: dict[str, str]) -> None:
    """Creating a request needs a key with the classify scope once the API is protected; every
    caller is rate-limited."""
    keys = get_keys(request)
    key = None
    if keys.protects_api():
        token = fields.get("api_key") or bearer_token(request)
        try:  # failed keys count against the address, as on every surface
            key = identify(request, token) if token else None
        except ApiError as exc:
            raise Open311Error(exc.status, exc.message, exc.headers) from exc
        if key is None:
            raise Open311Error(403, "a valid api_key is required")
        if not key.allows(CLASSIFY):
            raise Open311Error(403, f"the key {key.name!r} lacks the classify scope")
    try:
        throttle(request, key)
    except ApiError as exc:
        raise Open311Error(exc.status, exc.message, exc.headers) from exc


@router.post(
    "/requests.{fmt}",
    summary="Create a service request (form-encoded or JSON)",
    status_code=201,
    openapi_extra=create_body_openapi(),
    responses={201: {"description": "[{service_request_id, service_notice, account_id}]"}},
)
async def create_request(
    request: Request, state: StateDep, fmt: Fmt, credentials: BearerDep
) -> Response:
    try:
        return await _create(request, state, fmt)
    except Open311Error as exc:
        response = open311_error(exc.status, exc.description, xml=fmt == "xml")
        response.headers.update(exc.headers)
        return response


async def _create(request: Request, state: ServiceState, fmt: str) -> Response:
    fields = await _read_fields(request)
    _check_key(request, fields)
    if not state.ready or state.batcher is None or state.store is None:
        raise Open311Error(503, "the model is not loaded yet")
    description = fields.get("description", "")
    if not description:
        raise Open311Error(400, "description is required")
    if len(description) > state.settings.max_chars:
        raise Open311Error(413, f"description is longer than {state.settings.max_chars} characters")
    assert state.taxonomy is not None and state.classifier is not None
    code = fields.get("service_code") or None
    if code is not None and state.taxonomy.category(code) is None:
        raise Open311Error(400, f"unknown service_code {code!r} (see services.json)")
    lat, lon = _coordinate(fields, "lat", 90), _coordinate(fields, "long", 180)
    address = fields.get("address_string") or None
    try:
        [classified] = await intake.classify([(description, address)], state)
    except QueueFull as exc:
        wait = {"Retry-After": retry_after(exc.retry_after)}
        raise Open311Error(429, "the service is overloaded; retry shortly", wait) from exc
    request.state.model_version = classified.model_version  # the X-Model-Version header
    result = intake.to_result(None, classified, 1)
    record = intake.new_request(
        description,
        classified,
        address=address,
        latitude=lat,
        longitude=lon,
        media_url=fields.get("media_url") or None,
        service_code=code,
    )
    [request_id] = await intake.save(state, [record])
    office = result.unit.office if result.unit and result.unit.office else result.agency.label
    notice = service_notice(result.route, False, office)
    answer = {"service_request_id": request_id, "service_notice": notice, "account_id": None}
    return render([answer], fmt, "service_requests", "request", status=201)


def _may_read_text(request: Request, api_key: str | None) -> bool:
    """Descriptions are complaint texts (personal data): with keys configured, only a caller
    with a valid operator key (api_key or Bearer) gets them."""
    keys = get_keys(request)
    if not keys.protects_api():
        return True
    key = keys.find(api_key or bearer_token(request))
    return key is not None and key.allows(OPERATOR)


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


@router.get("/requests.{fmt}", summary="Service requests by id list, service, status and date")
async def list_requests(
    request: Request,
    state: StateDep,
    fmt: Fmt,
    credentials: BearerDep,
    service_request_id: Annotated[
        str | None, Query(description="Comma-separated ids; other filters are then ignored")
    ] = None,
    service_code: Annotated[str | None, Query(description="Comma-separated codes")] = None,
    status: Annotated[str | None, Query(description="open, closed or both (comma)")] = None,
    start_date: Annotated[
        str | None, Query(description="W3C date-time, earliest requested")
    ] = None,
    end_date: Annotated[str | None, Query(description="W3C date-time, latest requested")] = None,
    api_key: Annotated[str | None, Query(description="Needed to see descriptions")] = None,
) -> Response:
    xml = fmt == "xml"
    if state.store is None or state.taxonomy is None:
        return open311_error(503, "the service is not ready", xml=xml)
    statuses = _csv(status)
    if any(s not in ("open", "closed") for s in statuses):
        return open311_error(400, "status must be open, closed or both", xml=xml)
    try:
        start = parse_moment(start_date, "start_date") if start_date else None
        end = parse_moment(end_date, "end_date", end_of_day=True) if end_date else None
    except ReviewError as exc:
        return open311_error(400, str(exc), xml=xml)
    if start is None and end is None:
        start = utcnow() - DEFAULT_WINDOW  # the spec's default: the last 90 days
    rows = await state.store.run(
        open311_requests,
        state.store,
        ids=_csv(service_request_id),
        codes=_csv(service_code),
        statuses=statuses,
        start=start,
        end=end,
        limit=MAX_REQUESTS,
    )
    readable = _may_read_text(request, api_key)
    items = [request_fields(r, state.taxonomy, readable) for r in rows]
    return render(items, fmt, "service_requests", "request")


@router.get("/requests/{request_id}.{fmt}", summary="One service request")
async def get_request(
    request_id: str,
    request: Request,
    state: StateDep,
    fmt: Fmt,
    credentials: BearerDep,
    api_key: Annotated[str | None, Query(description="Needed to see the description")] = None,
) -> Response:
    xml = fmt == "xml"
    if state.store is None or state.taxonomy is None:
        return open311_error(503, "the service is not ready", xml=xml)
    stored = await state.store.run(state.store.get_request, request_id)
    if stored is None:
        return open311_error(404, f"no service request {request_id!r}", xml=xml)
    readable = _may_read_text(request, api_key)
    return render(
        [request_fields(stored, state.taxonomy, readable)], fmt, "service_requests", "request"
    )
