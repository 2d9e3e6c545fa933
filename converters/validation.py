"""Validation: the source model and the packed bundle run on the same held-out samples.

The bundle is loaded through `edgepack.runtime.load`, exactly as a device would load it, so
what is measured is what ships. Numbers are collected for every output first, then all
failures are reported together in one ValidationError that carries the full report.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgepack.runtime.errors import ValidationError

from .artifacts import ConvertedModel, SourceModel
from .calibration import Samples
from .config import Tolerances
from .detection import detection_validation

log = logging.getLogger(__name__)

#: Samples per run when the model's batch axis is dynamic.
BATCH = 64


def bundle_batch(bundle_path: Path) -> int:
    """The bundle's fixed batch size, or BATCH when its batch axis is dynamic.

    (A model fixed to exactly BATCH samples is run the same way, so no ambiguity.)"""
    from edgepack.runtime import read_bundle
    specs = read_bundle(bundle_path).manifest.inputs
    first = specs[0].shape[0] if specs and specs[0].shape else -1
    return first if first > 0 else BATCH


def one_call_per_sample(example_inputs: Sequence[np.ndarray], stream: Any = None) -> bool:
    """True for models whose inputs share no batch axis: a streaming/stateful model (a
    window [1, 576], a state [2, 1, 128], a scalar rate). Each validation sample is then
    one call with every input at its own shape, not a row of a stacked batch."""
    shapes = [np.shape(x) for x in example_inputs]
    return bool(stream) or any(len(s) == 0 for s in shapes) or len({s[0] for s in shapes}) > 1


def _parts(inputs: Sequence[np.ndarray], step: int, per_call: bool):
    """(start, the inputs of one call) over the samples: `step` rows of each input, or with
    per_call sample i of each input as one call's whole tensor."""
    for start in range(0, len(inputs[0]), 1 if per_call else step):
        yield start, [x[start] if per_call else x[start:start + step] for x in inputs]


def run_bundle(bundle_path: Path, converted: ConvertedModel, source: SourceModel,
               inputs: Sequence[np.ndarray], batch: int = BATCH,
               per_call: bool = False) -> list[np.ndarray]:
    """Run the bundle on float source-ordered inputs; float outputs in source output order
    (with per_call, one call per sample and the outputs stacked on a new first axis)."""
    from edgepack.runtime import load
    with load(bundle_path) as model:
        specs = list(model.inputs)
        mapping = dict(converted.input_map or {})
        names = [mapping.get(n, specs[i].name if i < len(specs) else n)
                 for i, n in enumerate(source.input_names)]
        by_name = {s.name: s for s in specs}
        chunks: list[list[np.ndarray]] = []
        for _, part in _parts(inputs, batch, per_call):
            feeds = {name: _to_model(x, by_name[name]) for name, x in zip(names, part)}
            raw = model.run(feeds)
            outs = [_from_model(raw[s.name], s) for s in model.outputs]
            chunks.append([o[None] for o in outs] if per_call else outs)
    outputs = [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]
    order = converted.output_order or tuple(range(len(outputs)))
    by_source = [None] * len(outputs)
    for bundle_index, source_index in enumerate(order):
        by_source[source_index] = outputs[bundle_index]
    return by_source


def run_source(source: SourceModel, inputs: Sequence[np.ndarray],
               batch: int = BATCH, per_call: bool = False) -> list[np.ndarray]:
    """The source's outputs on `inputs`, run `batch` samples at a time, or at the source's
    own fixed batch when it has one (the last chunk padded with copies of its last sample,
    whose outputs are dropped): the one way every path runs a source model. With per_call,
    each sample is one call (see one_call_per_sample), outputs stacked on a new axis."""
    step = source.fixed_batch or batch
    chunks = []
    for start, part in _parts(inputs, step, per_call):
        if per_call:
            chunks.append([np.asarray(o)[None] for o in source.run(part)])
            continue
        count = len(part[0])
        if source.fixed_batch and count < step:
            part = [np.concatenate([p, np.repeat(p[-1:], step - count, axis=0)]) for p in part]
        chunks.append([np.asarray(o)[:count] for o in source.run(part)])
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def _to_model(x: np.ndarray, spec) -> np.ndarray:
    if spec.quantization is not None and spec.dtype in ("int8", "uint8"):
        q = spec.quantization
        info = np.iinfo(spec.dtype)
        values = np.round(x / q.scale[0]) + q.zero_point[0]
        return np.clip(values, info.min, info.max).astype(spec.dtype)
    return np.ascontiguousarray(x, dtype=spec.dtype)


def _from_model(y: np.ndarray, spec) -> np.ndarray:
    if spec.quantization is not None and np.asarray(y).dtype.kind in "iu":
        q = spec.quantization
        return (np.asarray(y, dtype=np.float32) - q.zero_point[0]) * q.scale[0]
    return np.asarray(y, dtype=np.float32)


def output_stats(reference: np.ndarray, produced: np.ndarray) -> dict[str, Any]:
    """Per-output numbers: errors, cosine, agreement, and the never-pass flags."""
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(produced, dtype=np.float64)
    if ref.shape != got.shape:
        return {"shape_mismatch": [list(ref.shape), list(got.shape)], "finite": True,
                "constant": False}
    finite = bool(np.all(np.isfinite(got)))
    stats: dict[str, Any] = {"finite": finite}
    if not finite:
        stats["nonfinite"] = int(np.count_nonzero(~np.isfinite(got)))
        got = np.nan_to_num(got, nan=0.0, posinf=0.0, neginf=0.0)
    diff = np.abs(ref - got)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    a, b = ref.ravel(), got.ravel()
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    stats.update(
        max_abs=float(diff.max()) if diff.size else 0.0,
        mean_abs=float(diff.mean()) if diff.size else 0.0,
        rel_error=float(diff.max() / scale) if scale > 0 else float(diff.max() if diff.size else 0),
        cosine=float(np.dot(a, b) / norms) if norms > 0 else float(np.allclose(a, b)),
    )
    # A model that answers the same thing for every sample has collapsed (e.g. a broken
    # quantization range); it fails even if the source itself is nearly constant.
    stats["constant"] = bool(len(got) > 1 and np.ptp(got, axis=0).max() == 0.0)
    if ref.ndim == 2 and ref.shape[1] > 1:
        stats["top1_agreement"] = float(np.mean(ref.argmax(1) == got.argmax(1)))
    return stats


def validate(source: SourceModel, converted: ConvertedModel, bundle_path: Path,
             samples: Samples, tolerances: Tolerances, data_kind: str,
             output_names: Sequence[str], per_call: bool = False) -> dict[str, Any]:
    """Compare source and bundle on `samples`; return the manifest `validation` record.

    The record has `passed`, `failures` (what was outside tolerance) and `fatal`
    (inf/NaN/constant/shape problems, which no --accept can wave through).
    """
    # A fixed-batch model (and its source: an exported program guards its batch size) runs
    # in chunks of that batch; the sample count is trimmed to a whole number of chunks.
    batch = BATCH if per_call else bundle_batch(bundle_path)
    count = len(samples) if batch == BATCH else len(samples) - len(samples) % batch
    if count == 0:
        raise ValidationError(f"the model takes batches of {batch} but only {len(samples)} "
                              "validation samples were given; pass more validation data")
    inputs = [samples.arrays[n][:count] for n in source.input_names]
    reference = run_source(source, inputs, batch, per_call)
    produced = run_bundle(bundle_path, converted, source, inputs, batch, per_call)
    outputs, failures, fatal = {}, [], []
    for name, ref, got in zip(output_names, reference, produced):
        stats = output_stats(ref, got)
        outputs[name] = stats
        if "shape_mismatch" in stats:
            fatal.append(f"{name}: shape {stats['shape_mismatch'][1]} instead of "
                         f"{stats['shape_mismatch'][0]}")
            continue
        if not stats["finite"]:
            fatal.append(f"{name}: {stats['nonfinite']} inf/NaN values")
        if stats["constant"]:
            fatal.append(f"{name}: the same output for every sample")
        if stats["cosine"] < tolerances.min_cosine:
            failures.append(f"{name}: cosine {stats['cosine']:.6f} < {tolerances.min_cosine}")
        if stats["rel_error"] > tolerances.max_rel_error:
            failures.append(f"{name}: relative max error {stats['rel_error']:.4g} > "
                            f"{tolerances.max_rel_error}")
        agreement = stats.get("top1_agreement")
        if agreement is not None and agreement < tolerances.min_top1_agreement:
            failures.append(f"{name}: top-1 agreement {agreement:.4f} < "
                            f"{tolerances.min_top1_agreement}")
    report: dict[str, Any] = {"samples": len(inputs[0]), "data": data_kind, "outputs": outputs}
    if per_call:
        report["calls"] = "one per sample"  # inputs with no shared batch axis (a stream)
    first = next((s for s in outputs.values() if "top1_agreement" in s), None)
    if first is not None:
        report["top1_agreement"] = first["top1_agreement"]
    if samples.labels is not None and reference and reference[0].ndim == 2:
        labels = samples.labels[:count].astype(np.int64)
        src_acc = float(np.mean(reference[0].argmax(1) == labels))
        got_acc = float(np.mean(np.nan_to_num(produced[0]).argmax(1) == labels))
        drop = (src_acc - got_acc) * 100.0
        report["task"] = {"metric": "accuracy", "source": src_acc, "bundle": got_acc,
                          "drop_points": drop}
        if drop > tolerances.max_drop:
            failures.append(f"accuracy drop {drop:.2f} points > {tolerances.max_drop}")
    detection = detection_validation(bundle_path, list(output_names), reference, produced,
                                     (converted.quantization or {}).get("mode"))
    if detection is not None:  # a detect bundle: compare detections, not argmax
        report["task"], detection_failures = detection
        report["detection_agreement"] = report["task"]["agreement"]
        # Raw-tensor cosine / error / argmax of a detector's outputs say little about its
        # boxes (8400 candidate rows, most below threshold): kept as notes, not gates.
        report.pop("top1_agreement", None)
        if failures:
            report["tensor_notes"] = failures
        failures = detection_failures
    speed = (converted.quantization or {}).get("speed")
    if speed:  # measured by the int8 quantizer on this machine (edgepack.converters.int8)
        report["speed"] = speed
    report.update(tolerances=tolerances.to_dict(), passed=not failures and not fatal,
                  failures=failures, fatal=fatal)
    return report


def raise_if_failed(report: dict[str, Any], accept: bool) -> None:
    """ValidationError unless the report passed, or failed only softly and `accept`."""
    if report["fatal"]:
        raise ValidationError("the converted model is broken, not just inaccurate: "
                              + "; ".join(report["fatal"]), report)
    if report["failures"] and not accept:
        raise ValidationError(
            "validation outside tolerance: " + "; ".join(report["failures"])
            + " (pass --accept to keep the bundle anyway, or loosen with --max-drop/tolerances)",
            report)


def format_table(report: dict[str, Any]) -> str:
    """The validation report as a small text table (used by the CLI)."""
    rows = [("output", "max_abs", "mean_abs", "rel_err", "cosine", "top1")]
    for name, s in report.get("outputs", {}).items():
        rows.append((name, f"{s.get('max_abs', float('nan')):.3g}",
                     f"{s.get('mean_abs', float('nan')):.3g}",
                     f"{s.get('rel_error', float('nan')):.3g}",
                     f"{s.get('cosine', float('nan')):.6f}",
                     f"{s['top1_agreement']:.4f}" if "top1_agreement" in s else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    task = report.get("task")
    if task and task.get("metric") == "detection":
        lines.append(f"detections: recall {task['recall']:.4f}  precision "
                     f"{task['precision']:.4f}  mean IoU {task['mean_iou']:.4f}  score error "
                     f"{task['score_error_mean']:.4f} (max {task['score_error_max']:.4f})")
    elif task:
        lines.append(f"accuracy: source {task['source'] * 100:.2f}%  bundle "
                     f"{task['bundle'] * 100:.2f}%  drop {task['drop_points']:.2f} pt")
    speed = report.get("speed")
    if speed:
        points = ", ".join(f"x{p['ratio']:.2f} at {p['threads']} thread"
                           f"{'s' if p['threads'] > 1 else ''}" for p in speed["points"])
        lines.append(f"faster than fp32 here? {'yes' if speed['faster_than_fp32'] else 'NO'}"
                     f" (int8/fp32 latency {points}; {speed.get('host') or 'this host'})")
    of = f" of {report['available']}" if report.get("available") else ""
    lines.append(f"samples: {report.get('samples')}{of} ({report.get('data')})  "
                 f"{'PASSED' if report.get('passed') else 'FAILED'}")
    return "\n".join(lines)
