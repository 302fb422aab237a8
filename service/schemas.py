"""Request and response bodies of the HTTP API, with Indonesian examples for OpenAPI."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        # NUL cannot be stored in PostgreSQL text and never belongs in a complaint.
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("NUL characters are not allowed")
        return value


class ClassifyItem(StrictModel):
    text: str = Field(
        ...,
        description="The citizen's complaint, free text",
        examples=["sampah menumpuk di depan pasar Keputran sudah 3 hari"],
    )
    id: str | None = Field(None, max_length=200, description="Optional client id, echoed back")
    address: str | None = Field(
        None,
        max_length=1000,
        description="Optional address or landmark",
        examples=["Jl. Ngagel Jaya Tengah dekat bengkel"],
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


class ClassifyResult(BaseModel):
    id: str | None
    category: ScoredLabel
    agency: ScoredLabel
    category_top_k: list[ScoredLabel]
    agency_top_k: list[ScoredLabel]
    route: Literal["auto", "review"] = Field(
        ..., description="auto when the agency probability passes the model's threshold"
    )
    unit: Unit | None
    request_id: str | None = Field(None, description="Set when the item was stored")


class ClassifyResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: str
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
