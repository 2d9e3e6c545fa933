"""The float model with inner tensors exposed as outputs: how bias correction, learned
rounding and the activation histograms read a layer's inputs on calibration data."""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

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


def probe_batches(float_model: Any, tensors: Iterable[str], calibration: Mapping[str, np.ndarray],
                  samples: int, batch: int = 8
                  ) -> tuple[list[str], Iterator[dict[str, np.ndarray]]]:
    """(the `tensors` the float model has, in order; an iterator of {tensor or input name:
    array}, one run of the float model per batch of the first `samples` calibration
    samples). A model with a fixed batch size runs in batches of that size."""
    tensors = list(dict.fromkeys(tensors))
    session = probe_session(float_model, tensors)
    outputs = [o.name for o in session.get_outputs()]
    feeds = probe_feeds(session, calibration, samples)
    count = min(len(a) for a in feeds.values())
    fixed = session.get_inputs()[0].shape[0]
    step = fixed if isinstance(fixed, int) and fixed > 0 else min(batch, count)
    available = [t for t in tensors if t in outputs or t in feeds]

    def batches() -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, count - count % step or count, step):
            chunk = {n: a[start:start + step] for n, a in feeds.items()}
            values = dict(zip(outputs, session.run(outputs, chunk)))
            values.update(chunk)
            yield values
    return available, batches()
