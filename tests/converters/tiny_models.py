"""Tiny models and labels shared by the converter tests (built in code, fixed seeds).

A separate module, not conftest.py: `from conftest import ...` is ambiguous once the root
tests/conftest.py is importable too.
"""
from __future__ import annotations

import numpy as np


def make_torch_cnn(seed: int = 0, channels: int = 16):
    """Conv -> ReLU -> Conv -> ReLU -> Linear on 1x8x8 inputs, 10 classes."""
    import torch
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, channels, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(channels, channels, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(channels * 64, 10)).eval()


def make_keras_cnn(seed: int = 0, channels: int = 16):
    import keras
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(channels, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(channels, 3, padding="same", activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(10)])


def teacher_labels(nchw: np.ndarray) -> np.ndarray:
    """Labels from a fixed random linear 'teacher', so the tiny models can be trained a
    little: an untrained net has near-equal logits, where top-1 agreement measures noise."""
    weights = np.random.default_rng(1).standard_normal((nchw[0].size, 10))
    return (nchw.reshape(len(nchw), -1) @ weights).argmax(1)


def mlp_bytes(seed: int = 0) -> bytes:
    """x[N,64] -> Gemm(64->128) -> Relu -> Gemm(128->10) -> y."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    w1 = rng.uniform(-0.3, 0.3, (64, 128)).astype(np.float32)
    w2 = rng.uniform(-0.3, 0.3, (128, 10)).astype(np.float32)
    b1 = rng.uniform(-0.1, 0.1, 128).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
             helper.make_node("Add", ["h0", "b1"], ["h1"], name="bias1"),
             helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
             helper.make_node("MatMul", ["h2", "w2"], ["y"], name="fc2")]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
         numpy_helper.from_array(b1, "b1")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
