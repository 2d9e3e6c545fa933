"""The one call the ONNX converter makes for int8: recipe -> prep -> calibrate -> quantize
(-> accuracy-aware mixed precision) (-> on-the-spot speed check), plus the manifest record.

    result = quantize_int8(float_onnx_bytes, {"x": calibration_array},
                           Int8Options(device="rpi4b", accuracy=AccuracyTarget(0.99)))
    result.model_bytes, result.record      # record -> manifest "quantization" fields
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from edgepack.runtime.errors import ConversionError

from .graph_prep import prepare_graph
from .ort_fast_paths import apply_fast_paths
from .quantize import Calibrated, CalibrationSettings, recipe_float_nodes
from .recipes import Recipe, choose_recipe
from .sensitivity import AccuracyTarget, MixedPrecision, accuracy_aware
from .speed import SpeedReport, SpeedSettings, measure_speed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Int8Options:
    """How `quantize_int8` works.

    recipe: an explicit Recipe; None chooses one for `device` (a profile name, Profile or
        HostInfo; None = this machine).
    recipe_overrides: recipe fields to replace, as (name, value) pairs, e.g.
        (("reduce_range", False),).
    calibration: calibration method and batching.
    accuracy: None = plain int8; an AccuracyTarget = keep sensitive layers float until met.
    speed: None = no speed check; SpeedSettings = time int8 vs fp32 here and warn if slower.
    exclude_nodes: node names the caller wants in float whatever the pass finds.
    prepare: with an accuracy target, when plain int8 misses it, first try cross-layer
        equalization and the per-tensor calibration choice (calibration_choice.py); False
        goes straight to the accuracy-aware pass.
    task_metric: the task's agreement (reference outputs, candidate outputs, by output
        name -> a number in [0, 1] or per-sample values) that scores every candidate of the
        accuracy-aware search instead of top-1 agreement: for a detector,
        converters.detection.detection_metric (min of recall and precision of the
        candidate's detections against the float model's).
    """

    recipe: Recipe | None = None
    device: Any = None
    recipe_overrides: tuple[tuple[str, Any], ...] = ()
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    accuracy: AccuracyTarget | None = None
    speed: SpeedSettings | None = None
    exclude_nodes: tuple[str, ...] = ()
    prepare: bool = True
    task_metric: Any = None

    def resolved_recipe(self) -> Recipe:
        recipe = self.recipe or choose_recipe("onnxruntime", self.device)
        if recipe.engine != "onnxruntime":
            raise ConversionError(f"recipe {recipe.name} is for {recipe.engine}, not onnxruntime")
        return recipe.with_overrides(**dict(self.recipe_overrides))


@dataclass(frozen=True)
class Int8Result:
    """The int8 model and the manifest record describing how it was made."""

    model_bytes: bytes
    recipe: Recipe
    record: dict[str, Any]
    mixed: MixedPrecision | None = None
    speed: SpeedReport | None = None


def quantize_int8(model_bytes: bytes, calibration: Mapping[str, np.ndarray],
                  options: Int8Options = Int8Options()) -> Int8Result:
    """Quantize the float ONNX `model_bytes` to int8 as `options` says.

    calibration: float32 samples per model input, batch axis first (never the held-out
        validation split: the accuracy-aware pass measures on these samples).
    Raises ConversionError (bad options, no calibration data, quantizer failure).
    """
    recipe = options.resolved_recipe()
    prepared = prepare_graph(model_bytes) if recipe.graph_prep else None
    float_model = prepared.model_bytes if prepared else model_bytes
    tried: tuple = ()
    if options.accuracy is not None and options.prepare:
        # Plain int8 missing the target first tries cross-layer equalization and the
        # calibration choice, which need their own calibration (calibration_choice.py).
        from .calibration_choice import prepare_calibrated
        calibrated, tried = prepare_calibrated(float_model, calibration, recipe,
                                               options.calibration, options.accuracy,
                                               options.exclude_nodes,
                                               metric=options.task_metric)
    else:
        calibrated = Calibrated(float_model, calibration, options.calibration)
    with calibrated:
        if options.accuracy is not None:
            mixed = accuracy_aware(calibrated, recipe, calibration, options.accuracy,
                                   keep_float=options.exclude_nodes, methods_before=tried,
                                   metric=options.task_metric)
            quantized = mixed.model_bytes
        else:
            mixed, quantized = None, calibrated.quantize(recipe, options.exclude_nodes)
        samples, calibrated_with = calibrated.samples, calibrated.settings
    # Exact rewrites for the engine's fast kernels, after every accuracy pass has judged
    # the plain QDQ graph (they change no number, so those judgements still hold).
    quantized, fast_paths = apply_fast_paths(quantized, recipe)
    record: dict[str, Any] = {
        "recipe": recipe.to_record(),
        "calibration": {"method": calibrated_with.method, "samples": samples},
        "kept_float": [],
    }
    choice = next((m for m in tried if m["method"] == "calibration_choice" and m["kept"]),
                  None)
    if choice is not None:
        record["calibration"]["chosen_from"] = choice["chosen"]   # a method or "per_tensor"
    if calibrated_with.method == "percentile":
        record["calibration"]["percentile"] = calibrated_with.percentile
    if prepared is not None:
        record["graph_prep"] = prepared.to_record()
    if fast_paths:
        record["fast_paths"] = fast_paths
    if options.exclude_nodes:
        record["kept_float"].append({"nodes": list(options.exclude_nodes),
                                     "reason": "asked by the caller"})
    record["kept_float"].extend({"node": name, "reason": reason} for name, reason
                                in recipe_float_nodes(float_model, recipe).items())
    if mixed is not None:
        record["accuracy_aware"] = mixed.to_record()
        record["kept_float"].extend({"node": k["node"], "op": k["op"], "reason": k["reason"]}
                                    for k in record["accuracy_aware"]["kept_float"])
    speed = None
    if options.speed is not None:
        speed = measure_speed(model_bytes, quantized, "onnxruntime", options.speed)
        record["speed"] = speed.to_record(target_device=options.device)
    return Int8Result(quantized, recipe, record, mixed, speed)
