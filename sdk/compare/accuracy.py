"""Accuracy of one bundle on the held-out data, against the source model's outputs.

The bundle runs through `edgepack.runtime.load(...).predict`, the path a device uses
(int8 I/O is quantized/dequantized with the bundle's own parameters), so the numbers are
those of what ships. Inputs/outputs are matched to the source by name when the bundle
keeps the source's names, else by position.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

#: Samples per predict() call when the bundle's batch axis is dynamic.
BATCH = 64
#: Error histogram bins: |bundle - source| on a log10 scale, plus an exact-zero bucket.
ERROR_EDGES = tuple(10.0 ** e for e in range(-8, 3))


@dataclass(frozen=True)
class OutputError:
    """How far one output of the bundle is from the source's."""

    name: str
    max_abs: float
    mean_abs: float
    cosine: float
    zero: int                       # elements with exactly zero error
    histogram: tuple[int, ...]      # counts per [ERROR_EDGES[i], ERROR_EDGES[i+1]); ends open

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "max_abs": self.max_abs, "mean_abs": self.mean_abs,
                "cosine": self.cosine, "zero": self.zero, "histogram": list(self.histogram),
                "edges": list(ERROR_EDGES)}


@dataclass(frozen=True)
class Accuracy:
    """Task metric and agreement with the source on `samples` held-out samples.

    accuracy/source_accuracy: fraction correct (None without labels).
    top1_agreement: fraction of samples where bundle and source pick the same class
        (None when no output is a 2-D score matrix).
    drop_points: (source - bundle) in points of accuracy, or of agreement without labels.
    """

    samples: int
    accuracy: float | None
    source_accuracy: float | None
    top1_agreement: float | None
    drop_points: float | None
    outputs: tuple[OutputError, ...] = field(default_factory=tuple)
    #: detect bundles: the detection record (recall, precision, agreement, mean IoU, ...);
    #: drop_points is then (1 - agreement) x 100 and top1_agreement None.
    detection: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"samples": self.samples, "accuracy": self.accuracy,
               "source_accuracy": self.source_accuracy, "top1_agreement": self.top1_agreement,
               "drop_points": self.drop_points, "outputs": [o.to_dict() for o in self.outputs]}
        if self.detection is not None:
            out["detection"] = dict(self.detection)
        return out


def _match(names: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """Bundle names in the source's order: by name when all match, else by position."""
    if set(wanted) <= set(names):
        return list(wanted)
    return list(names)[:len(wanted)]


def run_bundle(path: Path, source_inputs: Sequence[str], inputs: Sequence[np.ndarray],
               source_outputs: Sequence[str] | None = None) -> list[np.ndarray]:
    """Float outputs of the bundle at `path` on source-ordered inputs, in source output order."""
    from edgepack.runtime import load

    with load(path) as model:
        in_names = _match([s.name for s in model.inputs], source_inputs)
        out_all = [s.name for s in model.outputs]
        out_names = _match(out_all, source_outputs) if source_outputs else out_all
        first = model.inputs[0].shape
        batch = first[0] if first and first[0] > 0 else BATCH
        chunks: list[list[np.ndarray]] = []
        for start in range(0, len(inputs[0]), batch):
            feeds = {n: x[start:start + batch] for n, x in zip(in_names, inputs)}
            result = model.predict(feeds)
            chunks.append([np.asarray(result[n], dtype=np.float32) for n in out_names])
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(out_names))]


def output_error(name: str, reference: np.ndarray, produced: np.ndarray) -> OutputError:
    ref = np.asarray(reference, dtype=np.float64).ravel()
    got = np.nan_to_num(np.asarray(produced, dtype=np.float64).ravel(), nan=np.inf)
    if ref.shape != got.shape:
        inf = float("inf")
        return OutputError(name, inf, inf, float("nan"), 0, (0,) * (len(ERROR_EDGES) + 1))
    diff = np.abs(ref - got)
    norms = float(np.linalg.norm(ref) * np.linalg.norm(got))
    nonzero = diff[diff > 0]
    # Bin i counts errors in [edge[i-1], edge[i]); bin 0 is below the first edge, the last
    # bin at or above the last one.
    counts = np.bincount(np.searchsorted(ERROR_EDGES, nonzero, side="right"),
                         minlength=len(ERROR_EDGES) + 1)
    return OutputError(name, float(diff.max()) if diff.size else 0.0,
                       float(diff.mean()) if diff.size else 0.0,
                       float(np.dot(ref, got) / norms) if norms > 0 else float(np.allclose(ref, got)),
                       int(diff.size - nonzero.size), tuple(int(c) for c in counts))


def run_bundle_raw(path: Path, source_inputs: Sequence[str], inputs: Sequence[np.ndarray],
                   source_outputs: Sequence[str] | None = None
                   ) -> tuple[list[np.ndarray], list[str]]:
    """(float engine outputs, their bundle names) of the bundle on model-ready inputs,
    without the manifest's steps: what a detect bundle's decode is then run on."""
    from edgepack.converters.validation import _from_model, _to_model
    from edgepack.runtime import load

    with load(path) as model:
        in_names = _match([s.name for s in model.inputs], source_inputs)
        out_all = [s.name for s in model.outputs]
        out_names = _match(out_all, source_outputs) if source_outputs else out_all
        specs = {s.name: s for s in (*model.inputs, *model.outputs)}
        first = model.inputs[0].shape
        batch = first[0] if first and first[0] > 0 else BATCH
        chunks: list[list[np.ndarray]] = []
        for start in range(0, len(inputs[0]), batch):
            raw = model.run({n: _to_model(x[start:start + batch], specs[n])
                             for n, x in zip(in_names, inputs)})
            chunks.append([_from_model(raw[n], specs[n]) for n in out_names])
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(out_names))], out_names


def measure_detection(path: Path, dataset) -> Accuracy:
    """Detection agreement of a detect bundle with the source on `dataset.held_out`.

    Both the source's outputs and the bundle's go through the bundle's own postprocess +
    decode + NMS (converters.detection: the runtime's functions, so decoding is identical
    on both sides); each bundle detection is matched to a source one of its class at IoU
    >= 0.5. drop_points = (1 - min(recall, precision)) x 100."""
    from edgepack.converters.detection import compare_detections, detections_per_sample
    from edgepack.runtime import load

    source = dataset.source
    produced, names = run_bundle_raw(path, source.input_names, dataset.inputs,
                                     source.output_names)
    labels = list(source.output_names or [f"output_{i}" for i in range(len(produced))])
    errors = tuple(output_error(n, r, p) for n, r, p in zip(labels, dataset.reference, produced))
    with load(path) as model:
        src = detections_per_sample(model.postprocess, dict(zip(names, dataset.reference)))
        got = detections_per_sample(model.postprocess, dict(zip(names, produced)))
    record = compare_detections(src, got)
    drop = (1.0 - record["agreement"]) * 100.0
    return Accuracy(len(dataset.reference[0]), None, None, None, drop, errors, detection=record)


def measure_accuracy(path: Path, dataset) -> Accuracy:
    """Run the bundle on `dataset.held_out` and compare with `dataset.reference`
    (a `detect` bundle: by detection agreement, see measure_detection)."""
    from edgepack.runtime import read_bundle
    manifest = read_bundle(path).manifest
    if manifest.task_kind == "detect" and manifest.decode:
        return measure_detection(path, dataset)
    source = dataset.source
    produced = run_bundle(path, source.input_names, dataset.inputs, source.output_names)
    names = list(source.output_names or [f"output_{i}" for i in range(len(produced))])
    errors = tuple(output_error(n, r, p) for n, r, p in zip(names, dataset.reference, produced))
    return score(dataset.reference, produced, dataset.labels, errors)


def score(reference: Sequence[np.ndarray], produced: Sequence[np.ndarray],
          labels: np.ndarray | None, errors: tuple[OutputError, ...] = ()) -> Accuracy:
    """Accuracy, source accuracy, top-1 agreement and drop from outputs (first class-score
    output, i.e. the first 2-D output with more than one column)."""
    index = next((i for i, r in enumerate(reference) if r.ndim == 2 and r.shape[1] > 1), None)
    samples = len(reference[0]) if reference else 0
    if index is None or produced[index].shape != reference[index].shape:
        return Accuracy(samples, None, None, None, None, errors)
    ref_top = reference[index].argmax(1)
    got_top = np.nan_to_num(produced[index], nan=-np.inf).argmax(1)
    agreement = float(np.mean(ref_top == got_top))
    accuracy = source_accuracy = None
    if labels is not None:
        accuracy = float(np.mean(got_top == labels))
        source_accuracy = float(np.mean(ref_top == labels))
        drop = (source_accuracy - accuracy) * 100.0
    else:
        drop = (1.0 - agreement) * 100.0
    return Accuracy(samples, accuracy, source_accuracy, agreement, drop, errors)
