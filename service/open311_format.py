"""Open311 GeoReport v2 documents: services, service definitions and service requests as the
spec's JSON or XML, and a stored request's fields following the operators' review."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from aduan.model.pipeline import office
from aduan.model.taxonomy import Taxonomy

from .errors import xml_text
from .review import effective_agency, effective_category, unit_of
from .schemas import MAX_ADDRESS_CHARS, MAX_ID_CHARS, MAX_URL_CHARS
from .storage import StoredRequest, as_utc

FORMATS = ("json", "xml")
# The longest value each field of `POST requests` may hold, as /v1 caps its own (the
# description's cap is `max_chars`, answered 413 like a /v1 text). Numbers get 32 characters.
FIELD_CHARS = {
    "service_code": 50,
    "lat": 32,
    "long": 32,
    "address_string": MAX_ADDRESS_CHARS,
    "media_url": MAX_URL_CHARS,
    "api_key": MAX_ID_CHARS,
    "email": 254,
    "first_name": MAX_ID_CHARS,
    "last_name": MAX_ID_CHARS,
    "phone": 50,
    "device_id": MAX_ID_CHARS,
    "account_id": MAX_ID_CHARS,
}
FIELDS = ("description", *FIELD_CHARS)


_NOT_STORED = "Accepted, not stored"
# Reporter identities: only a keyed hash is kept, to flag repeat reporters (docs/duplicates.md).
_HASHED = "Not stored; with ADUAN_REPORTER_SECRET set, its keyed hash flags repeat reporters"


def media_url_problem(value: str) -> str | None:
    """Why `value` is refused as a `media_url` (only absolute http and https URLs: a
    `javascript:` one would run in whatever page shows it), or None."""
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return "media_url must be an absolute http or https URL"
    if any(ch.isspace() for ch in value):
        return "media_url must not contain white space"
    return None


class Open311Create(BaseModel):
    """The body of `POST requests.json` (form-encoded, as the spec says, or JSON)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "service_code": "SAMPAH",
                    "description": "Sampah menumpuk di depan pasar Keputran sudah 3 hari",
                    "lat": -7.2756,
                    "long": 112.7403,
                    "address_string": "Jl. Keputran Kejambon",
                    "api_key": "<an operator or intake key>",
                }
            ]
        }
    )

    description: str = Field(..., description="The complaint (required here; max_chars)")
    service_code: str | None = Field(
        None,
        max_length=FIELD_CHARS["service_code"],
        description="A category code from services.json; empty: the model chooses",
    )
    lat: float | None = Field(None, ge=-90, le=90)
    long: float | None = Field(None, ge=-180, le=180)
    address_string: str | None = Field(
        None,
        max_length=FIELD_CHARS["address_string"],
        description="Free-text address or landmark",
    )
    media_url: str | None = Field(
        None, max_length=FIELD_CHARS["media_url"], description="An http or https URL"
    )
    api_key: str | None = Field(
        None,
        max_length=FIELD_CHARS["api_key"],
        description="Needed when ADUAN_API_KEYS is set (or send Authorization: Bearer)",
    )
    email: str | None = Field(None, max_length=FIELD_CHARS["email"], description=_HASHED)
    first_name: str | None = Field(
        None, max_length=FIELD_CHARS["first_name"], description=_NOT_STORED
    )
    last_name: str | None = Field(
        None, max_length=FIELD_CHARS["last_name"], description=_NOT_STORED
    )
    phone: str | None = Field(None, max_length=FIELD_CHARS["phone"], description=_NOT_STORED)
    device_id: str | None = Field(None, max_length=FIELD_CHARS["device_id"], description=_HASHED)
    account_id: str | None = Field(None, max_length=FIELD_CHARS["account_id"], description=_HASHED)


def create_body_openapi() -> dict[str, Any]:
    """`openapi_extra` documenting the POST body in both content types."""
    schema = Open311Create.model_json_schema()
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {"schema": schema},
                "application/json": {"schema": schema},
            },
        }
    }


def _xml_value(parent: ElementTree.Element, name: str, value: Any) -> None:
    element = ElementTree.SubElement(parent, name)
    if isinstance(value, list):
        for entry in value:
            _xml_item(element, name.rstrip("s") or "item", entry)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    elif value is not None:
        element.text = xml_text(str(value))


def _xml_item(parent: ElementTree.Element, name: str, item: dict[str, Any]) -> None:
    element = ElementTree.SubElement(parent, name)
    for key, value in item.items():
        _xml_value(element, key, value)


def render(
    items: list[dict[str, Any]], fmt: str, root: str, item: str, status: int = 200
) -> Response:
    """A list of objects as the spec's JSON array, or `<root><item>...</item></root>`."""
    if fmt == "json":
        return JSONResponse(items, status)
    element = ElementTree.Element(root)
    for entry in items:
        _xml_item(element, item, entry)
    body = ElementTree.tostring(element, encoding="utf-8", xml_declaration=True)
    return Response(body, status, media_type="application/xml")


def render_one(data: dict[str, Any], fmt: str, root: str) -> Response:
    """A single object (the service definition): JSON object or `<root>...</root>`."""
    if fmt == "json":
        return JSONResponse(data)
    element = ElementTree.Element(root)
    for key, value in data.items():
        _xml_value(element, key, value)
    body = ElementTree.tostring(element, encoding="utf-8", xml_declaration=True)
    return Response(body, media_type="application/xml")


def notice(route: str, reviewed: bool, office_name: str) -> str:
    """What the citizen is told about where the complaint went."""
    if route == "auto" or reviewed:
        return f"Aduan diteruskan ke {office_name}."
    return f"Aduan akan ditinjau petugas; perkiraan instansi: {office_name}."


def _iso(moment: Any) -> str | None:
    return as_utc(moment).isoformat(timespec="seconds") if moment else None


def request_fields(row: StoredRequest, taxonomy: Taxonomy, private: bool) -> dict[str, Any]:
    """A stored request as GeoReport v2's service request, following the review: the
    corrected category and agency, `closed` when closed, the public note as status_notes.

    Only a `private` view (an operator's key) holds the complaint text, the street address and
    the exact coordinates; anyone else gets no text, the address coarsened to the kelurahan
    and kecamatan the request was routed to, and no coordinates."""
    code = effective_category(row)
    category = taxonomy.category(code)
    agency = effective_agency(row)
    office_name = office(agency, unit_of(row)) or agency
    return {
        "service_request_id": row.id,
        "status": "closed" if row.status == "closed" else "open",
        "status_notes": row.note,
        "service_name": category.name if category else code,
        "service_code": code,
        "description": row.text if private else None,
        "agency_responsible": office_name,
        "service_notice": notice(row.route, row.corrected_agency is not None, office_name),
        "requested_datetime": _iso(row.received_at),
        "updated_datetime": _iso(row.updated_at or row.received_at),
        "expected_datetime": _iso(row.expected_at),
        "address": row.address if private else coarse_address(row),
        "address_id": None,
        "zipcode": None,
        "lat": row.latitude if private else None,
        "long": row.longitude if private else None,
        "media_url": row.media_url,
    }


def coarse_address(row: StoredRequest) -> str | None:
    """The public location of a request: its kelurahan and kecamatan, never the street."""
    parts = [f"Kelurahan {row.kelurahan}" if row.kelurahan else ""]
    parts.append(f"Kecamatan {row.kecamatan}" if row.kecamatan else "")
    return ", ".join(p for p in parts if p) or None
