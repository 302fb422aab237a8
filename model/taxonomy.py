"""The complaint taxonomy: categories (derived from operator topics) and the agency registry."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .resources import default_taxonomy

KELURAHAN = "Kelurahan"
KECAMATAN = "Kecamatan"
OTHER_AGENCY = "Lainnya"
_OFFICE = re.compile(r"^\s*(kelurahan|kecamatan)\s+\S", re.IGNORECASE)


@dataclass(frozen=True)
class Category:
    code: str
    name: str
    description: str
    topics: tuple[str, ...] = ()
    group: str = ""


@dataclass(frozen=True)
class Agency:
    name: str
    code: str
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class Taxonomy:
    """Categories with their topics, and the agencies with codes and aliases."""

    categories: tuple[Category, ...]
    agencies: tuple[Agency, ...]
    default_category: str
    _topic_index: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def load(cls, path: Path | str | None = None) -> Taxonomy:
        """A taxonomy file (default: the one the package ships, `aduan/data/taxonomy.yaml`)."""
        return cls.from_dict(yaml.safe_load(taxonomy_text(path)))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Taxonomy:
        categories = tuple(
            Category(
                code=str(c["code"]),
                name=str(c["name"]),
                description=str(c.get("description", "")),
                topics=tuple(str(t) for t in c.get("topics") or ()),
                group=str(c.get("group", "")),
            )
            for c in raw["categories"]
        )
        agencies = tuple(
            Agency(name=str(a["name"]), code=str(a["code"]), aliases=tuple(a.get("aliases") or ()))
            for a in raw.get("agencies") or ()
        )
        default = str(raw.get("default_category", "LAINNYA"))
        codes = [c.code for c in categories]
        if len(set(codes)) != len(codes):
            raise ValueError("category codes in the taxonomy are not unique")
        if default not in codes:
            raise ValueError(f"default_category {default!r} is not a category code")
        index: dict[str, str] = {}
        for category in categories:
            for topic in category.topics:
                key = _topic_key(topic)
                if key in index and index[key] != category.code:
                    raise ValueError(f"topic {topic!r} is mapped to two categories")
                index[key] = category.code
        return cls(categories, agencies, default, index)

    def to_dict(self) -> dict[str, Any]:
        return {
            "default_category": self.default_category,
            "categories": [
                {
                    "code": c.code,
                    "name": c.name,
                    "description": c.description,
                    "topics": list(c.topics),
                }
                for c in self.categories
            ],
            "agencies": [
                {"name": a.name, "code": a.code, "aliases": list(a.aliases)} for a in self.agencies
            ],
        }

    def category_of_topic(self, topic: str | None) -> str:
        """The category code of an operator topic; unknown or empty topics get the default."""
        if not topic:
            return self.default_category
        return self._topic_index.get(_topic_key(topic), self.default_category)

    def is_mapped(self, topic: str) -> bool:
        return _topic_key(topic) in self._topic_index

    def category(self, code: str) -> Category | None:
        return next((c for c in self.categories if c.code == code), None)

    def agency(self, name: str) -> Agency | None:
        """Look an agency up by canonical name, code or alias (case-insensitive)."""
        key = name.strip().casefold()
        for agency in self.agencies:
            names = (agency.name, agency.code, *agency.aliases)
            if any(key == n.casefold() for n in names):
                return agency
        return None


def taxonomy_text(path: Path | str | None = None) -> str:
    """The YAML text of a taxonomy file, or of the packaged one when `path` is empty."""
    if path:
        return Path(path).read_text(encoding="utf-8")
    return default_taxonomy().read_text(encoding="utf-8")


def _topic_key(topic: str) -> str:
    return " ".join(topic.split()).casefold()


def agency_class(raw: str) -> str:
    """Collapse individual village/district offices into the `Kelurahan`/`Kecamatan` classes."""
    match = _OFFICE.match(raw)
    if match:
        return KELURAHAN if match.group(1).lower() == "kelurahan" else KECAMATAN
    return " ".join(raw.split())
