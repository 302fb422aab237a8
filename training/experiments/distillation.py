"""Distillation: a student transformer fine-tuned on the labels and, beside them, on a teacher
directory's softened probabilities (Hinton et al., 2015): the KL divergence between the
teacher's and the student's tempered distributions, weighted, added to the loss through the
product trainer's `extra_loss` hook. The teacher must be trained on the same data and split
(same labels, same order). bench/gpu.py distils `fast` from a larger teacher.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aduan.model.artifacts import head_labels, read_config
from aduan.model.labels import LabelSet
from aduan.model.transformer import TransformerBackend
from aduan.training.config import TrainConfig
from aduan.training.data import Splits
from aduan.training.finetune import TransformerSelection, TransformerTrainer
from aduan.training.loop import BatchLoss
from aduan.training.train import train

log = logging.getLogger(__name__)

DISTILLED_HEADS = ("category", "agency")


def teacher_logits(
    teacher_dir: str, texts: list[str], labels: dict[str, LabelSet]
) -> dict[str, np.ndarray]:
    """A trained transformer directory's raw head logits on `texts`, for the routed heads it
    shares with the student (same labels, same order: trained on the same data and split)."""
    config = read_config(teacher_dir)
    if config["model_type"] != TransformerBackend.model_type:
        raise ValueError(f"distill from {teacher_dir}: not a transformer model directory")
    teacher_labels = head_labels(config)
    for head in DISTILLED_HEADS:
        if teacher_labels[head] != labels[head]:
            raise ValueError(
                f"distill from {teacher_dir}: its {head} labels differ from this run's "
                "(train the teacher on the same data and split)"
            )
    backend = TransformerBackend.load(Path(teacher_dir), config)
    log.info("teacher %s: logits for %d training texts", teacher_dir, len(texts))
    raw = backend.encoder_logits(texts)
    return {head: raw[head].astype(np.float32) for head in DISTILLED_HEADS}


@dataclass(frozen=True)
class Distillation:
    """The `extra_loss` hook: weight * t^2 * KL(teacher_t || student_t) per distilled head.
    Its repr names the teacher and settings, so a checkpoint resumes only the same run."""

    teacher: str
    weight: float = 0.5
    temperature: float = 2.0

    def __call__(self, texts: list[str], labels: dict[str, LabelSet]) -> BatchLoss:
        soft = teacher_logits(self.teacher, texts, labels)
        t = self.temperature

        def term(out: dict[str, torch.Tensor], rows: list[int]) -> torch.Tensor:
            total = torch.zeros((), device=out["agency"].device)
            for head, logits in soft.items():
                teacher = torch.from_numpy(logits[rows]).to(total.device)
                student = torch.log_softmax(out[head].float() / t, dim=1)
                target = torch.log_softmax(teacher / t, dim=1)
                kl = nn.functional.kl_div(student, target, log_target=True, reduction="batchmean")
                total = total + self.weight * t * t * kl
            return total

        return term


def distill(
    config: TrainConfig, teacher: Path, output: Path, weight: float = 0.5, temperature: float = 2.0
) -> dict[str, Any]:
    """`aduan train` of a transformer preset with the distillation term; metrics.json records
    the teacher and settings under `distillation`."""
    if config.model_kind != "transformer":
        raise ValueError(f"a student is a transformer, not {config.model_kind!r}")
    hook = Distillation(str(teacher), weight, temperature)
    read_config(teacher)  # fail before training when the teacher is no model directory
    factory = functools.partial(_DistillationTrainer, hook=hook)
    return train(config, output, trainer=factory)


class _DistillationTrainer(TransformerTrainer):
    def __init__(self, config: TrainConfig, checkpoint_dir: Path, hook: Distillation) -> None:
        super().__init__(config, checkpoint_dir, extra_loss=hook)
        self.hook = hook

    def select(self, splits: Splits) -> TransformerSelection:
        selection = super().select(splits)
        selection.report["distillation"] = {
            "teacher": Path(self.hook.teacher).name,
            "weight": self.hook.weight,
            "temperature": self.hook.temperature,
        }
        return selection
