"""Data-parallel training: `aduan train` run unchanged by `torchrun` on several processes.

`torchrun` starts one process per device and sets `RANK`, `WORLD_SIZE` and `LOCAL_RANK`. Every
process runs the whole training (same seed, same data, same epoch plan); each takes its own
share of every epoch's batches, and after each backward pass the gradients are averaged over
all processes with one all-reduce, so every process holds the same weights after every step
(as `DistributedDataParallel` would; the loop calls the network's `upper()` on cached lower
layers, which a DDP wrapper would not see). Rank 0 alone writes checkpoints and the model
directory. The backend is `gloo` on CPUs and `nccl` on CUDA GPUs (`ADUAN_DIST_BACKEND` picks
another); without `torchrun` nothing here does anything.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

T = TypeVar("T")
# Rank 0 calibrates and mixes while the others wait at the next collective: be patient.
TIMEOUT = timedelta(minutes=60)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def active() -> bool:
    """Started by torchrun with more than one process."""
    return world_size() > 1


def is_main() -> bool:
    """The process that writes (rank 0; the only one without torchrun)."""
    return rank() == 0


def device(setting: str = "auto") -> torch.device:
    """This process's device for the `device` setting: `cpu`; `cuda` (its own GPU,
    `LOCAL_RANK`); `auto`, a GPU when CUDA is there, else the CPU. `ADUAN_DEVICE=cpu` keeps
    `auto` on the CPU."""
    if setting == "cpu" or (setting == "auto" and os.environ.get("ADUAN_DEVICE", "") == "cpu"):
        return torch.device("cpu")
    if setting == "cuda" or torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def bf16_is_fast(where: torch.device | str) -> bool:
    """Whether bf16 autocast speeds `where` up: a CUDA GPU that supports it, or a CPU with
    native bf16 (AVX512-BF16, AMX) or AVX-512 (oneDNN converts there). On an AVX2-only CPU
    PyTorch's bf16 matrix products are emulated and measured ~100x slower than fp32, so the
    `bf16` setting means "where the hardware has it" and falls back to fp32 elsewhere."""
    where = torch.device(where)
    if where.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if where.type != "cpu":
        return False
    cpu = torch.cpu
    native = any(
        getattr(cpu, probe, lambda: False)()
        for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    )
    return native or torch.backends.cpu.get_cpu_capability().startswith("AVX512")


def use_bf16(requested: bool, where: torch.device | str) -> bool:
    """The `bf16` setting as it applies on `where` (logged when the hardware says no)."""
    if requested and not bf16_is_fast(where):
        log.info(
            "bf16 off on %s (%s): no native bf16 on this hardware, training in fp32",
            where,
            torch.backends.cpu.get_cpu_capability(),
        )
        return False
    return requested


def backend(setting: str = "auto") -> str:
    """The collective backend for the `device` setting: NCCL on GPUs, gloo on CPUs
    (`ADUAN_DIST_BACKEND` overrides)."""
    default = "nccl" if device(setting).type == "cuda" else "gloo"
    return os.environ.get("ADUAN_DIST_BACKEND", default)


@contextlib.contextmanager
def session(setting: str = "auto") -> Iterator[None]:
    """Join the process group for a training run on the `device` setting's device when
    torchrun started several processes; leave it (after every process got there) at the end."""
    if not active() or dist.is_initialized():
        yield
        return
    if device(setting).type == "cuda":
        torch.cuda.set_device(device(setting))
    dist.init_process_group(backend(setting), timeout=TIMEOUT)
    log.info("data-parallel: rank %d of %d (%s)", rank(), world_size(), backend(setting))
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()


def describe(setting: str = "auto") -> dict[str, Any] | None:
    """What config.json records about a data-parallel run (None for one process)."""
    if not active():
        return None
    return {
        "world_size": world_size(),
        "backend": backend(setting),
        "device": device(setting).type,
    }


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (say, building a cached base encoder); the others run it
    after, finding its result."""
    if not dist.is_initialized():
        yield
        return
    if not is_main():
        dist.barrier()
    yield
    if is_main():
        dist.barrier()


def broadcast_module(module: torch.nn.Module) -> None:
    """Every process starts from rank 0's weights."""
    if not dist.is_initialized():
        return
    with torch.no_grad():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def average_gradients(params: Sequence[torch.nn.Parameter]) -> None:
    """Average the gradients over all processes, in one all-reduce of one flat buffer."""
    if not dist.is_initialized():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    offset = 0
    for param, grad in zip(params, grads, strict=True):
        count = grad.numel()
        update = flat[offset : offset + count].view_as(grad)
        if param.grad is None:
            param.grad = update.clone()
        else:
            param.grad.copy_(update)
        offset += count


def shard(batches: list[T]) -> list[T]:
    """This process's share of an epoch's batches: the same count on every process (the
    all-reduce needs every process at every step), wrapping round to repeat at most
    `world_size - 1` batches."""
    size = world_size()
    if size == 1 or not batches:
        return batches
    steps = -(-len(batches) // size)
    return [batches[(rank() + k * size) % len(batches)] for k in range(steps)]


def agree(value: int, what: str, where: torch.device) -> None:
    """Fail loudly (rather than hang at a later collective) when processes disagree, e.g. on
    the epoch a checkpoint resumes from (its folder must be shared by every node)."""
    if not dist.is_initialized():
        return
    mine = torch.tensor([value], dtype=torch.long, device=where)
    values = [torch.zeros_like(mine) for _ in range(world_size())]
    dist.all_gather(values, mine)
    seen = sorted({int(v.item()) for v in values})
    if len(seen) > 1:
        raise RuntimeError(
            f"data-parallel processes disagree on {what}: {seen}; with several nodes the "
            "model's output folder (and its checkpoint) must be on storage every node shares"
        )
