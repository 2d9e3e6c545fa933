"""The source model and the data of a comparison: loaded once, split once, shared by all rows.

The converters' own loaders are reused (`load_source`, `load_samples`), so `compare` reads
models and data exactly as `edgepack convert` does.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.runtime.errors import EdgepackError

from .config import CompareConfig, CompareError

log = logging.getLogger(__name__)

LABEL_KEYS = ("labels", "label", "y")


@dataclass(frozen=True)
class Dataset:
    """Calibration and held-out samples plus the source model's outputs on the held-out part.

    calibration/held_out: converters' `Samples` (arrays keyed by source input name).
    reference: the source model's float outputs on held_out, in source output order.
    """

    source: Any                 # converters.artifacts.SourceModel
    calibration: Any            # converters.calibration.Samples
    held_out: Any               # converters.calibration.Samples (with labels when known)
    reference: tuple[np.ndarray, ...]

    @property
    def labels(self) -> np.ndarray | None:
        return self.held_out.labels

    @property
    def inputs(self) -> list[np.ndarray]:
        return [self.held_out.arrays[n] for n in self.source.input_names]


def read_labels(path: str | Path) -> np.ndarray:
    """Integer labels from .npy or a text file of one integer per line."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            labels = np.load(path, allow_pickle=False)
        else:
            labels = np.array([int(line) for line in path.read_text(encoding="utf-8").split()])
    except (OSError, ValueError) as e:
        raise CompareError(f"cannot read labels {path}: {e}; use a .npy of integers or a text "
                           "file with one integer per line") from e
    labels = np.asarray(labels).reshape(-1)
    if labels.dtype.kind not in "iu":
        raise CompareError(f"labels {path} must be integers (class indices), got {labels.dtype}")
    return labels


def _raw_arrays(data: Any) -> tuple[tuple[np.ndarray, ...], np.ndarray | None]:
    """The inputs in file order (to build example inputs before the model is loaded)."""
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.is_file():
            raise CompareError(f"data file {path} does not exist; pass a .npy or .npz of "
                               "model inputs (an .npz may hold 'labels')")
        try:
            if path.suffix.lower() == ".npy":
                return (np.load(path, allow_pickle=False),), None
            if path.suffix.lower() == ".npz":
                with np.load(path, allow_pickle=False) as archive:
                    content = {k: archive[k] for k in archive.files}
                labels = next((content.pop(k) for k in LABEL_KEYS if k in content), None)
                if not content:
                    raise CompareError(f"{path} holds no input arrays (only labels)")
                return tuple(content.values()), labels
        except (OSError, ValueError) as e:
            raise CompareError(f"cannot read data {path}: {e}") from e
        raise CompareError(f"data {path.name}: use a .npy or .npz file of model inputs")
    if isinstance(data, dict):
        labels = next((data[k] for k in LABEL_KEYS if k in data), None)
        return tuple(np.asarray(v) for k, v in data.items() if k not in LABEL_KEYS), labels
    return (np.asarray(data),), None


def load_dataset(model: Any, data: Any, config: CompareConfig, *, labels: Any = None,
                 weights: str | Path | None = None) -> Dataset:
    """Load the source model, read and split the data, and run the source on the held-out part.

    model: anything `edgepack.convert` takes (live torch/keras model, model file, module:factory).
    data: .npy/.npz path, array or dict of arrays (an .npz/dict may carry 'labels').
    labels: integer class labels for `data` (array or path); overrides labels in the file.
    Raises CompareError for unreadable data and the converters' errors for the model.
    """
    from edgepack.converters.calibration import Samples, load_samples
    from edgepack.converters.sources import load_source
    from edgepack.converters.validation import run_source

    arrays, file_labels = _raw_arrays(data)
    if labels is not None:
        file_labels = read_labels(labels) if isinstance(labels, (str, Path)) else \
            np.asarray(labels).reshape(-1)
    examples = tuple(np.asarray(a[:1], dtype=np.float32) if np.asarray(a).dtype.kind == "f"
                     else np.asarray(a[:1]) for a in arrays)
    source = load_source(model, example_inputs=examples if len(examples) > 1 else examples[0],
                         weights=weights)
    payload = (dict(zip(source.input_names, arrays)) if len(arrays) == len(source.input_names)
               else arrays[0])
    samples = load_samples(payload, source.input_names, source.example_inputs, what="compare")
    count = len(samples)
    if file_labels is not None:
        file_labels = np.asarray(file_labels).reshape(-1)
        if len(file_labels) != count:
            raise CompareError(f"{len(file_labels)} labels for {count} samples")
        if file_labels.dtype.kind not in "iu":
            raise CompareError(f"labels must be integer class indices, got {file_labels.dtype}")
    held = max(1, int(round(count * config.holdout)))
    if count - held < 1:
        raise CompareError(f"{count} samples cannot be split into calibration and held-out "
                           "data; pass at least 2")
    # A seeded permutation: data sorted by class must not leave whole classes out.
    order = np.random.default_rng(config.seed).permutation(count)
    cal_idx, held_idx = np.sort(order[:count - held]), np.sort(order[count - held:])
    cal_idx = cal_idx[:config.calibration_samples]

    def subset(idx):
        return Samples({n: a[idx] for n, a in samples.arrays.items()},
                       None if file_labels is None else file_labels[idx].astype(np.int64))

    calibration, held_out = subset(cal_idx), subset(held_idx)
    inputs = [held_out.arrays[n] for n in source.input_names]
    try:
        reference = tuple(np.asarray(r, dtype=np.float32) for r in run_source(source, inputs))
    except EdgepackError:
        raise
    except Exception as e:  # the user's model failed on the user's data: say so, once
        raise CompareError(f"the source model failed on the held-out data: "
                           f"{type(e).__name__}: {e}") from e
    log.info("compare data: %d samples, %d calibration, %d held out%s", count, len(cal_idx),
             len(held_idx), ", labelled" if file_labels is not None else "")
    return Dataset(source, calibration, held_out, reference)
