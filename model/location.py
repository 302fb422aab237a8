"""Resolving a complaint's kelurahan and kecamatan from a free-text address or the text itself.

Three sources, in order of trust:
1. an explicit "kel. X" / "kec. Y" mention, fuzzy-matched against the gazetteer;
2. a gazetteer name appearing in the text (spaces ignored: "jemurwonosari" = "Jemur Wonosari");
3. streets and landmarks learned from training addresses: every word n-gram (1-3 words) of a
   normalised address votes for the kelurahan it was seen with, weighted by how often and how
   exclusively it was seen there.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rapidfuzz import fuzz, process

from .artifacts import LOCATIONS
from .resources import default_gazetteer

_ABBREVIATIONS = {
    "jl": "jalan",
    "jln": "jalan",
    "jl.": "jalan",
    "kel": "kelurahan",
    "kel.": "kelurahan",
    "kec": "kecamatan",
    "kec.": "kecamatan",
    "gg": "gang",
    "gg.": "gang",
    "perum": "perumahan",
    "perm": "perumahan",
    "sby": "surabaya",
    "ds": "desa",
    "kp": "kampung",
}
_STOP = {
    "jalan",
    "surabaya",
    "kota",
    "rt",
    "rw",
    "no",
    "nomor",
    "nomer",
    "gang",
    "depan",
    "dekat",
    "sebelah",
    "samping",
    "belakang",
    "kelurahan",
    "kecamatan",
    "di",
    "dan",
    "ke",
    "yang",
    "jawa",
    "timur",
    "barat",
    "utara",
    "selatan",
    "raya",
    "blok",
    "indonesia",
    "sekitar",
    "perumahan",
    "rumah",
    "tengah",
    "the",
    "dari",
    "area",
    "wilayah",
    "lingkungan",
    "kampung",
}
_TOKEN = re.compile(r"[a-z]+\.?")
_MENTION = re.compile(
    r"\b(kel(?:urahan)?|kec(?:amatan)?)\b\.?\s*([a-z][a-z ]{2,30}?)"
    r"(?=$|[,.;/()\d]|\s+(?:kec|kel|rt|rw|kota|surabaya|no)\b)"
)
MIN_SUPPORT = 1
GAZETTEER_VOTE = 0.2


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens with abbreviations expanded and numbers dropped."""
    out = []
    for raw in _TOKEN.findall(text.lower()):
        word = _ABBREVIATIONS.get(raw, _ABBREVIATIONS.get(raw.rstrip("."), raw.rstrip(".")))
        out.append(word)
    return out


def ngrams(words: list[str], max_n: int = 3) -> Iterable[str]:
    for n in range(1, max_n + 1):
        for i in range(len(words) - n + 1):
            gram = words[i : i + n]
            if n == 1 and (gram[0] in _STOP or len(gram[0]) < 3):
                continue
            if gram[0] in _STOP and gram[-1] in _STOP:
                continue
            yield " ".join(gram)


@dataclass(frozen=True)
class Unit:
    kelurahan: str | None
    kecamatan: str | None

    def to_dict(self) -> dict[str, str | None]:
        return {"kelurahan": self.kelurahan, "kecamatan": self.kecamatan}


class Gazetteer:
    """Kelurahan -> kecamatan, with compact (space-free) lookups."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.kecamatan_of: dict[str, str] = {k: c for k, c in pairs}
        self.kecamatans = sorted(set(self.kecamatan_of.values()))
        self._compact_kel = {_compact(k): k for k in self.kecamatan_of}
        self._compact_kec = {_compact(c): c for c in self.kecamatans}

    @classmethod
    def load(cls, path: Path | str | None = None) -> Gazetteer:
        """The gazetteer CSV (default: the shared data's)."""
        path = path or default_gazetteer()
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        if not rows or {"kelurahan", "kecamatan"} - set(rows[0]):
            raise ValueError(f"{path}: expected columns kelurahan, kecamatan")
        return cls((r["kelurahan"].strip(), r["kecamatan"].strip()) for r in rows)

    def match_kelurahan(self, name: str, cutoff: float = 85) -> str | None:
        return _fuzzy(name, self._compact_kel, cutoff)

    def match_kecamatan(self, name: str, cutoff: float = 85) -> str | None:
        return _fuzzy(name, self._compact_kec, cutoff)

    def find_in(self, text: str) -> tuple[str | None, str | None]:
        """Gazetteer names contained in the text (longest match first, spaces ignored)."""
        compact = _compact(text)
        kel = max((k for c, k in self._compact_kel.items() if c in compact), key=len, default=None)
        kec = max((k for c, k in self._compact_kec.items() if c in compact), key=len, default=None)
        return kel, kec


def _compact(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.lower())


def _fuzzy(name: str, choices: dict[str, str], cutoff: float) -> str | None:
    key = _compact(name)
    if not key:
        return None
    if key in choices:
        return choices[key]
    found = process.extractOne(key, list(choices), scorer=fuzz.ratio, score_cutoff=cutoff)
    return choices[found[0]] if found else None


class StreetIndex:
    """Word n-grams of training addresses with the kelurahan counts they were seen with."""

    def __init__(self, grams: dict[str, dict[str, int]]) -> None:
        self.grams = grams

    @classmethod
    def learn(
        cls, rows: Iterable[tuple[str, str]], gazetteer: Gazetteer, min_support: int = MIN_SUPPORT
    ) -> StreetIndex:
        """Learn from (address, kelurahan) pairs; kelurahan names are matched to the gazetteer."""
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for address, kelurahan in rows:
            kel = gazetteer.match_kelurahan(kelurahan) if kelurahan else None
            if not kel or not address:
                continue
            for gram in set(ngrams(tokens(address))):
                counts[gram][kel] += 1
        grams = {g: dict(c) for g, c in counts.items() if sum(c.values()) >= min_support}
        return cls(grams)

    def votes(self, text: str) -> defaultdict[str, float]:
        """Each kelurahan's share of the votes cast by the text's known n-grams (sums to 1)."""
        votes: defaultdict[str, float] = defaultdict(float)
        for gram in set(ngrams(tokens(text))):
            seen = self.grams.get(gram)
            if not seen:
                continue
            support = sum(seen.values())
            # Frequent, exclusive and longer n-grams (street names) weigh most.
            weight = math.log1p(support) * len(gram.split())
            for kel, count in seen.items():
                purity = count / support
                votes[kel] += purity * purity * weight
        total = sum(votes.values())
        return defaultdict(float, {k: v / total for k, v in votes.items()})

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "grams": self.grams}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreetIndex:
        return cls(
            {
                str(g): {str(k): int(n) for k, n in c.items()}
                for g, c in data.get("grams", {}).items()
            }
        )


class LocationResolver:
    """Kelurahan and kecamatan of a complaint from its address (or else its text)."""

    def __init__(self, gazetteer: Gazetteer, streets: StreetIndex | None = None) -> None:
        self.gazetteer = gazetteer
        self.streets = streets or StreetIndex({})

    def resolve(self, address: str | None, text: str | None = None) -> Unit | None:
        for source in (address, text):
            if source and source.strip():
                unit = self._resolve_one(source)
                if unit.kelurahan or unit.kecamatan:
                    return unit
        return None

    def _resolve_one(self, source: str) -> Unit:
        lowered = " ".join(tokens(source))
        kel = kec = None
        for kind, name in _MENTION.findall(lowered):
            if kind.startswith("kel") and kel is None:
                kel = self.gazetteer.match_kelurahan(name)
            elif kind.startswith("kec") and kec is None:
                kec = self.gazetteer.match_kecamatan(name)
        if kel is not None:
            return Unit(kel, self.gazetteer.kecamatan_of.get(kel, kec))
        shares = self.streets.votes(source)
        found_kel, found_kec = self.gazetteer.find_in(source)
        # Kelurahan names are also street names ("Jalan Ngagel Jaya" is not in Ngagel), so a
        # name found in the text is one more vote, decisive only when nothing was learned.
        gazetteer_weight = GAZETTEER_VOTE if shares else 1.0
        if found_kel:
            shares[found_kel] += gazetteer_weight
        if kec is not None:
            shares = defaultdict(
                float,
                {k: v for k, v in shares.items() if self.gazetteer.kecamatan_of.get(k) == kec},
            )
        kel = _best(shares)
        if kec is None:
            by_kecamatan: defaultdict[str, float] = defaultdict(float)
            for name, share in shares.items():
                by_kecamatan[self.gazetteer.kecamatan_of[name]] += share
            if found_kec:
                by_kecamatan[found_kec] += gazetteer_weight
            kec = _best(by_kecamatan)
        return Unit(kel, kec)


def _best(scores: dict[str, float]) -> str | None:
    """The highest-scoring name; ties go to the alphabetically first, for determinism."""
    return min(scores.items(), key=lambda kv: (-kv[1], kv[0]))[0] if scores else None


def load_resolver(model_dir: Path, gazetteer: Path | None = None) -> LocationResolver | None:
    """The gazetteer plus the model directory's learned streets (`locations.json`, when there);
    None when the gazetteer file is missing."""
    gazetteer = gazetteer or default_gazetteer()
    if not gazetteer.is_file():
        return None
    streets = None
    path = model_dir / LOCATIONS
    if path.is_file():
        streets = StreetIndex.from_json(json.loads(path.read_text(encoding="utf-8")))
    return LocationResolver(Gazetteer.load(gazetteer), streets)
