"""pytorch -> tflite with litert-torch (optional extra `convert-torch-tflite`).

litert-torch pulls jax and transformers, so it is not part of `edgepack[convert]`; without
it this path fails at once with EngineNotInstalledError naming the extra and the ONNX
alternative. The produced model has a fixed batch (litert-torch lowers static shapes).
Only fp32 (`none`) is wired: quantized pytorch->tflite needs litert-torch's PT2E
quantizer, which is not yet integrated; int8/fp16/dynamic fail with a clear error.
"""
from __future__ import annotations

import importlib
import logging
import tempfile
from pathlib import Path
from typing import Mapping

import numpy as np

from edgepack.runtime.errors import ConversionError, EngineNotInstalledError

from .artifacts import ConvertedModel, SourceModel
from .config import ConversionConfig

log = logging.getLogger(__name__)

EXTRA = "convert-torch-tflite"
#: The package was renamed from ai_edge_torch to litert_torch; both expose `convert`.
MODULES = ("litert_torch", "ai_edge_torch")


def _library():
    for name in MODULES:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise EngineNotInstalledError(
        f"pytorch -> tflite needs litert-torch: pip install 'edgepack[{EXTRA}]' "
        "(heavy: pulls jax), or convert to --target onnx")


def convert(source: SourceModel, config: ConversionConfig,
            calibration: Mapping[str, np.ndarray] | None) -> ConvertedModel:
    """Registry entry point for pytorch -> tflite."""
    lib = _library()
    if config.quantization.mode != "none":
        raise ConversionError(
            f"pytorch -> tflite supports quantization 'none' only in this version, not "
            f"{config.quantization.mode!r}; use --target onnx for {config.quantization.mode}, "
            "or export the model to Keras")
    import torch

    from .torch_source import quiet_torch
    model = source.model
    if isinstance(model, torch.export.ExportedProgram):
        # The program's module is already in inference form; calling .eval() on it raises
        # "Calling eval() is not supported yet", so it is passed as it is.
        model = model.module()
    elif isinstance(model, torch.nn.Module):
        model = model.eval()
    if isinstance(model, torch.jit.ScriptModule):
        raise ConversionError("litert-torch cannot convert TorchScript; pass the nn.Module or "
                              "a .pt2 exported program, or use --target onnx")
    args = tuple(torch.from_numpy(np.ascontiguousarray(x)) for x in source.example_inputs)
    if config.nhwc:
        # Validation feeds the source layout; NHWC I/O needs a transposing runner first.
        raise ConversionError("NHWC I/O for pytorch -> tflite is not supported yet; "
                              "convert with nhwc=False")
    try:
        with quiet_torch():
            edge_model = lib.convert(model, args)
    except Exception as e:
        raise ConversionError(f"litert-torch failed: {str(e).splitlines()[0]}; "
                              "try --target onnx") from e
    with tempfile.TemporaryDirectory(prefix="edgepack-lt-") as tmp:
        path = Path(tmp, "model.tflite")
        edge_model.export(str(path))
        data = path.read_bytes()
    batch = source.example_inputs[0].shape[0]
    return ConvertedModel(data, "litert", "litert-torch", quantization=None,
                          notes=(f"fixed batch {batch}: litert-torch lowers static shapes",))
