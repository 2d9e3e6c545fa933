"""Integer model I/O for a QDQ-quantized ONNX model.

onnxruntime's static quantizer keeps float32 I/O: each graph input enters through a
QuantizeLinear and each graph output leaves through a DequantizeLinear. For integer I/O
those boundary nodes are removed, the graph input/output become int8 tensors, and their
scale/zero point go into the bundle's TensorSpecs so the runtime (or a microcontroller
feeding raw sensor bytes) can quantize and dequantize outside the model.

Some graphs leave a boundary in float (tf2onnx puts a Reshape/Transpose right after the
input, which the quantizer does not quantize on its own). There an explicit
DequantizeLinear (input) or QuantizeLinear (output) is added, with a range measured on the
calibration data.
"""
from __future__ import annotations

import numpy as np

from edgepack.runtime.errors import ConversionError
from edgepack.runtime.specs import TensorSpec

from .quantize_onnx import quant_params_of


def make_int8_io(model, calibration):
    """Return (model, input specs, output specs) with int8 graph inputs and outputs.

    `calibration` (input name -> float samples) sizes the ranges of boundaries the
    quantizer left in float.
    """
    from onnx import TensorProto, numpy_helper

    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producers = {out: node for node in graph.node for out in node.output}
    drop, inputs, outputs = [], [], []

    ranges = None
    for value in graph.input:
        users = consumers.get(value.name, [])
        if users and all(u.op_type == "QuantizeLinear" for u in users):
            params = _params(users[0], inits)
            for quant in users:
                # Everything that read the quantized copy now reads the int8 graph input.
                for node in consumers.get(quant.output[0], []):
                    _rename_input(node, quant.output[0], value.name)
                drop.append(quant)
        else:
            data = np.asarray(calibration[value.name], dtype=np.float32)
            params = _add_boundary(graph, "DequantizeLinear", value.name, users,
                                   float(data.min()), float(data.max()))
        value.type.tensor_type.elem_type = TensorProto.INT8
        inputs.append(_spec(value, params))

    for index, value in enumerate(graph.output):
        dq = producers.get(value.name)
        if dq is not None and dq.op_type == "DequantizeLinear":
            params = _params(dq, inits)
            quantized = dq.input[0]
            # The int8 tensor takes the output's name so the I/O names stay what they were.
            producer = producers.get(quantized)
            if producer is not None:
                producer.output[list(producer.output).index(quantized)] = value.name
            for node in consumers.get(quantized, []):
                if node is not dq:
                    _rename_input(node, quantized, value.name)
            drop.append(dq)
        else:
            if ranges is None:
                ranges = _output_ranges(model, calibration)
            low, high = ranges[index]
            params = _quantize_output(graph, value.name, producers, consumers, low, high)
        value.type.tensor_type.elem_type = TensorProto.INT8
        outputs.append(_spec(value, params))

    kept = [n for n in graph.node if all(n is not d for d in drop)]
    del graph.node[:]
    graph.node.extend(kept)
    return model, tuple(inputs), tuple(outputs)


def _affine(low: float, high: float) -> tuple[float, int]:
    """Asymmetric int8 scale/zero point covering [low, high] (which always includes 0)."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = (high - low) / 255.0 or 1.0
    zero = int(np.clip(round(-128 - low / scale), -128, 127))
    return scale, zero


def _constants(graph, name: str, scale: float, zero: int):
    from onnx import numpy_helper
    graph.initializer.append(numpy_helper.from_array(np.array(scale, np.float32), name + "_scale"))
    graph.initializer.append(numpy_helper.from_array(np.array(zero, np.int8), name + "_zero"))
    return [name + "_scale", name + "_zero"]


def _add_boundary(graph, op: str, name: str, users, low: float, high: float):
    """int8 input `name` -> DequantizeLinear -> float copy read by the former users."""
    from onnx import helper
    scale, zero = _affine(low, high)
    float_name = f"{name}__float"
    graph.node.insert(0, helper.make_node(op, [name, *_constants(graph, float_name, scale, zero)],
                                          [float_name], name=f"{float_name}__dq"))
    for node in users:
        _rename_input(node, name, float_name)
    return quant_params_of(np.array(scale), np.array(zero, np.int8))


def _quantize_output(graph, name: str, producers, consumers, low: float, high: float):
    """float output -> QuantizeLinear -> int8 output keeping the output's name."""
    from onnx import helper
    scale, zero = _affine(low, high)
    float_name = f"{name}__float"
    producer = producers[name]
    producer.output[list(producer.output).index(name)] = float_name
    for node in consumers.get(name, []):
        _rename_input(node, name, float_name)
    graph.node.append(helper.make_node(
        "QuantizeLinear", [float_name, *_constants(graph, name + "__q", scale, zero)], [name],
        name=f"{name}__q"))
    return quant_params_of(np.array(scale), np.array(zero, np.int8))


def _output_ranges(model, calibration) -> list[tuple[float, float]]:
    """Min/max of each graph output over the calibration data (float-I/O model)."""
    import onnxruntime as ort
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    batch = 1 if isinstance(session.get_inputs()[0].shape[0], int) else 64
    count = min(len(calibration[n]) for n in names)
    lows, highs = None, None
    for start in range(0, count, batch):
        outs = session.run(None, {n: np.asarray(calibration[n][start:start + batch], np.float32)
                                  for n in names})
        mins, maxs = [float(o.min()) for o in outs], [float(o.max()) for o in outs]
        lows = mins if lows is None else [min(a, b) for a, b in zip(lows, mins)]
        highs = maxs if highs is None else [max(a, b) for a, b in zip(highs, maxs)]
    return list(zip(lows, highs))


def _params(node, inits):
    if node.input[1] not in inits or len(node.input) < 3 or node.input[2] not in inits:
        raise ConversionError(
            f"{node.op_type} {node.name!r} has no constant scale/zero point; "
            "convert without --int8-io")
    scale, zero = inits[node.input[1]], inits[node.input[2]]
    if str(zero.dtype) != "int8":
        raise ConversionError(f"{node.name!r} quantizes to {zero.dtype}, expected int8")
    return quant_params_of(scale, zero)


def _rename_input(node, old: str, new: str) -> None:
    for i, name in enumerate(node.input):
        if name == old:
            node.input[i] = new


def _spec(value, params) -> TensorSpec:
    dims = tuple(d.dim_value if d.HasField("dim_value") else -1
                 for d in value.type.tensor_type.shape.dim)
    return TensorSpec(value.name, dims, "int8", None, params)
