"""Exact rewrites of a quantized QDQ model so onnxruntime's fastest x86 int8 kernels apply.

onnxruntime's QLinearConv (what a DequantizeLinear -> Conv -> QuantizeLinear group becomes)
runs MLAS's "symmetric" convolution kernels (indirect convolution with the requantization
fused; VNNI/AVX-512 variants) only when the weights are int8 with zero point 0 *and* the
input channel count is a multiple of 4. An image stem reads 3 channels, so it falls back to
im2col + a generic integer GEMM + a separate requantization: measured on an AVX512-VNNI
Xeon (MobileNetV2, 1 thread), that stem took 1.1-1.4 ms in int8 against 0.5-0.7 ms in
fp32, 17% of the whole int8 model. `pad_conv_channels` gives such a conv one more input
channel: a Pad of the *quantized* input with its zero point, and a zero weight column.
Both are exact (the extra channel adds (zp - zp) * 0 to every sum), so accuracy is
unchanged and the stem runs in the symmetric kernel (0.45 ms measured).

`global_pools`: a ReduceMean over all spatial axes (how torch's exporter writes
AdaptiveAvgPool2d(1)) between a DequantizeLinear and a QuantizeLinear stays a float op:
onnxruntime transposes the int8 NHWC tensor back to NCHW, dequantizes, averages and
quantizes again. The same node as GlobalAveragePool is fused into QLinearGlobalAveragePool,
which reads NHWC directly (same mean; summation order aside, same numbers).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaddedConv:
    """One conv whose input channels were padded: node name, channels before/after."""

    node: str
    channels: int
    padded_to: int

    def to_record(self) -> dict:
        return {"node": self.node, "channels": self.channels, "padded_to": self.padded_to}


def pad_conv_channels(model_bytes: bytes, multiple: int) -> tuple[bytes, tuple[PaddedConv, ...]]:
    """`model_bytes` with every eligible QDQ Conv's input channels padded to `multiple`.

    Eligible: group 1, the weight a DequantizeLinear of a signed 8-bit initializer with all
    zero points 0 (what onnxruntime's symmetric kernels need anyway), the activation a
    DequantizeLinear of an 8-bit tensor. Returns the model unchanged (and no entries) when
    nothing qualifies or the opset is older than 11 (Pad's pads became an input there).
    """
    import onnx
    from onnx import helper, numpy_helper

    if multiple < 2:
        return model_bytes, ()
    model = onnx.load_from_string(model_bytes)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 11:
        return model_bytes, ()
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    uses: dict[str, int] = {}
    for n in graph.node:
        for name in n.input:
            uses[name] = uses.get(name, 0) + 1
    done: list[PaddedConv] = []
    for node in list(graph.node):
        plan = _plan(node, producers, inits, multiple)
        if plan is None:
            continue
        act_dq, weight_name, weight, extra = plan
        stem = f"{node.name or node.output[0]}_chpad"
        rank = weight.ndim
        pads = np.zeros(2 * rank, np.int64)
        pads[rank + 1] = extra            # end of axis 1 (channels), NCHW-style layout
        pads_name, padded, dq_out, w_name = (f"{stem}_pads", f"{stem}_x", f"{stem}_xdq",
                                             f"{stem}_w")
        graph.initializer.append(numpy_helper.from_array(pads, pads_name))
        wide = np.concatenate([weight, np.zeros((weight.shape[0], extra) + weight.shape[2:],
                                                weight.dtype)], axis=1)
        graph.initializer.append(numpy_helper.from_array(wide, w_name))
        # The pad value is the activation's zero point: it dequantizes to exactly 0.0.
        pad = helper.make_node("Pad", [act_dq.input[0], pads_name, act_dq.input[2]], [padded],
                               name=f"{stem}_pad", mode="constant")
        dq = helper.make_node("DequantizeLinear", [padded, *act_dq.input[1:3]], [dq_out],
                              name=f"{stem}_dq")
        weight_dq = producers[node.input[1]]
        new_weight_dq = helper.make_node("DequantizeLinear", [w_name, *weight_dq.input[1:]],
                                         [f"{stem}_wdq"], name=f"{stem}_wdq")
        new_weight_dq.attribute.extend(weight_dq.attribute)
        position = list(graph.node).index(node)
        for offset, new in enumerate((pad, dq, new_weight_dq)):
            graph.node.insert(position + offset, new)
        for old, new_name in ((node.input[0], dq_out), (node.input[1], f"{stem}_wdq")):
            uses[old] -= 1
        node.input[0], node.input[1] = dq_out, f"{stem}_wdq"
        if uses[weight_dq.output[0]] == 0:      # the old weight chain is now dead
            graph.node.remove(weight_dq)
            if uses.get(weight_name, 0) <= 1:
                graph.initializer.remove(inits[weight_name])
        if uses[act_dq.output[0]] == 0:
            graph.node.remove(act_dq)
        done.append(PaddedConv(node.name, weight.shape[1], weight.shape[1] + extra))
        log.info("int8: conv %s reads %d channels, padded to %d for onnxruntime's "
                 "symmetric int8 kernels", node.name, weight.shape[1], weight.shape[1] + extra)
    if not done:
        return model_bytes, ()
    return model.SerializeToString(), tuple(done)


def _plan(node, producers, inits, multiple):
    """(activation DQ, weight initializer name, weight array, channels to add) or None."""
    from onnx import numpy_helper
    if node.op_type != "Conv" or len(node.input) < 2:
        return None
    if next((a.i for a in node.attribute if a.name == "group"), 1) != 1:
        return None
    act_dq, weight_dq = producers.get(node.input[0]), producers.get(node.input[1])
    if (act_dq is None or weight_dq is None or act_dq.op_type != "DequantizeLinear"
            or weight_dq.op_type != "DequantizeLinear" or len(act_dq.input) < 3
            or act_dq.input[2] not in inits or act_dq.input[1] not in inits
            or weight_dq.input[0] not in inits):
        return None
    if numpy_helper.to_array(inits[act_dq.input[2]]).size != 1:
        return None                     # a per-channel activation: not what we rewrite
    weight = numpy_helper.to_array(inits[weight_dq.input[0]])
    if weight.dtype != np.int8 or weight.ndim < 3:
        return None
    scale = inits.get(weight_dq.input[1])
    axis = next((a.i for a in weight_dq.attribute if a.name == "axis"), 1)
    if scale is None or (numpy_helper.to_array(scale).size > 1 and axis != 0):
        return None                     # scales along another axis than output channels
    if len(weight_dq.input) > 2 and weight_dq.input[2]:
        zero = inits.get(weight_dq.input[2])
        if zero is None or np.any(numpy_helper.to_array(zero) != 0):
            return None
    channels = weight.shape[1]
    extra = -channels % multiple
    if extra == 0:
        return None
    return act_dq, weight_dq.input[0], weight, extra


def global_pools(model_bytes: bytes) -> tuple[bytes, tuple[str, ...]]:
    """`model_bytes` with each DQ -> ReduceMean(all spatial axes, keepdims) -> Q mean turned
    into GlobalAveragePool; returns the new model and the rewritten node names.

    Between the mean and its QuantizeLinear there may be value-preserving reshapes (torch
    writes mean -> view -> Linear): the pool then gets its own Q/DQ pair with that
    QuantizeLinear's scale and zero point, so onnxruntime can fuse it (the reshape between
    two identical Q/DQ pairs then runs on int8 data).
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    outputs = {o.name for o in graph.output}
    ranks = _ranks(model)
    done = []
    for node in list(graph.node):
        if node.op_type != "ReduceMean" or not node.input:
            continue
        source = producers.get(node.input[0])
        if source is None or source.op_type != "DequantizeLinear":
            continue
        rank = ranks.get(node.input[0], ranks.get(source.input[0]))
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if rank is None or rank < 3 or attrs.get("keepdims", 1) != 1 \
                or attrs.get("noop_with_empty_axes", 0):
            continue
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1 and node.input[1] in inits:
            axes = numpy_helper.to_array(inits[node.input[1]]).tolist()
        if axes is None or sorted(a % rank for a in axes) != list(range(2, rank)):
            continue
        quantize = _next_quantize(node.output[0], consumers, outputs)
        if quantize is None:
            continue
        node.op_type = "GlobalAveragePool"
        axes_input = node.input[1] if len(node.input) > 1 else ""
        del node.input[1:]
        del node.attribute[:]
        if axes_input in inits and not any(axes_input in n.input for n in graph.node):
            graph.initializer.remove(inits.pop(axes_input))
        if quantize.input[0] != node.output[0]:
            pooled = node.output[0]
            q_out, dq_out = f"{pooled}_pool_q", f"{pooled}_pool_dq"
            for user in consumers[pooled]:
                user.input[:] = [dq_out if i == pooled else i for i in user.input]
            position = list(graph.node).index(node) + 1
            graph.node.insert(position, helper.make_node(
                "QuantizeLinear", [pooled, *quantize.input[1:3]], [q_out],
                name=f"{node.name}_pool_q"))
            graph.node.insert(position + 1, helper.make_node(
                "DequantizeLinear", [q_out, *quantize.input[1:3]], [dq_out],
                name=f"{node.name}_pool_dq"))
        done.append(node.name)
        log.info("int8: %s (a spatial ReduceMean) runs as GlobalAveragePool", node.name)
    if not done:
        return model_bytes, ()
    return model.SerializeToString(), tuple(done)


#: Ops between a mean and its QuantizeLinear that move values without changing them.
_RESHAPES = ("Reshape", "Flatten", "Squeeze")


def _next_quantize(name: str, consumers, outputs, depth: int = 4):
    """The QuantizeLinear reached from tensor `name` through single-consumer reshapes."""
    for _ in range(depth):
        users = consumers.get(name, [])
        if name in outputs or len(users) != 1:
            return None
        (user,) = users
        if user.op_type == "QuantizeLinear":
            return user
        if user.op_type not in _RESHAPES:
            return None
        name = user.output[0]
    return None


def _ranks(model) -> dict[str, int]:
    """Tensor name -> rank, from the model's shape information (inferred when missing)."""
    import onnx
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:   # shape inference is a hint here; without it nothing is rewritten
        inferred = model
    graph = inferred.graph
    ranks = {}
    for info in (*graph.input, *graph.value_info, *graph.output):
        if info.type.HasField("tensor_type") and info.type.tensor_type.HasField("shape"):
            ranks[info.name] = len(info.type.tensor_type.shape.dim)
    return ranks


def apply_fast_paths(model_bytes: bytes, recipe) -> tuple[bytes, dict]:
    """The rewrites `recipe` asks for (pad_conv_channels, global_pool) applied to the
    quantized `model_bytes`; returns the model and the manifest record (empty: none ran)."""
    record: dict = {}
    if recipe.engine != "onnxruntime" or recipe.quant_format != "qdq":
        return model_bytes, record
    if recipe.pad_conv_channels:
        model_bytes, padded = pad_conv_channels(model_bytes, recipe.pad_conv_channels)
        if padded:
            record["padded_convs"] = [p.to_record() for p in padded]
    if recipe.global_pool:
        model_bytes, pools = global_pools(model_bytes)
        if pools:
            record["global_pools"] = list(pools)
    return model_bytes, record
