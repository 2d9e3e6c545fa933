"""Structured pruning: remove whole conv filters / linear units and shrink their consumers.

Unlike zeroing weights, this makes every tensor smaller, so the exported ONNX/TFLite model
has fewer parameters and fewer multiply-adds and runs faster on any dense engine.
The model is modified in place (same Python objects, same class), so it can be fine-tuned,
saved with `save_pruned` and exported like the original.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from .config import StructuredPruneConfig
from .errors import OptimizeError, UnrewritableLayerError
from .graph import ChannelPlan, _Unprunable, plan_channels, trace
from .layers import check_names, count_parameters, prunable_layers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChannelChange:
    """One pruned layer: its output width before and after."""

    name: str
    kind: str
    before: int
    after: int
    consumers: tuple[str, ...]  # layers whose input (or BatchNorm features) shrank with it


@dataclass(frozen=True)
class StructuredPruneResult:
    """What `prune_structured` did to the model (which is modified in place)."""

    model: nn.Module
    pruned: tuple[ChannelChange, ...]
    skipped: dict[str, str]  # layer -> reason, only for layers picked by default
    params_before: int
    params_after: int

    @property
    def param_ratio(self) -> float:
        """params_before / params_after (how many times smaller the model got)."""
        return self.params_before / self.params_after


def _filter_norms(weight: torch.Tensor, norm: str) -> torch.Tensor:
    flat = weight.detach().flatten(1)
    return flat.abs().sum(1) if norm == "l1" else flat.pow(2).sum(1).sqrt()


def _expand(keep: torch.Tensor, block: int) -> torch.Tensor:
    """Channel indices -> feature indices after a flatten of `block` features per channel."""
    if block == 1:
        return keep
    return (keep[:, None] * block + torch.arange(block)[None, :]).flatten()


def _param(old: nn.Parameter, new: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(new.detach().clone().contiguous(), requires_grad=old.requires_grad)


def _shrink_outputs(module: nn.Module, keep: torch.Tensor) -> None:
    module.weight = _param(module.weight, module.weight[keep])
    if module.bias is not None:
        module.bias = _param(module.bias, module.bias[keep])
    if isinstance(module, nn.Linear):
        module.out_features = len(keep)
    else:
        module.out_channels = len(keep)


def _shrink_inputs(module: nn.Module, index: torch.Tensor) -> None:
    module.weight = _param(module.weight, module.weight[:, index])
    if isinstance(module, nn.Linear):
        module.in_features = len(index)
    else:
        module.in_channels = len(index)


def _shrink_batchnorm(module: nn.modules.batchnorm._BatchNorm, index: torch.Tensor) -> None:
    if module.affine:
        module.weight = _param(module.weight, module.weight[index])
        module.bias = _param(module.bias, module.bias[index])
    if module.track_running_stats and module.running_mean is not None:
        module.running_mean = module.running_mean[index].clone()
        module.running_var = module.running_var[index].clone()
    module.num_features = len(index)


def _plans(model: nn.Module, example_input: torch.Tensor, config: StructuredPruneConfig
           ) -> tuple[list[ChannelPlan], dict[str, str]]:
    layers = prunable_layers(model)
    if config.layers is not None:
        check_names(config.layers, layers, "layer")
    check_names(config.exclude, layers, "excluded layer")
    explicit = config.layers is not None
    wanted = [n for n in (config.layers if explicit else layers) if n not in config.exclude]

    graph_module = trace(model, example_input)
    nodes = {n.target: n for n in graph_module.graph.nodes if n.op == "call_module"}
    plans, problems, skipped = [], {}, {}
    for name in wanted:
        if name not in nodes:
            reason = "it is never called in forward()"
            (problems if explicit else skipped)[name] = reason
            continue
        try:
            plans.append(plan_channels(graph_module, nodes[name]))
        except _Unprunable as e:
            (problems if explicit else skipped)[name] = str(e)
    if problems:
        raise UnrewritableLayerError(problems)
    return plans, skipped


def prune_structured(model: nn.Module, example_input: torch.Tensor,
                     config: StructuredPruneConfig = StructuredPruneConfig()
                     ) -> StructuredPruneResult:
    """Remove `config.amount` of the output channels of Conv/Linear layers, in place.

    Filters with the smallest L1/L2 norm go; the layers reading them (next Conv/Linear, the
    BatchNorm in between, the Linear after a flatten) lose the matching inputs.
    `example_input` is one batch the model accepts; it is used to trace shapes.

    With `config.layers=None`, layers that cannot be pruned (their output reaches the model
    output, a residual add, a concatenation, ...) are left alone and listed in
    `result.skipped` with the reason. Layers named in `config.layers` must all be prunable.

    Raises `UnknownLayerError` for names the model lacks, `UnrewritableLayerError` naming
    each requested layer whose consumers cannot be rewritten and why, `OptimizeError` if the
    model cannot be traced.
    """
    params_before = count_parameters(model)
    with torch.no_grad():
        was_training = model.training
        model.eval()
        reference_shape = tuple(model(example_input).shape)
        model.train(was_training)
    plans, skipped = _plans(model, example_input, config)
    for name, reason in skipped.items():
        log.info("structured pruning leaves %s as is: %s", name, reason)
    if not plans:
        raise OptimizeError(
            "no layer can be pruned structurally: "
            + "; ".join(f"{n}: {r}" for n, r in skipped.items()))

    # Choose every layer's surviving channels from the original weights first, then edit:
    # a layer can be both a producer (rows cut) and a consumer (columns cut).
    keeps = {}
    for plan in plans:
        module = model.get_submodule(plan.producer)
        norms = _filter_norms(module.weight, config.norm)
        count = config.keep_count(len(norms))
        keeps[plan.producer] = torch.topk(norms, count).indices.sort().values

    changes = []
    with torch.no_grad():
        for plan in plans:
            module = model.get_submodule(plan.producer)
            keep = keeps[plan.producer]
            before = module.weight.shape[0]
            _shrink_outputs(module, keep)
            for target, role, block in plan.rewrites:
                sub = model.get_submodule(target)
                index = _expand(keep, block)
                if role == "bn":
                    _shrink_batchnorm(sub, index)
                else:
                    _shrink_inputs(sub, index)
            changes.append(ChannelChange(
                name=plan.producer, kind=type(module).__name__, before=before,
                after=len(keep), consumers=tuple(t for t, _, _ in plan.rewrites)))

    with torch.no_grad():
        was_training = model.training
        model.eval()
        try:
            new_shape = tuple(model(example_input).shape)
        except Exception as e:  # a consumer we did not see (e.g. a hard-coded view size)
            raise OptimizeError(f"the pruned model no longer runs: {e}") from e
        finally:
            model.train(was_training)
    if new_shape != reference_shape:
        raise OptimizeError(
            f"pruning changed the output shape from {reference_shape} to {new_shape}")
    result = StructuredPruneResult(
        model=model, pruned=tuple(changes), skipped=skipped,
        params_before=params_before, params_after=count_parameters(model))
    log.info("structured pruning: %d layers, %d -> %d parameters", len(changes),
             result.params_before, result.params_after)
    return result
