"""Model results as plain JSON data: the one encoding of everything that answers over a
wire (serve's /predict and pipeline outputs, the MQTT bridge's result messages).

`Model.predict` returns dicts of numpy arrays, numpy scalars, lists of dicts (top-k,
detections) and so on; `jsonable` turns any of that into strict JSON data generically:
numpy arrays -> lists, numpy scalars -> numbers, non-finite floats -> None (null: NaN and
Infinity tokens are not JSON), bytes -> base64 text, other objects -> their str().
"""
from __future__ import annotations

import base64
import json
import math
from typing import Any, Mapping

import numpy as np


def jsonable(value: Any) -> Any:
    """`value` as plain JSON data; NaN/inf become None so the output is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            return jsonable(value.astype(object).tolist())
        if value.dtype.kind in "biuf":
            return value.tolist()
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def unbatch(value: Any) -> Any:
    """Drop the batch axis of 1 that predict() adds to one sample's result."""
    if isinstance(value, np.ndarray) and value.ndim > 0 and value.shape[0] == 1:
        return value[0]
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
        return value[0]
    return value


def jsonable_results(result: Mapping[str, Any]) -> dict[str, Any]:
    """One sample's predict() result as plain JSON data, batch axis of 1 dropped."""
    return {str(name): jsonable(unbatch(value)) for name, value in result.items()}


def json_bytes(doc: Any) -> bytes:
    """Compact strict JSON bytes. Data that is already `jsonable` is written as it is (the
    hot path); anything else (a NaN inside an error body, a numpy scalar) goes through
    `jsonable` first, so the output is always strict JSON."""
    try:
        return json.dumps(doc, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (ValueError, TypeError):
        return json.dumps(jsonable(doc), separators=(",", ":"),
                          allow_nan=False).encode("utf-8")
