"""edgepack.converters: PyTorch / Keras / ONNX / TFLite models into validated bundles.

    from edgepack.converters import ConversionConfig, QuantizationConfig, convert_model
    cfg = ConversionConfig(target="onnx", quantization=QuantizationConfig(mode="int8"))
    result = convert_model(model, "digits.edgepack", cfg, example_inputs=x[:1],
                           calibration_data=x_cal, validation_data=x_val,
                           validation_labels=y_val)

Importing this package imports no framework; each path imports its own lazily.
"""
import os

# TensorFlow reads this once, when it is first imported (by a Keras source or the TFLite
# converter): below level 2 its C++ INFO/WARNING banners flood the output. A value the user
# set is kept.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from .config import (CalibrationConfig, ConversionConfig, QuantizationConfig, Tolerances,
                     MODES, TARGETS)
from .pipeline import ConversionResult, convert_model
from .registry import get_converter, known_pairs

__all__ = ["CalibrationConfig", "ConversionConfig", "QuantizationConfig", "Tolerances",
           "ConversionResult", "convert_model", "get_converter", "known_pairs", "MODES",
           "TARGETS"]
