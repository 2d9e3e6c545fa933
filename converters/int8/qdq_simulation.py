"""A QDQ int8 model read as it runs, and simulated in torch with learnable weights.

`QdqGraph` reads the model the recipe produced: its compute nodes (the constant Dequantize
of each weight folded into its layer), each QuantizeLinear -> DequantizeLinear pair as one
fake-quant node ("FQ") with its scale, zero point and integer bounds, each int8 weight's
per-channel grid, and the cuts into blocks (tensors every later path starts from).
`QdqSimulator` runs a range of those nodes in torch: each weight as its grid's floor plus a
learnable rounding (AdaRound's soft rounding, a free value on the grid, or nearest), each
fake-quant with a fixed or learnable step (LSQ). Block reconstruction (reconstruction.py)
fits both; a graph with an op outside SIMULATED_OPS raises ConversionError.

Torch is imported when a simulator is built (converters may import it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgepack.runtime.errors import ConversionError

# AdaRound's rectified-sigmoid stretch, and the grids the quantizer wrote, as adaround has them
from .adaround import GAMMA, ZETA, weight_grids

#: Ops whose int8 output onnxruntime quantizes with its input's scale.
SHARED_SCALE_OPS = ("Flatten", "Reshape", "MaxPool")

#: Ops the torch simulation of a QDQ graph runs; a model with others is not reconstructed.
SIMULATED_OPS = ("Conv", "Gemm", "Add", "Relu", "Clip", "GlobalAveragePool", "Flatten",
                 "QuantizeLinear", "DequantizeLinear", "Reshape", "MaxPool", "AveragePool")


@dataclass
class QdqNode:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    name: str


class QdqGraph:
    """The QDQ model's compute nodes (constant Dequantize of weights folded away) with
    fused fake-quant nodes ("FQ": QuantizeLinear -> DequantizeLinear)."""

    def __init__(self, qdq_model: bytes, float_model: bytes):
        import onnx
        from onnx import numpy_helper
        model = onnx.load_from_string(qdq_model)
        graph = model.graph
        self.consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        inputs = [i.name for i in graph.input if i.name not in self.consts]
        if len(inputs) != 1:
            raise ConversionError(f"block reconstruction takes models with one input, this "
                                  f"one has {len(inputs)}")
        self.input = inputs[0]
        self.outputs = [o.name for o in graph.output]
        float_graph = onnx.load_from_string(float_model).graph
        float_nodes = {n.name: n for n in float_graph.node}
        self.float_tensors = {o for n in float_graph.node for o in n.output} | \
            {i.name for i in float_graph.input}
        float_weights = {i.name: numpy_helper.to_array(i) for i in float_graph.initializer}
        # the per-channel grid of each int8 weight, as the quantizer wrote it
        grids = weight_grids(qdq_model)
        readers: dict[str, list] = {}
        for n in graph.node:
            for i in n.input:
                readers.setdefault(i, []).append(n)
        self.weights: dict[str, dict[str, Any]] = {}   # node -> grid, float weight, bias
        self.nodes: list[QdqNode] = []
        skip: set[str] = set()
        for n in graph.node:
            if n.op_type not in SIMULATED_OPS:
                raise ConversionError(f"block reconstruction cannot simulate {n.op_type} "
                                      f"({n.name})")
            if n.name in skip:
                continue
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            if n.op_type == "DequantizeLinear" and n.input[0] in self.consts:
                continue                      # weight / bias: handled by its reader
            if n.op_type == "QuantizeLinear":
                after = readers.get(n.output[0], [])
                if len(after) != 1 or after[0].op_type != "DequantizeLinear":
                    raise ConversionError("block reconstruction needs each QuantizeLinear "
                                          "followed by one DequantizeLinear")
                dq = after[0]
                skip.add(dq.name)
                scale = float(self.consts[n.input[1]].reshape(-1)[0])
                zero = self.consts[n.input[2]] if len(n.input) > 2 and n.input[2] else None
                info = np.iinfo(zero.dtype) if zero is not None else np.iinfo(np.uint8)
                z = float(zero.reshape(-1)[0]) if zero is not None else 0.0
                self.nodes.append(QdqNode("FQ", [n.input[0]], [dq.output[0]],
                                          {"scale": scale, "zero": z, "qmin": info.min,
                                           "qmax": info.max}, n.name))
                continue
            if n.op_type in ("Conv", "Gemm"):
                grid = grids.get(n.name)
                if grid is None or n.name not in float_nodes:
                    raise ConversionError(f"block reconstruction: {n.name} has no int8 "
                                          "weight (a layer kept float)")
                fnode = float_nodes[n.name]
                w = float_weights[fnode.input[1]]
                bias_name = fnode.input[2] if len(fnode.input) > 2 and fnode.input[2] else None
                b = float_weights[bias_name] if bias_name else None
                if n.op_type == "Gemm" and (attrs.get("transA", 0) or not attrs.get("transB", 0)):
                    raise ConversionError(f"block reconstruction: Gemm {n.name} layout")
                scale, zero, qmin, qmax = grid
                self.weights[n.name] = {
                    "scale": scale, "zero": zero, "qmin": qmin, "qmax": qmax,
                    "w": w.astype(np.float64),
                    "b": None if b is None else b.astype(np.float64),
                    "weight_name": fnode.input[1], "bias_name": bias_name}
                self.nodes.append(QdqNode(n.op_type, [n.input[0]], list(n.output), attrs,
                                          n.name))
                continue
            ins = [i for i in n.input]
            self.nodes.append(QdqNode(n.op_type, ins, list(n.output), attrs, n.name))

    def blocks(self, block_layers: int) -> list[tuple[int, int, str, str]]:
        """(first node, end node (exclusive), input tensor, output tensor) per block: cuts
        at fake-quant outputs (or graph outputs) every later path starts from."""
        remaining: dict[str, int] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i not in self.consts:
                    remaining[i] = remaining.get(i, 0) + 1
        live = {self.input}
        cuts = []       # (index after node, tensor)
        for k, n in enumerate(self.nodes):
            for i in n.inputs:
                if i in remaining:
                    remaining[i] -= 1
                    if remaining[i] == 0:
                        live.discard(i)
            live |= {o for o in n.outputs if remaining.get(o, 0) > 0 or o in self.outputs}
            if len(live) == 1:
                (t,) = live
                if (n.op == "FQ" and n.inputs[0] in self.float_tensors) or t in self.outputs:
                    cuts.append((k + 1, t))
        segments, start, tensor = [], 0, self.input
        for end, t in cuts:
            layers = sum(1 for n in self.nodes[start:end] if n.op in ("Conv", "Gemm"))
            segments.append((start, end, tensor, t, layers))
            start, tensor = end, t
        merged: list[list] = []
        for seg in segments:
            # a segment without layers (an input's or a pooling's fake quant) joins its
            # neighbour: every node must run in some block
            if merged and (merged[-1][4] == 0 or seg[4] == 0 or
                           merged[-1][4] + seg[4] <= block_layers):
                last = merged[-1]
                merged[-1] = [last[0], seg[1], last[2], seg[3], last[4] + seg[4]]
            else:
                merged.append(list(seg))
        return [(a, b, i, o) for a, b, i, o, _ in merged]

    def reference_name(self, tensor: str) -> str:
        """The float model's tensor a cut tensor stands for (a fake-quant output stands
        for the tensor it quantizes)."""
        for n in self.nodes:
            if n.op == "FQ" and n.outputs[0] == tensor and n.inputs[0] in self.float_tensors:
                return n.inputs[0]
        # a requantized graph output keeps its float name on the Dequantize side
        return tensor


class QdqSimulator:
    """Runs a node range of the graph in torch with learnable weights."""

    def __init__(self, graph: QdqGraph):
        import torch
        self.g = graph
        self.torch = torch
        self.params: dict[str, dict[str, Any]] = {}
        # each fake-quantized tensor's step: "s" the one in use (a float), "log_s" the
        # learnable one while its block is fitted ("learn")
        self.steps: dict[str, dict[str, Any]] = {}
        for n in graph.nodes:
            if n.op == "FQ":
                a = n.attrs
                self.steps[n.inputs[0]] = {
                    "s": a["scale"], "s0": a["scale"], "zero": a["zero"], "qmin": a["qmin"],
                    "qmax": a["qmax"], "learn": False,
                    "log_s": torch.tensor(float(np.log(a["scale"])), requires_grad=True)}
        # onnxruntime gives the output of a max-pool/flatten/reshape its input's scale: the
        # range of neither tensor is its own, so neither step is learned
        quantizes = {n.outputs[0]: n.inputs[0] for n in graph.nodes if n.op == "FQ"}
        self.shared_steps = set()
        for n in graph.nodes:
            if n.op in SHARED_SCALE_OPS:
                self.shared_steps |= {quantizes.get(n.inputs[0]), n.outputs[0]}
        for name, w in graph.weights.items():
            shape = w["w"].shape
            flat = w["w"].reshape(shape[0], -1)
            scale = w["scale"][:, None]
            units = flat / scale
            base = np.floor(units)
            nearest = np.clip(np.round(units) + w["zero"][:, None], w["qmin"], w["qmax"]) - \
                w["zero"][:, None]
            fixed = np.abs(flat) >= np.abs(flat).max(axis=1, keepdims=True)
            fixed |= (base + w["zero"][:, None] < w["qmin"]) | \
                (base + 1 + w["zero"][:, None] > w["qmax"])
            frac = np.clip((units - base - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4)
            v = torch.tensor(np.log(frac / (1 - frac)), dtype=torch.float32, requires_grad=True)
            bias = w["b"] if w["b"] is not None else np.zeros(shape[0])
            self.params[name] = {
                "v": v, "u": torch.tensor(units, dtype=torch.float32, requires_grad=True),
                "low": torch.tensor(w["qmin"] - w["zero"][:, None], dtype=torch.float32),
                "high": torch.tensor(w["qmax"] - w["zero"][:, None], dtype=torch.float32),
                "base": torch.tensor(base, dtype=torch.float32),
                "fixed": torch.tensor(fixed), "nearest_h": torch.tensor(nearest - base,
                                                                        dtype=torch.float32),
                "scale": torch.tensor(scale, dtype=torch.float32), "shape": shape,
                "bias": torch.tensor(bias, dtype=torch.float32, requires_grad=True),
                "bias0": bias.copy(), "mode": "nearest"}

    def h(self, name: str):
        p = self.params[name]
        torch = self.torch
        if p["mode"] == "nearest":
            return p["nearest_h"]
        if p["mode"] in ("grid", "grid_hard"):
            u = p["u"]
            q = torch.round(u) if p["mode"] == "grid_hard" else u + (torch.round(u) - u).detach()
            q = torch.minimum(torch.maximum(q, p["low"]), p["high"])
            return torch.where(p["fixed"], p["nearest_h"], q - p["base"])
        if p["mode"] == "hard":
            soft = (p["v"] >= 0).float()
        else:
            soft = torch.clamp(torch.sigmoid(p["v"]) * (ZETA - GAMMA) + GAMMA, 0, 1)
        return torch.where(p["fixed"], p["nearest_h"], soft)

    def weight(self, name: str):
        p = self.params[name]
        return ((p["base"] + self.h(name)) * p["scale"]).reshape(p["shape"])

    def run(self, start: int, end: int, values: dict, quantize: bool = True,
            drop: float = 0.0, generator=None) -> dict:
        torch = self.torch
        F = torch.nn.functional
        for n in self.g.nodes[start:end]:
            x = [values[i] if i in values else torch.tensor(self.g.consts[i])
                 for i in n.inputs]
            a = n.attrs
            if n.op == "FQ":
                step = self.steps[n.inputs[0]]
                z = a["zero"]
                s = torch.exp(step["log_s"]) if step["learn"] else step["s"]
                lo, hi = (a["qmin"] - z) * s, (a["qmax"] - z) * s
                if step["learn"]:
                    # LSQ: the step gets its gradient through the clip ends and through
                    # the rounding residual (straight-through round)
                    clipped = torch.minimum(torch.maximum(x[0], lo), hi)
                else:
                    clipped = torch.clamp(x[0], lo, hi)
                if quantize and step["learn"]:
                    v = x[0] / s
                    q = torch.clamp(v + (torch.round(v) - v).detach() + z, a["qmin"],
                                    a["qmax"])
                    rounded = (q - z) * s
                if quantize and not step["learn"]:
                    q = torch.clamp(torch.round(x[0] / s) + z, a["qmin"], a["qmax"])
                    rounded = clipped + ((q - z) * s - clipped).detach()   # straight-through
                if quantize:
                    if drop > 0:
                        keep = torch.rand(x[0].shape, generator=generator) >= drop
                        out = torch.where(keep, rounded, clipped)
                    else:
                        out = rounded
                else:
                    out = clipped
            elif n.op == "Conv":
                pads = a.get("pads", [0, 0, 0, 0])
                if pads[0] != pads[2] or pads[1] != pads[3]:
                    raise ConversionError(f"block reconstruction: asymmetric pads in {n.name}")
                out = F.conv2d(x[0], self.weight(n.name), self.params[n.name]["bias"],
                               stride=a.get("strides", [1, 1]), padding=pads[:2],
                               dilation=a.get("dilations", [1, 1]), groups=a.get("group", 1))
            elif n.op == "Gemm":
                out = F.linear(x[0], self.weight(n.name), self.params[n.name]["bias"])
            elif n.op == "Add":
                out = x[0] + x[1]
            elif n.op == "Relu":
                out = torch.relu(x[0])
            elif n.op == "Clip":
                lo = float(x[1]) if len(x) > 1 and n.inputs[1] else -np.inf
                hi = float(x[2]) if len(x) > 2 and n.inputs[2] else np.inf
                out = torch.clamp(x[0], lo, hi)
            elif n.op == "GlobalAveragePool":
                out = x[0].mean(dim=(2, 3), keepdim=True)
            elif n.op == "Flatten":
                out = torch.flatten(x[0], a.get("axis", 1))
            elif n.op == "Reshape":
                out = x[0].reshape([int(d) for d in x[1]])
            elif n.op == "MaxPool":
                out = F.max_pool2d(x[0], a["kernel_shape"], a.get("strides"),
                                   a.get("pads", [0, 0, 0, 0])[:2])
            else:       # AveragePool
                out = F.avg_pool2d(x[0], a["kernel_shape"], a.get("strides"),
                                   a.get("pads", [0, 0, 0, 0])[:2])
            values[n.outputs[0]] = out
        return values
