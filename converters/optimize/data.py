"""Turning the data users hand in into (x, y) batches of tensors.

Accepted: a pair of arrays `(x, y)` (numpy or torch; x float, y integer class labels), or any
re-iterable of `(x, y)` batches such as a `torch.utils.data.DataLoader`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Union

import numpy as np
import torch

from .errors import OptimizeError

Data = Union[tuple, Iterable]


@dataclass(frozen=True)
class ArrayData:
    """Whole-dataset tensors; lets a loop shuffle by index and cache per-sample results."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, batch_size: int, generator: torch.Generator | None = None
                ) -> Iterator[torch.Tensor]:
        """Yield index tensors; shuffled when a generator is given."""
        order = (torch.randperm(len(self), generator=generator) if generator is not None
                 else torch.arange(len(self)))
        for start in range(0, len(self), batch_size):
            yield order[start:start + batch_size]


def _tensor(value, name: str, dtype: torch.dtype) -> torch.Tensor:
    try:
        tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))
    except (TypeError, ValueError) as e:
        raise OptimizeError(f"{name} must be an array, got {type(value).__name__}") from e
    if not dtype.is_floating_point and tensor.is_floating_point() and not torch.equal(
            tensor, tensor.round()):
        raise OptimizeError(f"{name} must hold integer class labels, got fractional values")
    tensor = tensor.to(dtype)
    return tensor


def as_data(data: Data) -> ArrayData | Iterable:
    """Validate `data` and return an `ArrayData` or the re-iterable batch source itself."""
    if isinstance(data, ArrayData):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(
            data[0], (tuple, list)):
        x = _tensor(data[0], "x", torch.float32)
        y = _tensor(data[1], "y", torch.int64)
        if y.ndim != 1 or len(x) != len(y):
            raise OptimizeError(
                f"expected x with one row per label and y of shape (N,), got x {tuple(x.shape)}"
                f" and y {tuple(y.shape)}")
        if len(y) == 0:
            raise OptimizeError("the training data is empty")
        return ArrayData(x, y)
    if not isinstance(data, Iterable):
        raise OptimizeError(
            f"data must be (x, y) arrays or an iterable of (x, y) batches such as a "
            f"DataLoader, got {type(data).__name__}")
    if iter(data) is data:
        raise OptimizeError(
            "data is a one-shot iterator, which cannot be read once per epoch; pass (x, y) "
            "arrays or a DataLoader")
    return data


def iter_batches(source: ArrayData | Iterable, batch_size: int,
                 generator: torch.Generator | None = None
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Yield (x, y, index) batches; index is None for batch iterables."""
    if isinstance(source, ArrayData):
        for index in source.batches(batch_size, generator):
            yield source.x[index], source.y[index], index
        return
    for item in source:
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise OptimizeError("each batch must be an (x, y) pair")
        yield (_tensor(item[0], "x", torch.float32), _tensor(item[1], "y", torch.int64), None)
