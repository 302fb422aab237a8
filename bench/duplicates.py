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
WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5)


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


def sample(
    frame: pd.DataFrame, pairs: pd.DataFrame, out: Path, per_band: int = PER_BAND, seed: int = SEED
) -> None:
    """`per_band` pairs a similarity band not judged yet, with both texts, for reading
    (outside the repo)."""
    rng = random.Random(seed)
    pairs = pairs.assign(band=pairs["cosine"].map(band_of))
    if PAIRS.exists():
        judged = pd.read_csv(PAIRS, dtype={"id_a": str, "id_b": str})
        seen = set(zip(judged["id_a"], judged["id_b"], strict=True))
        fresh = [pair not in seen for pair in zip(pairs["id_a"], pairs["id_b"], strict=True)]
        pairs = pairs[fresh]
    picked = []
    for b in range(len(BANDS)):
        inside = pairs[pairs["band"] == b].index.tolist()
        picked += rng.sample(inside, min(per_band, len(inside)))
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


def choice(frame: pd.DataFrame, pairs: pd.DataFrame, judged: pd.DataFrame) -> list[dict[str, Any]]:
    """Every (address weight, threshold) with its F1 on each judged set, the most robust first
    (the largest F1 on the worse of the two sets): how the shipped pair was chosen."""
    scores: dict[tuple[float, float], dict[str, float]] = {}
    for weight in WEIGHTS:
        config = replace(Config(), address_weight=weight)
        for name in ("tune", "holdout"):
            found = evaluate(frame, pairs, judged[judged["set"] == name], config)
            for row in found["by_threshold"]:
                p, r = row["precision"], row["recall_above_floor"]
                f1 = _f1(p, r) if p and r else 0.0
                scores.setdefault((weight, row["threshold"]), {})[name] = round(f1, 3)
    rows = [
        {"address_weight": w, "threshold": t, **f1, "worse": min(f1.values())}
        for (w, t), f1 in scores.items()
    ]
    return sorted(rows, key=lambda r: -r["worse"])


def _f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["sample", "evaluate"])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--out", type=Path, default=Path("/tmp/pairs-to-judge.csv"))
    parser.add_argument("--per-band", type=int, default=PER_BAND)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    frame = load(args.data)
    pairs = candidates(frame)
    if args.command == "sample":
        sample(frame, pairs, args.out, args.per_band, args.seed)
        return
    judged = pd.read_csv(PAIRS, dtype={"id_a": str, "id_b": str})
    result = evaluate(frame, pairs, judged)  # every judged pair
    for name in ("tune", "holdout"):
        part = evaluate(frame, pairs, judged[judged["set"] == name])
        result[name] = {k: part[k] for k in ("judged_pairs", "judged_duplicates", "roc_auc_judged")}
        result[name]["at_shipped_threshold"] = part["at_shipped_threshold"]
    result["choice"] = choice(frame, pairs, judged)[:10]
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    for name in ("tune", "holdout"):
        print(name, json.dumps(result[name]["at_shipped_threshold"]))
    print("all", json.dumps(result["at_shipped_threshold"]))


if __name__ == "__main__":
    main()
