"""Short supervised training loops: fine-tuning after pruning, and evaluation."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import TrainConfig
from .data import ArrayData, Data, as_data, iter_batches
from .magnitude import apply_masks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochStats:
    """Metrics of one epoch. soft/hard losses are set by distillation only."""

    epoch: int
    loss: float
    train_accuracy: float
    eval_loss: float | None = None
    eval_accuracy: float | None = None
    soft_loss: float | None = None
    hard_loss: float | None = None


@dataclass(frozen=True)
class History:
    """Per-epoch metrics of a training run, oldest first."""

    epochs: tuple[EpochStats, ...]

    @property
    def losses(self) -> list[float]:
        return [e.loss for e in self.epochs]

    @property
    def final(self) -> EpochStats:
        return self.epochs[-1]

    def to_dict(self) -> list[dict]:
        from dataclasses import asdict
        return [asdict(e) for e in self.epochs]


@dataclass(frozen=True)
class FineTuneResult:
    """The fine-tuned model (same object as passed in) and its training history."""

    model: nn.Module
    history: History


def make_optimizer(params, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named by `config.optimizer`, with its lr and weight decay."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def evaluate(model: nn.Module, data: Data, batch_size: int = 256) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy of `model` on `data` (model left in its mode)."""
    source = as_data(data)
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    try:
        with torch.no_grad():
            for x, y, _ in iter_batches(source, batch_size):
                logits = model(x)
                total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
                count += len(y)
    finally:
        model.train(was_training)
    return total_loss / count, correct / count


# A step computes (loss, logits, parts) for one batch; parts are extra losses to average.
StepFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"],
                  "tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]"]


def cross_entropy_step(model: nn.Module) -> StepFn:
    """The step of plain supervised training: cross-entropy of `model`'s logits."""
    def step(x, y, _index):
        logits = model(x)
        return F.cross_entropy(logits, y), logits, {}
    return step


def run_training(model: nn.Module, source, config: TrainConfig, step: StepFn,
                 eval_data: Data | None = None,
                 masks: dict[str, torch.Tensor] | None = None,
                 before_epoch: Callable[[int], None] | None = None) -> History:
    """Train `model` for `config.epochs`; `step` defines the loss. Shared by fine-tune,
    distill and QAT. `before_epoch(epoch)` runs before each epoch (QAT re-measures its
    activation ranges there); one optimizer runs through all epochs, so its state (Adam's
    moment estimates) is not reset between them.

    The global RNG is forked and seeded with `config.seed` so dropout and batch order are
    reproducible without changing the caller's random state.
    """
    eval_source = as_data(eval_data) if eval_data is not None else None
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], config)
    stats = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        for epoch in range(1, config.epochs + 1):
            if before_epoch is not None:
                before_epoch(epoch)
            model.train()
            sums: dict[str, float] = {}
            correct = count = 0
            for x, y, index in iter_batches(source, config.batch_size, generator):
                loss, logits, parts = step(x, y, index)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if masks:
                    apply_masks(model, masks)
                n = len(y)
                for key, value in {"loss": loss, **parts}.items():
                    sums[key] = sums.get(key, 0.0) + float(value.detach()) * n
                correct += int((logits.detach().argmax(1) == y).sum())
                count += n
            eval_loss = eval_acc = None
            if eval_source is not None:
                eval_loss, eval_acc = evaluate(model, eval_source)
            stats.append(EpochStats(
                epoch=epoch, loss=sums["loss"] / count, train_accuracy=correct / count,
                eval_loss=eval_loss, eval_accuracy=eval_acc,
                soft_loss=sums["soft"] / count if "soft" in sums else None,
                hard_loss=sums["hard"] / count if "hard" in sums else None))
            log.info("epoch %d/%d: loss %.4f train acc %.4f eval acc %s", epoch, config.epochs,
                     stats[-1].loss, stats[-1].train_accuracy, eval_acc)
    model.eval()
    return History(tuple(stats))


def fine_tune(model: nn.Module, data: Data, config: TrainConfig = TrainConfig(), *,
              eval_data: Data | None = None,
              masks: dict[str, torch.Tensor] | None = None) -> FineTuneResult:
    """Train `model` with cross-entropy to recover accuracy after pruning.

    data / eval_data: `(x, y)` arrays or an iterable of `(x, y)` batches.
    masks: from `prune_magnitude(...).masks`; pruned weights are re-zeroed after every step
        so the sparsity survives fine-tuning.
    Returns the model (in eval mode) and the per-epoch history.
    """
    source = as_data(data)
    history = run_training(model, source, config, cross_entropy_step(model),
                           eval_data=eval_data, masks=masks)
    return FineTuneResult(model=model, history=history)


__all__ = ["ArrayData", "EpochStats", "History", "FineTuneResult", "evaluate", "fine_tune"]
