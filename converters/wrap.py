"""onnx -> onnx (quantize an existing model) and tflite -> bundle (wrap as is)."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .artifacts import ConvertedModel, SourceModel
from .config import ConversionConfig
from .quantize_onnx import quantize_onnx


def convert_onnx(source: SourceModel, config: ConversionConfig,
                 calibration: Mapping[str, np.ndarray] | None) -> ConvertedModel:
    """Registry entry point for onnx -> onnx: apply the quantization mode to the model."""
    import onnx
    quantized = quantize_onnx(source.model, config.quantization, calibration)
    proto = onnx.load_from_string(quantized.model_bytes)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    return ConvertedModel(quantized.model_bytes, "onnxruntime", "onnx", opset=opset,
                          inputs=quantized.inputs, outputs=quantized.outputs,
                          quantization=quantized.record)


def convert_tflite(source: SourceModel, config: ConversionConfig,
                   calibration: Mapping[str, np.ndarray] | None) -> ConvertedModel:
    """Registry entry point for tflite -> tflite: the bytes are bundled unchanged."""
    return ConvertedModel(source.model, "litert", "wrap", quantization=None)
