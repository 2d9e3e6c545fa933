"""What block reconstruction hands back to the quantizer: learned weights and steps.

The fit (reconstruction.py) learns weights on their int8 grid and activation steps in the
torch simulation (qdq_simulation.py). Both leave as float-model inputs of the SAME quantizer
call as plain int8: `rewritten_float_model` writes the learned weights and biases into the
float model (on their grid, so the quantizer recomputes the same per-channel scales), and
`exported_range` turns a learned step into the activation range the quantizer recomputes
exactly that step (and zero point) from.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from edgepack.runtime.errors import ConversionError

from .qdq_simulation import QdqGraph, QdqSimulator


def exported_range(step: float, grid: Mapping[str, Any]) -> tuple[float, float, float]:
    """(low, high) to give the quantizer for an activation of quantization step `step`
    on `grid` (its zero point and integer bounds), and the step the quantizer will compute
    from that range. onnxruntime's compute_scale_zp takes the range's float32 ends, their
    difference in float64 over (qmax - qmin), stored as float32, and the zero point
    round(qmin - low / step): the zero point comes back unchanged and the step differs
    from `step` by at most a float32 rounding, so the fit continues with exactly that one."""
    z, qmin, qmax = grid["zero"], grid["qmin"], grid["qmax"]
    low, high = np.float32((qmin - z) * step), np.float32((qmax - z) * step)
    recomputed = float(np.float32((np.float64(high) - np.float64(low)) / (qmax - qmin)))
    if round(qmin - float(low) / recomputed) != z:
        raise ConversionError(f"reconstruction: a learned step {step:g} does not keep its "
                              f"zero point {z:g}")
    return float(low), float(high), recomputed


def rewritten_float_model(float_model: bytes, graph: QdqGraph, sim: QdqSimulator) -> bytes:
    """`float_model` with each simulated layer's weight (on its grid) and bias."""
    import onnx
    from onnx import numpy_helper
    model = onnx.load_from_string(float_model)
    inits = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    for name, w in graph.weights.items():
        p = sim.params[name]
        if p["mode"] == "nearest":
            continue
        with sim.torch.no_grad():
            weight = sim.weight(name).numpy().astype(np.float32)
            bias = p["bias"].detach().numpy().astype(np.float32)
        inits[w["weight_name"]].CopyFrom(numpy_helper.from_array(weight, w["weight_name"]))
        if w["bias_name"] is not None:
            inits[w["bias_name"]].CopyFrom(numpy_helper.from_array(bias, w["bias_name"]))
        elif np.any(bias != 0):
            bias_name = f"{name}__reconstructed_bias"
            model.graph.initializer.append(numpy_helper.from_array(bias, bias_name))
            nodes[name].input.append(bias_name)
    return model.SerializeToString()
