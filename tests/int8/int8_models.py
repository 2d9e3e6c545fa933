"""Tiny ONNX models for the int8 tests, built with onnx.helper under fixed seeds.

A module with a unique name, not conftest.py: `from conftest import ...` is ambiguous once
several test folders have a conftest.

Building the graphs directly (no exporter) keeps every test fast and makes the one property
each test needs explicit: BatchNorm to fuse, or a tensor with outlier activations.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _conv(name, x, w, b, out, pad=1):
    return helper.make_node("Conv", [x, w, b], [out], name=name, pads=[pad] * 4)


def conv_net(seed: int = 0, channels: int = 8, outlier: float = 1.0, batchnorm: bool = False,
             batch: int | None = None) -> bytes:
    """x[N,1,8,8] -> Conv A -> (BN) -> Relu -> Conv B -> Relu -> Flatten -> Gemm -> logits[N,10].

    outlier > 1 scales channel 0 of A's output by `outlier` and B's weights reading it by
    1/outlier: the float function is unchanged, but A's output tensor gets a range `outlier`
    times wider than its other channels need, which per-tensor int8 activations cannot hold.
    """
    rng = np.random.default_rng(seed)
    c = channels
    wa = rng.standard_normal((c, 1, 3, 3)).astype(np.float32) * 0.5
    ba = rng.standard_normal(c).astype(np.float32) * 0.1
    wb = rng.standard_normal((c, c, 3, 3)).astype(np.float32) * (1.0 / np.sqrt(9 * c))
    bb = rng.standard_normal(c).astype(np.float32) * 0.1
    wg = rng.standard_normal((10, c * 64)).astype(np.float32) * (1.0 / np.sqrt(c * 64))
    bg = np.zeros(10, np.float32)
    wa[0] *= outlier
    ba[0] *= outlier
    wb[:, 0] /= outlier
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in
             ((wa, "wa"), (ba, "ba"), (wb, "wb"), (bb, "bb"), (wg, "wg"), (bg, "bg"))]
    nodes = [_conv("conv_a", "x", "wa", "ba", "a")]
    after_a = "a"
    if batchnorm:
        gamma = rng.uniform(0.5, 1.5, c).astype(np.float32)
        beta = rng.uniform(-0.2, 0.2, c).astype(np.float32)
        mean = rng.uniform(-0.1, 0.1, c).astype(np.float32)
        var = rng.uniform(0.5, 1.5, c).astype(np.float32)
        inits += [numpy_helper.from_array(a, n) for a, n in
                  ((gamma, "g"), (beta, "be"), (mean, "mu"), (var, "var"))]
        nodes.append(helper.make_node("BatchNormalization", ["a", "g", "be", "mu", "var"],
                                      ["a_bn"], name="bn_a"))
        after_a = "a_bn"
    nodes += [helper.make_node("Relu", [after_a], ["a_r"], name="relu_a"),
              _conv("conv_b", "a_r", "wb", "bb", "b"),
              helper.make_node("Relu", ["b"], ["b_r"], name="relu_b"),
              helper.make_node("Flatten", ["b_r"], ["f"], name="flatten"),
              helper.make_node("Gemm", ["f", "wg", "bg"], ["logits"], name="head", transB=1)]
    dim = batch if batch else "N"
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [dim, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [dim, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def images(count: int, seed: int = 0) -> np.ndarray:
    """Smooth random 8x8 images in [0, 1] (2x2 blocks, like coarse digits)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 1, size=(count, 1, 4, 4)).astype(np.float32)
    return np.repeat(np.repeat(base, 2, axis=2), 2, axis=3)


def run(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]
