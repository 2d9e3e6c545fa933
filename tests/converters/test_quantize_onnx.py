"""The ONNX quantization module on graphs built with onnx.helper (no framework needed).

Reference numbers come from onnxruntime running the float graph; tolerances are stated
per mode: fp16 weights |err| <= 2e-3 (one fp16 rounding of weights in [-1, 1]), dynamic
relative max error <= 0.03, int8 relative max error <= 0.1 on calibration-like data
(random uniform weights, 7-bit reduce_range weights: measured 0.07).
"""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgepack.converters.config import QuantizationConfig  # noqa: E402
from edgepack.converters.quantize_onnx import quantize_onnx  # noqa: E402
from edgepack.runtime.errors import ConversionError  # noqa: E402

from tiny_models import mlp_bytes  # noqa: E402


def run(model: bytes, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(1).uniform(-1, 1, (200, 64)).astype(np.float32)


def rel_error(a, b):
    return float(np.abs(a - b).max() / np.abs(a).max())


def test_none_returns_the_model_unchanged(data):
    model = mlp_bytes()
    assert quantize_onnx(model, QuantizationConfig()).model_bytes == model


def test_fp16_halves_weights_keeps_float_io(data):
    model = mlp_bytes()
    result = quantize_onnx(model, QuantizationConfig(mode="fp16"))
    proto = onnx.load_from_string(result.model_bytes)
    types = {i.name: i.data_type for i in proto.graph.initializer}
    assert types["w1__fp16"] == TensorProto.FLOAT16 and types["w2__fp16"] == TensorProto.FLOAT16
    assert proto.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert len(result.model_bytes) < 0.6 * len(model)
    ref, got = run(model, data[150:]), run(result.model_bytes, data[150:])
    assert got.dtype == np.float32
    assert np.abs(ref - got).max() <= 2e-3
    assert result.record == {"mode": "fp16", "io": "float32"}


def test_dynamic_int8_weights(data):
    model = mlp_bytes()
    result = quantize_onnx(model, QuantizationConfig(mode="dynamic"))
    assert len(result.model_bytes) < 0.4 * len(model)
    assert rel_error(run(model, data), run(result.model_bytes, data)) <= 0.03
    assert result.record["mode"] == "dynamic" and result.record["per_channel"] is True


def test_int8_static_qdq(data):
    model = mlp_bytes()
    result = quantize_onnx(model, QuantizationConfig(mode="int8"), {"x": data[:150]})
    proto = onnx.load_from_string(result.model_bytes)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") >= 3 and "DequantizeLinear" in ops
    assert len(result.model_bytes) < 0.4 * len(model)
    assert rel_error(run(model, data[150:]), run(result.model_bytes, data[150:])) <= 0.1
    assert result.record["calibration"] == {"method": "minmax", "samples": 150}


def test_int8_without_calibration_is_an_error():
    with pytest.raises(ConversionError, match="int8 quantization needs calibration data"):
        quantize_onnx(mlp_bytes(), QuantizationConfig(mode="int8"), None)


def test_calibration_missing_an_input_is_named(data):
    with pytest.raises(ConversionError, match=r"no samples for input\(s\) \['x'\]"):
        quantize_onnx(mlp_bytes(), QuantizationConfig(mode="int8"), {"image": data})


def test_exclude_nodes_keeps_a_layer_in_float(data):
    """The hook accuracy-aware recipes use: an excluded MatMul keeps float weights."""
    result = quantize_onnx(mlp_bytes(), QuantizationConfig(mode="int8"), {"x": data[:150]},
                           exclude_nodes=("fc2",))
    proto = onnx.load_from_string(result.model_bytes)
    w2 = [i for i in proto.graph.initializer if i.name.startswith("w2")]
    assert w2 and all(i.data_type == TensorProto.FLOAT for i in w2)
    w1 = [i for i in proto.graph.initializer if i.name.startswith("w1")]
    assert any(i.data_type == TensorProto.INT8 for i in w1)


def test_int8_io_matches_float_io_after_affine_mapping(data):
    config = QuantizationConfig(mode="int8", int8_io=True)
    result = quantize_onnx(mlp_bytes(), config, {"x": data[:150]})
    (spec_in,), (spec_out,) = result.inputs, result.outputs
    assert spec_in.dtype == spec_out.dtype == "int8"
    s_in, z_in = spec_in.quantization.scale[0], spec_in.quantization.zero_point[0]
    s_out, z_out = spec_out.quantization.scale[0], spec_out.quantization.zero_point[0]
    x = data[150:]
    q = np.clip(np.round(x / s_in) + z_in, -128, 127).astype(np.int8)
    y = run(result.model_bytes, q)
    assert y.dtype == np.int8
    float_model = quantize_onnx(mlp_bytes(), QuantizationConfig(mode="int8"), {"x": data[:150]})
    ref = run(float_model.model_bytes, x)
    # Same quantized graph: only the boundary rounding differs, within one output step.
    np.testing.assert_allclose((y.astype(np.float32) - z_out) * s_out, ref, atol=1.01 * s_out)


@pytest.mark.parametrize("reduce_range, low, high", [(True, 60, 64), (False, 120, 127)])
def test_reduce_range_uses_7_bit_weights(data, reduce_range, low, high):
    """7-bit weights (default) peak at |q| <= 64; full range reaches ~127 per channel."""
    config = QuantizationConfig(mode="int8", reduce_range=reduce_range)
    result = quantize_onnx(mlp_bytes(), config, {"x": data[:150]})
    proto = onnx.load_from_string(result.model_bytes)
    weights = [numpy_helper.to_array(i) for i in proto.graph.initializer
               if i.data_type == TensorProto.INT8 and len(i.dims) == 2]
    peak = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert low <= peak <= high
    assert result.record["reduce_range"] is reduce_range
