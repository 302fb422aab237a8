"""Open311 GeoReport v2 (JSON): services, creating and reading service requests.

Errors use the spec's form, `[{"code": ..., "description": ...}]`, with the matching status.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from aduan.model.location import Unit
from aduan.model.pipeline import office as office_of
from aduan.service import intake
from aduan.service.batcher import QueueFull
from aduan.service.deps import StateDep, key_matches
from aduan.service.errors import open311_error
from aduan.service.state import ServiceState
from aduan.service.storage import as_utc

router = APIRouter(prefix="/open311/v2", tags=["open311"])

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
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description


@router.get("/services.json", summary="One service per complaint category")
def services(state: StateDep) -> JSONResponse:
    if state.taxonomy is None:
        return open311_error(503, "the model is not loaded yet")
    return JSONResponse(
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
        ]
    )


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


def _check_key(request: Request, fields: dict[str, str], state: ServiceState) -> None:
    keys = state.settings.keys()
    if not keys:
        return
    scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
    given = fields.get("api_key") or (bearer.strip() if scheme.lower() == "bearer" else "")
    if not key_matches(given, keys):
        raise Open311Error(403, "a valid api_key is required")


@router.post("/requests.json", summary="Create a service request (form-encoded or JSON)")
async def create_request(request: Request, state: StateDep) -> JSONResponse:
    try:
        return await _create(request, state)
    except Open311Error as exc:
        return open311_error(exc.status, exc.description)


async def _create(request: Request, state: ServiceState) -> JSONResponse:
    fields = await _read_fields(request)
    _check_key(request, fields, state)
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
        raise Open311Error(429, "the service is overloaded; retry shortly") from exc
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
    notice = (
        f"Aduan diteruskan ke {office}."
        if result.route == "auto"
        else f"Aduan akan ditinjau petugas; perkiraan instansi: {office}."
    )
    return JSONResponse(
        [{"service_request_id": request_id, "service_notice": notice, "account_id": None}],
        status_code=201,
    )


@router.get("/requests/{request_id}.json", summary="One service request")
async def get_request(request_id: str, state: StateDep) -> JSONResponse:
    if state.store is None or state.taxonomy is None:
        return open311_error(503, "the service is not ready")
    stored = await asyncio.to_thread(state.store.get_request, request_id)
    if stored is None:
        return open311_error(404, f"no service request {request_id!r}")
    code = stored.service_code or stored.category
    category = state.taxonomy.category(code)
    office = office_of(stored.agency, _unit(stored))
    return JSONResponse(
        [
            {
                "service_request_id": stored.id,
                "status": "open",
                "service_code": code,
                "service_name": category.name if category else code,
                "agency_responsible": office or stored.agency,
                "requested_datetime": as_utc(stored.received_at).isoformat(timespec="seconds"),
                "address": stored.address,
                "lat": stored.latitude,
                "long": stored.longitude,
            }
        ]
    )


def _unit(stored: Any) -> Unit | None:
    if not stored.kelurahan and not stored.kecamatan:
        return None
    return Unit(stored.kelurahan, stored.kecamatan)
