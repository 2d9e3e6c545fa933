"""Reading model inputs from files for the CLI: .npy, .npz, images, and name=path pairs."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edgepack.runtime.errors import InputError
from edgepack.runtime.images import IMAGE_SUFFIXES, decode_image
from edgepack.runtime.specs import TensorSpec

__all__ = ["IMAGE_SUFFIXES", "input_sets", "read_array", "read_image"]


def read_array(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    """One file -> array (.npy, image) or dict of arrays (.npz)."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise InputError(f"{path}: no such input file")
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError) as e:
        raise InputError(f"{path}: not a readable numpy file ({e})") from e
    if suffix in IMAGE_SUFFIXES:
        return read_image(path)
    raise InputError(f"{path}: unsupported input type {suffix!r}; use .npy, .npz or an image")


def read_image(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB: the runtime's one decoder (runtime/images.py)."""
    return decode_image(path)


def input_sets(arguments: Sequence[str], specs: Sequence[TensorSpec]) -> list[dict[str, np.ndarray]]:
    """Turn CLI arguments into one feed dict per run.

    `name=path` binds a file to an input; a bare path is one sample of a one-input model
    (each bare path is a separate run); a .npz supplies inputs by key.
    """
    names = [s.name for s in specs]
    named: dict[str, np.ndarray] = {}
    runs: list[dict[str, np.ndarray]] = []
    for argument in arguments:
        name, sep, file = argument.partition("=")
        if sep and name in names:
            value = read_array(Path(file))
            if isinstance(value, dict):
                raise InputError(f"{file}: a .npz cannot be bound to one input; pass it bare")
            named[name] = value
            continue
        value = read_array(Path(argument))
        if isinstance(value, dict):
            unknown = set(value) - set(names)
            if unknown:
                raise InputError(f"{argument}: keys {sorted(unknown)} are not model inputs {names}")
            runs.append(value)
        elif len(names) == 1:
            runs.append({names[0]: value})
        else:
            raise InputError(f"{argument}: the model has inputs {names}; bind files as name=path")
    if named:
        runs.append(named)
    return runs
