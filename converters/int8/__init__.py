"""edgepack.converters.int8: int8 that pays — recipes per engine and CPU, graph preparation,
accuracy-aware mixed precision, and the on-the-spot "faster than fp32 here?" check.

    from edgepack.converters.int8 import Int8Options, AccuracyTarget, quantize_int8
    result = quantize_int8(onnx_bytes, {"x": samples},
                           Int8Options(device="rpi4b", accuracy=AccuracyTarget(0.99)))

    result = quantize_litert_int8("saved_model/", {"image": samples},
                                  LiteRtInt8Options(accuracy=AccuracyTarget(0.99)))

Importing this package imports neither onnx, onnxruntime nor tensorflow; each step does,
lazily.
"""
from .litert_int8 import (LayerError, LiteRtInt8Options, LiteRtMixedPrecision,
                          quantize_litert_int8)
from .onnx_int8 import Int8Options, Int8Result, quantize_int8
from .quantize import CalibrationSettings, Calibrated, weighted_nodes
from .recipes import RECIPES, Recipe, choose_recipe, cpu_family, dynamic_refusal, recipe_for
from .sensitivity import AccuracyTarget, MixedPrecision, accuracy_aware
from .speed import SpeedReport, SpeedSettings, measure_speed

__all__ = ["Int8Options", "Int8Result", "quantize_int8", "CalibrationSettings", "Calibrated",
           "weighted_nodes", "RECIPES", "Recipe", "choose_recipe", "cpu_family",
           "dynamic_refusal", "recipe_for", "AccuracyTarget", "MixedPrecision",
           "accuracy_aware", "SpeedReport", "SpeedSettings", "measure_speed", "LayerError",
           "LiteRtInt8Options", "LiteRtMixedPrecision", "quantize_litert_int8"]
