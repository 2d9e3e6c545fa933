"""Tiny models built in-process for tests (fixed seeds; no downloads)."""
from __future__ import annotations

import numpy as np


def onnx_conv_classifier(seed: int = 0, channels: int = 3, size: int = 8, classes: int = 4,
                         opset: int = 17, width: int = 8) -> bytes:
    """NCHW conv -> relu -> global average pool -> flatten -> gemm; dynamic batch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((width, channels, 3, 3)).astype(np.float32) * 0.3
    b = rng.standard_normal(width).astype(np.float32) * 0.1
    fc = rng.standard_normal((classes, width)).astype(np.float32)
    fcb = rng.standard_normal(classes).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "conv_classifier",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (fc, "fc"), (fcb, "fcb"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_two_input_state_model(seed: int = 0, features: int = 5, hidden: int = 3) -> bytes:
    """A recurrent-style cell: h' = tanh(x @ Wx + h @ Wh); y = h' @ Wy. Two inputs, two outputs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    wx = rng.standard_normal((features, hidden)).astype(np.float32)
    wh = rng.standard_normal((hidden, hidden)).astype(np.float32)
    wy = rng.standard_normal((hidden, 2)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "wx"], ["a"]),
        helper.make_node("MatMul", ["h", "wh"], ["bh"]),
        helper.make_node("Add", ["a", "bh"], ["s"]),
        helper.make_node("Tanh", ["s"], ["h_next"]),
        helper.make_node("MatMul", ["h_next", "wy"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "cell",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, features]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, hidden])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2]),
         helper.make_tensor_value_info("h_next", TensorProto.FLOAT, [1, hidden])],
        [numpy_helper.from_array(a, n) for a, n in ((wx, "wx"), (wh, "wh"), (wy, "wy"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def keras_conv_classifier(seed: int = 0, size: int = 8, channels: int = 3, classes: int = 4,
                          width: int = 8):
    """A small functional Keras CNN (NHWC)."""
    import tensorflow as tf
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((size, size, channels), name="image")
    x = tf.keras.layers.Conv2D(width, 3, padding="same", activation="relu")(inputs)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(classes, name="logits")(x)
    return tf.keras.Model(inputs, outputs)


def tflite_conv_classifier(seed: int = 0, int8: bool = False, size: int = 8,
                           width: int = 8) -> bytes:
    """The Keras CNN above as float TFLite, or full-int8 with int8 I/O when `int8`."""
    import tensorflow as tf
    model = keras_conv_classifier(seed, size=size, width=width)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(seed)

        def representative():
            for _ in range(32):
                yield [rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32)]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()
