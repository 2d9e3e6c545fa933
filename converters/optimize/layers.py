"""Finding the layers pruning works on, and counting what a model holds."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from .errors import UnknownLayerError

# Layers whose `weight` is a dense matrix/filter bank that pruning can thin out.
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
)


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Map module name -> module for every Conv/Linear layer of `model`, in definition order."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, PRUNABLE_TYPES) and getattr(module, "weight", None) is not None
    }


def check_names(names: Iterable[str], known: dict[str, nn.Module], what: str) -> None:
    """Raise `UnknownLayerError` listing every name of `names` missing from `known`."""
    unknown = [n for n in names if n not in known]
    if unknown:
        listing = ", ".join(known) or "(none)"
        raise UnknownLayerError(
            f"{what} {', '.join(repr(n) for n in unknown)} "
            f"{'is' if len(unknown) == 1 else 'are'} not prunable layers of this model; "
            f"prunable layers are: {listing}"
        )


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (trainable or not) of `model`."""
    return sum(p.numel() for p in model.parameters())


def count_nonzero(model: nn.Module) -> int:
    """Number of non-zero parameter scalars (what sparse storage would keep)."""
    with torch.no_grad():
        return int(sum(int(torch.count_nonzero(p)) for p in model.parameters()))
