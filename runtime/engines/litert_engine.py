"""LiteRT (TFLite) engine: ai_edge_litert, else tflite_runtime, else tensorflow.lite."""
from __future__ import annotations

import threading

import numpy as np

from ..errors import EngineError, EngineNotInstalledError
from ..specs import QuantParams, TensorSpec


def interpreter_class():
    """The first TFLite interpreter found, preferring the slim packages a device has."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter
        return Interpreter
    except ImportError:
        pass
    try:
        import tensorflow as tf
        return tf.lite.Interpreter
    except ImportError as e:
        raise EngineNotInstalledError(
            "no TFLite interpreter is installed; pip install 'edgepack[litert]'") from e


def tensor_names(interpreter) -> dict[int, str]:
    """Tensor index -> the name edgepack uses for model inputs and outputs.

    With one signature (what TFLiteConverter writes) its keys are the names the model's
    author chose ("image", "logits"); the raw tensor names ("serving_default_image:0",
    "StatefulPartitionedCall_1:0") are an artifact of the export. Without a signature, or
    with several, the raw names stay.
    """
    names = {d["index"]: d["name"]
             for d in interpreter.get_input_details() + interpreter.get_output_details()}
    try:
        signatures = interpreter.get_signature_list()
        if len(signatures) != 1:
            return names
        runner = interpreter.get_signature_runner(next(iter(signatures)))
        friendly = {d["index"]: key for part in (runner.get_input_details(),
                                                 runner.get_output_details())
                    for key, d in part.items()}
    except (ValueError, RuntimeError, AttributeError):  # old runtimes, odd signatures
        return names
    # Use them only when they cover exactly the primary subgraph's inputs and outputs.
    if set(friendly) != set(names) or len(set(friendly.values())) != len(friendly):
        return names
    return friendly


class LiteRTEngine:
    name = "litert"

    def __init__(self, model: bytes, *, threads: int | None = None):
        cls = interpreter_class()
        self.interpreter = cls(model_content=bytes(model), num_threads=threads or None)
        self.interpreter.allocate_tensors()
        names = tensor_names(self.interpreter)
        self._inputs = [{**d, "name": names[d["index"]]}
                        for d in self.interpreter.get_input_details()]
        self._outputs = [{**d, "name": names[d["index"]]}
                         for d in self.interpreter.get_output_details()]
        self._input_index = {d["name"]: d["index"] for d in self._inputs}
        self._shapes = {d["name"]: tuple(d["shape"]) for d in self._inputs}
        self._output_index = [(d["name"], d["index"]) for d in self._outputs]
        self._single = None
        if len(self._inputs) == 1 and len(self._outputs) == 1:
            (in_name, in_index), = self._input_index.items()
            self._single = (in_name, in_index, *self._output_index[0])
        # An interpreter owns mutable tensor buffers: one invocation at a time.
        self._lock = threading.Lock()
        self._set_tensor = self.interpreter.set_tensor
        self._get_tensor = self.interpreter.get_tensor
        self._invoke = self.interpreter.invoke

    def inputs(self) -> list[TensorSpec]:
        return [_spec(d) for d in self._inputs]

    def outputs(self) -> list[TensorSpec]:
        return [_spec(d) for d in self._outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # Kept minimal on purpose: with a multi-threaded interpreter every microsecond of
        # Python between two invokes costs 2-4% (the pool threads go back to sleep), so the
        # bound methods and indices are prepared once in __init__, and the common
        # one-input/one-output model skips the loops (benchmarks/runtime_overhead.py).
        with self._lock:
            try:
                if self._single is not None:
                    in_name, in_index, out_name, out_index = self._single
                    value = feeds[in_name]
                    if value.shape != self._shapes[in_name]:
                        self._resize(feeds)
                    self._set_tensor(in_index, value)
                    self._invoke()
                    return {out_name: self._get_tensor(out_index)}
                shapes = self._shapes
                for name, value in feeds.items():
                    if value.shape != shapes[name]:
                        self._resize(feeds)
                        break
                set_tensor = self._set_tensor
                for name, value in feeds.items():
                    set_tensor(self._input_index[name], value)
                self._invoke()
                get_tensor = self._get_tensor
                return {name: get_tensor(index) for name, index in self._output_index}
            except (ValueError, RuntimeError) as e:
                raise EngineError(f"LiteRT failed to run the model: {e}") from e
            except KeyError:
                raise EngineError(f"LiteRT model takes inputs {sorted(self._input_index)}, "
                                  f"got {sorted(feeds)}") from None

    def _resize(self, feeds: dict[str, np.ndarray]) -> None:
        # Dynamic dims (e.g. batch): resize every input that changed, then re-plan memory
        # once, before any tensor of this call is set (allocation clears input buffers).
        for name, value in feeds.items():
            if value.shape != self._shapes[name]:
                self.interpreter.resize_tensor_input(self._input_index[name], value.shape)
                self._shapes[name] = value.shape
        self.interpreter.allocate_tensors()

    def close(self) -> None:
        self.interpreter = None


def _spec(detail: dict) -> TensorSpec:
    shape = tuple(int(d) for d in detail.get("shape_signature", detail["shape"]))
    dtype = np.dtype(detail["dtype"]).name
    q = detail.get("quantization_parameters") or {}
    scales, zeros = q.get("scales"), q.get("zero_points")
    quant = None
    if scales is not None and len(scales):
        axis = int(q.get("quantized_dimension", 0)) if len(scales) > 1 else None
        quant = QuantParams(tuple(float(s) for s in scales), tuple(int(z) for z in zeros), axis)
    return TensorSpec(detail["name"], shape, dtype, None, quant)
