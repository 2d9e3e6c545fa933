"""Loading models from `module:factory` specs and saving/loading pruned weights.

A structurally pruned model has narrower layers than its factory builds, so its state_dict
does not load into a fresh factory model with `load_state_dict`. `load_weights` first resizes
the Conv/Linear/BatchNorm layers to the shapes stored in the file, then loads strictly.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import OptimizeError


def resolve_factory(spec: str) -> Callable[[], nn.Module]:
    """Import `package.module:function` and return the callable."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise OptimizeError(f"model spec must look like 'package.module:factory', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise OptimizeError(f"cannot import module {module_name!r} from {spec!r}: {e}") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise OptimizeError(f"{module_name!r} has no callable named {attr!r}")
    return factory


def build_model(spec: str) -> nn.Module:
    """Call the factory named by `spec` and check it returns an `nn.Module`."""
    model = resolve_factory(spec)()
    if not isinstance(model, nn.Module):
        raise OptimizeError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Write `model.state_dict()` to `path` (a `.pt` file `load_weights` can read back)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def _resize(module: nn.Module, prefix: str, state: dict[str, torch.Tensor]) -> None:
    weight = state.get(prefix + "weight")
    if isinstance(module, nn.Linear) and weight is not None and weight.ndim == 2:
        module.out_features, module.in_features = weight.shape
    elif isinstance(module, nn.modules.conv._ConvNd) and weight is not None:
        out_ch, in_per_group = weight.shape[:2]
        module.out_channels, module.in_channels = out_ch, in_per_group * module.groups
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        mean = state.get(prefix + "running_mean")
        width = weight.shape[0] if weight is not None else (
            mean.shape[0] if mean is not None else None)
        if width is None:
            return
        module.num_features = int(width)
    else:
        return
    # Give every tensor of this module the stored shape; values come from load_state_dict.
    for name, param in list(module.named_parameters(recurse=False)):
        stored = state.get(prefix + name)
        if stored is not None and stored.shape != param.shape:
            setattr(module, name, nn.Parameter(torch.empty_like(stored, dtype=param.dtype),
                                               requires_grad=param.requires_grad))
    for name, buf in list(module.named_buffers(recurse=False)):
        stored = state.get(prefix + name)
        if buf is not None and stored is not None and stored.shape != buf.shape:
            setattr(module, name, torch.empty_like(stored, dtype=buf.dtype))


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state_dict written by `save_weights`, resizing pruned layers to match first.

    Raises `OptimizeError` if the file is missing/unreadable or does not fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise OptimizeError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise OptimizeError(f"cannot read weights {path}: {e}; expected a torch.save'd "
                            "state_dict (.pt)") from e
    if isinstance(state, nn.Module):
        state = state.state_dict()
    if not isinstance(state, dict):
        raise OptimizeError(f"{path} holds {type(state).__name__}, not a state_dict")
    for name, module in model.named_modules():
        _resize(module, f"{name}." if name else "", state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise OptimizeError(f"weights {path} do not fit the model: {e}") from e
    return model
