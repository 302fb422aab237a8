"""Location resolution on the time split: how often the kelurahan and kecamatan are right.

The street/landmark index is learned from training-period addresses only, then every later
complaint with an address is resolved (address first, text as fallback) and compared with the
operators' kelurahan/kecamatan. Usage:

    .venv/bin/python bench/location.py [--data FILE] [--gazetteer FILE]

Writes bench/results/location.json; the figures are recorded in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aduan.model.location import Gazetteer, LocationResolver, StreetIndex
from aduan.model.resources import default_data, default_gazetteer
from aduan.training.data import load_complaints, time_split

ROOT = Path(__file__).resolve().parents[1]


def accuracy(resolver: LocationResolver, rows: list[dict[str, str]]) -> dict[str, float]:
    kel_hits = kel_total = kec_hits = 0
    for row in rows:
        unit = resolver.resolve(row["address"], row["text"])
        kec_hits += bool(unit and unit.kecamatan == row["kecamatan"])
        if row["kelurahan"]:
            kel_total += 1
            kel_hits += bool(unit and unit.kelurahan == row["kelurahan"])
    return {
        "kelurahan_accuracy": round(kel_hits / kel_total, 4),
        "kecamatan_accuracy": round(kec_hits / len(rows), 4),
        "rows": len(rows),
        "rows_with_kelurahan": kel_total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--gazetteer", type=Path, default=default_gazetteer())
    parser.add_argument("--train-until", default="2023-01-31")
    parser.add_argument("--valid-from", default="2023-02-01")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "location.json")
    args = parser.parse_args()
    frame = load_complaints(args.data)
    train, valid = time_split(frame, args.train_until, args.valid_from)
    valid = valid[valid["address"] != ""]
    gazetteer = Gazetteer.load(args.gazetteer)
    rows = valid[["address", "text", "kelurahan", "kecamatan"]].to_dict("records")
    index = StreetIndex.learn(zip(train["address"], train["kelurahan"], strict=True), gazetteer)
    results = {
        "split": {"train_until": args.train_until, "valid_from": args.valid_from},
        "gazetteer_only": accuracy(LocationResolver(gazetteer), rows),
        "gazetteer_and_learned_streets": accuracy(LocationResolver(gazetteer, index), rows),
        "learned_ngrams": len(index.grams),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
