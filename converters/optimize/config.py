"""Typed, frozen configs for pruning, fine-tuning and distillation.

Each config validates itself on construction so an impossible request fails before any work
starts (a sparsity of 1.0 would delete every weight; a temperature of 0 divides by zero).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import OptimizeError

_OPTIMIZERS = ("adam", "adamw", "sgd")


def _check_fraction(name: str, value: float, what: str) -> None:
    # [0, 1): pruning everything leaves a layer with no outputs, which no model survives.
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise OptimizeError(
            f"{name} must be a number in [0, 1) (the fraction of {what} to remove), "
            f"got {value!r}")


def _check_names(name: str, value: tuple[str, ...] | None) -> None:
    if value is None:
        return
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise OptimizeError(f"{name} must be a tuple of layer names, got {value!r}")


@dataclass(frozen=True)
class MagnitudePruneConfig:
    """Unstructured magnitude pruning: zero the smallest-|w| weights.

    sparsity: fraction of weights to zero, in [0, 1).
    scope: "global" ranks all eligible weights together (layers end up with different
        sparsities); "layer" zeroes `sparsity` of each layer.
    exclude: module names (as in `model.named_modules()`) to leave dense.
    """

    sparsity: float = 0.5
    scope: str = "global"
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_fraction("sparsity", self.sparsity, "weights")
        if self.scope not in ("global", "layer"):
            raise OptimizeError(f"scope must be 'global' or 'layer', got {self.scope!r}")
        _check_names("exclude", self.exclude)


@dataclass(frozen=True)
class StructuredPruneConfig:
    """Structured pruning: remove whole conv filters / linear output units.

    amount: fraction of output channels to remove from each pruned layer, in [0, 1).
    norm: "l1" or "l2"; filters with the smallest norm are removed.
    layers: names of the layers to prune; None prunes every Conv/Linear whose output does
        not reach the model output (those would change the model's output shape).
    exclude: names to leave untouched (applied after `layers`).
    round_to: keep a multiple of this many channels (SIMD-friendly widths), at least 1.
    """

    amount: float = 0.5
    norm: str = "l1"
    layers: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()
    round_to: int = 1

    def __post_init__(self) -> None:
        _check_fraction("amount", self.amount, "output channels")
        if self.norm not in ("l1", "l2"):
            raise OptimizeError(f"norm must be 'l1' or 'l2', got {self.norm!r}")
        _check_names("layers", self.layers)
        _check_names("exclude", self.exclude)
        if not isinstance(self.round_to, int) or self.round_to < 1:
            raise OptimizeError(f"round_to must be a positive integer, got {self.round_to!r}")

    def keep_count(self, channels: int) -> int:
        """How many of `channels` outputs survive."""
        keep = max(1, math.ceil(channels * (1.0 - self.amount)))
        keep = math.ceil(keep / self.round_to) * self.round_to
        return min(channels, keep)


@dataclass(frozen=True)
class TrainConfig:
    """Training loop settings shared by fine-tuning and distillation.

    optimizer: "adam", "adamw" or "sgd" (with `momentum`).
    seed: seeds the batch order so two runs from the same initialization are comparable.
    """

    epochs: int = 3
    lr: float = 1e-3
    optimizer: str = "adam"
    batch_size: int = 64
    weight_decay: float = 0.0
    momentum: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise OptimizeError(f"epochs must be a positive integer, got {self.epochs!r}")
        if not self.lr > 0:
            raise OptimizeError(f"lr must be > 0, got {self.lr!r}")
        if self.optimizer not in _OPTIMIZERS:
            raise OptimizeError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise OptimizeError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.weight_decay < 0:
            raise OptimizeError(f"weight_decay must be >= 0, got {self.weight_decay!r}")


@dataclass(frozen=True)
class DistillConfig(TrainConfig):
    """Knowledge distillation: loss = alpha*T^2*KL(p_teacher^T || p_student^T) + (1-alpha)*CE.

    temperature: T > 0 softens both distributions; the T^2 factor keeps the gradient scale of
        the soft term independent of T (Hinton et al., 2015).
    alpha: weight of the soft (teacher) term in [0, 1]; 0 is plain supervised training.
    """

    epochs: int = 10
    temperature: float = 4.0
    alpha: float = 0.7

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.temperature > 0:
            raise OptimizeError(f"temperature must be > 0, got {self.temperature!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise OptimizeError(f"alpha must be in [0, 1], got {self.alpha!r}")


@dataclass(frozen=True)
class QATConfig(TrainConfig):
    """Quantization-aware training (edgepack.converters.optimize.qat).

    Fine-tunes with fake quantization of edgepack's int8 recipe for `device` (None: this
    machine): per-channel symmetric int8 weights, the recipe's activation type, BatchNorm
    folded into the preceding conv. Activation ranges are re-measured on the calibration
    samples before every epoch (as the int8 quantizer measures them), and, with
    `learn_ranges`, the ReLU outputs feeding int8 ops get a learned clipping bound
    (PACT-style) that is exported as a Clip, so the int8 calibration sees the same range.

    calibration_samples: how many of the training inputs set the activation ranges (the
        same samples calibrate the exported bundle).
    distill_alpha: weight in [0, 1] of a distillation term against the float model QAT
        starts from (its softmax at `temperature`, the teacher): loss = alpha * T^2 *
        KL(teacher || fake-quant model) + (1 - alpha) * CE(labels). 0 (default) is plain
        cross-entropy on the labels; 1 ignores the labels and trains the int8 model to
        behave like the float one (what top-1 agreement with the source measures).
    float_outputs: the last layer writes the model's output in float instead of 8 bits, in
        training and in the bundle (as post-training int8's float outputs): 8-bit logits
        tie or flip every class pair closer than one step.
    """

    epochs: int = 3
    lr: float = 1e-3
    device: str | None = None
    learn_ranges: bool = True
    calibration_samples: int = 256
    distill_alpha: float = 0.0
    temperature: float = 2.0
    float_outputs: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.device is not None and not isinstance(self.device, str):
            raise OptimizeError(f"device must be a device profile name or None, got "
                                f"{self.device!r}")
        if not isinstance(self.calibration_samples, int) or self.calibration_samples < 1:
            raise OptimizeError(f"calibration_samples must be a positive integer, got "
                                f"{self.calibration_samples!r}")
        if not 0.0 <= self.distill_alpha <= 1.0:
            raise OptimizeError(f"distill_alpha must be in [0, 1], got {self.distill_alpha!r}")
        if not self.temperature > 0:
            raise OptimizeError(f"temperature must be > 0, got {self.temperature!r}")
