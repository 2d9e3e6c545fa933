"""Knowledge distillation: train a small student to match a frozen teacher's soft outputs.

loss = alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + (1 - alpha) * CE(student, y)

The KL direction matters: the teacher distribution is the target, so the student is pulled to
put mass wherever the teacher does (its "dark knowledge" about similar classes).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import DistillConfig
from .data import ArrayData, Data, as_data
from .errors import OptimizeError
from .train import History, run_training

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillResult:
    """The trained student (same object as passed in, in eval mode) and its history."""

    student: nn.Module
    history: History


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      labels: torch.Tensor, temperature: float, alpha: float
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (total, soft, hard) losses, each averaged over the batch.

    soft = T^2 * KL(p_teacher || p_student) at temperature T; hard = CE(student, labels).
    """
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1),
                    F.log_softmax(teacher_logits / t, dim=1),
                    reduction="batchmean", log_target=True) * (t * t)
    hard = F.cross_entropy(student_logits, labels)
    return alpha * soft + (1.0 - alpha) * hard, soft, hard


def teacher_logits(teacher: nn.Module, source: ArrayData, batch_size: int = 256
                    ) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([teacher(source.x[i:i + batch_size])
                          for i in range(0, len(source), batch_size)])


def distillation_step(teacher: nn.Module, student: nn.Module, cached: torch.Tensor | None,
                      temperature: float, alpha: float):
    """A `train.run_training` step: `student` against the frozen `teacher` by
    `distillation_loss`; `cached` holds the teacher's logits of every array-data sample
    (looked up by the batch's index), else the teacher runs on each batch."""
    def step(x, y, index):
        if cached is not None and index is not None:
            target = cached[index]
        else:
            with torch.no_grad():
                target = teacher(x)
        logits = student(x)
        if logits.shape != target.shape:
            raise OptimizeError(
                f"teacher logits {tuple(target.shape)} and student logits "
                f"{tuple(logits.shape)} differ in shape")
        total, soft, hard = distillation_loss(logits, target, y, temperature, alpha)
        return total, logits, {"soft": soft, "hard": hard}
    return step


def distill(teacher: nn.Module, student: nn.Module, data: Data,
            config: DistillConfig = DistillConfig(), *,
            eval_data: Data | None = None) -> DistillResult:
    """Train `student` on `data` against the frozen `teacher`; see the module docstring.

    The teacher runs in eval mode without gradients (its weights, mode and requires_grad
    flags are restored afterwards). With `(x, y)` array data its logits are computed once and
    reused every epoch, since an eval-mode teacher gives the same answer each time.

    Returns `DistillResult(student, history)`; history has per-epoch total/soft/hard losses,
    train accuracy, and eval loss/accuracy when `eval_data` is given.
    Raises `OptimizeError` for bad data or teacher/student output shapes that differ.
    """
    source = as_data(data)
    was_training = teacher.training
    flags = [p.requires_grad for p in teacher.parameters()]
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    try:
        cached = teacher_logits(teacher, source) if isinstance(source, ArrayData) else None
        if cached is not None:
            with torch.no_grad():
                probe = student.eval()(source.x[:2])
            if probe.shape[1:] != cached.shape[1:]:
                raise OptimizeError(
                    f"teacher outputs {tuple(cached.shape[1:])} per sample but the student "
                    f"outputs {tuple(probe.shape[1:])}; both must produce the same class "
                    "logits")

        step = distillation_step(teacher, student, cached, config.temperature, config.alpha)
        history = run_training(student, source, config, step, eval_data=eval_data)
    finally:
        teacher.train(was_training)
        for p, flag in zip(teacher.parameters(), flags):
            p.requires_grad_(flag)
    return DistillResult(student=student, history=history)
