"""Message payloads -> model inputs: images, .npy, JSON tensors, raw PCM, base64 in JSON.

The codec is chosen by the subscription (``--codec``), else by the MQTT 5 content type,
else by sniffing the bytes (JPEG/PNG magic, the .npy magic, a JSON object). Every problem
is a `PayloadError` with a one-line reason; nothing here raises anything else on bad bytes.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import PayloadError

#: MQTT 5 content types -> codec. audio/L16 is big-endian (RFC 2586); audio/pcm is the
#: little-endian signed 16-bit most capture libraries produce.
CONTENT_TYPES = {
    "image/jpeg": "image", "image/jpg": "image", "image/png": "image", "image/bmp": "image",
    "image/webp": "image", "image/gif": "image",
    "application/x-npy": "npy", "application/npy": "npy",
    "application/json": "json",
    "audio/pcm": "pcm", "audio/x-pcm": "pcm", "audio/l16": "pcm-be", "audio/s16le": "pcm",
}
_NPY_MAGIC = b"\x93NUMPY"
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF87a", b"GIF89a", b"RIFF")


def codec_for(codec: str, content_type: str | None, payload: bytes) -> str:
    """The codec to decode one payload with (see the module docstring for the order)."""
    if codec != "auto":
        return codec
    if content_type:
        base = content_type.split(";")[0].strip().lower()
        if base in CONTENT_TYPES:
            return CONTENT_TYPES[base]
        if base.startswith("image/"):
            return "image"
    head = payload[:16]
    if head.startswith(_NPY_MAGIC):
        return "npy"
    if any(head.startswith(m) for m in _IMAGE_MAGIC):
        return "image"
    if head.lstrip()[:1] in (b"{", b"["):
        return "json"
    raise PayloadError(
        "cannot tell the payload's format (not JPEG/PNG, .npy or JSON); set the codec "
        "(--codec image|npy|json|pcm|base64) or an MQTT 5 content type")


def decode_payload(payload: bytes, input_names: Sequence[str], *, codec: str = "auto",
                   content_type: str | None = None,
                   base64_field: str = "data") -> tuple[dict[str, Any], Mapping[str, Any]]:
    """Decode one payload into predict() inputs keyed by input name.

    Returns (inputs, extras): extras holds fields of a JSON payload worth echoing in the
    result (its ``id``). Raises `PayloadError`.
    """
    if not payload:
        raise PayloadError("empty payload; send an image, a .npy array or a JSON tensor")
    kind = codec_for(codec, content_type, payload)
    if kind == "image":
        return _single(input_names, decode_image(payload)), {}
    if kind == "npy":
        return _single(input_names, decode_npy(payload)), {}
    if kind in ("pcm", "pcm-be"):
        return _single(input_names, decode_pcm(payload, big_endian=kind == "pcm-be")), {}
    data = _json(payload)
    if kind == "base64":
        return _single(input_names, _base64_field(data, base64_field)), _extras(data)
    if kind != "json":
        raise PayloadError(f"unknown codec {kind!r}")
    if isinstance(data, dict) and isinstance(data.get(base64_field), str):
        return _single(input_names, _base64_field(data, base64_field)), _extras(data)
    return decode_json_tensors(data, input_names), _extras(data)


def decode_image(payload: bytes) -> np.ndarray:
    """JPEG/PNG/... bytes -> (H, W, 3) uint8 RGB, with the runtime's one image decoder
    (`edgepack.runtime.images`, the same as `run` and serve use)."""
    from ..errors import InputError
    from ..images import decode_image as runtime_decode
    try:
        return runtime_decode(payload, what="image payload")
    except InputError as exc:
        raise PayloadError(_one_line(str(exc))) from None


def decode_npy(payload: bytes) -> np.ndarray:
    """.npy bytes (never pickles) -> a numeric array."""
    try:
        array = np.load(io.BytesIO(payload), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise PayloadError(f"unreadable .npy payload: {_one_line(str(exc))}") from None
    if not isinstance(array, np.ndarray):
        raise PayloadError("a .npz archive is not supported; send one .npy array")
    return check_numeric(array, ".npy payload")


def decode_pcm(payload: bytes, big_endian: bool = False) -> np.ndarray:
    """Signed 16-bit mono PCM -> float32 samples in [-1, 1)."""
    if len(payload) % 2:
        raise PayloadError(f"PCM payload of {len(payload)} bytes is not a whole number of "
                           "16-bit samples")
    samples = np.frombuffer(payload, dtype=">i2" if big_endian else "<i2")
    return samples.astype(np.float32) / np.float32(32768.0)


def decode_json_tensors(data: Any, input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """A V2 request (``{"inputs": [{"name", "shape", "datatype", "data"}]}``) or one bare
    V2 tensor (``{"shape", "datatype", "data"}``) for a one-input model."""
    from ..serve.errors import RequestError
    from ..serve.protocol import decode_infer_request
    if isinstance(data, dict) and "inputs" not in data and "data" in data:
        if len(input_names) != 1:
            raise PayloadError(f"the model has inputs {list(input_names)}: send "
                               '{"inputs": [{"name": ..., ...}]}')
        data = {"inputs": [{"name": input_names[0], **data}]}
    if not isinstance(data, dict) or "inputs" not in data:
        raise PayloadError('JSON payload must be a V2 tensor {"shape", "datatype", "data"}, '
                           'a request {"inputs": [...]}, or carry a base64 field')
    try:
        request = decode_infer_request(json.dumps(data).encode(), None)
    except RequestError as exc:
        raise PayloadError(_one_line(exc.message)) from None
    inputs = {}
    for tensor in request.inputs:
        if tensor.name not in input_names:
            raise PayloadError(f"model has no input {tensor.name!r}; its inputs are "
                               f"{', '.join(input_names)}")
        inputs[tensor.name] = check_numeric(tensor.array, f"input {tensor.name!r}")
    return inputs


def check_numeric(array: np.ndarray, what: str) -> np.ndarray:
    """Refuse arrays no model pipeline takes (complex, strings, objects, datetimes)."""
    if array.dtype.kind not in "biuf":
        raise PayloadError(f"{what} has dtype {array.dtype}; send bool, integer or float "
                           "values")
    return array


def _base64_field(data: Any, field: str) -> np.ndarray:
    if not isinstance(data, dict) or not isinstance(data.get(field), str):
        raise PayloadError(f"JSON payload has no base64 string field {field!r}")
    try:
        raw = base64.b64decode(data[field], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PayloadError(f"field {field!r} is not valid base64: {exc}") from None
    if not raw:
        raise PayloadError(f"field {field!r} is empty")
    inner = codec_for("auto", data.get("content_type"), raw)
    if inner == "image":
        return decode_image(raw)
    if inner == "npy":
        return decode_npy(raw)
    if inner in ("pcm", "pcm-be"):
        return decode_pcm(raw, big_endian=inner == "pcm-be")
    raise PayloadError(f"field {field!r} must hold image, .npy or PCM bytes "
                       '(set "content_type" for PCM)')


def _single(input_names: Sequence[str], value: Any) -> dict[str, Any]:
    if len(input_names) != 1:
        raise PayloadError(f"the model has {len(input_names)} inputs {list(input_names)}; "
                           'send a JSON request {"inputs": [...]} naming each')
    return {input_names[0]: value}


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError(f"payload is not valid JSON: {_one_line(str(exc))}") from None


def _extras(data: Any) -> dict[str, Any]:
    if isinstance(data, dict) and isinstance(data.get("id"), (str, int)):
        return {"id": data["id"]}
    return {}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]
