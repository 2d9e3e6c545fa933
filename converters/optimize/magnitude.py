"""Unstructured magnitude pruning: zero the smallest weights, permanently.

The zeros are written into the weight tensors themselves (no forward hooks, no
`weight_orig`/`weight_mask` reparametrization), so the model exports to ONNX as a plain model.
The masks are returned so `fine_tune(..., masks=...)` can keep pruned weights at zero while
the rest recover accuracy.

Note: zeros make a model compress better and enable sparse kernels, but dense engines such as
onnxruntime run it at the same speed; structured pruning is what makes it faster.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from .config import MagnitudePruneConfig
from .errors import OptimizeError
from .layers import check_names, prunable_layers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerSparsity:
    """Zero count of one layer's weight after pruning."""

    name: str
    kind: str
    params: int
    zeros: int

    @property
    def fraction(self) -> float:
        """Fraction of the layer's weights that are exactly zero."""
        return self.zeros / self.params if self.params else 0.0


@dataclass(frozen=True)
class SparsityReport:
    """Per-layer zero fractions of the prunable layers of a model."""

    layers: tuple[LayerSparsity, ...]

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @property
    def zeros(self) -> int:
        return sum(layer.zeros for layer in self.layers)

    @property
    def fraction(self) -> float:
        """Fraction of zeros over all reported weights."""
        return self.zeros / self.params if self.params else 0.0

    def by_name(self) -> dict[str, LayerSparsity]:
        return {layer.name: layer for layer in self.layers}

    def to_dict(self) -> dict:
        return {
            "fraction": self.fraction,
            "layers": {
                s.name: {"kind": s.kind, "params": s.params, "zeros": s.zeros,
                         "fraction": s.fraction}
                for s in self.layers
            },
        }


@dataclass(frozen=True)
class MagnitudePruneResult:
    """What `prune_magnitude` did: the (same, modified) model, its masks and the report."""

    model: nn.Module
    masks: dict[str, torch.Tensor]  # "<layer>.weight" -> bool tensor, True = kept
    report: SparsityReport


def sparsity_report(model: nn.Module) -> SparsityReport:
    """Measure the zero fraction of every Conv/Linear weight of `model` as it is now."""
    rows = []
    with torch.no_grad():
        for name, module in prunable_layers(model).items():
            weight = module.weight
            rows.append(LayerSparsity(
                name=name, kind=type(module).__name__, params=weight.numel(),
                zeros=int(weight.numel() - torch.count_nonzero(weight)),
            ))
    return SparsityReport(tuple(rows))


def _smallest_mask(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Bool mask (True = keep) that drops exactly `count` smallest entries of `scores`."""
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    if count > 0:
        # topk on the negated scores picks exactly `count` entries even with ties, so the
        # sparsity reached is the one asked for, not "everything below a threshold".
        drop = torch.topk(scores.flatten(), count, largest=False).indices
        keep[drop] = False
    return keep.view_as(scores)


def prune_magnitude(model: nn.Module, config: MagnitudePruneConfig = MagnitudePruneConfig()
                    ) -> MagnitudePruneResult:
    """Zero the smallest-magnitude weights of the Conv/Linear layers of `model` in place.

    Biases and normalization layers are left dense (they are a tiny share of the weights and
    pruning them hurts accuracy for no size gain).

    Returns a `MagnitudePruneResult` with the masks and a per-layer zero report.
    Raises `UnknownLayerError` if `config.exclude` names a layer the model does not have,
    `OptimizeError` if the model has no prunable layer left.
    """
    layers = prunable_layers(model)
    check_names(config.exclude, layers, "excluded layer")
    targets = {n: m for n, m in layers.items() if n not in config.exclude}
    if not targets:
        raise OptimizeError("no Conv/Linear layer left to prune; check `exclude`")

    masks: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        if config.scope == "global":
            scores = torch.cat([m.weight.detach().abs().flatten() for m in targets.values()])
            flat = _smallest_mask(scores, int(round(config.sparsity * scores.numel())))
            offset = 0
            for name, module in targets.items():
                size = module.weight.numel()
                masks[f"{name}.weight"] = flat[offset:offset + size].view_as(module.weight)
                offset += size
        else:
            for name, module in targets.items():
                weight = module.weight.detach().abs()
                count = int(round(config.sparsity * weight.numel()))
                masks[f"{name}.weight"] = _smallest_mask(weight, count)
        for name, module in targets.items():
            module.weight.mul_(masks[f"{name}.weight"].to(module.weight.dtype))

    report = sparsity_report(model)
    log.info("magnitude pruning (%s, %.2f): %d of %d weights are zero",
             config.scope, config.sparsity, report.zeros, report.params)
    return MagnitudePruneResult(model=model, masks=masks, report=report)


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Re-zero pruned weights (after an optimizer step moved them)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, mask in masks.items():
            params[key].mul_(mask.to(params[key].dtype))
