"""Fake int8 quantization in torch, with onnxruntime's QDQ arithmetic (used by qat.py).

Each piece computes what onnxruntime's quantizer and int8 kernels compute, so a model built
from them predicts the int8 bundle to float rounding:
- weights: per output channel, symmetric, scale = max|w| / qmax (127, or 64 with 7-bit
  weights), zero point 0, round half to even (quant_utils.compute_scale_zp, symmetric);
- activations: asymmetric over [min(lo, 0), max(hi, 0)], scale = range / (qmax - qmin),
  zero point = round(qmin - lo / scale) (the same function, asymmetric);
- biases: int32 with scale = input scale x weight scale.
Rounding has straight-through gradients; a learned clipping bound gets its gradient through
the scale (PACT/LSQ-style).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import OptimizeError

_INT_RANGES = {"uint8": (0, 255), "int8": (-128, 127)}
#: How much faster (in log space) a learned clipping bound moves than the weights.
_RANGE_GAIN = 20.0


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    """round-half-even forward, identity gradient (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def weight_scale(weight: torch.Tensor, qmax: int) -> torch.Tensor:
    """Per-output-channel symmetric scale, as onnxruntime computes it (absmax / qmax)."""
    absmax = weight.detach().abs().flatten(1).amax(1)
    scale = absmax / qmax
    # an all-zero channel: onnxruntime stores scale 1.0 (anything works, all values are 0)
    return torch.where(scale > torch.finfo(torch.float32).tiny, scale, torch.ones_like(scale))


def fake_quant_weight(weight: torch.Tensor, qmax: int) -> torch.Tensor:
    """Weights rounded to their per-channel int8 grid (straight-through gradient)."""
    scale = weight_scale(weight, qmax).view(-1, *([1] * (weight.dim() - 1)))
    return torch.clamp(_ste_round(weight / scale), -qmax, qmax) * scale


class ActivationQuant(nn.Module):
    """One activation tensor's fake quantization (asymmetric, the recipe's int type).

    mode "observe": record the min/max of float values and pass them through (calibration);
    "train": quantize, with [0, alpha] as the range where alpha is learned, else the
    observed range; "eval": quantize with the observed range (what the bundle uses);
    "float": pass through (the exported float model; the learned clamp stays).
    """

    def __init__(self, activation_type: str, relu: float | None = None, learn: bool = False):
        super().__init__()
        self.qmin, self.qmax = _INT_RANGES[activation_type]
        #: None: no activation here; inf: ReLU; 6.0: ReLU6.
        self.relu = relu
        self.register_buffer("lo", torch.tensor(float("inf")))
        self.register_buffer("hi", torch.tensor(float("-inf")))
        # the bound is learned in log space, its steps amplified by _RANGE_GAIN: ranges span
        # orders of magnitude and Adam's step (~lr) would barely move a bound of 100
        self.log_alpha = nn.Parameter(torch.tensor(0.0)) if (learn and relu is not None) else None
        self.alpha_ready = False
        self.mode = "float"

    def reset(self) -> None:
        self.lo.fill_(float("inf"))
        self.hi.fill_(float("-inf"))

    def scale_zero_point(self) -> tuple[float, int]:
        """onnxruntime's compute_scale_zp for the observed range (range widened to hold 0)."""
        if not torch.isfinite(self.lo):
            raise OptimizeError("an activation range was never observed; calibrate first")
        lo, hi = min(float(self.lo), 0.0), max(float(self.hi), 0.0)
        lo32, hi32 = np.float32(lo), np.float32(hi)
        scale = (np.float64(hi32) - np.float64(lo32)) / (self.qmax - self.qmin)
        if np.float32(scale) < np.finfo(np.float32).tiny:
            return 1.0, 0
        zero_point = int(np.round(self.qmin - np.float64(lo32) / scale))
        return float(np.float32(scale)), zero_point

    @property
    def learned(self) -> bool:
        """Whether the clipping bound alpha is in use (set by the first calibration)."""
        return self.log_alpha is not None and self.alpha_ready

    @property
    def alpha(self) -> torch.Tensor | None:
        """The learned clipping bound (differentiable), or None."""
        if self.log_alpha is None:
            return None
        return torch.exp(self.log_alpha * _RANGE_GAIN)

    def start_alpha(self, value: float) -> None:
        with torch.no_grad():
            self.log_alpha.fill_(float(np.log(max(value, 1e-3))) / _RANGE_GAIN)
        self.alpha_ready = True

    def current_scale(self) -> float:
        """The scale this point quantizes with now (the learned bound's while training)."""
        if self.mode == "train" and self.learned:
            return float(self.alpha.detach().clamp(1e-6, self.relu)) / (self.qmax - self.qmin)
        return self.scale_zero_point()[0]

    def _clamped(self, x: torch.Tensor) -> torch.Tensor:
        if self.relu is None:
            return x
        if self.learned:
            x = torch.minimum(x, self.alpha.clamp(max=self.relu))
        if self.relu == float("inf"):
            return torch.relu(x)
        return torch.clamp(x, 0.0, self.relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._clamped(x)
        if self.mode == "float":
            return x
        if self.mode == "observe":
            self.lo.copy_(torch.minimum(self.lo, x.detach().min()))
            self.hi.copy_(torch.maximum(self.hi, x.detach().max()))
            return x
        if self.mode == "train" and self.learned:
            scale = self.alpha.clamp(min=1e-6, max=self.relu) / (self.qmax - self.qmin)
            zero_point = self.qmin
        else:
            s, zp = self.scale_zero_point()
            scale, zero_point = torch.tensor(s), zp
        q = torch.clamp(_ste_round(x / scale) + zero_point, self.qmin, self.qmax)
        return (q - zero_point) * scale


class QuantizedLayer(nn.Module):
    """A Conv/Linear computing with fake-quantized weights (and int32-grid bias)."""

    def __init__(self, layer: nn.Module, weight_qmax: int):
        super().__init__()
        self.layer = layer
        self.weight_qmax = weight_qmax
        #: the ActivationQuant whose grid this layer's input is on (bias scale = s_in * s_w).
        self.input_quant: ActivationQuant | None = None
        #: "float": original weights; "observe": weights on their grid, float bias (the
        #: exported float model, which the bundle's calibration runs); "train"/"eval": also
        #: the bias on its int32 grid (the int8 model).
        self.mode = "float"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer
        if self.mode == "float":
            return layer(x)
        weight = fake_quant_weight(layer.weight, self.weight_qmax)
        bias = layer.bias
        if bias is not None and self.input_quant is not None and self.mode != "observe":
            s_in = self.input_quant.current_scale()
            bias_scale = s_in * weight_scale(layer.weight, self.weight_qmax)
            bias = _ste_round(bias / bias_scale) * bias_scale
        if isinstance(layer, nn.Linear):
            return F.linear(x, weight, bias)
        return layer._conv_forward(x, weight, bias)

    def snapped(self) -> nn.Module:
        """The float layer with its weights on their int8 grid (what gets exported)."""
        out = copy.deepcopy(self.layer)
        with torch.no_grad():
            out.weight.copy_(fake_quant_weight(self.layer.weight, self.weight_qmax))
        return out


def fold_batchnorm(conv: nn.Module, bn: nn.BatchNorm2d) -> nn.Module:
    """conv followed by (eval-mode) bn as one conv: w' = w*g/sigma, b' = (b-mu)*g/sigma + beta."""
    folded = copy.deepcopy(conv)
    with torch.no_grad():
        std = torch.sqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
        factor = gamma / std
        folded.weight.copy_(conv.weight * factor.view(-1, *([1] * (conv.weight.dim() - 1))))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(std)
        folded.bias = nn.Parameter((bias - bn.running_mean) * factor + beta)
    return folded


class Clamp(nn.Module):
    """The exported form of an activation point: its ReLU/learned clamp, nothing else."""

    def __init__(self, upper: float | None):
        super().__init__()
        self.upper = upper

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.upper is None:
            return x
        if self.upper == float("inf"):
            return torch.relu(x)
        return torch.clamp(x, 0.0, self.upper)


__all__ = ["ActivationQuant", "Clamp", "QuantizedLayer", "fake_quant_weight", "fold_batchnorm",
           "weight_scale"]
