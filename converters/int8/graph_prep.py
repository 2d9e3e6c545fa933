"""Graph preparation before int8: shape inference and BatchNorm/activation fusion.

Quantizing an unfused graph quantizes the wrong tensors: a Conv followed by BatchNorm gets
its weights quantized before the BN scale is folded in (per-channel scales then fit the
unscaled weights), and a separate Relu/Clip forces a Q/DQ pair on the pre-activation tensor,
wasting half the int8 range on negatives that the activation discards. onnxruntime's
`quant_pre_process` runs symbolic shape inference and its basic graph optimizer (which folds
BN into Conv and constants), after which the quantizer itself drops Relu/Clip by narrowing
the Conv output range. What was fused is counted, so the manifest can say so.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

#: Op types whose count before/after preparation is worth reporting.
FUSED_KINDS = ("BatchNormalization", "Relu", "Clip", "Identity", "Mul", "Add")


@dataclass(frozen=True)
class PreparedGraph:
    """The prepared model and what preparation did.

    steps: what ran ("symbolic_shape_inference", "graph_optimization", "onnx_shape_inference").
    before / after: node counts of FUSED_KINDS (and "nodes" in total).
    """

    model_bytes: bytes
    steps: tuple[str, ...]
    before: dict[str, int]
    after: dict[str, int]

    def to_record(self) -> dict:
        """The `graph_prep` entry of the manifest's quantization record."""
        return {"steps": list(self.steps), "nodes_before": self.before.get("nodes", 0),
                "nodes_after": self.after.get("nodes", 0),
                "batchnorm_left": self.after.get("BatchNormalization", 0),
                "batchnorm_fused": self.before.get("BatchNormalization", 0)
                - self.after.get("BatchNormalization", 0)}


def op_counts(model_bytes: bytes) -> dict[str, int]:
    """Node count per op type of interest, plus "nodes" for the total."""
    import onnx
    graph = onnx.load_from_string(model_bytes).graph
    counts = Counter(n.op_type for n in graph.node)
    result = {k: counts.get(k, 0) for k in FUSED_KINDS}
    result["nodes"] = len(graph.node)
    return result


@contextlib.contextmanager
def in_directory(path: str | Path) -> Iterator[None]:
    """Run a block with `path` as the working directory.

    onnxruntime's symbolic shape inference, when it gives up, saves its partial model as
    `sym_shape_infer_temp.onnx` plus a `<uuid>.data` file into the *working directory*: run
    it inside the conversion's temporary directory so the user's folder stays clean.
    """
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def prepare_graph(model_bytes: bytes) -> PreparedGraph:
    """Shape-infer and fuse `model_bytes` for quantization; never fails on an odd graph.

    Symbolic shape inference refuses some exporters' graphs; it is then skipped, and if the
    optimizer fails too the model is returned as exported (with a warning), because every
    step here improves int8 accuracy or speed but none is needed for correctness.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process
    before = op_counts(model_bytes)
    attempts = (("symbolic_shape_inference", "graph_optimization", "onnx_shape_inference"), {}), \
               (("graph_optimization", "onnx_shape_inference"), {"skip_symbolic_shape": True})
    with tempfile.TemporaryDirectory(prefix="edgepack-prep-") as tmp:
        src, dst = Path(tmp, "in.onnx"), Path(tmp, "prep.onnx")
        src.write_bytes(model_bytes)
        for steps, options in attempts:
            try:
                with in_directory(tmp):
                    quant_pre_process(str(src), str(dst), **options)
            except Exception as e:  # onnxruntime raises plain Exceptions from its helpers
                log.warning("graph preparation (%s) failed: %s", ", ".join(steps),
                            (str(e).splitlines() or [type(e).__name__])[0])
                continue
            prepared = dst.read_bytes()
            after = op_counts(prepared)
            log.info("graph prep: %d -> %d nodes, BatchNormalization %d -> %d",
                     before["nodes"], after["nodes"], before["BatchNormalization"],
                     after["BatchNormalization"])
            return PreparedGraph(prepared, steps, before, after)
    log.warning("quantizing the model as exported (no fusion): int8 may be slower and "
                "less accurate")
    return PreparedGraph(model_bytes, (), before, before)
