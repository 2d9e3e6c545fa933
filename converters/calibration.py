"""Calibration and validation samples from files, folders, arrays or any iterable.

Whatever the form, the result is a `Samples`: one float32 array per model input, samples
stacked on the batch axis, plus optional integer labels. Images in a folder are run through
the bundle's own preprocessing steps (`edgepack.runtime.ops`), the very functions the
runtime applies on the device, so calibration sees what the deployed model will see.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from edgepack.runtime.errors import ConversionError, EdgepackError, InputError
from edgepack.runtime.images import IMAGE_SUFFIXES, decode_image

from .sources import to_numpy

log = logging.getLogger(__name__)

LABEL_KEYS = ("labels", "label", "y")


@dataclass(frozen=True)
class Samples:
    """Model inputs keyed by input name (batch axis first) and optional labels."""

    arrays: Mapping[str, np.ndarray]
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return min(len(a) for a in self.arrays.values())

    def take(self, start: int, stop: int | None = None) -> "Samples":
        arrays = {n: a[start:stop] for n, a in self.arrays.items()}
        labels = None if self.labels is None else self.labels[start:stop]
        return Samples(arrays, labels)


def load_samples(data: Any, input_names: Sequence[str], example_inputs: Sequence[np.ndarray],
                 *, preprocess: Mapping[str, list] | None = None,
                 class_names: Sequence[str] | None = None, what: str = "calibration"
                 ) -> Samples | None:
    """Read `data` (None, Samples, array, dict, .npy/.npz path, image folder, iterable).

    Raises ConversionError when the data cannot be read or its sample shape does not fit
    the model's inputs.
    """
    if data is None or isinstance(data, Samples):
        return data
    labels = None
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.exists():
            raise ConversionError(f"{what} data {path} does not exist")
        if path.is_dir():
            arrays, labels = _image_folder(path, input_names, preprocess, class_names, what)
        else:
            arrays, labels = _array_file(path, input_names, what)
    elif isinstance(data, Mapping):
        arrays = {k: to_numpy(v) for k, v in data.items() if k not in LABEL_KEYS}
        labels = next((to_numpy(data[k]) for k in LABEL_KEYS if k in data), None)
    elif isinstance(data, np.ndarray) or hasattr(data, "detach") or hasattr(data, "numpy"):
        arrays = {input_names[0]: to_numpy(data)} if len(input_names) == 1 else None
        if arrays is None:
            raise ConversionError(
                f"the model has {len(input_names)} inputs; pass {what} data as a dict keyed by "
                f"input name ({', '.join(input_names)})")
    elif isinstance(data, Iterable):
        arrays, labels = _iterable(data, input_names, example_inputs, what)
    else:
        raise ConversionError(
            f"cannot read {what} data of type {type(data).__name__}; pass a .npy/.npz path, "
            "an image folder, an array, a dict of arrays or an iterable of samples")
    arrays = _through_front_end(arrays, input_names, example_inputs, preprocess, what)
    return _checked(arrays, labels, input_names, example_inputs, what)


def _through_front_end(arrays, input_names, examples, preprocess, what):
    """Raw samples (e.g. audio clips) whose shape is not the model's are run through the
    bundle's own preprocessing (e.g. log_mel), one sample at a time, so calibration and
    validation see the features the device computes."""
    if not preprocess or arrays is None:
        return arrays
    from edgepack.runtime.ops import Context, compile_steps
    out = dict(arrays)
    for name, example in zip(input_names, examples):
        steps = preprocess.get(name)
        raw = out.get(name)
        if not steps or raw is None:
            continue
        raw = np.asarray(raw)
        if raw.ndim == example.ndim and raw.shape[1:] == example.shape[1:]:
            continue  # already model tensors
        fn = compile_steps(steps, Context(), f"preprocess[{name!r}]")
        try:
            out[name] = np.stack([np.asarray(fn(sample), dtype=np.float32) for sample in raw])
        except EdgepackError as e:
            raise ConversionError(f"{what} data for input {name!r} could not go through the "
                                  f"bundle's preprocessing: {e}") from e
    return out


def _checked(arrays: dict[str, np.ndarray], labels, input_names, examples, what) -> Samples:
    missing = [n for n in input_names if n not in arrays]
    if missing:
        if len(input_names) == 1 and len(arrays) == 1:
            arrays = {input_names[0]: next(iter(arrays.values()))}
        else:
            raise ConversionError(
                f"{what} data has no samples for input(s) {missing}; it has {sorted(arrays)}")
    out = {}
    for name, example in zip(input_names, examples):
        array = np.asarray(arrays[name])
        if array.ndim == example.ndim - 1:
            array = array[None]  # a single sample without its batch axis
        elif array.ndim == example.ndim + 1 and array.shape[1] == 1:
            array = array[:, 0]  # stacked samples that each kept a batch axis of 1
        if array.shape[1:] != example.shape[1:]:
            raise ConversionError(
                f"{what} data for input {name!r} has samples of shape {list(array.shape[1:])} "
                f"but the model takes {list(example.shape[1:])}")
        if array.dtype.kind == "f":
            array = array.astype(np.float32, copy=False)
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise ConversionError(f"{what} data for input {name!r} contains inf or NaN")
        out[name] = np.ascontiguousarray(array)
    counts = {len(a) for a in out.values()}
    if len(counts) != 1 or 0 in counts:
        raise ConversionError(f"{what} data has different or zero sample counts per input: "
                              f"{ {n: len(a) for n, a in out.items()} }")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != len(next(iter(out.values()))):
            raise ConversionError(
                f"{what} data has {len(labels)} labels for {len(next(iter(out.values())))} samples")
    return Samples(out, labels)


def _array_file(path: Path, input_names: Sequence[str], what: str):
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return {input_names[0]: np.load(path, allow_pickle=False)}, None
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                content = {k: archive[k] for k in archive.files}
            labels = next((content.pop(k) for k in LABEL_KEYS if k in content), None)
            return content, labels
    except (OSError, ValueError) as e:
        raise ConversionError(f"cannot read {what} data {path}: {e}") from e
    raise ConversionError(
        f"{what} data {path.name}: use a .npy/.npz file or a folder of images")


def _image_folder(path: Path, input_names, preprocess, class_names, what):
    if len(input_names) != 1:
        raise ConversionError(f"an image folder can feed a one-input model only; this one has "
                              f"{len(input_names)} inputs")
    steps = (preprocess or {}).get(input_names[0])
    if not steps:
        raise ConversionError(
            f"{what} images need the bundle's preprocessing to become model inputs; pass "
            "preprocess steps (--preprocess steps.json) for input " + repr(input_names[0]))
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConversionError(f"{what} folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    from edgepack.runtime.ops import apply_steps
    samples, labels = [], []
    for file in files:
        try:   # the runtime's one decoder: the same array as `run` and the server get
            pixels = decode_image(file)
        except InputError as e:
            raise ConversionError(f"{what} {e}") from e
        samples.append(np.asarray(apply_steps(steps, pixels)))
        if class_names and file.parent != path:
            name = file.parent.name
            if name not in class_names:
                raise ConversionError(f"image folder {file.parent.name!r} is not a known label")
            labels.append(class_names.index(name))
    try:
        stacked = np.stack(samples)
    except ValueError as e:
        raise ConversionError(f"{what} images preprocess to different shapes: {e}") from e
    log.info("%s: %d images from %s", what, len(files), path)
    return {input_names[0]: stacked}, (np.asarray(labels) if len(labels) == len(files) else None)


def _iterable(data: Iterable, input_names, examples, what):
    per_input: dict[str, list[np.ndarray]] = {n: [] for n in input_names}
    labels: list[Any] = []
    for item in data:
        label = None
        if isinstance(item, tuple) and len(item) == 2 and len(input_names) == 1:
            item, label = item
        if isinstance(item, Mapping):
            values = {k: to_numpy(v) for k, v in item.items()}
        elif isinstance(item, (list, tuple)):
            values = dict(zip(input_names, (to_numpy(v) for v in item)))
        else:
            values = {input_names[0]: to_numpy(item)}
        for name, example in zip(input_names, examples):
            if name not in values:
                raise ConversionError(f"a {what} sample has no value for input {name!r}")
            value = values[name]
            per_input[name].append(value if value.ndim == example.ndim else value[None])
        if label is not None:
            labels.append(np.atleast_1d(to_numpy(label)))
    if not per_input[input_names[0]]:
        raise ConversionError(f"the {what} iterable yielded no samples")
    try:
        arrays = {n: np.concatenate(v) for n, v in per_input.items()}
    except ValueError as e:
        raise ConversionError(f"{what} samples have different shapes: {e}") from e
    return arrays, (np.concatenate(labels) if labels else None)
