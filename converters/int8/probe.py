"""The float model with inner tensors exposed as outputs: how bias correction, learned
rounding and the activation histograms read a layer's inputs on calibration data."""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np


def probe_session(float_model: Any, tensors: Iterable[str]) -> Any:
    """An onnxruntime CPU session of `float_model` (bytes, or a loaded ModelProto, which
    gains the outputs) whose outputs also include `tensors` (graph inputs and tensors
    already among the outputs are not added again)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load_from_string(float_model) if isinstance(float_model, bytes) \
        else float_model
    present = {o.name for o in model.graph.output} | {i.name for i in model.graph.input}
    for name in dict.fromkeys(tensors):
        if name not in present:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
            present.add(name)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def probe_feeds(session: Any, samples: Mapping[str, np.ndarray],
                count: int) -> dict[str, np.ndarray]:
    """The first `count` samples of each of the session's inputs: integer inputs (token ids,
    masks) stay integer, since onnxruntime refuses float ids; the others as float32."""
    feeds = {}
    for spec in session.get_inputs():
        a = np.asarray(samples[spec.name][:count])
        feeds[spec.name] = a if a.dtype.kind in "iub" else a.astype(np.float32, copy=False)
    return feeds
