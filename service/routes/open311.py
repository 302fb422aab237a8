"""Open311 GeoReport v2: services and service definitions, creating, listing and reading
service requests, each in JSON or XML (`.json`/`.xml`). Read requests follow the operators'
review (status, note, corrected category and agency, expected date).

The same key, rate-limit and readiness checks as `/v1` (`deps.authenticate`, `deps.throttle`,
`deps.ReadyStateDep`), taking the spec's `api_key` (form field or query parameter) as well as a
Bearer header. Errors are `ApiError`s, which `errors.py` renders in the spec's form for these
paths, `[{"code": ..., "description": ...}]` (or `<errors>` in XML), with the matching status.
Reading is public, but only an operator's key sees complaint texts, street addresses and exact
coordinates (`open311_format.request_fields`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from aduan.service import duplicates, followup, intake, merges
from aduan.service.deps import (
    BearerDep,
    ReadyStateDep,
    authenticate,
    bearer_token,
    get_keys,
    is_staff,
    throttle,
    throttle_public,
)
from aduan.service.errors import ApiError, bad_request, not_found, not_ready, too_large
from aduan.service.idempotency import idempotency_key, mark_replayed
from aduan.service.keys import CLASSIFY, OPERATOR, ApiKey
from aduan.service.open311_format import (
    FIELD_CHARS,
    FIELDS,
    create_body_openapi,
    media_url_problem,
    render,
    render_one,
    request_fields,
)
from aduan.service.open311_format import notice as service_notice
from aduan.service.review import ReviewError, open311_requests, parse_moment
from aduan.service.schemas import text_problem
from aduan.service.state import ServiceState
from aduan.service.storage import StoredRequest, utcnow

router = APIRouter(prefix="/open311/v2", tags=["open311"])
DEFAULT_WINDOW = timedelta(days=90)
MAX_REQUESTS = 1000

Fmt = Annotated[Literal["json", "xml"], Path(description="json or xml")]


def _caller(request: Request, token: str | None, scopes: tuple[str, ...]) -> ApiKey | None:
    """The key behind `token` (else the Bearer header), checked as /v1 checks it, then the
    rate limit. GeoReport answers a missing or wrong api_key with 403."""
    key = None
    if get_keys(request).protects_api():
        try:
            key = authenticate(request, scopes, token or None)
        except ApiError as exc:
            if exc.status != 401:
                raise
            raise ApiError(403, "forbidden", "a valid api_key is required") from exc
    throttle(request, key)
    return key


def reader(
    request: Request,
    credentials: BearerDep,
    api_key: Annotated[
        str | None, Query(description="An operator's key shows texts and exact locations")
    ] = None,
) -> ApiKey | None:
    """Reading is public and rate-limited; a key sent must be valid."""
    if not (api_key or bearer_token(request)):
        throttle_public(request)
        return None
    return _caller(request, api_key, (CLASSIFY, OPERATOR))


ReaderDep = Annotated[ApiKey | None, Depends(reader)]


async def read_fields(request: Request) -> dict[str, str]:
    """The POST body's GeoReport fields (form-encoded or JSON), each within its cap and free
    of control characters (400 otherwise, before any key check or model work)."""
    content_type = request.headers.get("content-type", "")
    try:
        raw = (
            await request.json()
            if content_type.startswith("application/json")
            else dict(await request.form())
        )
    except Exception as exc:
        raise bad_request(f"unreadable body: {exc}") from exc
    if not isinstance(raw, dict):
        raise bad_request("the JSON body must be an object")
    fields = {k: str(v).strip() for k, v in raw.items() if k in FIELDS and v is not None}
    for name, value in fields.items():
        limit = FIELD_CHARS.get(name)
        if limit is not None and len(value) > limit:
            raise bad_request(f"{name} is longer than {limit} characters")
        problem = text_problem(value)
        if problem:
            raise bad_request(f"{name}: {problem}")
    return fields


FieldsDep = Annotated[dict[str, str], Depends(read_fields)]


def creator(request: Request, fields: FieldsDep, credentials: BearerDep) -> ApiKey | None:
    """Creating a request needs a key with the classify scope once the API is protected, as
    `POST /v1/classify` does; every caller is rate-limited."""
    return _caller(request, fields.get("api_key"), (CLASSIFY,))


@router.get("/services.{fmt}", summary="One service per complaint category (JSON or XML)")
def services(state: ReadyStateDep, caller: ReaderDep, fmt: Fmt) -> Response:
    assert state.taxonomy is not None
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
def service_definition(
    service_code: str, state: ReadyStateDep, caller: ReaderDep, fmt: Fmt
) -> Response:
    assert state.taxonomy is not None
    if state.taxonomy.category(service_code) is None:
        raise not_found(f"no service {service_code!r}")
    return render_one({"service_code": service_code, "attributes": []}, fmt, "service_definition")


def _coordinate(fields: dict[str, str], name: str, limit: float) -> float | None:
    value = fields.get(name)
    if not value:
        return None
    try:
        number = float(value)
    except ValueError as exc:
        raise bad_request(f"{name} must be a number, got {value!r}") from exc
    if not math.isfinite(number) or abs(number) > limit:
        raise bad_request(f"{name} must lie within ±{limit}")
    return number


def _checked(fields: dict[str, str], state: ServiceState) -> str:
    """The description, once every field passed the checks that need the model."""
    description = fields.get("description", "")
    if not description:
        raise bad_request("description is required")
    if len(description) > state.settings.max_chars:
        raise too_large(f"description is longer than {state.settings.max_chars} characters")
    code = fields.get("service_code")
    assert state.taxonomy is not None
    if code and state.taxonomy.category(code) is None:
        raise bad_request(f"unknown service_code {code!r} (see services.json)")
    media_url = fields.get("media_url")
    problem = media_url_problem(media_url) if media_url else None
    if problem:
        raise bad_request(problem)
    return description


@router.post(
    "/requests.{fmt}",
    summary="Create a service request (form-encoded or JSON); a retry with the same "
    "Idempotency-Key header returns the first request",
    status_code=201,
    openapi_extra=create_body_openapi(),
    responses={
        201: {
            "description": "[{service_request_id, service_notice, account_id, possible_duplicates}]"
        }
    },
)
async def create_request(
    request: Request,
    fields: FieldsDep,
    caller: Annotated[ApiKey | None, Depends(creator)],
    state: ReadyStateDep,
    fmt: Fmt,
) -> Response:
    if state.store is None:
        raise not_ready("the request database is not open yet")
    description = _checked(fields, state)
    idempotency = idempotency_key(request, caller)
    lat, lon = _coordinate(fields, "lat", 90), _coordinate(fields, "long", 180)
    address = fields.get("address_string") or None
    [classified] = await intake.classify([(description, address)], state)
    request.state.model_version = classified.model_version  # the X-Model-Version header
    record = intake.new_request(
        description,
        classified,
        address=address,
        latitude=lat,
        longitude=lon,
        media_url=fields.get("media_url") or None,
        service_code=fields.get("service_code") or None,
    )
    [request_id], replayed, [match] = await intake.save_and_match(
        state, [record], idempotency, [_reporter(fields)]
    )
    office = classified.office or classified.prediction.best("agency").label
    notice = service_notice(classified.route, False, office)
    answer = {
        "service_request_id": request_id,
        "service_notice": notice,
        "account_id": None,
        "possible_duplicates": match["possible_duplicates"],
    }
    response = render([answer], fmt, "service_requests", "request", status=201)
    mark_replayed(response, replayed)
    return response


def _reporter(fields: dict[str, str]) -> duplicates.Identity | None:
    """The reporter's identity the client sent (the most specific one), for the keyed hash."""
    for kind in ("account_id", "device_id", "email"):
        if fields.get(kind):
            return duplicates.Identity(kind, fields[kind])
    return None


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


async def _private(
    request: Request, state: ServiceState, caller: ApiKey | None, rows: Sequence[StoredRequest]
) -> list[bool]:
    """Per row, whether to show its text, street address and coordinates (personal data):
    to an operator's key, in every configuration (with no keys configured: for nobody); to an
    office's staff key (`deps.is_staff`), only for the rows its offices follow up."""
    if caller is None or not caller.allows(OPERATOR):
        return [False] * len(rows)
    book = request.app.state.offices
    if not is_staff(request, caller.name):
        return [True] * len(rows)
    offices = set(book.offices_of(caller.name))
    assert state.store is not None
    held = await state.store.run(followup.offices_holding, state.store, [r.id for r in rows])
    return [held.get(r.id) in offices for r in rows]


@router.get("/requests.{fmt}", summary="Service requests by id list, service, status and date")
async def list_requests(
    request: Request,
    state: ReadyStateDep,
    caller: ReaderDep,
    fmt: Fmt,
    service_request_id: Annotated[
        str | None, Query(description="Comma-separated ids; other filters are then ignored")
    ] = None,
    service_code: Annotated[str | None, Query(description="Comma-separated codes")] = None,
    status: Annotated[str | None, Query(description="open, closed or both (comma)")] = None,
    start_date: Annotated[
        str | None, Query(description="W3C date-time, earliest requested")
    ] = None,
    end_date: Annotated[str | None, Query(description="W3C date-time, latest requested")] = None,
) -> Response:
    if state.store is None or state.taxonomy is None:
        raise not_ready("the service is not ready")
    statuses = _csv(status)
    if any(s not in ("open", "closed") for s in statuses):
        raise bad_request("status must be open, closed or both")
    try:
        start = parse_moment(start_date, "start_date") if start_date else None
        end = parse_moment(end_date, "end_date", end_of_day=True) if end_date else None
    except ReviewError as exc:
        raise bad_request(str(exc)) from exc
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
    rows = await state.store.run(merges.follow_originals, state.store, rows)
    private = await _private(request, state, caller, rows)
    items = [request_fields(r, state.taxonomy, p) for r, p in zip(rows, private, strict=True)]
    return render(items, fmt, "service_requests", "request")


@router.get("/requests/{request_id}.{fmt}", summary="One service request")
async def get_request(
    request_id: str, request: Request, state: ReadyStateDep, caller: ReaderDep, fmt: Fmt
) -> Response:
    if state.store is None or state.taxonomy is None:
        raise not_ready("the service is not ready")
    stored = await state.store.run(state.store.get_request, request_id)
    if stored is None:
        raise not_found(f"no service request {request_id!r}")
    [stored] = await state.store.run(merges.follow_originals, state.store, [stored])
    [private] = await _private(request, state, caller, [stored])
    return render(
        [request_fields(stored, state.taxonomy, private)],
        fmt,
        "service_requests",
        "request",
    )
