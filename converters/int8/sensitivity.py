"""Accuracy-aware int8: find the layers that cost the most accuracy and keep them in float.

The pass works on the calibration set (the held-out split stays for validation):

1. quantize everything with the recipe; if top-1 agreement with the float model already
   meets the target, stop: nothing is kept in float;
2. per-layer sensitivity, one of two ways:
   - "isolated" (default): quantize that layer alone, everything else float, and measure the
     output error it introduces. This finds tensors with outlier activations: both the layer
     producing such a tensor and the one consuming it quantize it, so each shows up alone,
     whereas leaving either one out of an all-int8 model changes nothing (the other still
     quantizes the tensor);
   - "leave_one_out": quantize every *other* layer and measure how much of the all-int8
     error disappears; it measures the layer in the model that would ship, where errors
     compound, but misses such pairs;
3. keep layers in float, most sensitive first, re-measuring after each, until the target is
   met or `max_float_layers` is reached (then the best mix found is returned, marked unmet).

Calibration runs once (`Calibrated` reuses the ranges), so each step costs one graph
rewrite and one pass over the calibration set.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from edgepack.runtime.errors import ConversionError

from .quantize import QUANTIZABLE_OPS, Calibrated, recipe_float_nodes, weighted_nodes
from .recipes import Recipe

log = logging.getLogger(__name__)

SENSITIVITY_METHODS = ("isolated", "leave_one_out")


@dataclass(frozen=True)
class AccuracyTarget:
    """What accuracy-aware quantization aims for.

    min_agreement: top-1 agreement with the float model on the calibration set (0-1).
    max_float_layers: at most this many quantizable layers are kept in float.
    samples: at most this many calibration samples are used to measure (speed).
    method: "isolated" | "leave_one_out" (see the module docstring).
    """

    min_agreement: float = 0.99
    max_float_layers: int = 8
    samples: int = 256
    method: str = "isolated"

    def __post_init__(self) -> None:
        if self.method not in SENSITIVITY_METHODS:
            raise ConversionError(f"unknown sensitivity method {self.method!r}; use one of "
                                  f"{', '.join(SENSITIVITY_METHODS)}")
        if not 0.0 < self.min_agreement <= 1.0:
            raise ConversionError(f"agreement target must be in (0, 1], got {self.min_agreement}")
        if self.max_float_layers < 1:
            raise ConversionError("max_float_layers must be at least 1")
        if self.samples < 2:
            raise ConversionError("the sensitivity pass needs at least 2 samples")


@dataclass(frozen=True)
class Score:
    """How close a quantized model is to the float one on the measurement samples."""

    agreement: float   # top-1 agreement of the first 2-D output (1.0 when there is none)
    error: float       # mean over outputs of ||q - f||^2 / ||f||^2 (normalized squared error)


@dataclass(frozen=True)
class LayerSensitivity:
    """One layer's measured effect; larger `impact` = more harmful in int8.

    isolated: error/agreement of the model where only this layer is int8; impact = error.
    leave_one_out: error/agreement of the all-int8 model with this layer float; impact =
        fraction of the all-int8 error that keeping it float removes.
    """

    node: str
    op_type: str
    method: str
    error: float
    agreement: float
    impact: float

    def describe(self, rank: int) -> str:
        if self.method == "isolated":
            return (f"sensitivity rank {rank}: int8 alone, this layer gives output error "
                    f"{self.error:.3g} and top-1 agreement {self.agreement:.4f}")
        return (f"sensitivity rank {rank}: keeping it float removes {self.impact:.0%} of the "
                f"all-int8 output error (agreement {self.agreement:.4f})")


@dataclass(frozen=True)
class MixedPrecision:
    """Result of the pass: the model to ship and the evidence for the manifest."""

    model_bytes: bytes
    target: AccuracyTarget
    all_int8: Score
    final: Score
    kept_float: tuple[LayerSensitivity, ...]
    ranking: tuple[LayerSensitivity, ...] = field(default=())
    samples: int = 0

    @property
    def met(self) -> bool:
        return self.final.agreement >= self.target.min_agreement

    def to_record(self) -> dict[str, Any]:
        """The `accuracy_aware` entry of the manifest's quantization record."""
        return {
            "target_agreement": self.target.min_agreement,
            "measured_on": f"calibration set ({self.samples} samples)",
            "agreement_all_int8": round(self.all_int8.agreement, 6),
            "agreement": round(self.final.agreement, 6),
            "error_all_int8": float(f"{self.all_int8.error:.4g}"),
            "error": float(f"{self.final.error:.4g}"),
            "met": self.met,
            "method": self.target.method,
            "kept_float": [{"node": s.node, "op": s.op_type, "reason": s.describe(i + 1)}
                           for i, s in enumerate(self.kept_float)],
        }


class FloatRunner:
    """Runs serialized ONNX models on fixed samples with onnxruntime (CPU)."""

    def __init__(self, samples: Mapping[str, np.ndarray], threads: int | None = None,
                 batch: int = 64):
        self.samples = {n: np.ascontiguousarray(a, dtype=np.float32) for n, a in samples.items()}
        self.threads, self.batch = threads, batch

    def __call__(self, model_bytes: bytes) -> list[np.ndarray]:
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads:
            options.intra_op_num_threads = self.threads
        session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        first = session.get_inputs()[0].shape[0]
        static = isinstance(first, int) and first > 0
        batch = first if static else self.batch
        count = min(len(a) for a in self.samples.values())
        # A fixed-batch graph only takes full batches: the remainder is not measured.
        stop = count - count % batch if static else count
        chunks = [session.run(None, {n: self.samples[n][s:s + batch] for n in names})
                  for s in range(0, stop, batch)]
        if not chunks:
            raise ConversionError(f"the model takes batches of {batch}; fewer samples given")
        return [np.concatenate([c[i] for c in chunks]).astype(np.float64)
                for i in range(len(chunks[0]))]


def score(reference: Sequence[np.ndarray], produced: Sequence[np.ndarray]) -> Score:
    """Top-1 agreement (first 2-D output with >1 column) and mean normalized squared error."""
    errors, agreement = [], None
    for ref, got in zip(reference, produced):
        got = np.nan_to_num(got, nan=0.0, posinf=0.0, neginf=0.0)
        denom = float(np.sum(ref ** 2)) or 1.0
        errors.append(float(np.sum((got - ref) ** 2)) / denom)
        if agreement is None and ref.ndim == 2 and ref.shape[1] > 1:
            agreement = float(np.mean(ref.argmax(1) == got.argmax(1)))
    return Score(1.0 if agreement is None else agreement, float(np.mean(errors)))


def accuracy_aware(calibrated: Calibrated, recipe: Recipe, samples: Mapping[str, np.ndarray],
                   target: AccuracyTarget = AccuracyTarget(), *,
                   keep_float: Sequence[str] = (), threads: int | None = None
                   ) -> MixedPrecision:
    """Quantize `calibrated` with `recipe`, keeping the most sensitive layers in float until
    top-1 agreement with the float model on `samples` reaches `target.min_agreement`.
    `keep_float` names nodes that stay float in every candidate (the caller's choice).

    Raises ConversionError when the model has nothing to quantize.
    """
    run = FloatRunner({n: a[:target.samples] for n, a in samples.items()}, threads)
    reference = run(calibrated.model_bytes)
    n_used = len(reference[0])
    fixed = list(keep_float)
    full = calibrated.quantize(recipe, fixed)
    base = score(reference, run(full))
    log.info("accuracy-aware: all-int8 agreement %.4f (target %.4f), error %.3g on %d samples",
             base.agreement, target.min_agreement, base.error, n_used)
    if base.agreement >= target.min_agreement:
        return MixedPrecision(full, target, base, base, (), (), n_used)
    by_recipe = recipe_float_nodes(calibrated.model_bytes, recipe)
    nodes = [(name, op) for name, op in weighted_nodes(calibrated.model_bytes, QUANTIZABLE_OPS)
             if name and name not in by_recipe and name not in fixed]
    if not nodes:
        raise ConversionError("the model has no named quantizable layer to keep in float")
    ranking = rank_layers(calibrated, recipe, run, reference, base, nodes, target.method, fixed)
    kept: list[LayerSensitivity] = []
    best_model, best, best_kept = full, base, ()
    for layer in ranking[:target.max_float_layers]:
        kept.append(layer)
        model = calibrated.quantize(recipe, fixed + [k.node for k in kept])
        result = score(reference, run(model))
        log.info("accuracy-aware: +float %s -> agreement %.4f, error %.3g",
                 layer.node, result.agreement, result.error)
        if (result.agreement, -result.error) > (best.agreement, -best.error):
            best_model, best, best_kept = model, result, tuple(kept)
        if result.agreement >= target.min_agreement:
            break
    if best.agreement < target.min_agreement:
        log.warning("accuracy-aware: %d layers kept in float reach agreement %.4f at best, "
                    "below the target %.4f", len(best_kept), best.agreement,
                    target.min_agreement)
    return MixedPrecision(best_model, target, base, best, best_kept, tuple(ranking), n_used)


def rank_layers(calibrated: Calibrated, recipe: Recipe, run: FloatRunner,
                reference: Sequence[np.ndarray], base: Score,
                nodes: Sequence[tuple[str, str]], method: str = "isolated",
                fixed: Sequence[str] = ()) -> list[LayerSensitivity]:
    """Sensitivity of each (node, op) in `nodes` by `method`, most harmful first
    (`fixed` nodes stay float throughout)."""
    from ..progress import report
    names = [name for name, _ in nodes]
    ranking = []
    for index, (name, op) in enumerate(nodes):
        report("sensitivity", index, len(nodes))
        if method == "isolated":
            others = [n for n in names if n != name]
            result = score(reference, run(calibrated.quantize(recipe, [*fixed, *others])))
            impact = result.error
        else:
            result = score(reference, run(calibrated.quantize(recipe, [*fixed, name])))
            impact = (base.error - result.error) / base.error if base.error > 0 else 0.0
        ranking.append(LayerSensitivity(name, op, method, result.error, result.agreement,
                                        impact))
    report("sensitivity", len(nodes), len(nodes))
    ranking.sort(key=lambda s: -s.impact)
    return ranking
