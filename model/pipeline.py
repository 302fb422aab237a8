"""A loaded model directory ready to answer: classifier, location resolver, taxonomy and the
validation figures, with one `run` that the HTTP service, `aduan classify` and file backfills
share, so every surface gives the same answer for the same complaint."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import artifacts
from .classifier import ComplaintClassifier, Prediction, Scored
from .location import LocationResolver, Unit, load_resolver
from .taxonomy import KECAMATAN, KELURAHAN, OTHER_AGENCY, Taxonomy

log = logging.getLogger(__name__)

MAX_TOP_K = 10
# The one prediction a freshly loaded pipeline (and whatever runs it) makes before it serves.
WARM_UP_TEXT = "warm-up: lampu jalan padam"
ROUTE_HEAD = "agency"  # the head whose calibrated probability decides auto or review

# Why a complaint was routed as it was (`Routed.route_reason`), a closed set.
CONFIDENT = "confident"  # auto: the agency probability passes the model's threshold
LOW_CONFIDENCE = "low_confidence"  # review: it does not
NO_CONCRETE_AGENCY = "no_concrete_agency"  # review: `Lainnya` names no office to send it to
UNIT_UNRESOLVED = "unit_unresolved"  # review: `Kelurahan`/`Kecamatan` but no resolved unit
ROUTE_REASONS = (CONFIDENT, LOW_CONFIDENCE, NO_CONCRETE_AGENCY, UNIT_UNRESOLVED)


def office(agency: str, unit: Unit | None) -> str | None:
    """The concrete office for the `Kelurahan`/`Kecamatan` agency classes."""
    if unit is None:
        return None
    if agency == KELURAHAN and unit.kelurahan:
        return f"Kelurahan {unit.kelurahan}"
    if agency == KECAMATAN and unit.kecamatan:
        return f"Kecamatan {unit.kecamatan}"
    return None


def decide_route(agency: Scored, threshold: float, office_name: str | None) -> tuple[str, str]:
    """(route, route_reason), the one routing rule: auto when the best agency's calibrated
    probability reaches the model's threshold for it; review, whatever its score, when the
    agency names no concrete office (`Lainnya`, or `Kelurahan`/`Kecamatan` whose unit is
    unknown)."""
    if agency.label == OTHER_AGENCY:
        return "review", NO_CONCRETE_AGENCY
    if agency.label in (KELURAHAN, KECAMATAN) and office_name is None:
        return "review", UNIT_UNRESOLVED
    return ("auto", CONFIDENT) if agency.score >= threshold else ("review", LOW_CONFIDENCE)


@dataclass(frozen=True)
class Routed:
    """One complaint's answer: ranked labels per head, the resolved unit and office, the route
    with the reason for it, and the model version that produced it."""

    prediction: Prediction
    unit: Unit | None
    office: str | None
    route: str
    model_version: str
    route_reason: str
    # Share of the text's words outside the model's vocabulary (drift monitoring); None when
    # the model kind cannot tell.
    unknown_words: float | None = None

    @property
    def heads(self) -> dict[str, list[Scored]]:
        return self.prediction.heads

    def to_dict(self, top_k: int = 3) -> dict[str, Any]:
        """The answer every surface gives (the HTTP result, `aduan classify`, backfills, the
        stored row): labels, scores (6 decimals), top-k, route, unit, as plain data. The one
        place the answer is shaped; its keys come in the order the API documents them."""
        out: dict[str, Any] = {}
        for head, ranked in self.heads.items():
            out[head] = _scored(ranked[0])
        for head, ranked in self.heads.items():
            out[f"{head}_top_k"] = [_scored(s) for s in ranked[:top_k]]
        out["route"] = self.route
        out["route_reason"] = self.route_reason
        unit = self.unit
        out["unit"] = (
            None
            if unit is None
            else {
                "kelurahan": unit.kelurahan,
                "kecamatan": unit.kecamatan,
                "office": self.office,
                "source": unit.source,
                "confidence": unit.confidence,
            }
        )
        return out


def flat_labels(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer's (`Routed.to_dict`) best labels, their scores and the route as flat fields:
    the first columns of a backfill's CSV/Parquet output, and what a request log records."""
    return {
        "category": answer["category"]["label"],
        "category_score": answer["category"]["score"],
        "agency": answer["agency"]["label"],
        "agency_score": answer["agency"]["score"],
        "route": answer["route"],
        "route_reason": answer["route_reason"],
    }


def _scored(scored: Scored) -> dict[str, Any]:
    return {"label": scored.label, "score": round(scored.score, 6)}


class Pipeline:
    """Everything the service holds for one model version; replaced as a whole on reload."""

    def __init__(
        self,
        classifier: ComplaintClassifier,
        resolver: LocationResolver | None,
        taxonomy: Taxonomy,
        metrics: dict[str, Any],
    ) -> None:
        self.classifier = classifier
        self.resolver = resolver
        self.taxonomy = taxonomy
        self.metrics = metrics

    @classmethod
    def load(
        cls,
        model_dir: Path | str,
        gazetteer: Path | None = None,
        engine: str = "auto",
        threads: int = 0,
    ) -> Pipeline:
        """Load a model directory; raises `ModelDirError` saying why when it is unusable."""
        model_dir = Path(model_dir)
        classifier = ComplaintClassifier.load(model_dir, engine=engine, threads=threads)
        taxonomy = Taxonomy.load(model_dir / artifacts.TAXONOMY)
        metrics_path = model_dir / artifacts.METRICS
        metrics = artifacts.read_json(metrics_path) if metrics_path.is_file() else {}
        resolver = load_resolver(model_dir, gazetteer)
        if resolver is None:
            log.warning("gazetteer %s not found: locations will not be resolved", gazetteer)
        return cls(classifier, resolver, taxonomy, metrics)

    @property
    def version(self) -> str:
        return self.classifier.version

    def run(self, items: list[tuple[str, str | None]], top_k: int = MAX_TOP_K) -> list[Routed]:
        """(text, address) pairs -> answers, in one model call."""
        texts = [text for text, _ in items]
        predictions = self.classifier.predict(texts, top_k=top_k)
        unknown = self.classifier.unknown_share(texts)
        threshold = self.classifier.thresholds[ROUTE_HEAD]
        out = []
        for i, ((text, address), prediction) in enumerate(zip(items, predictions, strict=True)):
            unit = self.resolver.resolve(address, text) if self.resolver else None
            agency = prediction.best(ROUTE_HEAD)
            office_name = office(agency.label, unit)
            route, reason = decide_route(agency, threshold, office_name)
            share = None if unknown is None or math.isnan(unknown[i]) else float(unknown[i])
            out.append(Routed(prediction, unit, office_name, route, self.version, reason, share))
        return out
