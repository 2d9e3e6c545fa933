"""Accuracy-aware int8: find the layers that cost the most accuracy and keep them in float.

The pass works on the calibration set (the held-out split stays for validation):

1. quantize everything with the recipe; if top-1 agreement with the float model already
   meets the target, stop: nothing is kept in float;
2. per-layer sensitivity, one of three ways:
   - "one_pass" (default, layer_noise.py): the relative rounding noise each layer's int8
     form adds (its activation tensors per channel, its weights), from one float run over
     the calibrated ranges: nothing is quantized per layer. The search then keeps whole
     blocks float first (block_search.py), then prunes per layer;
   - "isolated": quantize that layer alone, everything else float, and measure the
     output error it introduces. This finds tensors with outlier activations: both the layer
     producing such a tensor and the one consuming it quantize it, so each shows up alone,
     whereas leaving either one out of an all-int8 model changes nothing (the other still
     quantizes the tensor);
   - "leave_one_out": quantize every *other* layer and measure how much of the all-int8
     error disappears; it measures the layer in the model that would ship, where errors
     compound, but misses such pairs;
3. keep layers in float, most sensitive first, re-measuring after each, until the target is
   met or `max_float_layers` is reached (then the best mix found is returned, marked unmet);
4. once the target is met, prune (`prune_float_layers`): try each kept layer back in int8,
   the least sensitive first, and leave it int8 when the target still holds without it. A
   layer added early may be redundant once later ones are float too (the "isolated"
   ranking lists both the producer and the consumer of an outlier tensor), and every float
   layer costs speed and size on the device.

Calibration runs once (`Calibrated` reuses the ranges), so each step costs one graph
rewrite and one pass over the calibration set. The ranking, the greedy search and the
pruning are in layer_search.py (shared with the TFLite path, litert_int8.py: they only see
a `measure(float nodes) -> (model, Score)` callable), the fitted methods' trials in
fitted_trials.py, the scores in scoring.py.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from edgepack.runtime.errors import ConversionError

from .fitted_trials import remembering, try_bias_correction, try_reconstruction
from .layer_search import (MixedPrecision, keep_float_greedily, prune_float_layers,
                           rank_layers)
from .quantize import QUANTIZABLE_OPS, Calibrated, recipe_float_nodes, weighted_nodes
from .smoothing import SMOOTH_PREFIX
from .recipes import Recipe
from .scoring import AgreementMeter, Score, TaskMetric

log = logging.getLogger(__name__)

__all__ = ["AccuracyTarget", "SENSITIVITY_METHODS", "accuracy_aware"]

SENSITIVITY_METHODS = ("one_pass", "isolated", "leave_one_out")


@dataclass(frozen=True)
class AccuracyTarget:
    """What accuracy-aware quantization aims for.

    min_agreement: top-1 agreement with the float model on the calibration set (0-1).
    max_float_layers: at most this many quantizable layers are kept in float; 0 = only the
        post-training methods that keep every layer int8 (float outputs, equalization,
        calibration choice, bias correction, learned rounding).
    samples: at most this many calibration samples are used to measure (speed).
    method: "one_pass" (default: layer_noise.py, one float run, and the search tries whole
        blocks first) | "isolated" | "leave_one_out" (one quantization per layer; see the
        module docstring).
    reconstruction: None (default) or reconstruction.ReconstructionSettings: also try
        block reconstruction with activation quantization in the loop (BRECQ/QDrop-style;
        minutes on a MobileNetV2 on one core, so opt-in: the pass's 60 s goal holds
        without it). Like every fitted method, fitted on part of the calibration samples
        and kept only when better on the rest (selection.FittedSplit).
    """

    min_agreement: float = 0.99
    max_float_layers: int = 8
    samples: int = 256
    method: str = "one_pass"
    reconstruction: Any = None

    def __post_init__(self) -> None:
        if self.method not in SENSITIVITY_METHODS:
            raise ConversionError(f"unknown sensitivity method {self.method!r}; use one of "
                                  f"{', '.join(SENSITIVITY_METHODS)}")
        if not 0.0 < self.min_agreement <= 1.0:
            raise ConversionError(f"agreement target must be in (0, 1], got {self.min_agreement}")
        if self.max_float_layers < 0:
            raise ConversionError("max_float_layers must be 0 (PTQ methods only) or more")
        if self.samples < 2:
            raise ConversionError("the sensitivity pass needs at least 2 samples")


def accuracy_aware(calibrated: Calibrated, recipe: Recipe, samples: Mapping[str, np.ndarray],
                   target: AccuracyTarget = AccuracyTarget(), *,
                   keep_float: Sequence[str] = (), threads: int | None = None,
                   methods_before: Sequence[Mapping[str, Any]] = (),
                   metric: TaskMetric | None = None) -> MixedPrecision:
    """Quantize `calibrated` with `recipe`, keeping the most sensitive layers in float until
    top-1 agreement with the float model on `samples` reaches `target.min_agreement`.
    `keep_float` names nodes that stay float in every candidate (the caller's choice).
    `methods_before`: records of PTQ methods the caller already tried (cross-layer
    equalization, calibration choice: calibration_choice.prepare_calibrated), listed first.
    `metric`: the task's agreement in place of top-1 (AgreementMeter), e.g. the detection
    agreement for a detector (converters.detection.detection_metric): every candidate of
    the search is scored, kept or refused by it, and the target is a target of it.

    Raises ConversionError when the model has nothing to quantize.
    """
    # Against the model before any float rewrite (equalization), as prepare_calibrated did.
    meter = AgreementMeter("onnxruntime", calibrated.reference_bytes,
                           {n: a[:target.samples] for n, a in samples.items()}, threads,
                           metric=metric)
    n_used = meter.count
    fixed = list(keep_float)

    correction: list = []   # the bias correction in use, if any (set below)
    rounding: list = []     # the learned rounding (adaround.py) in use, if any (set below)
    original = calibrated.model_bytes

    def measure(nodes: Sequence[str]) -> tuple[bytes, Score]:
        # Both only where the weights are int8; an undone method leaves its model behind.
        if correction or rounding or calibrated.model_bytes is not original:
            rounded = [r.node for r in rounding[0].layers] if rounding else []
            model = correction[0].apply([*fixed, *nodes, *rounded]) if correction \
                else original
            if rounding:
                model = rounding[0].apply(model, skip=[*fixed, *nodes])
            calibrated.replace_model(model)
        model = calibrated.quantize(recipe, [*fixed, *nodes])
        return model, meter(model)

    # prepare_calibrated measured this very model already (same float nodes and samples).
    full, base = calibrated.measured(fixed, meter.samples) or measure([])
    log.info("accuracy-aware: all-int8 agreement %.4f (target %.4f), error %.3g on %d samples",
             base.agreement, target.min_agreement, base.error, n_used)
    # The manifest's all-int8 figure is the plain one, before the caller's methods (the
    # first method that was measured: a method not tried has no scores).
    first = next((m for m in methods_before if "agreement_before" in m), None)
    plain = Score(first["agreement_before"], first["error_before"]) if first else base
    if base.agreement >= target.min_agreement:
        return MixedPrecision(full, target, plain, base, (), (), n_used,
                              methods=tuple(methods_before))
    # Fitted methods fit the first part of the calibration samples and are judged on the
    # rest (selection.FittedSplit): a rewrite that only fits its samples is never kept.
    from .selection import fitted_split
    split = fitted_split(samples)
    decide = remembering(AgreementMeter("onnxruntime", calibrated.reference_bytes,
                                        split.decide, threads, metric=metric)) \
        if split is not None else None
    if split is None:
        log.info("accuracy-aware: too few calibration samples to hold some back: the "
                 "fitted methods (bias correction, learned rounding, reconstruction) are "
                 "not tried")
        methods: tuple = ()
    else:
        (full, base), methods = try_bias_correction(original, split, measure, (full, base),
                                                    correction, decide)
    if split is not None and target.reconstruction is not None:
        (full, base), rebuilt = try_reconstruction(calibrated, original, recipe, fixed,
                                                   split, meter, decide, (full, base),
                                                   correction, target.reconstruction)
        if rebuilt and rebuilt[0]["kept"]:
            # the reconstructed float model (weights on their grid) is the model from now
            # on; a kept bias correction is part of it
            original = calibrated.model_bytes
            correction.clear()
        methods = (*methods, *rebuilt)
    methods = (*methods_before, *methods)
    # The sensitivity ranking quantizes one layer at a time on the plain float model (its
    # mixes are not built through `measure`, which applies the correction itself).
    calibrated.replace_model(original)
    if base.agreement >= target.min_agreement:
        return MixedPrecision(full, target, plain, base, (), (), n_used, methods=methods)
    by_recipe = recipe_float_nodes(calibrated.model_bytes, recipe)
    nodes = [(name, op) for name, op in weighted_nodes(calibrated.model_bytes, QUANTIZABLE_OPS)
             if name and name not in by_recipe and name not in fixed
             and not name.startswith(SMOOTH_PREFIX)]     # float already
    if not nodes:
        raise ConversionError("the model has no named quantizable layer to keep in float")
    ranking = rank_layers(calibrated, recipe, meter, base, nodes, target.method, fixed,
                          samples=samples)
    from .adaround import try_learned_rounding
    (full, base), learned = try_learned_rounding(original, split, ranking, measure,
                                                 (full, base), rounding, decide=decide) \
        if split is not None else ((full, base), ())
    methods = (*methods, *learned)
    if base.agreement >= target.min_agreement:
        return MixedPrecision(full, target, plain, base, (), tuple(ranking), n_used,
                              methods=methods)
    if target.max_float_layers == 0:      # PTQ methods only: no layer is kept float
        return MixedPrecision(full, target, plain, base, (), tuple(ranking), n_used,
                              methods=methods)
    if target.method == "one_pass":
        from .block_search import search_blocks
        return search_blocks(calibrated, ranking, measure, (full, base), target, plain,
                              n_used, methods)
    greedy = keep_float_greedily(ranking, measure, (full, base), target)
    if greedy.score.agreement < target.min_agreement:
        return MixedPrecision(greedy.model_bytes, target, plain, greedy.score, greedy.kept,
                              tuple(ranking), n_used, methods=methods)
    pruned = prune_float_layers(greedy.kept, greedy.model_bytes, greedy.score, measure,
                                target.min_agreement, all_int8=base)
    return MixedPrecision(pruned.model_bytes, target, plain, pruned.score, pruned.kept,
                          tuple(ranking), n_used, pruned.trials, methods=methods)
