"""Resolving a complaint's kelurahan and kecamatan from a free-text address or the text itself,
only when there is enough evidence, saying where the answer came from and how sure it is.

Three sources (`Unit.source`), in order of trust:
1. `mention`: an explicit "kel. X" / "kec. Y", fuzzy-matched against the gazetteer;
2. `gazetteer`: a kelurahan/kecamatan name appearing as whole words ("jemurwonosari" or
   "Jemur Wonosari"), named when the learned streets agree or say nothing;
3. `street`: streets and landmarks learned from training addresses: every word n-gram (1-3 words)
   of a normalised address votes for the kelurahan it was seen with, weighted by how often and
   how exclusively it was seen there.
Sources 2 and 3 read the address only; in the complaint's own text only explicit mentions count
(a common word such as "bantuan" or "info" is no evidence of a place).

`Unit.confidence` estimates how often a unit named that way is right (bench/location.py measures
it); below `MIN_CONFIDENCE`, or with too little evidence, the answer is None.
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
    r"(?=$|[,.;/()\d]|\s+(?:kec(?:amatan)?|kel(?:urahan)?|rt|rw|kota|surabaya|no)\b)"
)
MIN_SUPPORT = 1
# Sources of a resolved unit (`Unit.source`).
MENTION = "mention"
GAZETTEER = "gazetteer"
STREET = "street"
# Chosen on the months before the reported ones (bench/location.py --tune), never on them.
# The rule: the most complaints named while the named kelurahan stays right >= 89% there.
MENTION_CONFIDENCE = 0.95  # explicit "kel./kec." mentions were right in every measured case
GAZETTEER_CONFIDENCE = 0.7  # a name alone: kelurahan names are street names elsewhere too
GAZETTEER_VOTE = 0.1  # a name found beside learned streets: added to their normalised shares
MIN_CONFIDENCE = 0.55  # the leading unit's share of the evidence; below it, no unit is named
MIN_VOTES = 2.0  # the least raw street evidence to count at all (a pure bigram seen 3x: 2.8)
MAX_WINDOW = 4  # longest gazetteer name in words


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens with abbreviations expanded and numbers dropped."""
    out = []
    for raw in _TOKEN.findall(text.lower()):
        word = _ABBREVIATIONS.get(raw, _ABBREVIATIONS.get(raw.rstrip("."), raw.rstrip(".")))
        out.append(word)
    return out


def ngrams(words: list[str], max_n: int = 3, min_n: int = 1) -> Iterable[str]:
    for n in range(min_n, max_n + 1):
        for i in range(len(words) - n + 1):
            gram = words[i : i + n]
            if n == 1 and (gram[0] in _STOP or len(gram[0]) < 3):
                continue
            if gram[0] in _STOP and gram[-1] in _STOP:
                continue
            yield " ".join(gram)


@dataclass(frozen=True)
class Unit:
    """A resolved kelurahan (with its kecamatan) or a kecamatan alone, with the `source` of the
    evidence and a `confidence` (for the kelurahan when one is named, else the kecamatan)."""

    kelurahan: str | None
    kecamatan: str | None
    source: str | None = None
    confidence: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kelurahan": self.kelurahan,
            "kecamatan": self.kecamatan,
            "source": self.source,
            "confidence": self.confidence,
        }


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
        """Gazetteer names appearing as whole words in the text, spaces ignored ("jemurwonosari"
        = "Jemur Wonosari"; "sembako" does not contain a name); the longest match wins."""
        words = [w for w in tokens(text) if w]
        found_kel: list[str] = []
        found_kec: list[str] = []
        for n in range(1, MAX_WINDOW + 1):
            for i in range(len(words) - n + 1):
                key = "".join(words[i : i + n])
                if key in self._compact_kel:
                    found_kel.append(self._compact_kel[key])
                if key in self._compact_kec:
                    found_kec.append(self._compact_kec[key])
        return max(found_kel, key=len, default=None), max(found_kec, key=len, default=None)


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

    def votes(self, text: str) -> dict[str, float]:
        """Each kelurahan's raw vote from the text's known n-grams (not normalised: how much
        evidence there is matters as much as who leads)."""
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
        return dict(votes)

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
    """Kelurahan and kecamatan of a complaint from its address (or else its text), or None
    when the evidence is too thin."""

    def __init__(self, gazetteer: Gazetteer, streets: StreetIndex | None = None) -> None:
        self.gazetteer = gazetteer
        self.streets = streets or StreetIndex({})

    def resolve(self, address: str | None, text: str | None = None) -> Unit | None:
        """The address first; when it names nothing, explicit "kel./kec." mentions in the
        complaint's text (names and streets in running text were measured too unreliable:
        right 69% and 64% of the time)."""
        if address and address.strip():
            unit = self._resolve_address(address)
            if unit is not None:
                return unit
        if text and text.strip():
            kel, kec = self._mentions(text)
            if kel is not None:
                return Unit(
                    kel, self.gazetteer.kecamatan_of.get(kel, kec), MENTION, MENTION_CONFIDENCE
                )
            if kec is not None:
                return Unit(None, kec, MENTION, MENTION_CONFIDENCE)
        return None

    def _mentions(self, source: str) -> tuple[str | None, str | None]:
        kel = kec = None
        for kind, name in _MENTION.findall(" ".join(tokens(source))):
            if kind.startswith("kel") and kel is None:
                kel = self.gazetteer.match_kelurahan(name)
            elif kind.startswith("kec") and kec is None:
                kec = self.gazetteer.match_kecamatan(name)
        return kel, kec

    def _resolve_address(self, source: str) -> Unit | None:
        kecamatan_of = self.gazetteer.kecamatan_of
        kel, kec = self._mentions(source)
        if kel is not None:
            return Unit(kel, kecamatan_of.get(kel, kec), MENTION, MENTION_CONFIDENCE)
        votes = self.streets.votes(source)
        if kec is not None:  # an explicit kecamatan rules out kelurahan elsewhere
            votes = {k: v for k, v in votes.items() if kecamatan_of.get(k) == kec}
        named_kel, named_kec = self.gazetteer.find_in(source)
        if kec is not None and named_kel and kecamatan_of.get(named_kel) != kec:
            named_kel = None
        best, confidence, source_kind = _decide(votes, named_kel)
        if best is not None and confidence >= MIN_CONFIDENCE:
            return Unit(best, kecamatan_of.get(best), source_kind, confidence)
        if kec is not None:
            return Unit(None, kec, MENTION, MENTION_CONFIDENCE)
        by_kecamatan: defaultdict[str, float] = defaultdict(float)
        for name, vote in votes.items():
            by_kecamatan[kecamatan_of[name]] += vote
        best, confidence, source_kind = _decide(by_kecamatan, named_kec)
        if best is not None and confidence >= MIN_CONFIDENCE:
            return Unit(None, best, source_kind, confidence)
        return None


def _decide(votes: dict[str, float], named: str | None) -> tuple[str | None, float, str]:
    """The leading name, its share of the evidence and where it came from. Street votes count
    only when there are enough of them; a gazetteer name found in the text adds
    `GAZETTEER_VOTE` to the normalised shares (kelurahan names are street names too: "Jalan
    Ngagel Jaya" is not in Ngagel), or stands alone with `GAZETTEER_CONFIDENCE`."""
    total = sum(votes.values())
    shares = {k: v / total for k, v in votes.items()} if total >= MIN_VOTES else {}
    if named and not shares:
        return named, GAZETTEER_CONFIDENCE, GAZETTEER
    if named:
        shares[named] = shares.get(named, 0.0) + GAZETTEER_VOTE
    best = _best(shares)
    if best is None:
        return None, 0.0, STREET
    confidence = round(shares[best] / sum(shares.values()), 3)
    return best, confidence, GAZETTEER if best == named else STREET


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
