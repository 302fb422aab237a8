"""The duplicate detector on real complaints: candidate pairs, judged by reading, and the
detector's precision and recall at the shipped threshold.

Candidate pairs are complaints of the shared file in the same kelurahan received within 14 days
of each other whose text similarity (`aduan.service.duplicates.vectors`, cosine) is at least
FLOOR. A stratified sample of them (by similarity band) was judged by reading both texts
against bench/duplicates/GUIDELINE.md; bench/duplicates/pairs.csv keeps only the row ids (the
file's `id` column) and the label, never the texts.

Usage:

    .venv/bin/python bench/duplicates.py sample --out /tmp/pairs.csv  # has texts: never commit
    .venv/bin/python bench/duplicates.py evaluate                              # the figures

`evaluate` writes bench/results/duplicates.json: per threshold the precision (judged pairs
above it that are duplicates, each band weighted by how many candidate pairs it stands for),
the recall among the judged duplicates (pairs above FLOOR: a duplicate pair below the floor is
not counted, so this is recall above the floor), and the share of complaints that would have
been shown a likely duplicate (at least one earlier candidate above the threshold). The
detector's category bonus is applied with the operators' topic as the category (the model's
prediction agrees with it on most rows).
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from aduan.model.resources import default_data
from aduan.service.duplicates import VECTOR_KIND, Config, similarity, vectors

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT / "bench" / "duplicates" / "pairs.csv"
RESULTS = ROOT / "bench" / "results" / "duplicates.json"
WINDOW_DAYS = 14
FLOOR = 0.3
BANDS = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 1.01)]
PER_BAND = 50
SEED = 23
WEIGHTS = (0.0, 0.2, 0.3, 0.5)


def load(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"id": str})
    frame["created_at"] = pd.to_datetime(frame["created_at"])
    frame = frame[frame["kelurahan"].notna() & (frame["kelurahan"].astype(str).str.strip() != "")]
    return frame.sort_values(["created_at", "id"]).reset_index(drop=True)


def candidates(frame: pd.DataFrame, floor: float = FLOOR) -> pd.DataFrame:
    """Every (earlier, later) pair in the same kelurahan within the window, with its cosine
    and whether the topics agree, for cosines of at least `floor`."""
    matrix = vectors(frame["text"].astype(str).tolist())
    addresses = frame["address"].fillna("").astype(str).str.strip()
    places = vectors(addresses.tolist())
    has_address = (addresses != "").to_numpy()
    window = np.timedelta64(WINDOW_DAYS, "D")
    rows = []
    for _, group in frame.groupby("kelurahan"):
        index = group.index.to_numpy()
        times = group["created_at"].to_numpy()
        topics = group["topic"].fillna("").to_numpy()
        sims = matrix[index] @ matrix[index].T
        near = places[index] @ places[index].T
        known = has_address[index]
        for j in range(len(index)):
            for i in range(j):
                if times[j] - times[i] <= window and sims[i, j] >= floor:
                    rows.append(
                        (
                            frame.at[index[i], "id"],
                            frame.at[index[j], "id"],
                            float(sims[i, j]),
                            bool(topics[i] and topics[i] == topics[j]),
                            float(near[i, j]) if known[i] and known[j] else np.nan,
                        )
                    )
    columns = ["id_a", "id_b", "cosine", "same_topic", "address_cosine"]
    return pd.DataFrame(rows, columns=columns)


def score(pairs: pd.DataFrame, config: Config) -> pd.Series:
    """The detector's similarity (`duplicates.similarity`) of each pair."""
    return pd.Series(
        [
            similarity(cosine, same, None if np.isnan(place) else place, config)
            for cosine, same, place in zip(
                pairs["cosine"], pairs["same_topic"], pairs["address_cosine"], strict=True
            )
        ],
        index=pairs.index,
    )


def band_of(value: float) -> int:
    return next(b for b, (lo, hi) in enumerate(BANDS) if lo <= value < hi)


def sample(frame: pd.DataFrame, pairs: pd.DataFrame, out: Path) -> None:
    """PER_BAND pairs a similarity band, with both texts, for reading (outside the repo)."""
    rng = random.Random(SEED)
    pairs = pairs.assign(band=pairs["cosine"].map(band_of))
    picked = []
    for b in range(len(BANDS)):
        inside = pairs[pairs["band"] == b].index.tolist()
        picked += rng.sample(inside, min(PER_BAND, len(inside)))
    text = frame.set_index("id")
    chosen = pairs.loc[picked].copy()
    chosen["text_a"] = chosen["id_a"].map(text["text"])
    chosen["text_b"] = chosen["id_b"].map(text["text"])
    chosen["address_a"] = chosen["id_a"].map(text["address"])
    chosen["address_b"] = chosen["id_b"].map(text["address"])
    chosen.to_csv(out, index=False)
    print(f"{len(chosen)} pairs to judge -> {out}")


def evaluate(
    frame: pd.DataFrame, pairs: pd.DataFrame, judged: pd.DataFrame, config: Config | None = None
) -> dict[str, Any]:
    config = config or Config()
    merged = judged.merge(pairs, on=["id_a", "id_b"], how="left", validate="one_to_one")
    missing = int(merged["cosine"].isna().sum())
    merged = merged.dropna(subset=["cosine"])
    merged["score"] = score(merged, config)
    merged["band"] = merged["cosine"].map(band_of)
    population = Counter(pairs["cosine"].map(band_of))
    sampled = Counter(merged["band"])
    weight = merged["band"].map(lambda b: population[b] / sampled[b])
    pairs_score = score(pairs, config)
    complaints = len(frame)
    rows = []
    for threshold in np.round(np.arange(0.3, 0.96, 0.05), 2):
        above = merged["score"] >= threshold
        dup = merged["label"] == 1
        w_above = float(weight[above].sum())
        precision = float(weight[above & dup].sum()) / w_above if w_above else None
        recall = float(weight[above & dup].sum() / weight[dup].sum()) if dup.any() else None
        later = pairs.loc[pairs_score >= threshold, "id_b"].nunique()
        rows.append(
            {
                "threshold": float(threshold),
                "precision": None if precision is None else round(precision, 3),
                "recall_above_floor": None if recall is None else round(recall, 3),
                "judged_above": int(above.sum()),
                "candidate_pairs_above": int((pairs_score >= threshold).sum()),
                "share_of_complaints_flagged": round(later / complaints, 4),
            }
        )
    shipped = next(r for r in rows if abs(r["threshold"] - config.threshold) < 1e-9)
    return {
        "data": "surabaya/complaints_2022-01_2023-03.csv (rows with a kelurahan)",
        "complaints": complaints,
        "window_days": WINDOW_DAYS,
        "floor": FLOOR,
        "vector": VECTOR_KIND,
        "category_bonus": config.category_bonus,
        "address_weight": config.address_weight,
        "roc_auc_judged": round(float(roc_auc_score(merged["label"], merged["score"])), 3),
        "candidate_pairs": len(pairs),
        "candidate_pairs_per_band": {
            f"{lo}-{min(hi, 1.0)}": population[b] for b, (lo, hi) in enumerate(BANDS)
        },
        "judged_pairs": len(merged),
        "judged_duplicates": int((merged["label"] == 1).sum()),
        "judged_pairs_not_found": missing,
        "shipped_threshold": config.threshold,
        "at_shipped_threshold": shipped,
        "by_threshold": rows,
    }


def _variant(
    frame: pd.DataFrame, pairs: pd.DataFrame, judged: pd.DataFrame, weight: float
) -> dict[str, Any]:
    found = evaluate(frame, pairs, judged, replace(Config(), address_weight=weight))
    rows = [r for r in found["by_threshold"] if r["precision"] and r["recall_above_floor"]]
    best = max(rows, key=lambda r: _f1(r["precision"], r["recall_above_floor"]))
    return {
        "address_weight": weight,
        "roc_auc_judged": found["roc_auc_judged"],
        "at_shipped_threshold": found["at_shipped_threshold"],
        "best_f1_threshold": best["threshold"],
        "best_f1": round(_f1(best["precision"], best["recall_above_floor"]), 3),
    }


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["sample", "evaluate"])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--out", type=Path, default=Path("/tmp/pairs-to-judge.csv"))
    args = parser.parse_args()
    frame = load(args.data)
    pairs = candidates(frame)
    if args.command == "sample":
        sample(frame, pairs, args.out)
        return
    judged = pd.read_csv(PAIRS, dtype={"id_a": str, "id_b": str})
    result = evaluate(frame, pairs, judged)
    # How the address weight was chosen: the same pairs scored with other weights.
    result["address_weights"] = [_variant(frame, pairs, judged, w) for w in WEIGHTS]
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["at_shipped_threshold"], indent=2))


if __name__ == "__main__":
    main()
