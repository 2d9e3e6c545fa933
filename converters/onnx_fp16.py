"""fp16 for ONNX: half-precision weights in the file, float32 everywhere else.

Chosen over a full float16 graph (onnxconverter-common's `convert_float_to_float16`):
onnxruntime's CPU provider has float16 kernels for only a few ops, so an all-half graph
either falls back op by op with casts in between or fails to load on ARM boards. Storing
weights as float16 and casting them back once (onnxruntime constant-folds the casts at
session start) halves the file, keeps the model's I/O float32 and the arithmetic float32,
and limits the error to one fp16 rounding of each weight, the same contract as TFLite's
float16 weight quantization on CPU.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

#: Initializers smaller than this stay float32: they are biases/scales, where halving saves
#: nothing worth an extra Cast node.
MIN_ELEMENTS = 16


def convert_weights_to_fp16(model, min_elements: int = MIN_ELEMENTS):
    """Return a copy of the onnx ModelProto with float32 weights stored as float16.

    Each converted initializer `w` becomes `w__fp16` (float16) followed by a Cast node
    producing `w`, so every consumer still sees float32. Values outside the float16 range
    are clipped to +-65504 (and counted in the log) instead of becoming inf.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    graph_inputs = {i.name for i in graph.input}
    kept, casts, converted, clipped = [], [], 0, 0
    for init in graph.initializer:
        if (init.data_type != TensorProto.FLOAT or init.name in graph_inputs
                or int(np.prod(init.dims, dtype=np.int64)) < min_elements):
            kept.append(init)
            continue
        values = numpy_helper.to_array(init)
        limit = np.finfo(np.float16).max
        clipped += int(np.count_nonzero(np.abs(values) > limit))
        half = np.clip(values, -limit, limit).astype(np.float16)
        half_name = f"{init.name}__fp16"
        kept.append(numpy_helper.from_array(half, half_name))
        casts.append(helper.make_node("Cast", [half_name], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}__cast_fp32"))
        converted += 1
    del graph.initializer[:]
    graph.initializer.extend(kept)
    # Casts go first so the node list stays topologically sorted.
    existing = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + existing)
    if clipped:
        log.warning("fp16: %d weight values exceeded the float16 range and were clipped", clipped)
    log.info("fp16: %d initializers stored as float16", converted)
    return model
