"""ONNX Runtime engine (CPU execution provider)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import onnxruntime as ort

from ..errors import EngineError
from ..specs import TensorSpec

# ONNX element type strings as ORT reports them -> numpy dtype names.
_ORT_TYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16",
    "tensor(uint16)": "uint16", "tensor(int32)": "int32", "tensor(int64)": "int64",
    "tensor(bool)": "bool", "tensor(string)": "string",
}

#: onnxruntime graph fusions the engine leaves out. SkipLayerNormFusion turns a
#: transformer's residual Add + LayerNormalization into com.microsoft's
#: SkipLayerNormalization, whose CPU kernel is ~8x slower than the two ops it replaces
#: (onnxruntime 1.32, MiniLM-sized BERT at seq 128, 1 thread, AMD EPYC: its 12 nodes took
#: 2.7 ms of 21 ms in fp32 and 4.0 of 13.5 ms in dynamic int8, against 0.3 ms for the
#: LayerNormalizations plus ~0.4 ms more of Add without it). Without the fusion fp32 runs
#: 5-14 % faster and dynamic int8 14-26 % (batch 1-8, seq 16-128, 1-2 threads), outputs
#: within 2e-6 (docs/text.md). Names onnxruntime does not know are ignored.
DISABLED_FUSIONS = ("SkipLayerNormFusion",)


class OnnxRuntimeEngine:
    name = "onnxruntime"

    def __init__(self, model: bytes, *, threads: int | None = None,
                 spin_wait: bool | None = None):
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        if spin_wait is not None:
            # After a run the intra-op workers spin for tens of ms waiting for more work
            # (onnxruntime's default): lowest latency for one model in a loop, but the
            # spinning cores are taken from everything else in the process.
            options.add_session_config_entry("session.intra_op.allow_spinning",
                                             "1" if spin_wait else "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"],
                                            disabled_optimizers=list(DISABLED_FUSIONS))
        self._output_names = [o.name for o in self.session.get_outputs()]

    def inputs(self) -> list[TensorSpec]:
        return [_spec(a) for a in self.session.get_inputs()]

    def outputs(self) -> list[TensorSpec]:
        return [_spec(a) for a in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            results = self.session.run(self._output_names, feeds)
        except Exception as e:  # ORT raises its own Fail/InvalidArgument types
            raise EngineError(f"onnxruntime failed to run the model: {e}") from e
        return dict(zip(self._output_names, results))

    def bind(self, inputs: dict[str, np.ndarray],
             outputs: dict[str, np.ndarray]) -> "Callable[[], None]":
        """Bind caller-owned numpy buffers and return a run() that reads `inputs` and writes
        `outputs` in place (no feeds dict, no allocation, one crossing into ORT per run).

        The buffers must stay alive, C-contiguous and of fixed shape while run() is used;
        the caller changes their contents between runs. Raises whatever ORT raises when it
        cannot bind (the caller falls back to run()); run() raises EngineError."""
        binding = self.session.io_binding()
        wrap = ort.OrtValue.ortvalue_from_numpy
        keep = []  # the OrtValues must live as long as the binding
        for name, array in inputs.items():
            keep.append(wrap(array))
            binding.bind_ortvalue_input(name, keep[-1])
        for name, array in outputs.items():
            keep.append(wrap(array))
            binding.bind_ortvalue_output(name, keep[-1])
        run_with_binding = self.session.run_with_iobinding

        def run() -> None:
            try:
                run_with_binding(binding)
            except Exception as e:  # ORT raises its own Fail/InvalidArgument types
                raise EngineError(f"onnxruntime failed to run the model: {e}") from e
        run.keep = keep
        return run

    def close(self) -> None:
        self.session = None


def _spec(arg) -> TensorSpec:
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise EngineError(f"tensor {arg.name!r} has type {arg.type}, which edgepack cannot feed")
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
    return TensorSpec(arg.name, shape, dtype)
