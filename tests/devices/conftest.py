"""Tiny models and bundles for the device tests, built once per session with fixed seeds.

TFLite models come from tensorflow's converter (the same one the converters use), so the
op versions the checks see are the ones real conversions produce.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgepack.runtime import pack_bundle


def _keras_model():
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    return tf.keras.Sequential([
        tf.keras.Input((8, 8, 1)),
        tf.keras.layers.Conv2D(4, 3, activation="relu"),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(16, activation="relu"),
        tf.keras.layers.Dense(10),
    ])


def _tflite(model, mode: str, per_channel_dense: bool = True) -> bytes:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "none":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "int8":
        conv.representative_dataset = lambda: (
            [rng.normal(size=(1, 8, 8, 1)).astype(np.float32)] for _ in range(32))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        if not per_channel_dense:
            conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    if mode == "fp16":
        conv.target_spec.supported_types = [tf.float16]
    return conv.convert()


@pytest.fixture(scope="session")
def tflite_models(tmp_path_factory) -> dict[str, Path]:
    """{"none", "int8", "int8_per_tensor", "dynamic", "fp16"} -> .tflite path."""
    model = _keras_model()
    out = tmp_path_factory.mktemp("tflite")
    paths = {}
    for key, mode, per_channel in (("none", "none", True), ("int8", "int8", True),
                                   ("int8_per_tensor", "int8", False),
                                   ("dynamic", "dynamic", True), ("fp16", "fp16", True)):
        path = out / f"{key}.tflite"
        path.write_bytes(_tflite(model, mode, per_channel))
        paths[key] = path
    return paths


def _onnx_fp32(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(64, 32)).astype(np.float32) * 0.2
    w2 = rng.normal(size=(32, 10)).astype(np.float32) * 0.2
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["logits"])]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, 10])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory) -> dict[str, Path]:
    """{"none", "int8"} -> .onnx path; int8 is onnxruntime static QDQ, per-channel.

    reduce_range=True (7-bit weights): on x86 CPUs with AVX2 but no VNNI, onnxruntime's
    u8s8 kernels saturate int16 pair sums with full 8-bit weights, so the *host* reference
    differs from ARM by one quantization step on some elements (measured here: 15 of 160
    outputs, max 0.078, on an AVX2-only EPYC). With 7-bit weights both sides are exact.
    """
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    out = tmp_path_factory.mktemp("onnx")
    fp32, int8 = out / "none.onnx", out / "int8.onnx"
    _onnx_fp32(fp32)
    rng = np.random.default_rng(1)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": rng.normal(size=(4, 64)).astype(np.float32)}
                                 for _ in range(8)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(fp32), str(int8), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    per_channel=True, reduce_range=True)
    return {"none": fp32, "int8": int8}


@pytest.fixture(scope="session")
def bundles(tmp_path_factory, tflite_models, onnx_models) -> dict[str, Path]:
    """Bundles: tflite-<mode> and onnx-<mode>, packed with edgepack.runtime.pack_bundle."""
    out = tmp_path_factory.mktemp("bundles")
    paths = {}
    for kind, models in (("tflite", tflite_models), ("onnx", onnx_models)):
        for mode, model in models.items():
            quant = {"mode": "int8" if mode.startswith("int8") else mode}
            paths[f"{kind}-{mode}"] = pack_bundle(out / f"{kind}-{mode}.edgepack", model,
                                                  name=f"{kind}-{mode}", quantization=quant)
    return paths
