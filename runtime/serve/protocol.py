"""Open Inference Protocol (KServe V2) tensors: decoding requests, encoding responses.

Both encodings of the REST API are handled:

- JSON tensors: ``{"name", "shape", "datatype", "data": [...]}`` with row-major data, flat or
  nested;
- the binary tensor data extension: the body starts with ``Inference-Header-Content-Length``
  bytes of JSON, followed by the raw bytes of each input whose ``parameters`` carry
  ``binary_data_size``, in the order the inputs are listed. Outputs are sent the same way
  when asked (per output ``"parameters": {"binary_data": true}`` or request-wide
  ``"binary_data_output": true``, which tritonclient sends by default).

Raw binary data is little-endian; BYTES elements are each a 4-byte little-endian length
followed by that many bytes.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..jsonsafe import json_bytes  # noqa: F401  (the handler writes every JSON body with it)
from .errors import RequestError

#: V2 datatype name -> numpy dtype name used in TensorSpec ("string" is BYTES).
V2_TO_DTYPE = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32",
    "UINT64": "uint64", "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BYTES": "string",
}
DTYPE_TO_V2 = {v: k for k, v in V2_TO_DTYPE.items()}

#: Upper bound on elements of one tensor (and on any one dimension), independent of the body
#: limit: a tiny JSON header may not announce a shape that would make the server allocate
#: gigabytes, nor dimensions numpy cannot even represent (``[0, 10**30]``).
MAX_ELEMENTS = 1 << 28
#: numpy allows 64 dimensions; no model takes more than a handful.
MAX_RANK = 32


@dataclass(frozen=True)
class InputTensor:
    """One decoded input: numpy array already shaped as the request said."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for; `binary` None means "use the request default"."""

    name: str
    binary: bool | None
    classification: int | None = None


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request."""

    id: str | None
    inputs: tuple[InputTensor, ...]
    outputs: tuple[RequestedOutput, ...]
    parameters: Mapping[str, Any]

    @property
    def binary_output_default(self) -> bool:
        return bool(self.parameters.get("binary_data_output", False))


def v2_datatype(dtype: str | np.dtype) -> str:
    """V2 datatype name for a spec dtype name or a numpy dtype."""
    if isinstance(dtype, np.dtype):
        dtype = "string" if dtype.kind in "OSU" else dtype.name
    try:
        return DTYPE_TO_V2[dtype]
    except KeyError:
        raise RequestError(500, f"dtype {dtype} has no Open Inference Protocol datatype") from None


def parse_header_length(value: str | None, body_length: int) -> int | None:
    """Validate the ``Inference-Header-Content-Length`` header against the body length."""
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise RequestError(400, f"Inference-Header-Content-Length must be an integer, "
                                f"got {value!r}") from None
    if not 0 < length <= body_length:
        raise RequestError(400, f"Inference-Header-Content-Length {length} does not fit a "
                                f"body of {body_length} bytes")
    return length


def decode_infer_request(body: bytes, header_length: int | None) -> InferRequest:
    """Decode an inference request body (JSON, or JSON header + binary tensor data).

    Raises `RequestError` (400) naming the first problem found.
    """
    header_bytes = body if header_length is None else body[:header_length]
    try:
        header = json.loads(header_bytes, parse_constant=_refuse_constant)
    except RecursionError:      # e.g. 100,000 nested brackets
        raise RequestError(400, "request body is not valid JSON: nested too deeply") from None
    except ValueError as exc:   # JSONDecodeError, UnicodeDecodeError, a 4,301-digit integer
        raise RequestError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise RequestError(400, "request body must be a JSON object with an 'inputs' list")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise RequestError(400, "request must carry a non-empty 'inputs' list")
    parameters = _parameters(header.get("parameters"), "request")
    binary = memoryview(body)[header_length:] if header_length is not None else memoryview(b"")
    offset = 0
    inputs = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_inputs):
        tensor, used = _decode_input(raw, index, binary, offset)
        if tensor.name in seen:
            raise RequestError(400, f"input {tensor.name!r} is given twice")
        seen.add(tensor.name)
        inputs.append(tensor)
        offset += used
    if offset != len(binary):
        raise RequestError(400, f"binary data holds {len(binary)} bytes but the inputs' "
                                f"binary_data_size add up to {offset}")
    outputs = tuple(_decode_output(raw, i) for i, raw in enumerate(_list(header, "outputs")))
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(400, "'id' must be a string")
    return InferRequest(request_id, tuple(inputs), outputs, parameters)


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN/Infinity, which are not JSON: send NaN as null (as orjson and
    # MLServer do); a strict client could not have produced these tokens.
    raise ValueError(f"{name} is not JSON; send non-finite numbers as null")


def _list(header: Mapping[str, Any], key: str) -> list[Any]:
    value = header.get(key)     # absent or null (pydantic clients send null): none
    if value is None:
        return []
    if not isinstance(value, list):
        raise RequestError(400, f"'{key}' must be a list")
    return value


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise RequestError(400, f"{where} 'parameters' must be a JSON object")
    return value


def _decode_input(raw: Any, index: int, binary: memoryview, offset: int
                  ) -> tuple[InputTensor, int]:
    if not isinstance(raw, dict):
        raise RequestError(400, f"inputs[{index}] must be an object with name, shape, datatype")
    name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
    if not isinstance(name, str) or not name:
        raise RequestError(400, f"inputs[{index}] needs a 'name' string")
    if datatype not in V2_TO_DTYPE:
        raise RequestError(400, f"input {name!r}: datatype {datatype!r} is not supported; use "
                                f"one of {', '.join(V2_TO_DTYPE)}")
    if (not isinstance(shape, list)
            or any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in shape)):
        raise RequestError(400, f"input {name!r}: 'shape' must be a list of non-negative "
                                "integers")
    if len(shape) > MAX_RANK:
        raise RequestError(400, f"input {name!r}: shape has {len(shape)} dimensions, over "
                                f"the limit of {MAX_RANK}")
    if any(d > MAX_ELEMENTS for d in shape) or math.prod(shape) > MAX_ELEMENTS:
        text = str(shape) if len(str(shape)) <= 80 else str(shape)[:77] + "..."
        raise RequestError(400, f"input {name!r}: shape {text} is over the limit of "
                                f"{MAX_ELEMENTS} elements per tensor (and per dimension)")
    params = _parameters(raw.get("parameters"), f"input {name!r}")
    size = params.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RequestError(400, f"input {name!r}: binary_data_size must be a non-negative "
                                    "integer")
        if raw.get("data") is not None:     # kserve's to_dict sends "data": null here
            raise RequestError(400, f"input {name!r} has both 'data' and binary_data_size")
        if offset + size > len(binary):
            raise RequestError(400, f"input {name!r}: binary_data_size {size} runs past the "
                                    f"end of the body ({len(binary) - offset} bytes left)")
        array = _from_binary(name, datatype, shape, binary[offset:offset + size])
        return InputTensor(name, datatype, tuple(shape), array), size
    if raw.get("data") is None:
        raise RequestError(400, f"input {name!r} has neither 'data' nor "
                                "parameters.binary_data_size")
    array = _from_json(name, datatype, shape, raw["data"])
    return InputTensor(name, datatype, tuple(shape), array), 0


def _from_binary(name: str, datatype: str, shape: list[int], chunk: memoryview) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        items = _split_bytes(name, bytes(chunk))
        if len(items) != count:
            raise RequestError(400, f"input {name!r}: shape {shape} needs {count} BYTES "
                                    f"elements, binary data holds {len(items)}")
        array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(shape)
    dtype = np.dtype(V2_TO_DTYPE[datatype]).newbyteorder("<")
    if len(chunk) != count * dtype.itemsize:
        raise RequestError(400, f"input {name!r}: shape {shape} of {datatype} needs "
                                f"{count * dtype.itemsize} bytes, binary data holds {len(chunk)}")
    # A copy: the request body is released as soon as the request ends, and engines or
    # pre-processing may want a writable, native-endian array.
    return np.frombuffer(chunk, dtype=dtype).astype(dtype.newbyteorder("="), copy=True
                                                    ).reshape(shape)


def _split_bytes(name: str, data: bytes) -> list[bytes]:
    items, pos = [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise RequestError(400, f"input {name!r}: BYTES data ends inside a length prefix")
        (length,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if pos + length > len(data):
            raise RequestError(400, f"input {name!r}: a BYTES element of {length} bytes runs "
                                    "past the end of its data")
        items.append(data[pos:pos + length])
        pos += length
    return items


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(d, list) for d in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _from_json(name: str, datatype: str, shape: list[int], data: Any) -> np.ndarray:
    flat = _flatten(data)
    count = math.prod(shape)
    if len(flat) != count:
        raise RequestError(400, f"input {name!r}: shape {shape} needs {count} elements, "
                                f"'data' holds {len(flat)}")
    if datatype == "BYTES":
        if any(not isinstance(x, str) for x in flat):
            raise RequestError(400, f"input {name!r}: BYTES data in JSON must be strings")
        array = np.empty(count, dtype=object)
        array[:] = [x.encode("utf-8") for x in flat]
        return array.reshape(shape)
    dtype = np.dtype(V2_TO_DTYPE[datatype])
    # Check element kinds before converting: numpy would silently truncate 1.7 to an int
    # or turn True into 1.0, which hides a client bug behind a plausible answer.
    if datatype == "BOOL":
        ok = all(isinstance(x, bool) for x in flat)
    elif dtype.kind in "iu":
        ok = all(isinstance(x, int) and not isinstance(x, bool) for x in flat)
    else:   # null is NaN, as orjson and MLServer encode it
        ok = all(x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))
                 for x in flat)
    if not ok:
        raise RequestError(400, f"input {name!r}: 'data' holds values that are not {datatype}")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if flat and (min(flat) < info.min or max(flat) > info.max):
            raise RequestError(400, f"input {name!r}: values out of range for {datatype}")
        return np.asarray(flat, dtype=dtype).reshape(shape)
    try:
        wide = np.array([math.nan if x is None else x for x in flat], dtype=np.float64)
    except OverflowError:       # an integer literal of hundreds of digits
        raise RequestError(400, f"input {name!r}: values out of range for {datatype}") from None
    finite = wide[np.isfinite(wide)]
    if finite.size and np.abs(finite).max() > np.finfo(dtype).max:
        raise RequestError(400, f"input {name!r}: values out of range for {datatype} (largest "
                                f"finite {float(np.finfo(dtype).max):g})")
    return wide.astype(dtype).reshape(shape)


def _decode_output(raw: Any, index: int) -> RequestedOutput:
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
        raise RequestError(400, f"outputs[{index}] must be an object with a 'name'")
    params = _parameters(raw.get("parameters"), f"output {raw['name']!r}")
    binary = params.get("binary_data")
    if binary is not None and not isinstance(binary, bool):
        raise RequestError(400, f"output {raw['name']!r}: binary_data must be true or false")
    classification = params.get("classification")
    if classification is not None and (not isinstance(classification, int)
                                       or isinstance(classification, bool)
                                       or classification < 1):
        raise RequestError(400, f"output {raw['name']!r}: classification must be a positive "
                                "integer (top-k)")
    return RequestedOutput(raw["name"], binary, classification)


def encode_infer_response(model_name: str, model_version: str, request_id: str | None,
                          outputs: Sequence[tuple[str, np.ndarray, bool]],
                          parameters: Mapping[str, Any] | None = None
                          ) -> tuple[bytes, int | None]:
    """Encode outputs ``(name, array, binary)``; returns body and JSON header length.

    The header length is None when no output is binary (plain JSON response).
    """
    header: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        header["id"] = request_id
    if parameters:
        header["parameters"] = dict(parameters)
    entries, blobs = [], []
    for name, array, binary in outputs:
        array = np.asarray(array)
        datatype = v2_datatype(array.dtype)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            blob = _to_binary(array, datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _to_json_data(name, array, datatype)
        entries.append(entry)
    header["outputs"] = entries
    head = json_bytes(header)
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)


def _to_binary(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for item in array.ravel():
            data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
            parts.append(struct.pack("<I", len(data)))
            parts.append(data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _to_json_data(name: str, array: np.ndarray, datatype: str) -> list[Any]:
    if datatype != "BYTES":
        data = array.ravel().tolist()
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            # NaN/Infinity tokens are not JSON (orjson, kserve's client and browsers refuse
            # them): null, as orjson and MLServer write them; clients read null back as NaN.
            data = [x if math.isfinite(x) else None for x in data]
        return data
    data = []
    for item in array.ravel():
        if isinstance(item, str):
            data.append(item)
            continue
        try:
            data.append(bytes(item).decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestError(400, f"output {name!r} holds bytes that are not UTF-8: ask for "
                                    "it with parameters.binary_data=true") from None
    return data


def error_body(message: str) -> bytes:
    """The JSON error body every V2 server answers with."""
    return json.dumps({"error": message}).encode("utf-8")
