"""pytorch -> onnx with torch.onnx.export (the dynamo exporter), then ONNX quantization.

The exporter writes weights to a side file (`.onnx.data`) by default; `external_data=False`
keeps one self-contained model, which is what a bundle stores. A dynamic batch axis is tried
first; a model whose code pins the batch size (e.g. `x.view(4, -1)`) is exported with the
example's batch instead, and the bundle says so.
"""
from __future__ import annotations

import io
import logging
import re
import warnings
from typing import Mapping

import numpy as np

from edgepack.runtime.errors import ConversionError

from .artifacts import ConvertedModel, SourceModel
from .config import ConversionConfig
from .quantize_onnx import quantize_onnx

log = logging.getLogger(__name__)


def export_onnx(source: SourceModel, config: ConversionConfig) -> tuple[bytes, list[str]]:
    """The float32 ONNX bytes of a torch source, and notes about what was fixed."""
    import torch

    model = source.model
    if isinstance(model, torch.jit.ScriptModule):
        return _export_torchscript(source, config), ["exported with the TorchScript exporter"]
    examples = tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in source.example_inputs)
    notes: list[str] = []
    if source.fixed_batch is not None:
        # An exported program keeps the batch it was exported with.
        notes.append(fixed_program_note(source.fixed_batch))
    elif config.dynamic_batch:
        batch = torch.export.Dim("batch")
        dynamic = tuple({0: batch} for _ in examples)
        # torch.export specializes every dimension whose example size is 1: a batch-1
        # example would fix the batch, so the export sees the example twice.
        doubled = tuple(torch.cat([x, x]) if x.shape[0] == 1 else x for x in examples)
        try:
            exported = _export(model, doubled, source, config, dynamic)
            if not _batch_is_dynamic(exported):
                # The exporter specializes a batch the code pins instead of failing.
                notes.append(f"fixed batch {examples[0].shape[0]}: the model's code fixes its "
                             "batch size (e.g. a reshape to a constant batch)")
            return exported, notes
        except ConversionError:
            raise
        except Exception as e:
            error = _export_error(e)
            if "does not support op" in str(error):
                raise error from e  # a fixed batch will not help
            log.info("dynamic-batch export failed (%s); exporting with a fixed batch",
                     str(e).splitlines()[0] if str(e) else type(e).__name__)
            notes.append(f"fixed batch {examples[0].shape[0]}: the model's code fixes its "
                         "batch size (e.g. a reshape to a constant batch)")
    try:
        return _export(model, examples, source, config, None), notes
    except ConversionError:
        raise
    except Exception as e:
        raise _export_error(e) from e


def fixed_program_note(batch: int) -> str:
    """Why a bundle from an exported program has a fixed batch, and how to avoid it."""
    why = ("it was exported with a batch-1 example, and torch.export specializes every "
           "dimension whose example size is 1") if batch == 1 else (
        "its batch dimension was not declared dynamic when it was exported")
    return (f"fixed batch {batch}: the .pt2 program accepts only batch {batch} ({why}); for "
            "any batch, export with a batch-2 example and dynamic_shapes=({0: "
            "torch.export.Dim('batch')},)")


def _batch_is_dynamic(model_bytes: bytes) -> bool:
    import onnx
    graph = onnx.load_from_string(model_bytes).graph
    return all(i.type.tensor_type.shape.dim and
               not i.type.tensor_type.shape.dim[0].HasField("dim_value") for i in graph.input)


def _export(model, examples, source: SourceModel, config: ConversionConfig, dynamic):
    import torch

    from .torch_source import quiet_torch
    with warnings.catch_warnings(), quiet_torch():
        warnings.simplefilter("ignore")  # the exporter warns about every torch.export detail
        program = torch.onnx.export(
            model, examples, None, dynamo=True, external_data=False,
            input_names=list(source.input_names), output_names=list(source.output_names or ()),
            dynamic_shapes=dynamic, opset_version=config.opset, verbose=False)
    if program is None:
        raise ConversionError("torch.onnx.export returned no program")
    buffer = io.BytesIO()
    program.save(buffer, external_data=False)
    return strip_debug_info(buffer.getvalue())


def strip_debug_info(model_bytes: bytes) -> bytes:
    """Drop the exporter's per-node metadata (stack traces, fx nodes, scopes).

    It holds absolute source paths of the workstation, which have no place in a shipped
    bundle, and on a 70k-parameter CNN it was 8 KB, a tenth of the int8 model.
    """
    import onnx
    proto = onnx.load_from_string(model_bytes)
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for value in (*proto.graph.value_info, *proto.graph.input, *proto.graph.output):
        del value.metadata_props[:]
    for init in proto.graph.initializer:
        del init.metadata_props[:]
    return proto.SerializeToString()


def _export_torchscript(source: SourceModel, config: ConversionConfig) -> bytes:
    import torch
    examples = tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in source.example_inputs)
    axes = ({n: {0: "batch"} for n in (*source.input_names, *(source.output_names or ()))}
            if config.dynamic_batch else None)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(source.model, examples, buffer, dynamo=False,
                              input_names=list(source.input_names),
                              output_names=list(source.output_names or ()),
                              dynamic_axes=axes, opset_version=min(config.opset, 17))
    except Exception as e:
        raise _export_error(e) from e
    return buffer.getvalue()


def _export_error(e: Exception) -> ConversionError:
    text = str(e)
    match = re.search(r"(aten::[\w.]+|torch\.ops\.[\w.]+|aten\.[\w.]+)", text)
    if match and re.search(r"unsupported|not supported|no.*(decomposition|translation)",
                           text, re.IGNORECASE):
        return ConversionError(
            f"the ONNX exporter does not support op {match.group(1)}; replace it with "
            "supported ops, or try --target tflite (litert-torch) which lowers more ops")
    first = text.splitlines()[0] if text else type(e).__name__
    return ConversionError(f"torch.onnx.export failed: {first}")


def convert(source: SourceModel, config: ConversionConfig,
            calibration: Mapping[str, np.ndarray] | None) -> ConvertedModel:
    """Registry entry point for pytorch -> onnx."""
    model_bytes, notes = export_onnx(source, config)
    quantized = quantize_onnx(model_bytes, config.quantization, calibration)
    return ConvertedModel(
        quantized.model_bytes, "onnxruntime", "torch.onnx", opset=_opset(quantized.model_bytes),
        inputs=quantized.inputs, outputs=quantized.outputs,
        quantization=quantized.record, notes=tuple(notes))


def _opset(model_bytes: bytes) -> int | None:
    import onnx
    proto = onnx.load_from_string(model_bytes)
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
