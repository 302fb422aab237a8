"""Location resolution on the time split: how often a kelurahan/kecamatan is named, and how
often the named one is right.

The street/landmark index is learned from training-period addresses only, then every later
complaint with an address is resolved (address first, text as fallback) and compared with the
operators' kelurahan/kecamatan. The resolver's thresholds were chosen on the months before
(`--tune`: index up to 2022-11, measured on 2022-12..2023-01), never on the reported months.
Usage:

    .venv/bin/python bench/location.py [--data FILE] [--gazetteer FILE] [--tune]

Writes bench/results/location.json (the `--tune` run prints only); the figures are recorded in
bench/README.md.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from aduan.model.location import Gazetteer, LocationResolver, StreetIndex
from aduan.model.resources import default_data, default_gazetteer
from aduan.training.data import load_complaints, time_split

ROOT = Path(__file__).resolve().parents[1]
# Texts that name no place: the resolver must answer null for each.
NO_PLACE = [
    "tolong info jadwal vaksin",
    "mohon bantuan sembako",
    "kapan pencairan bansos bulan ini",
    "bagaimana cara mengurus akta kelahiran anak",
    "lampu jalan mati sudah seminggu mohon diperbaiki",
    "sampah belum diangkut tiga hari",
]


def _share(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None


def measure(resolver: LocationResolver, rows: list[dict[str, str]]) -> dict[str, Any]:
    """Named share and precision for the kelurahan and the kecamatan, and per source."""
    named = {"kelurahan": 0, "kecamatan": 0}
    right = {"kelurahan": 0, "kecamatan": 0}
    by_source: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0.0])
    for row in rows:
        unit = resolver.resolve(row["address"], row["text"])
        for level in ("kelurahan", "kecamatan"):
            value = getattr(unit, level) if unit else None
            if value:
                named[level] += 1
                right[level] += value == row[level]
        if unit is not None and unit.kelurahan:
            source = getattr(unit, "source", None) or "unknown"
            stats = by_source[source]
            stats[0] += 1
            stats[1] += unit.kelurahan == row["kelurahan"]
            stats[2] += getattr(unit, "confidence", None) or 0.0
    out: dict[str, Any] = {"rows": len(rows)}
    for level in ("kelurahan", "kecamatan"):
        out[level] = {
            "named": _share(named[level], len(rows)),
            "right_when_named": _share(right[level], named[level]),
            "right_of_all": _share(right[level], len(rows)),
        }
    out["kelurahan_by_source"] = {
        source: {
            "named": _share(int(n), len(rows)),
            "right_when_named": _share(int(hits), int(n)),
            "mean_confidence": round(conf / n, 4) if n else None,
        }
        for source, (n, hits, conf) in sorted(by_source.items())
    }
    out["no_place_texts_named"] = sum(resolver.resolve(None, text) is not None for text in NO_PLACE)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--gazetteer", type=Path, default=default_gazetteer())
    parser.add_argument("--tune", action="store_true", help="the earlier months, print only")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "location.json")
    args = parser.parse_args()
    if args.tune:
        train_until, valid_from, valid_until = "2022-11-30", "2022-12-01", "2023-01-31"
    else:
        train_until, valid_from, valid_until = "2023-01-31", "2023-02-01", None
    frame = load_complaints(args.data)
    train, valid = time_split(frame, train_until, valid_from, valid_until)
    valid = valid[valid["address"] != ""]
    gazetteer = Gazetteer.load(args.gazetteer)
    rows = valid[["address", "text", "kelurahan", "kecamatan"]].to_dict("records")
    index = StreetIndex.learn(zip(train["address"], train["kelurahan"], strict=True), gazetteer)
    results = {
        "split": {"train_until": train_until, "valid_from": valid_from, "valid_until": valid_until},
        "gazetteer_only": measure(LocationResolver(gazetteer), rows),
        "gazetteer_and_learned_streets": measure(LocationResolver(gazetteer, index), rows),
        "learned_ngrams": len(index.grams),
    }
    if not args.tune:
        # The resolver before the evidence thresholds (measured with this script at commit
        # b5d80e5) stays in the file for comparison.
        if args.output.is_file():
            before = json.loads(args.output.read_text()).get("before_evidence_thresholds")
            if before:
                results["before_evidence_thresholds"] = before
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
