"""Which layers must change when a layer loses output channels (found by torch.fx tracing).

For every candidate layer ("producer") we follow its output through operations that keep
channels apart (activations, pooling, dropout, BatchNorm, flatten) to the layers that read it
("consumers": Conv with groups=1, Linear). Anything else on that path — a residual add, a
concatenation, a reshape whose channel mapping is unknown, a grouped convolution, the model
output — makes the layer unprunable, and the reason names the operation.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from numbers import Number

import torch
import torch.nn.functional as F
from torch import fx, nn

from .errors import OptimizeError

# Modules that act on each channel independently: pruning passes straight through them.
_TRANSPARENT_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
    nn.Hardswish, nn.Hardsigmoid, nn.Mish, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample,
)
_TRANSPARENT_FUNCTIONS = {
    F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish, F.hardsigmoid,
    F.mish, F.softplus, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.interpolate,
    torch.relu, torch.sigmoid, torch.tanh, F.sigmoid, F.tanh,
}
_TRANSPARENT_METHODS = {"relu", "sigmoid", "tanh", "contiguous", "clone", "float", "detach"}
_ELEMENTWISE = {operator.add, operator.sub, operator.mul, operator.truediv,
                torch.add, torch.sub, torch.mul, torch.div}
_ELEMENTWISE_METHODS = {"add", "sub", "mul", "div"}
_SHAPE_QUERIES = {"size", "dim"}


@dataclass
class ChannelPlan:
    """Everything that changes when `producer` keeps a subset of its output channels.

    `rewrites` lists (module name, role, block): role "in" for a consumer's input dim,
    "bn" for a BatchNorm's features; block > 1 when a flatten turned each channel into
    `block` consecutive features.
    """

    producer: str
    rewrites: list[tuple[str, str, int]] = field(default_factory=list)


class _Unprunable(Exception):
    """Internal: carries the reason one producer cannot be pruned."""


def trace(model: nn.Module, example_input: torch.Tensor) -> fx.GraphModule:
    """Trace `model` with torch.fx and record tensor shapes from one forward pass."""
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        graph_module = fx.symbolic_trace(model)
    except Exception as e:  # fx raises many types (TraceError, TypeError, ...)
        raise OptimizeError(
            f"structured pruning needs a model torch.fx can trace, and tracing failed: {e}. "
            "Remove data-dependent Python control flow from forward(), or use magnitude "
            "pruning instead"
        ) from e
    was_training = model.training
    model.eval()  # a forward pass in train mode would update BatchNorm statistics
    try:
        with torch.no_grad():
            ShapeProp(graph_module).propagate(example_input)
    except Exception as e:
        raise OptimizeError(
            f"the example input (shape {tuple(example_input.shape)}) does not run through "
            f"the model: {e}"
        ) from e
    finally:
        model.train(was_training)
    return graph_module


def _shape(node: fx.Node) -> tuple[int, ...] | None:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _describe(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"layer '{node.target}'"
    name = getattr(node.target, "__name__", str(node.target))
    return f"operation '{node.name}' ({name})"


def _flatten_block(user: fx.Node, source: fx.Node, start: int, end: int) -> int:
    shape = _shape(source)
    if start != 1 or end not in (-1, len(shape or ()) - 1) or shape is None:
        raise _Unprunable(
            f"{_describe(user)} flattens dims {start}..{end}; only flatten(x, 1) keeps "
            "each channel's features together")
    return math.prod(shape[2:])


def _arg(node: fx.Node, index: int, name: str, default):
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def plan_channels(graph_module: fx.GraphModule, producer: fx.Node) -> ChannelPlan:
    """Follow `producer`'s output to its consumers; raise `_Unprunable` with the reason."""
    calls: dict[str, int] = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1

    def rewrite_target(node: fx.Node) -> str:
        if calls[node.target] > 1:
            raise _Unprunable(
                f"{_describe(node)} is called {calls[node.target]} times in forward(), so "
                "its input width cannot change for one call only")
        return node.target

    if calls[producer.target] > 1:
        raise _Unprunable(f"the layer is called {calls[producer.target]} times in forward()")
    module = graph_module.get_submodule(producer.target)
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups != 1:
        raise _Unprunable(f"it is a grouped convolution (groups={module.groups})")

    plan = ChannelPlan(producer=producer.target)
    stack: list[tuple[fx.Node, int]] = [(producer, 1)]
    seen: set[fx.Node] = set()
    while stack:
        node, block = stack.pop()
        for user in node.users:
            if user in seen:
                continue
            seen.add(user)
            if user.op == "output":
                raise _Unprunable("its channels reach the model output, whose shape would change")
            if user.op == "call_module":
                sub = graph_module.get_submodule(user.target)
                if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                    plan.rewrites.append((rewrite_target(user), "bn", block))
                    stack.append((user, block))
                elif isinstance(sub, _TRANSPARENT_MODULES) or (
                        isinstance(sub, nn.PReLU) and sub.num_parameters == 1):
                    stack.append((user, block))
                elif isinstance(sub, nn.Flatten):
                    stack.append((user, block * _flatten_block(user, node, sub.start_dim,
                                                               sub.end_dim)))
                elif isinstance(sub, nn.modules.conv._ConvNd):
                    if sub.groups != 1:
                        raise _Unprunable(
                            f"its consumer {_describe(user)} is a grouped convolution "
                            f"(groups={sub.groups}) whose filters are tied to input channel "
                            "groups")
                    if block != 1:
                        raise _Unprunable(f"its consumer {_describe(user)} reads a flattened "
                                          "tensor")
                    plan.rewrites.append((rewrite_target(user), "in", 1))
                elif isinstance(sub, nn.Linear):
                    shape = _shape(node)
                    if shape is None or len(shape) != 2:
                        raise _Unprunable(
                            f"its consumer {_describe(user)} is applied to a tensor of shape "
                            f"{shape}, i.e. over its last dim, not over the pruned channels; "
                            "flatten with flatten(x, 1) first")
                    plan.rewrites.append((rewrite_target(user), "in", block))
                else:
                    raise _Unprunable(
                        f"its consumer {_describe(user)} ({type(sub).__name__}) is not a layer "
                        "structured pruning can rewrite")
            elif user.op in ("call_function", "call_method"):
                stack.extend((n, b) for n, b in _follow_op(user, node, block))
            else:
                raise _Unprunable(f"its output feeds {_describe(user)}")
    return plan


def _follow_op(user: fx.Node, source: fx.Node, block: int) -> list[tuple[fx.Node, int]]:
    """Decide how a function/method call treats the pruned channels of `source`."""
    target = user.target
    if user.op == "call_method" and target in _SHAPE_QUERIES:
        return []  # x.size(0) reads the batch size, not channel data
    if (user.op == "call_function" and target in _TRANSPARENT_FUNCTIONS) or (
            user.op == "call_method" and target in _TRANSPARENT_METHODS):
        return [(user, block)]
    if target is getattr and user.args[1] == "shape":
        return []
    if target is torch.flatten or (user.op == "call_method" and target == "flatten"):
        start = _arg(user, 1, "start_dim", 0)
        end = _arg(user, 2, "end_dim", -1)
        return [(user, block * _flatten_block(user, source, start, end))]
    if target in _ELEMENTWISE or (user.op == "call_method" and target in _ELEMENTWISE_METHODS):
        others = [a for a in list(user.args) + list(user.kwargs.values()) if a is not source]
        tensors = [a for a in others if isinstance(a, fx.Node)]
        if tensors or not all(isinstance(a, Number) for a in others):
            with_what = ", ".join(_describe(t) for t in tensors) or "another tensor"
            raise _Unprunable(
                f"its output is combined element-wise by {_describe(user)} with {with_what} "
                "(e.g. a residual add); both sides would have to lose the same channels")
        return [(user, block)]
    if target in (torch.cat, torch.concat, torch.stack):
        raise _Unprunable(f"its output is concatenated by {_describe(user)}")
    if target in ("view", "reshape") or target in (torch.reshape,):
        raise _Unprunable(
            f"its output is reshaped by {_describe(user)}, after which pruning cannot tell "
            "which features belong to which channel; use nn.Flatten() or torch.flatten(x, 1)")
    raise _Unprunable(f"its output feeds {_describe(user)}, which structured pruning does "
                      "not know how to rewrite")
