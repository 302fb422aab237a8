"""`aduan train` under `torchrun` (`aduan.training.distributed`): two CPU processes with the gloo
backend average their gradients, and rank 0 alone writes a valid model directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from aduan.model.pipeline import Pipeline
from aduan.training import distributed
from tests.conftest import tiny_transformer_args

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _env() -> dict[str, str]:
    # one thread per process: two processes share these two cores
    return {**os.environ, "OMP_NUM_THREADS": "1", "ADUAN_DEVICE": "cpu"}


def test_distributed_shard_gives_every_process_the_same_step_count(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    batches = list(range(5))
    monkeypatch.setenv("RANK", "0")
    first = distributed.shard(batches)
    monkeypatch.setenv("RANK", "1")
    second = distributed.shard(batches)
    assert (first, second) == ([0, 2, 4], [1, 3, 0])  # one batch repeated to keep step
    assert set(first) | set(second) == set(batches)


def test_distributed_one_process_changes_nothing(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert not distributed.active() and distributed.is_main()
    assert distributed.shard([3, 1, 2]) == [3, 1, 2]
    assert distributed.describe() is None


@pytest.mark.parametrize(
    ("capability", "native", "expected"),
    [("AVX2", False, False), ("AVX2", True, True), ("AVX512", False, True)],
)
def test_bf16_setting_falls_back_to_fp32_where_the_cpu_emulates_it(
    monkeypatch, capability, native, expected
):
    # bf16 matrix products on an AVX2-only CPU measured ~100x slower than fp32
    import torch

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert distributed.use_bf16(True, "cpu") is expected
    assert distributed.use_bf16(False, "cpu") is False


def test_distributed_gloo_processes_average_their_gradients(tmp_path):
    script = tmp_path / "step.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, torch
            from aduan.training import distributed

            with distributed.session():
                rank = distributed.rank()
                torch.manual_seed(rank)  # different weights: the broadcast must align them
                layer = torch.nn.Linear(3, 2)
                distributed.broadcast_module(layer)
                x = torch.full((4, 3), float(rank + 1))  # different data per process
                layer(x).pow(2).sum().backward()
                own = layer.weight.grad.clone()
                distributed.average_gradients(list(layer.parameters()))
                out = {{"own": own.tolist(), "averaged": layer.weight.grad.tolist(),
                        "weight": layer.weight.tolist()}}
                (__import__("pathlib").Path({str(tmp_path)!r}) / f"rank{{rank}}.json").write_text(
                    json.dumps(out))
            """
        )
    )
    done = subprocess.run(
        [*TORCHRUN, str(script)], capture_output=True, text=True, env=_env(), timeout=300
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    zero, one = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert zero["weight"] == one["weight"]
    assert zero["own"] != one["own"]
    mean = [
        (a + b) / 2
        for r0, r1 in zip(zero["own"], one["own"], strict=True)
        for a, b in zip(r0, r1, strict=True)
    ]
    for averaged in (zero["averaged"], one["averaged"]):
        assert [x for row in averaged for x in row] == pytest.approx(mean)


def test_distributed_torchrun_train_writes_one_valid_model(tiny_base, complaints_csv, tmp_path):
    output = tmp_path / "models" / "data-parallel"
    args = tiny_transformer_args(tiny_base, complaints_csv, output)
    done = subprocess.run(
        [*TORCHRUN, "-m", "aduan", *args], capture_output=True, text=True, env=_env(), timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    config = json.loads((output / "config.json").read_text())
    assert config["data_parallel"] == {"world_size": 2, "backend": "gloo", "device": "cpu"}
    # rank 0 alone wrote: the model directory and nothing else (no second copy, no leftovers)
    assert [p.name for p in output.parent.iterdir()] == ["data-parallel"]
    pipeline = Pipeline.load(output)
    answers = pipeline.run([("lampu PJU padam gelap", None), ("sampah menumpuk di TPS", None)])
    assert [a.prediction.best("agency").label for a in answers] == [
        "Dinas Perhubungan",
        "Dinas Lingkungan Hidup",
    ]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["validation"]["agency"]["accuracy"] > 0.5
