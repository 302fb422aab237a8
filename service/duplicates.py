"""Duplicate and repeated reports: one problem at one place, however many citizens report it.

At intake every stored complaint gets a signature (`request_signatures`, migration 0006): a
text vector computed once, its place (resolved unit, coordinates), category, and the keyed hash
of its reporter. The search for its likely duplicates reads only the still-open rows of the same
unit (or within a radius of its coordinates) in the time window, through the (unit, time)
indexes, and ranks them by cosine similarity of the vectors, with a small bonus when the
predicted categories agree (evidence, not a filter). What it found is kept with the signature,
so the workbench shows it and a retry answers the same.

Operators merge a duplicate into its original (`request_duplicates`: the duplicate is closed with
a public note pointing to the original and follows the original's status in Open311), undo it,
or say a candidate is not a duplicate (`duplicate_verdicts`, the evidence for tuning the
threshold): `merges.py`; every change is also an event in the audit trail (`request_events`).

The vector is a signed char n-gram hash (HashingVectorizer), not the model's: the served model
changes with every reload while stored vectors must stay comparable for weeks, and the exported
encoders (ONNX) answer logits, not sentence embeddings. `VECTOR_KIND` names the recipe; rows
made by another recipe are never compared.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import HashingVectorizer
from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    and_,
    exists,
    func,
    or_,
    select,
)
from sqlalchemy.orm import Mapped, Session, aliased, mapped_column

from aduan.model.text import normalize_text

from .storage import Base, NewRequest, Store, StoredRequest, as_utc

VECTOR_KIND = "hash-charwb3-5-d512-v1"
DIMENSIONS = 512
MAX_CANDIDATES = 5
OPEN = ("open", "in_progress")
EARTH_RADIUS_M = 6_371_000.0
# Words every complaint carries (greetings, politeness, pronouns, the city): without them two
# unrelated complaints from polite citizens look alike.
_STOPWORDS = """yang di dan ke dari ini itu untuk dengan pada ada tidak tdk sudah sdh belum blm
mohon tolong bapak ibu pak bu kami saya sy kita sangat sekali agar bisa dapat juga karena krn atau
akan jadi lagi masih sampai terima kasih makasih min admin mimin selamat pagi siang sore malam warga
surabaya kota pemkot apa ya yg dgn utk dr tsb tersebut segera mas mbak kak assalamualaikum wr wb
kok sih nya adalah oleh para saat telah harap minta kepada"""
STOPWORDS = frozenset(_STOPWORDS.split())
MASKS = ("[telepon]", "[nik]", "[email]")


class RequestSignature(Base):
    """What the duplicate search compares, one row per stored complaint (migration 0006)."""

    __tablename__ = "request_signatures"

    request_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("requests.id", ondelete="CASCADE"), primary_key=True
    )
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kelurahan: Mapped[str | None] = mapped_column(String(100))
    kecamatan: Mapped[str | None] = mapped_column(String(100))
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    category: Mapped[str] = mapped_column(String(100))
    vector_kind: Mapped[str] = mapped_column(String(40))
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    # The same recipe over the address the citizen gave (None without one).
    address_vector: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The intake's answer: [{"request_id", "similarity"}], best first.
    candidates: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    reporter: Mapped[str | None] = mapped_column(String(64))
    repeat_reporter: Mapped[bool] = mapped_column(Boolean, default=False)


class RequestDuplicate(Base):
    """A merge: `request_id` is a duplicate of `original_id`; deleted on unmerge."""

    __tablename__ = "request_duplicates"

    request_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("requests.id", ondelete="CASCADE"), primary_key=True
    )
    original_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("requests.id", ondelete="CASCADE"), index=True
    )
    similarity: Mapped[float | None] = mapped_column(Float)
    merged_by: Mapped[str] = mapped_column(String(200))
    merged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # What unmerge restores.
    previous_status: Mapped[str] = mapped_column(String(20))
    previous_note: Mapped[str | None] = mapped_column(Text)


class DuplicateVerdict(Base):
    """An operator's judgement of a candidate pair: `duplicate` (a merge) or `not_duplicate`,
    with the similarity the detector gave it; appended, never changed (only unmerge drops its
    merge's `duplicate`)."""

    __tablename__ = "duplicate_verdicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("requests.id", ondelete="CASCADE"), index=True
    )
    candidate_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("requests.id", ondelete="CASCADE")
    )
    verdict: Mapped[str] = mapped_column(String(20))
    similarity: Mapped[float | None] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DuplicateCandidate(Base):
    """One suggestion made at intake: `request_id` (the later report) may duplicate
    `candidate_id` (an earlier one); indexed by the candidate, so an original shows the later
    reports that look like it."""

    __tablename__ = "duplicate_candidates"

    request_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("requests.id", ondelete="CASCADE"), primary_key=True
    )
    candidate_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("requests.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    similarity: Mapped[float] = mapped_column(Float)


class DuplicateError(ValueError):
    """A merge, unmerge or verdict that cannot be applied; the message says why."""


@dataclass(frozen=True)
class Config:
    """The search's settings (`Settings.duplicate_*`, `Settings.reporter_*`)."""

    window_days: float = 14.0
    radius_m: float = 200.0
    threshold: float = 0.55
    category_bonus: float = 0.05
    address_weight: float = 0.2
    reporter_secret: str = ""
    reporter_max: int = 10
    reporter_window_hours: float = 24.0

    @classmethod
    def from_settings(cls, settings: Any) -> Config:
        return cls(
            window_days=settings.duplicate_window_days,
            radius_m=settings.duplicate_radius_m,
            threshold=settings.duplicate_threshold,
            category_bonus=settings.duplicate_category_bonus,
            address_weight=settings.duplicate_address_weight,
            reporter_secret=settings.reporter_secret,
            reporter_max=settings.reporter_max_reports,
            reporter_window_hours=settings.reporter_window_hours,
        )


def _prepare(text: str) -> str:
    words = normalize_text(text).lower()
    for mask in MASKS:
        words = words.replace(mask, " ")
    return " ".join(w for w in words.split() if w not in STOPWORDS and not w.isdigit())


_VECTORIZER = HashingVectorizer(
    analyzer="char_wb",
    ngram_range=(3, 5),
    n_features=DIMENSIONS,
    alternate_sign=True,
    norm="l2",
    preprocessor=_prepare,
    dtype=np.float32,
)


def vectors(texts: Sequence[str]) -> np.ndarray:
    """Unit-length text vectors, one row per text (float32; stored as float16)."""
    matrix = _VECTORIZER.transform(list(texts)).toarray().astype(np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.asarray(matrix / np.where(norms == 0, 1.0, norms), dtype=np.float32)


def embed(texts: Sequence[str]) -> list[bytes]:
    """The stored form of `vectors(texts)`: float16 bytes, 1 KiB a complaint."""
    return [row.astype(np.float16).tobytes() for row in vectors(texts)]


def _unpack(blobs: Sequence[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(blobs), dtype=np.float16).reshape(len(blobs), DIMENSIONS)


def similarity(
    cosine: float, same_category: bool, address_cosine: float | None, config: Config
) -> float:
    """The detector's evidence that two complaints are one case, in 0..1: the texts' cosine,
    plus `category_bonus` when the predicted categories agree, plus `address_weight` times
    how far the addresses' cosine lies from 0.5 when both gave one (two different streets
    pull it down, the same landmark up)."""
    score = cosine + (config.category_bonus if same_category else 0.0)
    if address_cosine is not None:
        score += config.address_weight * (address_cosine - 0.5)
    return min(1.0, max(0.0, score))


def reporter_hash(secret: str, kind: str, value: str | None) -> str | None:
    """HMAC-SHA256 of a reporter's identity (`kind`: email, device_id, account_id, reporter),
    or None without a value or a secret: the identity itself is never stored."""
    value = (value or "").strip().lower()
    if not value or not secret:
        return None
    return hmac.new(secret.encode(), f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine) in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, a)))


def _merged(request_id: Any) -> Any:
    return exists().where(RequestDuplicate.request_id == request_id)


def _place(row: RequestSignature, config: Config) -> Any:
    """The SQL condition for rows at the same place: same kelurahan (else same kecamatan when
    only that is known), or within a bounding box of the radius around the coordinates."""
    s = RequestSignature
    places = []
    if row.kelurahan:
        places.append(s.kelurahan == row.kelurahan)
    elif row.kecamatan:
        places.append(s.kecamatan == row.kecamatan)
    if row.latitude is not None and row.longitude is not None:
        dlat = math.degrees(config.radius_m / EARTH_RADIUS_M)
        dlon = dlat / max(0.01, math.cos(math.radians(row.latitude)))
        places.append(
            and_(
                s.latitude.between(row.latitude - dlat, row.latitude + dlat),
                s.longitude.between(row.longitude - dlon, row.longitude + dlon),
            )
        )
    return or_(*places) if places else None


def _near(row: RequestSignature, hit: Any, config: Config) -> bool:
    """The exact test behind `_place`'s index-friendly condition."""
    if row.kelurahan and hit.kelurahan == row.kelurahan:
        return True
    if not row.kelurahan and row.kecamatan and hit.kecamatan == row.kecamatan:
        return True
    lat, lon = row.latitude, row.longitude
    if lat is None or lon is None or hit.latitude is None or hit.longitude is None:
        return False
    return distance_m(lat, lon, hit.latitude, hit.longitude) <= config.radius_m


def _address_cosines(row: RequestSignature, hits: Sequence[Any]) -> list[float | None]:
    """The cosine of `row`'s address with each hit's, None where either gave none."""
    out: list[float | None] = [None] * len(hits)
    given = [i for i, hit in enumerate(hits) if hit.address_vector]
    if row.address_vector is None or not given:
        return out
    mine = _unpack([row.address_vector])[0].astype(np.float32)
    theirs = _unpack([hits[i].address_vector for i in given]).astype(np.float32) @ mine
    for i, cosine in zip(given, theirs, strict=True):
        out[i] = float(cosine)
    return out


def find(session: Session, row: RequestSignature, config: Config) -> list[dict[str, Any]]:
    """The still-open complaints received up to `window_days` before `row` at its place whose
    similarity passes the threshold, best first, at most MAX_CANDIDATES."""
    place = _place(row, config)
    if place is None:
        return []
    s = RequestSignature
    received = as_utc(row.received_at)
    query = (
        select(
            s.request_id,
            s.vector,
            s.address_vector,
            s.category,
            s.latitude,
            s.longitude,
            s.kelurahan,
            s.kecamatan,
        )
        .join(StoredRequest, StoredRequest.id == s.request_id)
        .where(
            place,
            s.received_at >= received - timedelta(days=config.window_days),
            s.received_at <= received,
            s.request_id != row.request_id,
            s.vector_kind == row.vector_kind,
            StoredRequest.status.in_(OPEN),
            ~_merged(s.request_id),
        )
    )
    found = list(session.execute(query))
    if not found:
        return []
    near = [hit for hit in found if _near(row, hit, config)]
    if not near:
        return []
    mine = _unpack([row.vector])[0].astype(np.float32)
    cosines = _unpack([h.vector for h in near]).astype(np.float32) @ mine
    places = _address_cosines(row, near)
    scored = []
    for hit, cosine, address in zip(near, cosines, places, strict=True):
        score = similarity(float(cosine), hit.category == row.category, address, config)
        if score >= config.threshold:
            scored.append({"request_id": hit.request_id, "similarity": round(score, 4)})
    scored.sort(key=lambda c: (-c["similarity"], c["request_id"]))
    return scored[:MAX_CANDIDATES]


@dataclass(frozen=True)
class Identity:
    """Who reported one item, as the intake gave it (`kind`: email, device_id, ...)."""

    kind: str
    value: str


def record(
    store: Store,
    ids: Sequence[str],
    records: Sequence[NewRequest],
    reporters: Sequence[Identity | None],
    config: Config,
) -> list[dict[str, Any]]:
    """Store the signatures of newly saved requests and find their likely duplicates; for ids
    that have one already (an idempotent retry) answer what the first attempt found. Returns,
    per id, {"possible_duplicates": [...], "repeat_reporter": bool}."""
    with store.sessions.begin() as session:
        known = {
            sig.request_id: sig
            for sig in session.scalars(
                select(RequestSignature).where(RequestSignature.request_id.in_(list(ids)))
            )
        }
        todo = [i for i, request_id in enumerate(ids) if request_id not in known]
        blobs = embed([records[i].text for i in todo]) if todo else []
        given = [(records[i].address or "").strip() for i in todo]
        places = embed([a for a in given if a]) if any(given) else []
        place_of = iter(places)
        for i, blob, address in zip(todo, blobs, given, strict=True):
            request_id, new, who = ids[i], records[i], reporters[i]
            stored = session.get(StoredRequest, request_id)
            assert stored is not None
            sig = RequestSignature(
                request_id=request_id,
                received_at=stored.received_at,
                kelurahan=new.kelurahan,
                kecamatan=new.kecamatan,
                latitude=new.latitude,
                longitude=new.longitude,
                category=new.category,
                vector_kind=VECTOR_KIND,
                vector=blob,
                address_vector=next(place_of) if address else None,
                reporter=reporter_hash(config.reporter_secret, who.kind, who.value)
                if who
                else None,
                candidates=[],
            )
            sig.candidates = find(session, sig, config)
            sig.repeat_reporter = _repeats(session, sig, config)
            session.add(sig)
            session.add_all(
                DuplicateCandidate(
                    request_id=request_id,
                    candidate_id=c["request_id"],
                    similarity=c["similarity"],
                )
                for c in sig.candidates
            )
            session.flush()  # the next item of the batch sees this one
            known[request_id] = sig
        statuses = _statuses(
            session, [c["request_id"] for s in known.values() for c in s.candidates]
        )
        return [
            {
                "possible_duplicates": _shown(known[request_id].candidates, statuses),
                "repeat_reporter": known[request_id].repeat_reporter,
            }
            for request_id in ids
        ]


def _repeats(session: Session, sig: RequestSignature, config: Config) -> bool:
    """Whether this reporter sent more than `reporter_max` reports in the window (this one
    included): flagged for the operators, never refused."""
    if sig.reporter is None:
        return False
    since = as_utc(sig.received_at) - timedelta(hours=config.reporter_window_hours)
    earlier = session.scalar(
        select(func.count())
        .select_from(RequestSignature)
        .where(RequestSignature.reporter == sig.reporter, RequestSignature.received_at >= since)
    )
    return int(earlier or 0) + 1 > config.reporter_max


def _statuses(session: Session, ids: Sequence[str]) -> dict[str, tuple[datetime, str]]:
    if not ids:
        return {}
    query = select(StoredRequest.id, StoredRequest.received_at, StoredRequest.status).where(
        StoredRequest.id.in_(list(set(ids)))
    )
    return {rid: (as_utc(at), status) for rid, at, status in session.execute(query)}


def _shown(
    candidates: Sequence[dict[str, Any]],
    statuses: dict[str, tuple[datetime, str]],
    rejected: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """The candidates as the API shows them, with their current status (purged ones and
    those an operator said are not duplicates left out)."""
    out = []
    for c in candidates:
        if c["request_id"] in statuses and c["request_id"] not in rejected:
            at, status = statuses[c["request_id"]]
            out.append(
                {
                    "request_id": c["request_id"],
                    "similarity": c["similarity"],
                    "received_at": at.isoformat(timespec="seconds"),
                    "status": status,
                }
            )
    return out


def summary(store: Store, request_id: str) -> dict[str, Any]:
    """What the review shows about one request: its likely duplicates among earlier reports
    and the later reports that look like it (without pairs judged not to be, nor merged
    ones), the original it was merged into, and how many reports were merged into it."""
    with store.sessions.begin() as session:
        sig = session.get(RequestSignature, request_id)
        verdict = DuplicateVerdict
        rejected = frozenset(
            other
            for first, second in session.execute(
                select(verdict.request_id, verdict.candidate_id).where(
                    or_(verdict.request_id == request_id, verdict.candidate_id == request_id),
                    verdict.verdict == "not_duplicate",
                )
            )
            for other in (first, second)
            if other != request_id
        )
        candidates = sig.candidates if sig is not None else []
        later = [
            {"request_id": rid, "similarity": similarity}
            for rid, similarity in session.execute(
                select(DuplicateCandidate.request_id, DuplicateCandidate.similarity)
                .join(StoredRequest, StoredRequest.id == DuplicateCandidate.request_id)
                .where(
                    DuplicateCandidate.candidate_id == request_id,
                    StoredRequest.status.in_(OPEN),
                    ~_merged(DuplicateCandidate.request_id),
                )
                .order_by(DuplicateCandidate.similarity.desc(), DuplicateCandidate.request_id)
                .limit(MAX_CANDIDATES)
            )
        ]
        statuses = _statuses(session, [c["request_id"] for c in candidates + later])
        link = session.get(RequestDuplicate, request_id)
        merged = merged_counts(session, [request_id]).get(request_id, 0)
        return {
            "possible_duplicates": _shown(candidates, statuses, rejected),
            "later_reports": _shown(later, statuses, rejected),
            "duplicate_of": link.original_id if link else None,
            "duplicates": merged,
            "reports": merged + 1,
            "repeat_reporter": bool(sig.repeat_reporter) if sig else False,
        }


def summaries(store: Store, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """`summary` of each id (a page of the workbench's queue)."""
    return {request_id: summary(store, request_id) for request_id in ids}


def annotate(store: Store, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """For a page of the queue: per id, its merge counts, original and reporter flag."""
    if not ids:
        return {}
    with store.sessions.begin() as session:
        counts = merged_counts(session, ids)
        links = dict(
            session.execute(
                select(RequestDuplicate.request_id, RequestDuplicate.original_id).where(
                    RequestDuplicate.request_id.in_(list(ids))
                )
            ).all()
        )
        flags = dict(
            session.execute(
                select(RequestSignature.request_id, RequestSignature.repeat_reporter).where(
                    RequestSignature.request_id.in_(list(ids))
                )
            ).all()
        )
    return {
        rid: {
            "duplicate_of": links.get(rid),
            "duplicates": counts.get(rid, 0),
            "reports": counts.get(rid, 0) + 1,
            "repeat_reporter": bool(flags.get(rid, False)),
        }
        for rid in ids
    }


def merged_counts(session: Session, ids: Sequence[str]) -> dict[str, int]:
    """How many reports are merged into each of `ids` (those with none left out)."""
    query = (
        select(RequestDuplicate.original_id, func.count())
        .where(RequestDuplicate.original_id.in_(list(ids)))
        .group_by(RequestDuplicate.original_id)
    )
    return {rid: int(n) for rid, n in session.execute(query)}


def merged_condition(column: Any) -> Any:
    """SQL: the request in `column` was merged into another (the queue leaves it out)."""
    return _merged(column)


def followed_status(request: Any) -> Any:
    """SQL: the status Open311 shows for the request row `request` (an entity or alias of
    StoredRequest): its original's when it was merged, else its own."""
    original = aliased(StoredRequest)
    of_original = (
        select(original.status)
        .join(RequestDuplicate, RequestDuplicate.original_id == original.id)
        .where(RequestDuplicate.request_id == request.id)
        .scalar_subquery()
    )
    return func.coalesce(of_original, request.status)


def repeat_condition(column: Any) -> Any:
    """SQL: the request in `column` came from a flagged repeat reporter."""
    return exists().where(
        RequestSignature.request_id == column, RequestSignature.repeat_reporter.is_(True)
    )
