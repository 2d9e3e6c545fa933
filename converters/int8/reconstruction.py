"""Block reconstruction with activation quantization in the loop (BRECQ / QDrop-style).

Layer-local fixes (bias correction, AdaRound from float inputs) correct the *weights'*
rounding error. On depthwise-separable nets most of the int8 loss is the *activations'*
8-bit rounding noise, spread over every tensor (docs/int8-accuracy.md). Block
reconstruction (Li et al., "BRECQ", 2021; Wei et al., "QDrop", 2022) lets the weights learn
to tolerate that noise without training the model:

- the QDQ model the recipe produced is read as it runs (its QuantizeLinear/DequantizeLinear
  pairs, scales and zero points, its per-channel weight grids) and simulated in torch;
- blocks are cut at the tensors every path goes through (an inverted residual with its
  skip is one block; consecutive single-path layers are merged up to `block_layers`);
- block by block in graph order, the block's weights are rounded up or down on their int8
  grid by learned soft rounding (AdaRound's rectified sigmoid, annealed to 0/1) and its
  biases may move, so that the block's output, with every activation inside fake-quantized
  and its input taken from the *already reconstructed* quantized blocks before it, matches
  the float model's output of the block;
- during the fit each activation element is fake-quantized only with probability
  1 - `drop` and otherwise only clipped to its range (QDrop): the result is flat with
  respect to the activation noise instead of fitted to one draw of it;
- optionally (`learn_ranges`) each activation's quantization step inside the block is
  learned too (LSQ, as QDrop does) and exported as the activation range the quantizer
  recomputes that very step from (`exported_range`).

The weights come out on the grid the quantizer computes anyway (each channel's largest
|w| keeps its nearest rounding, so the per-channel scales are recomputed unchanged): the
rewritten float model goes through the SAME quantizer call with the same activation ranges
(`Calibrated.replace_model`), every layer stays int8, and the graph (and so the latency)
is that of plain int8. What is fitted on calibration samples is judged on calibration
samples it was not fitted on (selection.FittedSplit).

Torch is used (converters may import it); one thread unless told otherwise.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from edgepack.runtime.errors import ConversionError

# AdaRound's rectified-sigmoid stretch, and the grids the quantizer wrote, as adaround has them
from .adaround import GAMMA, ZETA, weight_grids

log = logging.getLogger(__name__)

#: Ops whose int8 output onnxruntime quantizes with its input's scale.
SHARED_SCALE_OPS = ("Flatten", "Reshape", "MaxPool")

#: Ops the torch simulation of a QDQ graph runs; a model with others is not reconstructed.
SIMULATED_OPS = ("Conv", "Gemm", "Add", "Relu", "Clip", "GlobalAveragePool", "Flatten",
                 "QuantizeLinear", "DequantizeLinear", "Reshape", "MaxPool", "AveragePool")


@dataclass(frozen=True)
class ReconstructionSettings:
    """iterations: optimizer steps per block; batch: samples per step; drop: probability
    that an activation element skips its rounding during the fit (QDrop; 0 = BRECQ);
    regularization: weight of the push of the soft rounding to 0/1 (relative to the
    block's normalized reconstruction error); bias: learn the biases too (learning rate
    relative to each channel's weight scale); block_layers: single-path layers merged into
    one block; seconds: wall-clock budget (blocks left when it runs out keep
    round-to-nearest); threads: torch threads."""

    iterations: int = 150
    batch: int = 16
    learning_rate: float = 3e-2
    drop: float = 0.5
    regularization: float = 0.01
    bias: bool = False
    bias_learning_rate: float = 5e-4
    block_layers: int = 3
    seconds: float = 600.0
    threads: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rounding not in ("adaround", "grid"):
            raise ConversionError(f"unknown reconstruction rounding {self.rounding!r}; use "
                                  "adaround or grid")
        if not 0.0 <= self.drop < 1.0:
            raise ConversionError(f"reconstruction drop must be in [0, 1), got {self.drop}")

    #: Extra fit inputs per calibration sample: convex mixes of two calibration samples
    #: (weight uniform in [0, 1]), which the float model labels itself (the targets are
    #: its outputs, not labels). A late block sees only one row per sample (1x1 spatial)
    #: for hundreds of thousands of rounding choices: without more inputs the rounding
    #: fits the samples, not the noise.
    mixes: int = 7
    #: Mirror images (last axis flipped) as further fit inputs, for 4-D image inputs.
    flips: bool = False
    #: "adaround": each weight rounds up or down (soft rounding annealed to 0/1);
    #: "grid": each weight is a free value on its fixed per-channel grid (straight-through
    #: rounding, `grid_learning_rate` in grid steps per step), so it may move several steps.
    rounding: str = "adaround"
    grid_learning_rate: float = 1e-2
    #: LSQ-style (Esser et al. 2020, as QDrop does): each activation's quantization step
    #: inside the block is learned jointly with the rounding (log space, Adam at
    #: `range_learning_rate`; the zero point stays). The learned steps are exported as the
    #: activation ranges the quantizer then uses (`Reconstruction.ranges`), chosen so that
    #: it recomputes exactly the step and zero point the fit used.
    learn_ranges: bool = True
    range_learning_rate: float = 1e-2


@dataclass(frozen=True)
class ReconstructedBlock:
    layers: tuple[str, ...]
    error_before: float         # block output error vs float (relative), round-to-nearest
    error_after: float          # the same after reconstruction
    flipped: int                # weights rounded the other way than nearest


@dataclass(frozen=True)
class Reconstruction:
    """The float model rewritten with reconstructed weights (on their int8 grid) and
    biases: quantize it with the same ranges to get the reconstructed int8 model."""

    model_bytes: bytes
    blocks: tuple[ReconstructedBlock, ...]
    seconds: float
    samples: int
    #: tensor -> (low, high): the activation ranges whose steps were learned
    #: (`learn_ranges`); quantize with these in place of the calibrated ones.
    ranges: Mapping[str, tuple[float, float]] = None

    def __post_init__(self) -> None:
        if self.ranges is None:
            object.__setattr__(self, "ranges", {})

    def to_record(self) -> dict[str, Any]:
        def mean(values: list[float]) -> float | None:
            return float(f"{np.mean(values):.4g}") if values else None
        return {"blocks": len(self.blocks), "samples_fitted": self.samples,
                "seconds": round(self.seconds, 1),
                "flipped": int(sum(b.flipped for b in self.blocks)),
                "block_error_before": mean([b.error_before for b in self.blocks]),
                "block_error_after": mean([b.error_after for b in self.blocks]),
                **({"ranges_learned": len(self.ranges)} if self.ranges else {})}


# --- the QDQ graph as torch computes it -------------------------------------------------

@dataclass
class _Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    name: str


class _Graph:
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
        self.nodes: list[_Node] = []
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
                self.nodes.append(_Node("FQ", [n.input[0]], [dq.output[0]],
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
                self.nodes.append(_Node(n.op_type, [n.input[0]], list(n.output), attrs,
                                        n.name))
                continue
            ins = [i for i in n.input]
            self.nodes.append(_Node(n.op_type, ins, list(n.output), attrs, n.name))

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


class _Simulator:
    """Runs a node range of the graph in torch with learnable weights."""

    def __init__(self, graph: _Graph):
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


def reconstruct(float_model: bytes, qdq_model: bytes, samples: Mapping[str, np.ndarray],
                settings: ReconstructionSettings = ReconstructionSettings()) -> Reconstruction:
    """Block reconstruction of `qdq_model` (the recipe's all-int8 QDQ model of
    `float_model`, the prepared float graph) on `samples` (fit samples only). Returns the
    float model with the learned weights and biases. Raises ConversionError for a graph
    the simulation does not cover (the caller then skips the method)."""
    import torch

    started = time.monotonic()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(settings.threads)
    try:
        graph = _Graph(qdq_model, float_model)
        blocks = graph.blocks(settings.block_layers)
        sim = _Simulator(graph)
        x = fit_inputs(np.asarray(samples[graph.input], np.float32), settings)
        wanted = [graph.reference_name(o) for _, _, _, o in blocks]
        targets = _float_values(float_model, wanted, graph.input, x)
        gen = torch.Generator().manual_seed(settings.seed)
        current = torch.tensor(x)          # the block input through the quantized blocks
        done = []
        for index, (start, end, tin, tout) in enumerate(blocks):
            layers = tuple(n.name for n in graph.nodes[start:end] if n.op in ("Conv", "Gemm"))
            target = targets[graph.reference_name(tout)]
            norm = float(torch.mean(target ** 2)) or 1.0

            def output(inp, quantize=True, drop=0.0, batch=None):
                return sim.run(start, end, {tin: inp}, quantize, drop, gen)[tout]

            with torch.no_grad():
                before = float(torch.mean((output(current) - target) ** 2)) / norm
            if time.monotonic() - started > settings.seconds:
                log.info("reconstruction: %.0f s budget spent; %s and later keep nearest "
                         "rounding", settings.seconds, layers[0])
                with torch.no_grad():
                    current = output(current)
                continue
            grid = settings.rounding == "grid"
            for name in layers:
                sim.params[name]["mode"] = "grid" if grid else "soft"
            opt_v = torch.optim.Adam([sim.params[n]["u" if grid else "v"] for n in layers],
                                     lr=settings.grid_learning_rate if grid
                                     else settings.learning_rate)
            opt_b = torch.optim.Adam([sim.params[n]["bias"] for n in layers],
                                     lr=settings.bias_learning_rate) if settings.bias else None
            quantized = [n.inputs[0] for n in graph.nodes[start:end]
                         if n.op == "FQ" and n.inputs[0] not in sim.shared_steps] \
                if settings.learn_ranges else []
            for tensor in quantized:
                step = sim.steps[tensor]
                step["learn"] = True
                with torch.no_grad():
                    step["log_s"].fill_(float(np.log(step["s"])))
            opt_s = torch.optim.Adam([sim.steps[t]["log_s"] for t in quantized],
                                     lr=settings.range_learning_rate) if quantized else None
            count = len(current)
            warmup = settings.iterations // 5
            for step in range(settings.iterations):
                pick = torch.randint(0, count, (min(settings.batch, count),), generator=gen)
                got = output(current[pick], drop=settings.drop)
                rec = torch.mean((got - target[pick]) ** 2) / norm
                loss = rec
                if step >= warmup and not grid:
                    frac = (step - warmup) / max(1, settings.iterations - warmup)
                    beta = 20.0 + (2.0 - 20.0) * frac
                    reg = sum(torch.sum(1 - torch.abs(2 * sim.h(n) - 1) ** beta)
                              for n in layers) / sum(sim.params[n]["v"].numel() for n in layers)
                    loss = rec + settings.regularization * reg
                for opt in (opt_v, opt_b, opt_s):
                    if opt:
                        opt.zero_grad()
                loss.backward()
                for opt in (opt_v, opt_b, opt_s):
                    if opt:
                        opt.step()
            for name in layers:
                sim.params[name]["mode"] = "grid_hard" if grid else "hard"
            for tensor in quantized:
                step = sim.steps[tensor]
                step["learn"] = False
                # the step the quantizer will recompute from the exported range
                step["s"] = exported_range(float(torch.exp(step["log_s"].detach())), step)[2]
            with torch.no_grad():
                after = float(torch.mean((output(current) - target) ** 2)) / norm
                if after >= before:     # no better than nearest on the fit samples: undone
                    for name in layers:
                        p = sim.params[name]
                        p["mode"] = "nearest"
                        p["bias"].copy_(torch.tensor(p["bias0"], dtype=torch.float32))
                    for tensor in quantized:
                        sim.steps[tensor]["s"] = sim.steps[tensor]["s0"]
                    after = before
                flipped = sum(int(torch.sum(sim.h(n) != sim.params[n]["nearest_h"]))
                              for n in layers)
                current = output(current)
            done.append(ReconstructedBlock(layers, before, after, flipped))
            log.info("reconstruction: block %d/%d (%s): output error %.3g -> %.3g, %d weights "
                     "flipped [%.0f s]", index + 1, len(blocks), ", ".join(layers), before,
                     after, flipped, time.monotonic() - started)
        model = _rewritten(float_model, graph, sim)
        ranges = {t: exported_range(st["s"], st)[:2] for t, st in sim.steps.items()
                  if st["s"] != st["s0"]}
    finally:
        torch.set_num_threads(previous_threads)
    return Reconstruction(model, tuple(done), time.monotonic() - started, len(x), ranges)


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


def fit_inputs(x: np.ndarray, settings: ReconstructionSettings) -> np.ndarray:
    """The calibration samples, their mirror images (`flips`, 4-D inputs) and `mixes`
    convex mixes per sample of two of them (seeded: the same inputs every run)."""
    rng = np.random.default_rng(settings.seed)
    parts = [x]
    if settings.flips and x.ndim == 4:
        parts.append(x[..., ::-1])
    base = np.concatenate(parts)
    if settings.mixes > 0:
        count = settings.mixes * len(x)
        a, b = rng.integers(0, len(base), count), rng.integers(0, len(base), count)
        w = rng.uniform(0, 1, (count,) + (1,) * (x.ndim - 1)).astype(np.float32)
        parts.append(w * base[a] + (1 - w) * base[b])
    return np.ascontiguousarray(np.concatenate(parts), np.float32)


def _float_values(float_model: bytes, tensors: Sequence[str], input_name: str,
                  x: np.ndarray, batch: int = 32) -> dict[str, Any]:
    """The float model's values of `tensors` on every sample of `x`, as torch tensors."""
    import torch

    from .probe import probe_session
    session = probe_session(float_model, tensors)
    fixed = session.get_inputs()[0].shape[0]
    if isinstance(fixed, int) and fixed > 0 and len(x) % fixed:
        raise ConversionError(f"block reconstruction: the model takes batches of {fixed}")
    step = fixed if isinstance(fixed, int) and fixed > 0 else batch
    names = list(dict.fromkeys(tensors))
    chunks = [session.run(names, {input_name: x[i:i + step]}) for i in range(0, len(x), step)]
    return {n: torch.tensor(np.concatenate([c[k] for c in chunks]))
            for k, n in enumerate(names)}


def _rewritten(float_model: bytes, graph: _Graph, sim: _Simulator) -> bytes:
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

