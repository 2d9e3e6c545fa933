"""The two values every converter passes along: the source it reads and the model it makes."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from edgepack.runtime.specs import TensorSpec

#: Runs the source model on float32 batch-first arrays (one per input, in input order) and
#: returns its outputs as float arrays in output order.
Runner = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class SourceModel:
    """A loaded source model, whatever its framework.

    framework: "pytorch" | "keras" | "onnx" | "tflite".
    model: the live object (nn.Module, ExportedProgram, ScriptModule, keras.Model), a
        SavedModel directory path (keras), or the serialized bytes (onnx/tflite).
    input_names / example_inputs: one float32 array per input, batch axis first.
    layouts: "NCHW"/"NHWC" for 4-D inputs, else None.
    runner: runs the source on the workstation for validation.
    fixed_batch: the only batch size the source accepts (a .pt2 exported with a batch-1
        example guards `input.size()[0] == 1`), or None when any batch runs. Every path
        that runs the source (validation, compare) goes through
        edgepack.converters.validation.run_source, which honours it.
    """

    framework: str
    model: Any
    input_names: tuple[str, ...]
    example_inputs: tuple[np.ndarray, ...]
    layouts: tuple[str | None, ...]
    runner: Runner
    framework_version: str
    output_names: tuple[str, ...] | None = None
    origin: str | None = None
    fixed_batch: int | None = None

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.runner(inputs)


@dataclass(frozen=True)
class ConvertedModel:
    """What a converter produces, before packing.

    engine: "onnxruntime" | "litert".
    inputs/outputs: explicit specs (with quantization for integer I/O), or None to let
        pack_bundle read them from the engine.
    input_map: source input name -> model input name (defaults to positional).
    output_order: for each model output, in the engine's order, the index of the source
        output it corresponds to (defaults to positional).
    quantization: the manifest `quantization` record.
    """

    model_bytes: bytes
    engine: str
    converter: str
    opset: int | None = None
    inputs: tuple[TensorSpec, ...] | None = None
    outputs: tuple[TensorSpec, ...] | None = None
    input_map: Mapping[str, str] | None = None
    output_order: tuple[int, ...] | None = None
    quantization: Mapping[str, Any] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def suffix(self) -> str:
        return ".onnx" if self.engine == "onnxruntime" else ".tflite"
