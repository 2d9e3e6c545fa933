"""Tiny ONNX graphs built in the tests (fixed seeds, no downloads)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = [helper.make_opsetid("", 17)]


def _model(graph) -> bytes:
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def accumulator(window: int | None = None) -> bytes:
    """input [1, N], state [1, 1] -> total = state + sum(input), stateN = total, also the
    window's mean. N is dynamic unless `window` is given: one call over a whole signal
    gives the same final total as the stream."""
    n = window if window is not None else "n"
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, n])
    s = helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, 1])
    total = helper.make_tensor_value_info("total", TensorProto.FLOAT, [1, 1])
    s_out = helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [1, 1])
    nodes = [
        helper.make_node("ReduceSum", ["input"], ["sum"], keepdims=1),
        helper.make_node("Add", ["state", "sum"], ["total"]),
        helper.make_node("Identity", ["total"], ["stateN"]),
    ]
    return _model(helper.make_graph(nodes, "acc", [x, s], [total, s_out]))


def energy_vad(window: int, context: int = 0) -> bytes:
    """input [1, context+window], sr int64 [1] -> prob [1, 1] = sigmoid(k * (rms - 0.05)),
    plus a GRU-like state [1, 4] that is carried but does not change the output."""
    span = window + context
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, span])
    sr = helper.make_tensor_value_info("sr", TensorProto.INT64, [1])
    st = helper.make_tensor_value_info("state", TensorProto.FLOAT, [1, 4])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1])
    st_out = helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [1, 4])
    inits = [helper.make_tensor("k", TensorProto.FLOAT, [], [200.0]),
             helper.make_tensor("thr", TensorProto.FLOAT, [], [0.05]),
             helper.make_tensor("decay", TensorProto.FLOAT, [], [0.5])]
    nodes = [
        helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["win"]),
        helper.make_node("Mul", ["win", "win"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["ms"], keepdims=1),
        helper.make_node("Sqrt", ["ms"], ["rms"]),
        helper.make_node("Sub", ["rms", "thr"], ["d"]),
        helper.make_node("Mul", ["d", "k"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["output"]),
        helper.make_node("Mul", ["state", "decay"], ["half"]),
        helper.make_node("Add", ["half", "rms"], ["stateN"]),
    ]
    inits += [helper.make_tensor("starts", TensorProto.INT64, [1], [context]),
              helper.make_tensor("ends", TensorProto.INT64, [1], [span]),
              helper.make_tensor("axes", TensorProto.INT64, [1], [1])]
    # sr is declared (as in real VAD models) and checked: output += 0 * (sr - 16000)
    nodes += [helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
              helper.make_node("Sub", ["srf", "r16k"], ["srd"]),
              helper.make_node("Mul", ["srd", "zero"], ["sr0"])]
    inits += [helper.make_tensor("r16k", TensorProto.FLOAT, [], [16000.0]),
              helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])]
    nodes[6] = helper.make_node("Sigmoid", ["z"], ["p0"])
    nodes.append(helper.make_node("Add", ["p0", "sr0"], ["output"]))
    graph = helper.make_graph(nodes, "vad", [x, sr, st], [out, st_out], inits)
    return _model(graph)


def dense(inputs: int, outputs: int, *, name_in: str = "x", name_out: str = "y",
          seed: int = 0, frames: int | None = None, act: str | None = None) -> bytes:
    """x [1, inputs] (or [1, frames, inputs]) @ W + b -> y; a stage of the chained toys."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((inputs, outputs)).astype(np.float32) / np.sqrt(inputs)
    b = rng.standard_normal(outputs).astype(np.float32) * 0.1
    shape_in = [1, inputs] if frames is None else [1, frames, inputs]
    shape_out = [1, outputs] if frames is None else [1, frames, outputs]
    nodes = [helper.make_node("MatMul", [name_in, "W"], ["mm"]),
             helper.make_node("Add", ["mm", "B"], [name_out if act is None else "lin"])]
    if act is not None:
        nodes.append(helper.make_node(act, ["lin"], [name_out]))
    graph = helper.make_graph(
        nodes, "dense",
        [helper.make_tensor_value_info(name_in, TensorProto.FLOAT, shape_in)],
        [helper.make_tensor_value_info(name_out, TensorProto.FLOAT, shape_out)],
        [helper.make_tensor("W", TensorProto.FLOAT, w.shape, w.reshape(-1).tolist()),
         helper.make_tensor("B", TensorProto.FLOAT, b.shape, b.tolist())])
    return _model(graph)


def loudness_keyword(mels: int = 32, frames: int = 31) -> bytes:
    """features [1, mels, frames] (log-mel dB) -> scores [1, 2] = [1 - p, p] with
    p = sigmoid((max dB + 30) / 3): a 'beep' keyword is anything loud (README example)."""
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, mels, frames])
    y = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2])
    inits = [helper.make_tensor("off", TensorProto.FLOAT, [], [30.0]),
             helper.make_tensor("div", TensorProto.FLOAT, [], [3.0]),
             helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]),
             helper.make_tensor("axes", TensorProto.INT64, [2], [1, 2])]
    nodes = [helper.make_node("ReduceMax", ["features", "axes"], ["m"], keepdims=0),
             helper.make_node("Add", ["m", "off"], ["a"]),
             helper.make_node("Div", ["a", "div"], ["z"]),
             helper.make_node("Sigmoid", ["z"], ["p1"]),
             helper.make_node("Sub", ["one", "p1"], ["p0"]),
             helper.make_node("Unsqueeze", ["p0", "ax1"], ["q0"]),
             helper.make_node("Unsqueeze", ["p1", "ax1"], ["q1"]),
             helper.make_node("Concat", ["q0", "q1"], ["scores"], axis=1)]
    inits.append(helper.make_tensor("ax1", TensorProto.INT64, [1], [1]))
    model = helper.make_model(helper.make_graph(nodes, "kws", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def recurrent_vad(window: int = 512, context: int = 64, hidden: int = 8) -> bytes:
    """input [1, context+window], sr int64 [1], state [2, 1, hidden] -> stateN = 0.8 state +
    rms(window), output [1, 1] = sigmoid(20 (mean(stateN) - 0.25)) + 0 * (sr - 16000): the
    state changes the output, so a stream that carried it wrongly gives other numbers."""
    span = window + context
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, span])
    sr = helper.make_tensor_value_info("sr", TensorProto.INT64, [1])
    st = helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, hidden])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1])
    st_out = helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, 1, hidden])
    f = lambda name, v: helper.make_tensor(name, TensorProto.FLOAT, [], [v])  # noqa: E731
    i64 = lambda name, v: helper.make_tensor(name, TensorProto.INT64, [len(v)], v)  # noqa: E731
    inits = [f("decay", 0.8), f("thr", 0.25), f("k", 20.0), f("r16k", 16000.0), f("zero", 0.0),
             i64("starts", [context]), i64("ends", [span]), i64("axes", [1]), i64("shape", [1, 1])]
    nodes = [
        helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["win"]),
        helper.make_node("Mul", ["win", "win"], ["sq"]),
        helper.make_node("ReduceMean", ["sq"], ["ms"], keepdims=1),
        helper.make_node("Sqrt", ["ms"], ["rms"]),
        helper.make_node("Mul", ["state", "decay"], ["kept"]),
        helper.make_node("Add", ["kept", "rms"], ["stateN"]),
        helper.make_node("ReduceMean", ["stateN"], ["m"], keepdims=0),
        helper.make_node("Sub", ["m", "thr"], ["d"]),
        helper.make_node("Mul", ["d", "k"], ["z"]),
        helper.make_node("Sigmoid", ["z"], ["p"]),
        helper.make_node("Reshape", ["p", "shape"], ["p2"]),
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["srf", "r16k"], ["srd"]),
        helper.make_node("Mul", ["srd", "zero"], ["sr0"]),
        helper.make_node("Add", ["p2", "sr0"], ["output"]),
    ]
    return _model(helper.make_graph(nodes, "rvad", [x, sr, st], [out, st_out], inits))


def rate_checked_vad(span: int = 576) -> bytes:
    """input [1, span], sr int64 [1] -> output [1, 1]: the input is reshaped to
    [sr // 16000, -1] (allowzero), so only sr = 16000 runs; sr = 0 (an integer input's
    default example) fails in the engine as a real VAD's sr branch does."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, span])
    sr = helper.make_tensor_value_info("sr", TensorProto.INT64, [1])
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1])
    inits = [helper.make_tensor("r16k", TensorProto.INT64, [1], [16000]),
             helper.make_tensor("minus1", TensorProto.INT64, [1], [-1])]
    nodes = [helper.make_node("Div", ["sr", "r16k"], ["q"]),
             helper.make_node("Concat", ["q", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["input", "shape"], ["x2"], allowzero=1),
             helper.make_node("ReduceMean", ["x2"], ["output"], keepdims=1)]
    return _model(helper.make_graph(nodes, "srvad", [x, sr], [out], inits))


def random_chunks(x, rng, longest: int):
    """`x` cut into consecutive chunks of random sizes in [1, longest): how a stream gets
    audio from a capture loop that does not align with its windows."""
    pos = 0
    while pos < len(x):
        n = int(rng.integers(1, longest))
        yield x[pos:pos + n]
        pos += n
