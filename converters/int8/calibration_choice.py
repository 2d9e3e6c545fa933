"""Calibration method per tensor, and the float-graph choices made before calibrating.

One calibration method for every tensor is a compromise: MinMax keeps the whole range
(right for bounded post-ReLU tensors), Percentile and Entropy clip rare outliers (right for
heavy-tailed tensors, where MinMax spends the 256 levels on values that almost never occur).
`choose_calibration` calibrates with each method once, then for every activation tensor
picks the range whose fake quantization gives that tensor the lowest error on the
calibration set (per-sample relative squared error, averaged over samples), writes the mixed ranges into onnxruntime's calibration cache (its
quantizer reads one range per tensor from it, whatever method produced it), and finally
keeps whichever of {each method alone, the per-tensor mix} gives the model's output the
best score (top-1 agreement, then output error) on the calibration samples.

`prepare_calibrated` is what `quantize_int8` runs when an accuracy target is set and plain
int8 misses it: cross-layer equalization (cle.py, a float rewrite, so a fresh calibration),
then the calibration choice; each is kept only when the all-int8 result is strictly better.
Later methods (bias correction, learned rounding, float layers) run in `accuracy_aware`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .quantize import METHODS, Calibrated, CalibrationSettings
from .recipes import Recipe

log = logging.getLogger(__name__)

#: Calibration samples whose activations decide the per-tensor choice (fake-quantizing every
#: activation three times is the costly part on a 224x224 CNN).
CHOICE_SAMPLES = 32


@dataclass(frozen=True)
class CalibrationChoice:
    """The chosen calibration: a per-tensor mix or one method for the model."""

    calibrated: Calibrated          # ready to quantize (owned by the caller from now on)
    chosen: str                     # "per_tensor" or a method name
    scores: dict[str, Any]          # candidate -> Score on the measurement samples
    per_tensor: dict[str, str]      # tensor -> method, for the mix
    model_bytes: bytes              # the all-int8 model of the chosen calibration

    def to_record(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for method in self.per_tensor.values():
            counts[method] = counts.get(method, 0) + 1
        return {"chosen": self.chosen,
                "candidates": {k: {"agreement": round(s.agreement, 6),
                                   "error": float(f"{s.error:.4g}")}
                               for k, s in self.scores.items()},
                "per_tensor_methods": counts}


class _WithRanges(Calibrated):
    """A Calibrated whose ranges are given (written to its cache) instead of measured."""

    def __init__(self, model_bytes: bytes, calibration: Mapping[str, np.ndarray],
                 settings: CalibrationSettings, ranges) -> None:
        from onnxruntime.quantization.calibrate import save_tensors_data
        super().__init__(model_bytes, calibration, settings)
        save_tensors_data(ranges, self._cache)


def _load_ranges(calibrated: Calibrated):
    from onnxruntime.quantization.calibrate import load_tensors_data
    return load_tensors_data(calibrated._cache)


def choose_calibration(float_model: bytes, calibration: Mapping[str, np.ndarray],
                       recipe: Recipe, meter, settings: CalibrationSettings,
                       methods: Sequence[str] = METHODS,
                       exclude_nodes: Sequence[str] = (),
                       reuse: Calibrated | None = None) -> CalibrationChoice:
    """Calibrate `float_model` with each of `methods`, build the per-tensor mix, and return
    the candidate whose all-int8 model `meter` (model bytes -> Score) scores best.

    reuse: a Calibrated of this float model whose method is not calibrated again (the
    caller keeps owning it: it is never closed here, and may be the one returned)."""
    from onnxruntime.quantization.calibrate import TensorsData
    from .sensitivity import _better

    candidates: dict[str, tuple[Calibrated, bytes]] = {}
    scores: dict[str, Any] = {}
    ranges = {}
    try:
        for method in methods:
            c = reuse if reuse is not None and reuse.settings.method == method and \
                reuse.model_bytes == float_model else Calibrated(
                    float_model, calibration, CalibrationSettings(
                        method=method, percentile=settings.percentile, batch=settings.batch))
            model = c.quantize(recipe, exclude_nodes)
            candidates[method], scores[method] = (c, model), meter(model)
            ranges[method] = _load_ranges(c)
        per_tensor = _per_tensor_choice(float_model, calibration, ranges,
                                        recipe.activation_type)
        best_method = max(scores, key=lambda m: (scores[m].agreement, -scores[m].error))
        if len(set(per_tensor.values())) > 1:
            mixed = TensorsData(ranges[best_method].calibration_method,
                                {t: ranges[m].data[t] for t, m in per_tensor.items()})
            c = _WithRanges(float_model, calibration, CalibrationSettings(
                method=best_method, percentile=settings.percentile, batch=settings.batch),
                mixed)
            model = c.quantize(recipe, exclude_nodes)
            candidates["per_tensor"], scores["per_tensor"] = (c, model), meter(model)
        chosen = best_method
        if "per_tensor" in scores and _better(scores["per_tensor"], scores[best_method]):
            chosen = "per_tensor"
    except BaseException:
        for c, _ in candidates.values():
            if c is not reuse:
                c.close()
        raise
    for name, (c, _) in candidates.items():
        if name != chosen and c is not reuse:
            c.close()
    log.info("calibration choice: %s (%s)", chosen, ", ".join(
        f"{k} {s.agreement:.4f}/{s.error:.3g}" for k, s in scores.items()))
    calibrated, model = candidates[chosen]
    return CalibrationChoice(calibrated, chosen, scores, per_tensor, model)


def _per_tensor_choice(float_model: bytes, calibration: Mapping[str, np.ndarray],
                       ranges: Mapping[str, Any], activation_type: str) -> dict[str, str]:
    """tensor -> the method whose range fake-quantizes it with the lowest squared error."""
    first = next(iter(ranges.values()))
    tensors = [t for t in first.data if all(t in r.data for r in ranges.values())]
    errors = _quantization_errors(float_model, calibration, tensors, ranges, activation_type)
    order = list(ranges)
    # Ties (e.g. a tensor every method ranges alike) go to the first method (minmax).
    return {t: order[int(np.argmin([errors[t][m] for m in order]))] for t in errors}


def fake_quant(x: np.ndarray, low: float, high: float, activation_type: str) -> np.ndarray:
    """x through the asymmetric activation quantizer onnxruntime builds from [low, high]."""
    qmin, qmax = (0, 255) if activation_type == "uint8" else (-128, 127)
    low, high = min(float(np.min(low)), 0.0), max(float(np.max(high)), 0.0)
    scale = (high - low) / (qmax - qmin) or 1.0
    zero = np.round(qmin - low / scale)
    q = np.clip(np.round(x * (1.0 / scale)) + zero, qmin, qmax)   # keeps x's float type
    return (q - zero) * scale


def _quantization_errors(float_model: bytes, calibration: Mapping[str, np.ndarray],
                         tensors: Sequence[str], ranges: Mapping[str, Any],
                         activation_type: str) -> dict[str, dict[str, float]]:
    import onnx
    import onnxruntime as ort

    model = onnx.load_from_string(float_model)
    present = {o.name for o in model.graph.output} | {i.name for i in model.graph.input}
    for t in tensors:
        if t not in present:
            model.graph.output.append(onnx.ValueInfoProto(name=t))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    feeds = {n: np.asarray(calibration[n][:CHOICE_SAMPLES], np.float32) for n in inputs}
    count = len(next(iter(feeds.values())))
    fixed = session.get_inputs()[0].shape[0]
    batch = fixed if isinstance(fixed, int) and fixed > 0 else min(16, count)
    wanted = [t for t in tensors if t in outputs or t in feeds]
    errors = {t: {m: 0.0 for m in ranges} for t in wanted}
    for start in range(0, count - count % batch or count, batch):
        chunk = {n: a[start:start + batch] for n, a in feeds.items()}
        values = dict(zip(outputs, session.run(outputs, chunk)))
        values.update(chunk)
        for t in wanted:
            if not np.issubdtype(np.asarray(values[t]).dtype, np.floating):
                continue
            x = np.asarray(values[t], np.float32)
            flat = x.reshape(len(x), -1)
            energy = np.maximum(np.sum(flat.astype(np.float64) ** 2, axis=1), 1e-30)
            for m, r in ranges.items():
                low, high = r.data[t].range_value
                diff = fake_quant(flat, low, high, activation_type) - flat
                # Per-sample relative error, averaged: one glitch sample with a huge value
                # counts as one sample (as it does for top-1 agreement), not as most of
                # the squared error of the whole set.
                errors[t][m] += float(np.sum(np.einsum("ij,ij->i", diff, diff) / energy))
    return errors


def prepare_calibrated(float_model: bytes, calibration: Mapping[str, np.ndarray],
                       recipe: Recipe, settings: CalibrationSettings, target,
                       exclude_nodes: Sequence[str] = (), *, equalization: bool = True,
                       choice: bool = True) -> tuple[Calibrated, tuple[dict[str, Any], ...]]:
    """The Calibrated for the accuracy-aware pass and the records of the methods tried.

    Plain int8 first; when it misses `target.min_agreement`, cross-layer equalization and
    then the calibration choice, each kept only when the all-int8 score is strictly better
    (records as in `accuracy_aware.methods`). The caller owns (closes) the result.
    """
    from .sensitivity import AgreementMeter, _better

    meter = AgreementMeter("onnxruntime", float_model,
                           {n: a[:target.samples] for n, a in calibration.items()})
    current = Calibrated(float_model, calibration, settings)
    records: list[dict[str, Any]] = []
    try:
        best = meter(current.quantize(recipe, exclude_nodes))
        if best.agreement >= target.min_agreement:
            return current, ()
        if equalization:
            from .cle import equalize
            exact = equalize(current.model_bytes)
            relaxed = equalize(current.model_bytes, relax_clips=True)
            variants = [("cross_layer_equalization", exact)]
            if len(relaxed.pairs) > len(exact.pairs):   # ReLU6 pairs: measured, not exact
                variants.append(("cross_layer_equalization_relu6_as_relu", relaxed))
            start = best
            for name, equalized in variants:
                if not equalized.pairs:
                    continue
                trial = Calibrated(equalized.model_bytes, calibration, settings)
                after = meter(trial.quantize(recipe, exclude_nodes))
                kept = _better(after, best)
                records.append(_record(name, start, after, kept, equalized.to_record()))
                if kept:
                    if records[:-1] and records[-2]["kept"]:
                        records[-2]["kept"] = False      # superseded by this variant
                    current.close()
                    current, best = trial, after
                else:
                    trial.close()
        if choice and best.agreement < target.min_agreement:
            picked = choose_calibration(current.model_bytes, calibration, recipe, meter,
                                        settings, exclude_nodes=exclude_nodes, reuse=current)
            after = picked.scores[picked.chosen]
            kept = _better(after, best)
            records.append(_record("calibration_choice", best, after, kept,
                                   picked.to_record()))
            if kept:
                if picked.calibrated is not current:
                    current.close()
                current, best = picked.calibrated, after
            elif picked.calibrated is not current:
                picked.calibrated.close()
    except BaseException:
        current.close()
        raise
    return current, tuple(records)


def _record(method: str, before, after, kept: bool, details: Mapping[str, Any]) -> dict:
    log.info("accuracy-aware: %s: agreement %.4f -> %.4f, error %.3g -> %.3g (%s)", method,
             before.agreement, after.agreement, before.error, after.error,
             "kept" if kept else "undone")
    return {"method": method, **details, "agreement_before": round(before.agreement, 6),
            "agreement_after": round(after.agreement, 6),
            "error_before": float(f"{before.error:.4g}"),
            "error_after": float(f"{after.error:.4g}"), "kept": kept}
