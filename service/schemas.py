"""Request and response bodies of the HTTP API, with Indonesian examples for OpenAPI."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Field caps shared by /v1 and Open311: what a client may send for an id, an address, a URL.
MAX_ID_CHARS = 200
MAX_ADDRESS_CHARS = 1000
MAX_URL_CHARS = 2048
# C0 control characters but tab, line feed and carriage return: XML 1.0 cannot hold them (one
# in a stored address made the whole Open311 requests.xml ill-formed), PostgreSQL text cannot
# hold NUL, and no complaint needs them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def text_problem(value: str) -> str | None:
    """Why `value` is refused as text at intake (a NUL or another C0 control character), or
    None; the one rule for /v1 bodies and Open311 fields."""
    found = _CONTROL.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return "NUL characters are not allowed"
    return f"control character U+{ord(found.group()):04X} is not allowed (tab and line breaks are)"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_control(cls, value: object) -> object:
        problem = text_problem(value) if isinstance(value, str) else None
        if problem:
            raise ValueError(problem)
        return value


class ClassifyItem(StrictModel):
    text: str = Field(
        ...,
        description="The citizen's complaint, free text",
        examples=["sampah menumpuk di depan pasar Keputran sudah 3 hari"],
    )
    id: str | None = Field(
        None, max_length=MAX_ID_CHARS, description="Optional client id, echoed back"
    )
    address: str | None = Field(
        None,
        max_length=MAX_ADDRESS_CHARS,
        description="Optional address or landmark",
        examples=["Jl. Ngagel Jaya Tengah dekat bengkel"],
    )
    reporter: str | None = Field(
        None,
        max_length=MAX_ID_CHARS,
        description="Optional reporter identity (account, phone, e-mail): only a keyed hash is "
        "stored, to flag repeat reporters (with store)",
    )

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is empty or whitespace only")
        return value


class ClassifyRequest(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "id": "qlue-1001",
                            "text": "Jukir liar di trotoar Jl. Tunjungan minta uang 5 ribu",
                            "address": "Jl. Tunjungan",
                        },
                        {"text": "Lampu PJU padam di jalan Raya Darmo Indah, gelap dan rawan"},
                    ],
                    "top_k": 3,
                }
            ]
        },
    )

    items: list[ClassifyItem] = Field(
        ..., min_length=1, description="1..max_batch complaints (see /v1/info)"
    )
    top_k: int = Field(3, ge=1, le=10, description="How many ranked labels per head")
    store: bool = Field(False, description="Persist each item and return its request_id")


class ScoredLabel(BaseModel):
    label: str
    score: float = Field(..., description="Calibrated probability")


class Unit(BaseModel):
    kelurahan: str | None
    kecamatan: str | None
    office: str | None = Field(
        None, description="The concrete office when the agency is Kelurahan or Kecamatan"
    )
    source: Literal["mention", "gazetteer", "street"] | None = Field(
        None,
        description="Where the unit came from: an explicit kel./kec. mention, a gazetteer name "
        "in the address, or streets/landmarks learned from training addresses",
    )
    confidence: float | None = Field(
        None, description="How often a unit named this way is right (see bench/location.py)"
    )


class PossibleDuplicate(BaseModel):
    request_id: str
    similarity: float = Field(
        ...,
        description="0..1: the texts' cosine, a small bonus when the categories agree, and the "
        "addresses' likeness when both gave one",
    )
    received_at: str
    status: str


class ClassifyResult(BaseModel):
    id: str | None
    category: ScoredLabel
    agency: ScoredLabel
    category_top_k: list[ScoredLabel]
    agency_top_k: list[ScoredLabel]
    route: Literal["auto", "review"] = Field(
        ...,
        description="auto when the agency probability passes the model's threshold and the "
        "agency names a concrete office",
    )
    route_reason: Literal[
        "confident", "low_confidence", "no_concrete_agency", "unit_unresolved"
    ] = Field(
        ...,
        description="Why: confident (auto), low_confidence, no_concrete_agency (Lainnya), "
        "unit_unresolved (Kelurahan/Kecamatan without a resolved unit)",
    )
    unit: Unit | None = Field(None, description="null when the evidence names no unit")
    request_id: str | None = Field(
        None, description="The stored row's id, set when the item was stored"
    )
    possible_duplicates: list[PossibleDuplicate] | None = Field(
        None,
        description="With store: stored open complaints likely about the same problem at the "
        "same place, best first, at most 5 (empty when none)",
    )


class ClassifyResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    trace_id: str = Field(..., description="This HTTP request's trace id (also X-Trace-ID)")
    results: list[ClassifyResult]


class ErrorBody(BaseModel):
    error: str
    error_type: str


class CategoryInfo(BaseModel):
    code: str
    name: str
    description: str


class AgencyInfo(BaseModel):
    name: str
    code: str


class LabelsResponse(BaseModel):
    categories: list[CategoryInfo]
    agencies: list[AgencyInfo]


ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        401: "Missing or wrong API key",
        413: "Text or batch too large",
        422: "Invalid body",
        429: "Inference queue full",
        503: "Model not ready",
    }.items()
}


class ReviewItem(BaseModel):
    """A stored request as operators review it."""

    model_config = ConfigDict(protected_namespaces=())

    request_id: str = Field(..., description="The stored row's id (Open311 service_request_id)")
    received_at: str
    updated_at: str
    status: Literal["open", "in_progress", "closed"]
    route: Literal["auto", "review"]
    route_reason: str | None
    model_version: str
    client_id: str | None
    service_code: str | None
    text: str | None = Field(None, description="The complaint (personal data: never logged)")
    address: str | None
    latitude: float | None
    longitude: float | None
    category: ScoredLabel
    agency: ScoredLabel
    category_top_k: list[ScoredLabel]
    agency_top_k: list[ScoredLabel]
    unit: Unit | None
    corrected_category: str | None
    corrected_agency: str | None
    corrected_by: str | None
    corrected_at: str | None
    note: str | None = Field(None, description="Public: Open311 shows it as status_notes")
    expected_datetime: str | None
    duplicate_of: str | None = Field(None, description="The original it was merged into")
    duplicates: int = Field(0, description="Reports merged into this one")
    reports: int = Field(1, description="Reports this case gathered (itself and its duplicates)")
    repeat_reporter: bool = Field(
        False, description="Its reporter sent more reports than reporter_max_reports lately"
    )


class ReviewPage(BaseModel):
    items: list[ReviewItem]
    next_cursor: str | None = Field(
        None, description="Pass as ?cursor= for the next page; null on the last page"
    )


class AuditEvent(BaseModel):
    at: str
    actor: str = Field(..., description="The operator whose key made the change")
    field: str
    old: str | None
    new: str | None


class ReviewDetail(ReviewItem):
    history: list[AuditEvent] = Field(..., description="Every change, oldest first")
    followup: dict[str, Any] | None = Field(
        None, description="Where it stands with its office (docs/followup.md); null: not routed"
    )
    possible_duplicates: list[PossibleDuplicate] = Field(
        default_factory=list,
        description="Earlier open reports this one likely duplicates, found at intake (less "
        "those judged not to be)",
    )
    later_reports: list[PossibleDuplicate] = Field(
        default_factory=list,
        description="Later open reports that likely duplicate this one (merge them into it)",
    )


class MergeBody(StrictModel):
    original_id: str = Field(..., max_length=36, description="The request this one duplicates")


class NotDuplicateBody(StrictModel):
    candidate_id: str = Field(
        ..., max_length=36, description="A suggested request that is not the same problem"
    )


class RequestPatch(StrictModel):
    """An operator's changes; fields left out stay as they are."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "status": "in_progress",
                    "corrected_agency": "Dinas Lingkungan Hidup",
                    "corrected_category": "SAMPAH",
                    "note": "Diteruskan ke DLH, petugas dijadwalkan besok.",
                }
            ]
        },
    )

    status: Literal["open", "in_progress", "closed"] | None = None
    note: str | None = Field(
        None, max_length=2000, description="Public note (Open311 status_notes); null clears it"
    )
    corrected_agency: str | None = Field(
        None, min_length=1, description="An agency label of the live model (see /v1/labels)"
    )
    corrected_category: str | None = Field(
        None, min_length=1, description="A category code of the taxonomy (see /v1/labels)"
    )
    expected_datetime: datetime | None = Field(
        None, description="When the request should be resolved (Open311); null clears it"
    )


class ExplanationTerm(BaseModel):
    term: str
    weight: float


class ExplanationResponse(BaseModel):
    head: str
    label: str
    method: Literal["tfidf_ngrams", "leave_one_word_out"]
    terms: list[ExplanationTerm]
