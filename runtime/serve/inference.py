"""Running a decoded V2 request on one model: raw tensors, or the bundle's own pipeline.

Raw mode (default) checks each input against the model's TensorSpec (name, datatype, rank,
static dims) so the client gets a 400 naming the input instead of an engine stack trace.

Pipeline mode (request parameter ``"edgepack_pipeline": true``) runs `Model.predict`, i.e.
the bundle's preprocess -> run -> postprocess. A BYTES input element is decoded as a file:
an image (decoded by `edgepack.runtime.images`, Pillow) or a ``.npy`` array; each element
is one sample. Structured results (top-k lists) come back as BYTES tensors holding JSON text.
"""
from __future__ import annotations

import io
import json
import math
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import EdgepackError, InputError, PipelineError
from ..images import (DEFAULT_MAX_PIXELS, ImageDecoderMissingError, ImageTooLargeError,
                      decode_image, describe_bytes)
# One JSON encoding of results for serve and the MQTT bridge (runtime/jsonsafe.py);
# unbatch and jsonable_results stay importable from here.
from ..jsonsafe import jsonable, jsonable_results, unbatch  # noqa: F401
from .errors import RequestError
from .protocol import InferRequest, v2_datatype

Output = tuple[str, np.ndarray, bool]

PIPELINE_PARAMETER = "edgepack_pipeline"


def check_inputs(model: Any, request: InferRequest) -> dict[str, np.ndarray]:
    """Match request tensors to the model's input specs; 400 on the first mismatch."""
    specs = {spec.name: spec for spec in model.inputs}
    feeds: dict[str, np.ndarray] = {}
    for tensor in request.inputs:
        spec = specs.get(tensor.name)
        if spec is None:
            raise RequestError(400, f"model has no input {tensor.name!r}; its inputs are "
                                    f"{', '.join(specs)}")
        expected = v2_datatype(spec.dtype)
        if tensor.datatype != expected:
            raise RequestError(400, f"input {tensor.name!r} must be {expected}, got "
                                    f"{tensor.datatype}")
        if len(tensor.shape) != len(spec.shape) or any(
                want >= 0 and want != got for want, got in zip(spec.shape, tensor.shape)):
            raise RequestError(400, f"input {tensor.name!r} must have shape {list(spec.shape)} "
                                    f"(-1 = any size), got {list(tensor.shape)}")
        feeds[tensor.name] = tensor.array
    missing = [name for name in specs if name not in feeds]
    if missing:
        raise RequestError(400, f"missing input(s) {', '.join(missing)}")
    return feeds


def run_model(model: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """model.run with the request's fault named: bad tensors 400, a failing engine 500."""
    try:
        return model.run(feeds)
    except InputError as exc:
        raise RequestError(400, str(exc)) from None
    except EdgepackError as exc:
        raise RequestError(500, f"inference failed: {exc}") from None


def run_raw(model: Any, request: InferRequest) -> list[Output]:
    """Raw tensors in, raw tensors out (plus optional classification of an output)."""
    results = run_model(model, check_inputs(model, request))
    order = [spec.name for spec in model.outputs]
    labels = getattr(model, "labels", None)
    if not request.outputs:
        return [(name, np.asarray(results[name]), request.binary_output_default)
                for name in order]
    chosen = []
    for wanted in request.outputs:
        if wanted.name not in results:
            raise RequestError(400, f"model has no output {wanted.name!r}; its outputs are "
                                    f"{', '.join(order)}")
        array = np.asarray(results[wanted.name])
        if wanted.classification is not None:
            array = classify(array, wanted.classification, labels)
        binary = request.binary_output_default if wanted.binary is None else wanted.binary
        chosen.append((wanted.name, array, binary))
    return chosen


def classify(scores: np.ndarray, k: int, labels: Sequence[str] | None) -> np.ndarray:
    """Classification extension: top-k per row as BYTES ``"score:index[:label]"``."""
    if scores.ndim == 0 or scores.dtype.kind not in "iuf":
        raise RequestError(400, "classification needs a numeric output with a class axis")
    rows = scores.reshape(-1, scores.shape[-1]).astype(np.float64)
    k = min(k, rows.shape[1])
    out = np.empty((rows.shape[0], k), dtype=object)
    for r, row in enumerate(rows):
        best = np.argsort(-row, kind="stable")[:k]
        for j, index in enumerate(best):
            text = f"{row[index]:g}:{int(index)}"
            if labels and index < len(labels):
                text += f":{labels[index]}"
            out[r, j] = text.encode("utf-8")
    return out.reshape(scores.shape[:-1] + (k,))


def decode_file(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A BYTES element or a /predict body as an array: ``.npy`` bytes, or an image.

    Images go through the runtime's one decoder (`edgepack.runtime.images`: (H, W, 3) uint8
    RGB, pixel count checked from the header against `max_pixels` before decoding), so a
    file gives the same array here as in `edgepack run` and in calibration.
    """
    if data[:6] == b"\x93NUMPY":
        return _decode_npy(data, name)
    try:
        return decode_image(data, max_pixels=max_pixels, what=f"input {name!r}")
    except ImageTooLargeError as exc:
        raise RequestError(413, str(exc)) from None
    except ImageDecoderMissingError as exc:   # a device without Pillow: unsupported media
        raise RequestError(415, str(exc)) from None
    except InputError as exc:
        raise RequestError(400, str(exc)) from None


def _decode_npy(data: bytes, name: str) -> np.ndarray:
    """np.load, after checking that the header's shape fits in the bytes actually sent.

    numpy allocates the array the header announces before reading the data, so a 100-byte
    file claiming shape (10**10,) would otherwise ask for 40 GB.
    """
    from numpy.lib import format as npy

    stream = io.BytesIO(data)
    try:
        version = npy.read_magic(stream)
        shape, _, dtype = (npy.read_array_header_1_0(stream) if version == (1, 0)
                           else npy.read_array_header_2_0(stream))
        if dtype.hasobject:
            raise ValueError("object arrays are not accepted")
        needed = math.prod(shape) * dtype.itemsize
        if needed > len(data) - stream.tell():
            raise ValueError(f"its header announces shape {list(shape)} of {dtype} "
                             f"({needed:,} bytes) but only {len(data) - stream.tell():,} "
                             "bytes of data follow")
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OverflowError) as exc:
        raise RequestError(400, f"input {name!r}: unreadable .npy data "
                                f"({describe_bytes(data)}): {exc}") from None


def run_pipeline(model: Any, request: InferRequest,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Output]:
    """Bundle pre/post-processing around the model, one sample per BYTES element."""
    samples = _samples(model, request, max_pixels)
    per_sample = [predict(model, feeds) for feeds in samples]
    names = list(per_sample[0])
    wanted = [o.name for o in request.outputs] or names
    outputs = []
    for name in wanted:
        if name not in per_sample[0]:
            raise RequestError(400, f"pipeline has no output {name!r}; it gives "
                                    f"{', '.join(names)}")
        values = [result[name] for result in per_sample]
        binary = _binary_flag(request, name)
        outputs.append((name, _combine(name, values), binary))
    return outputs


def predict(model: Any, feeds: Mapping[str, Any]) -> dict[str, Any]:
    """`model.predict` with its errors turned into HTTP answers."""
    try:
        return model.predict(**feeds)
    except (InputError, PipelineError) as exc:
        raise RequestError(400, f"pre/post-processing refused the input: {exc}") from None
    except EdgepackError as exc:
        raise RequestError(500, f"inference failed: {exc}") from None


def _binary_flag(request: InferRequest, name: str) -> bool:
    for wanted in request.outputs:
        if wanted.name == name and wanted.binary is not None:
            return wanted.binary
    return request.binary_output_default


def _samples(model: Any, request: InferRequest, max_pixels: int) -> list[dict[str, Any]]:
    specs = {spec.name for spec in model.inputs}
    counts = set()
    decoded: dict[str, Any] = {}
    for tensor in request.inputs:
        if tensor.name not in specs:
            raise RequestError(400, f"model has no input {tensor.name!r}; its inputs are "
                                    f"{', '.join(sorted(specs))}")
        if tensor.datatype == "BYTES":
            items = [decode_file(bytes(x), tensor.name, max_pixels)
                     for x in tensor.array.ravel()]
            if not items:
                raise RequestError(400, f"input {tensor.name!r} holds no element")
            counts.add(len(items))
            decoded[tensor.name] = items
        else:
            decoded[tensor.name] = [tensor.array]
    missing = specs - set(decoded)
    if missing:
        raise RequestError(400, f"missing input(s) {', '.join(sorted(missing))}")
    if len(counts) > 1:
        raise RequestError(400, "every BYTES input must hold the same number of samples")
    n = counts.pop() if counts else 1
    return [{name: items[i] if len(items) == n else items[0] for name, items in decoded.items()}
            for i in range(n)]


def _combine(name: str, values: list[Any]) -> np.ndarray:
    """Stack per-sample arrays (batch axis first); structured results become JSON (BYTES)."""
    values = [unbatch(v) for v in values]
    if all(isinstance(v, np.ndarray) for v in values) and len({v.shape for v in values}) == 1:
        return np.stack(values)
    out = np.empty(len(values), dtype=object)
    out[:] = [json.dumps(jsonable(v)).encode("utf-8") for v in values]
    return out
