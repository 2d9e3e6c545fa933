"""Quantization-aware training (QAT) for when post-training int8 loses too much accuracy.

    from edgepack import optimize
    result = optimize.quantization_aware(model, (x, y), optimize.QATConfig(epochs=3))
    result.export("model.epk", validation_data=(x_val, y_val))   # validated int8 bundle

How the bundle reproduces what was trained: the fake quantization here is the arithmetic
of onnxruntime's QDQ int8 path under edgepack's recipe, not an approximation of it.

- Weights: per output channel, symmetric, scale = max|w| / 127 (/ 64 for reduce_range
  recipes), zero point 0, round-half-even: what the quantizer computes from the float weights.
  The exported weights are the fake-quantized ones, so their max|w| and every value already
  sit on that grid and the quantizer's rounding is exact.
- BatchNorm is folded into the preceding conv before its weights are fake-quantized (the
  int8 graph preparation folds it too; quantizing unfolded weights would fit the wrong scales).
- Biases: int32 with scale = input scale x weight scale, as the quantizer stores them.
- Activations: the recipe's type (U8 asymmetric on x86, S8 on ARM), at the tensors the
  quantizer puts Q/DQ pairs on: each Conv/Linear input unless it comes unchanged through
  max-pool/flatten/reshape from another quantized tensor (those share the scale), each
  Conv/Linear output, after its ReLU (which the quantizer folds into the output range),
  and both inputs and the output of each two-tensor Add (a residual sum is stored in 8
  bits, and every reader of it, the skip path included, reads that copy).
  Ranges are the min/max of the *float* model's activations on the calibration samples,
  re-measured before every epoch and after the last one: exactly what onnxruntime's MinMax
  calibrator measures on the exported model with the same samples.
- With learn_ranges, a ReLU feeding int8 becomes clamp(x, 0, alpha) with alpha learned
  through the quantizer's scale (PACT/LSQ-style straight-through gradients); the clamp is
  exported as a Clip, so the calibration of the bundle sees the learned bound too.

Supported graphs: anything torch.fx traces whose quantized ops are Conv1d/Conv2d/Linear;
other ops run in float between them (as they do in the int8 bundle).
"""
from __future__ import annotations

import copy
import logging
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import QATConfig
from .data import as_data, iter_batches
from .errors import OptimizeError
from .fake_quant import (ActivationQuant, Clamp, QuantizedLayer, fake_quant_weight,
                         fold_batchnorm, weight_scale)
from .train import History, cross_entropy_step, run_training
# the export and its check that the bundle computes what was trained live in qat_export
from .qat_export import export_bundle, fake_quant_agreement, faithful, output_step

log = logging.getLogger(__name__)

_QUANTIZED_MODULES = (nn.Conv1d, nn.Conv2d, nn.Linear)
#: Ops whose output is their input's values (max-pool picks values, reshape moves them): the
#: quantizer gives their output the input's scale, so no new fake-quant point is needed.
_SHARING_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity)
_SHARING_FUNCTIONS = (F.max_pool2d, F.max_pool1d, torch.flatten, F.dropout)
_SHARING_METHODS = ("view", "reshape", "flatten", "contiguous")
#: Elementwise adds of two tensors: onnxruntime's quantizer puts Q/DQ on both inputs and on
#: the output of each Add (residual connections), so every reader sees the 8-bit sum.
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)



def _is_relu(node, modules) -> float | None:
    """inf for a ReLU node, 6.0 for ReLU6, None otherwise."""
    if node.op == "call_module":
        mod = modules[node.target]
        if type(mod) is nn.ReLU:
            return float("inf")
        if type(mod) is nn.ReLU6:
            return 6.0
    if node.op == "call_function":
        if node.target in (F.relu, torch.relu, F.relu_):
            return float("inf")
        if node.target is F.relu6:
            return 6.0
        if node.target is F.hardtanh and node.args[1:3] == (0.0, 6.0):
            return 6.0
    if node.op == "call_method" and node.target in ("relu", "relu_"):
        return float("inf")
    return None


def _is_tensor_add(node) -> bool:
    """A two-tensor add (`a + b`, `torch.add(a, b)`, `a.add(b)`), not one with a constant."""
    import torch.fx as fx
    adds = ((node.op == "call_function" and node.target in _ADD_FUNCTIONS)
            or (node.op == "call_method" and node.target in ("add", "add_")))
    return (adds and len(node.args) == 2 and not node.kwargs
            and all(isinstance(a, fx.Node) for a in node.args))


def _shares_grid(node, modules) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], _SHARING_MODULES)
    if node.op == "call_function":
        return node.target in _SHARING_FUNCTIONS
    return node.op == "call_method" and node.target in _SHARING_METHODS


@dataclass
class QATModel:
    """The fake-quant GraphModule and its quantization points."""

    graph_module: Any
    layers: dict[str, QuantizedLayer]
    activations: dict[str, ActivationQuant]
    float_layers: tuple[str, ...] = ()

    def set_mode(self, mode: str) -> None:
        for act in self.activations.values():
            act.mode = mode
        for layer in self.layers.values():
            layer.mode = mode


def prepare_qat(model: nn.Module, recipe, learn_ranges: bool = True,
                float_outputs: bool = False) -> QATModel:
    """A copy of `model` traced by torch.fx, BN folded, fake quantization inserted.

    float_outputs: a layer whose output is the model's output keeps it in float (no
    fake-quant point there), as the int8 bundle will (`CalibrationSettings.float_outputs`).
    Raises OptimizeError when the model cannot be traced or has nothing to quantize.
    """
    import torch.fx as fx
    model = copy.deepcopy(model).eval()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise OptimizeError(f"QAT needs a model torch.fx can trace (data-independent control "
                            f"flow); tracing failed: {first}") from e
    modules = dict(gm.named_modules())
    graph = gm.graph
    inputs = [n.name for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise OptimizeError(f"QAT handles models with one input tensor; this one takes "
                            f"{len(inputs)} ({', '.join(inputs)})")
    _fold_batchnorms(gm, modules)
    # wrap the quantized layers, add activation fake-quant at the quantizer's Q/DQ points
    weight_qmax = 64 if recipe.reduce_range else 127
    layers: dict[str, QuantizedLayer] = {}
    acts: dict[str, ActivationQuant] = {}
    kept_float: list[str] = []
    quant_of: dict[Any, str] = {}    # fx node -> name of the ActivationQuant its value is on

    def new_quant(relu=None) -> str:
        name = f"act_quant_{len(acts)}"
        acts[name] = ActivationQuant(recipe.activation_type, relu, learn=learn_ranges)
        gm.add_submodule(name, acts[name])
        return name

    def add_quant(after, relu=None, replace_node=None):
        name = new_quant(relu)
        with graph.inserting_after(replace_node or after):
            new = graph.call_module(name, (after,))
        (replace_node or after).replace_all_uses_with(new)
        new.args = (after,)
        if replace_node is not None:
            graph.erase_node(replace_node)
        quant_of[new] = name
        return new

    def grid_source(node):
        while isinstance(node, fx.Node):
            if node in quant_of:
                return quant_of[node]
            if not _shares_grid(node, modules) or not node.args:
                return None
            node = node.args[0]
        return None

    def quantize_output(node) -> None:
        """A point on `node`'s output, after its ReLU when a ReLU is its only reader (the
        quantizer folds it into the output range)."""
        users = list(node.users)
        relu = _is_relu(users[0], modules) if len(users) == 1 else None
        add_quant(node, relu=relu, replace_node=users[0] if relu is not None else None)

    def quantized_input(node, source) -> str:
        """The point `node` reads `source` through, inserted when `source` has none."""
        name = grid_source(source)
        if name is not None:
            return name
        name = new_quant()
        with graph.inserting_before(node):
            qnode = graph.call_module(name, (source,))
        quant_of[qnode] = name
        # every quantized consumer of this tensor reads the same quantized copy
        for user in list(source.users):
            if user is not qnode and _reads_quantized(user, modules):
                user.replace_input_with(source, qnode)
        return name

    for node in list(graph.nodes):
        if _is_tensor_add(node):
            for source in dict.fromkeys(node.args):
                quantized_input(node, source)
            quantize_output(node)
            continue
        if node.op != "call_module" or not isinstance(modules[node.target], _QUANTIZED_MODULES):
            continue
        layer = modules[node.target]
        if _thin(layer, recipe):
            kept_float.append(node.target)
            continue
        wrapped = QuantizedLayer(layer, weight_qmax)
        _set_module(gm, node.target, wrapped)
        layers[node.target] = wrapped
        wrapped.input_quant = acts[quantized_input(node, node.args[0])]
        quantize_output(node)
    if not layers:
        raise OptimizeError("the model has no Conv1d/Conv2d/Linear layer to quantize")
    if float_outputs:
        _unquantize_outputs(graph, modules, layers, acts, quant_of)
    graph.lint()
    gm.delete_all_unused_submodules()     # the folded BatchNorms
    gm.recompile()
    return QATModel(gm, layers, acts, tuple(kept_float))


def _unquantize_outputs(graph, modules: dict, layers: dict, acts: dict, quant_of: dict
                        ) -> None:
    """Remove the fake-quant point on each graph output that a quantized layer (no ReLU
    folded in) writes and nothing else reads: the export drops the matching Q/DQ pair."""
    output = next(n for n in graph.nodes if n.op == "output")
    values = output.args[0] if isinstance(output.args[0], (tuple, list)) else (output.args[0],)
    for value in values:
        name = quant_of.get(value)
        if name is None or acts[name].relu is not None or len(value.users) != 1:
            continue
        source = value.args[0]
        if source.op != "call_module" or source.target not in layers:
            continue
        value.replace_all_uses_with(source)
        graph.erase_node(value)
        del acts[name]


def _fold_batchnorms(gm, modules: dict) -> None:
    """Fold each BatchNorm into the conv before it (when the conv feeds nothing else)."""
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target],
                                                      nn.modules.batchnorm._BatchNorm):
            continue
        prev = node.args[0]
        if (getattr(prev, "op", None) == "call_module"
                and isinstance(modules[prev.target], (nn.Conv1d, nn.Conv2d))
                and len(prev.users) == 1):
            folded = fold_batchnorm(modules[prev.target], modules[node.target])
            _set_module(gm, prev.target, folded)
            modules[prev.target] = folded
            node.replace_all_uses_with(prev)
            graph.erase_node(node)


def _reads_quantized(node, modules) -> bool:
    return _is_tensor_add(node) or (node.op == "call_module" and isinstance(
        modules.get(node.target), _QUANTIZED_MODULES))


def _thin(layer: nn.Module, recipe) -> bool:
    """The recipe keeps convs reading few channels in float (an image stem on x86 AVX2)."""
    return (isinstance(layer, (nn.Conv1d, nn.Conv2d)) and recipe.float_thin_convs
            and layer.in_channels <= recipe.float_thin_convs)


def _set_module(gm, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)


def calibrate(qat: QATModel, x: torch.Tensor, batch_size: int = 256) -> None:
    """Set every activation range to the min/max of the float model's values on `x`."""
    for act in qat.activations.values():
        act.reset()
    qat.set_mode("observe")
    qat.graph_module.eval()
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            qat.graph_module(x[start:start + batch_size])
    for act in qat.activations.values():
        if act.log_alpha is not None and not act.alpha_ready and torch.isfinite(act.hi):
            # the first calibration starts the learned bound at the observed maximum
            act.start_alpha(float(act.hi))
    qat.set_mode("eval")


def export_float(qat: QATModel) -> nn.Module:
    """The float model to convert: BN folded, weights on their grid, learned clamps as Clip."""
    gm = copy.deepcopy(qat.graph_module)
    for name, layer in qat.layers.items():
        _set_module(gm, name, layer.snapped())
    for name, act in qat.activations.items():
        upper = act.relu
        if act.learned:
            upper = min(act.relu, float(act.alpha.detach()))
        _set_module(gm, name, Clamp(upper))
    gm.recompile()
    return gm.eval()


@dataclass
class QATResult:
    """What `quantization_aware` produced.

    model: the fake-quant model (eval mode: computes what the int8 bundle computes).
    float_model: the float model to convert (BN folded, weights snapped, clamps learned).
    calibration: the samples whose min/max set the ranges; the bundle must calibrate on them.
    """

    model: nn.Module
    float_model: nn.Module
    calibration: np.ndarray
    history: History
    recipe: Any
    config: QATConfig
    activation_points: int
    kept_float: tuple[str, ...] = ()
    record: dict = field(default_factory=dict)

    def export(self, out: str | Path, **convert_kwargs) -> Any:
        """Convert `float_model` to a validated int8 ONNX bundle at `out` (edgepack.convert),
        calibrated on `calibration`, with the QAT record in the manifest."""
        return export_bundle(self, out, **convert_kwargs)


def _calibration_inputs(source, count: int) -> torch.Tensor:
    chunks, have = [], 0
    for x, _y, _ in iter_batches(source, 256):
        chunks.append(x)
        have += len(x)
        if have >= count:
            break
    return torch.cat(chunks)[:count]


def quantization_aware(model: nn.Module, data, config: QATConfig = QATConfig(), *,
                       eval_data=None) -> QATResult:
    """Fine-tune `model` with fake int8 quantization matching edgepack's recipe.

    data: (x, y) arrays or an iterable of (x, y) batches (classification, cross-entropy).
    The input model is not modified. Export with `result.export(out, ...)`.
    Raises OptimizeError (untraceable model, nothing to quantize, bad data).
    """
    from edgepack.converters.int8 import choose_recipe
    if not isinstance(model, nn.Module):
        raise OptimizeError(f"QAT needs a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, QATConfig):
        raise OptimizeError(f"config must be a QATConfig, got {type(config).__name__}")
    recipe = choose_recipe("onnxruntime", config.device)
    source = as_data(data)
    calib = _calibration_inputs(source, config.calibration_samples)
    qat = prepare_qat(model, recipe, config.learn_ranges, config.float_outputs)
    step = (_distillation_step(model, qat.graph_module, source, config)
            if config.distill_alpha > 0 else cross_entropy_step(qat.graph_module))

    def recalibrate(_epoch: int) -> None:
        # the ranges the float model's activations have now, as the bundle will measure them
        calibrate(qat, calib)
        qat.set_mode("train")

    history = run_training(qat.graph_module, source, config, step,
                           eval_data=eval_data, before_epoch=recalibrate)
    calibrate(qat, calib)          # final ranges: what the bundle's calibration will measure
    qat.set_mode("eval")
    float_model = export_float(qat)
    record = {"method": "qat", "epochs": config.epochs, "lr": config.lr,
              "scheme": {"weights": f"per-channel symmetric int8 (qmax "
                                    f"{64 if recipe.reduce_range else 127})",
                         "activations": f"{recipe.types[:2]} asymmetric, min/max of the "
                                        "float model on the calibration samples",
                         "learned_ranges": config.learn_ranges,
                         "float_outputs": config.float_outputs,
                         "batchnorm": "folded before fake quantization",
                         "recipe": recipe.name},
              "layers": len(qat.layers), "activation_points": len(qat.activations),
              "calibration_samples": int(len(calib))}
    if config.distill_alpha > 0:
        record["distillation"] = {"teacher": "the float model QAT started from",
                                  "alpha": config.distill_alpha,
                                  "temperature": config.temperature}
    if qat.float_layers:
        record["kept_float"] = list(qat.float_layers)
    log.info("QAT: %d layers, %d activation points, %d epochs", len(qat.layers),
             len(qat.activations), config.epochs)
    return QATResult(qat.graph_module, float_model, calib.numpy(), history,
                     recipe, config, len(qat.activations), qat.float_layers, record)


def _distillation_step(teacher: nn.Module, student: nn.Module, source, config: QATConfig):
    """The training step of `student` (the fake-quant model) against a frozen copy of the
    float `teacher` it started from, at the config's alpha and temperature (teacher logits
    computed once for array data)."""
    from .data import ArrayData
    from .distill import teacher_logits, distillation_step
    teacher = copy.deepcopy(teacher).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    cached = teacher_logits(teacher, source) if isinstance(source, ArrayData) else None
    return distillation_step(teacher, student, cached, config.temperature,
                             config.distill_alpha)


__all__ = ["QATConfig", "QATResult", "ActivationQuant", "QuantizedLayer", "prepare_qat",
           "calibrate", "export_float", "export_bundle", "fake_quant_agreement", "faithful",
           "fake_quant_weight", "output_step",
           "quantization_aware", "weight_scale"]
