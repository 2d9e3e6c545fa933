"""The int8 weights of a QDQ model, as its DequantizeLinear nodes hold them.

Bias correction and learned rounding both need what the quantizer actually wrote for each
Conv/Gemm weight (integer values, scales, zero points), so they read it back from one walk
of the graph here rather than recomputing the quantizer's arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class QuantizedWeight:
    node: Any                 # the Conv/Gemm NodeProto reading the weight
    values: np.ndarray        # the integer weight initializer, as stored
    scale: np.ndarray         # as stored: a scalar or one per channel along `axis`
    zero_point: np.ndarray    # same shape as `scale` (zeros when absent)
    axis: int                 # DequantizeLinear's axis


def quantized_weights(quantized_model: bytes) -> dict[str, QuantizedWeight]:
    """Node name -> its weight, for every Conv/Gemm whose weight input comes from a
    DequantizeLinear of a constant initializer."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(quantized_model).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    found = {}
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2:
            continue
        dq = producers.get(node.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in inits:
            continue
        scale = inits[dq.input[1]]
        zero = inits[dq.input[2]] if len(dq.input) > 2 and dq.input[2] else np.zeros_like(scale)
        axis = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        found[node.name] = QuantizedWeight(node, inits[dq.input[0]], scale, zero, axis)
    return found
