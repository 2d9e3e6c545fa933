"""Payload in -> result payload out: the one code path of the bridge, usable on its own.

An application that already owns an MQTT client (or any other bus) calls `answer()` in its
message handler and publishes what it returns::

    from edgepack.runtime import load
    from edgepack.runtime.mqtt import answer
    model = load("detector.edgepack")
    def on_message(client, userdata, msg):
        client.publish("results", answer(model, msg.payload, content_type="image/jpeg"))

Results are JSON: ``{"model", "version", "latency_ms", "result", ...}`` where ``result`` is
what `Model.predict` returns for one sample (batch axis of 1 dropped, as serve's /predict
does), made JSON-safe by the runtime's one encoding (`edgepack.runtime.jsonsafe`, shared
with serve): numpy arrays -> lists, numpy scalars -> numbers, non-finite floats -> null,
bytes -> base64 text.
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable, Hashable, Mapping

import numpy as np

from ..errors import EdgepackError
from ..jsonsafe import json_bytes, jsonable, unbatch
from .codecs import codec_for, decode_payload
from .errors import PayloadError
from .streams import StreamCache, is_streaming

DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024

__all__ = ["answer", "answer_or_error", "predict_payload", "predict_raw",
           "result_document", "result_bytes",
           "error_document", "encode", "jsonable", "unbatch", "top_label"]


def top_label(result: Mapping[str, Any]) -> str | None:
    """The label of the best entry of the first labelled list (top-k, detections), if any:
    the one-word state a dashboard (Home Assistant) shows."""
    for value in result.values():
        if isinstance(value, list) and value and isinstance(value[0], dict) \
                and "label" in value[0]:
            return str(value[0]["label"])
    return None


def predict_payload(model: Any, payload: bytes, *, codec: str = "auto",
                    content_type: str | None = None, base64_field: str = "data",
                    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
                    streams: StreamCache | None = None, stream_key: Hashable = None
                    ) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """Decode `payload` and run `model.predict` on it: (JSON-safe result, payload extras).

    With `streams`, PCM payloads for a bundle that declares a `stream` are pushed into the
    stream of `stream_key` (one per source topic) instead (see streams.py).

    Raises `PayloadError` for a payload that cannot become model inputs, and the model's own
    `EdgepackError` subclasses (InputError, PipelineError, EngineError) when it refuses them.
    """
    result, extras = predict_raw(model, payload, codec=codec, content_type=content_type,
                                 base64_field=base64_field,
                                 max_payload_bytes=max_payload_bytes, streams=streams,
                                 stream_key=stream_key)
    return {name: jsonable(value) for name, value in result.items()}, extras


def predict_raw(model: Any, payload: bytes, *, codec: str = "auto",
                content_type: str | None = None, base64_field: str = "data",
                max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
                streams: StreamCache | None = None, stream_key: Hashable = None,
                mark: Callable[[str], None] | None = None
                ) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """`predict_payload` without the JSON-safe walk: the result with str names and the
    batch axis of 1 dropped, values as the model gave them (numpy arrays and scalars);
    `result_bytes` encodes it. The bridge's path: the walk (``jsonable`` per element, an
    ``isinstance`` chain each) was the largest Python cost of an answer after the model.
    `mark` (the bridge's diagnostic phase timers) is called with "decode" once the payload
    is decoded and "predict" once the model has answered."""
    if len(payload) > max_payload_bytes:
        raise PayloadError(f"payload of {len(payload)} bytes is over the limit of "
                           f"{max_payload_bytes} bytes (--max-payload)")
    if payload:
        codec = codec_for(codec, content_type, payload)
    names = [s.name for s in model.inputs]
    if streams is not None and codec in ("pcm", "pcm-be") and is_streaming(model):
        samples = decode_payload(payload, names[:1], codec=codec)[0][names[0]]
        return jsonable(streams.push((stream_key, model.name, model.version), model,
                                     samples)), {}
    inputs, extras = decode_payload(payload, names, codec=codec,
                                    content_type=content_type, base64_field=base64_field)
    if mark is not None:
        mark("decode")
    outputs = model.predict(inputs)
    if mark is not None:
        mark("predict")
    return {str(name): unbatch(value) for name, value in outputs.items()}, extras


def result_document(name: str, version: str, result: Mapping[str, Any], latency_ms: float,
                    meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The result message: model, version, latency, label (when there is one), result, and
    whatever identifies the input (`meta`: topic, message id, correlation data, id)."""
    return _document(name, version, latency_ms, top_label(result), result,
                     jsonable(dict(meta)) if meta else None)


def _document(name: str, version: str, latency_ms: float, label: str | None,
              result: Mapping[str, Any], meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """The result message's fields in their order (the one layout of both encoders)."""
    doc: dict[str, Any] = {"model": name, "version": version,
                           "latency_ms": round(latency_ms, 3)}
    if label is not None:
        doc["label"] = label
    doc["result"] = result
    if meta:
        doc.update(meta)
    return doc


#: json.dumps as `encode` writes it, numpy values and other non-JSON objects made
#: JSON-safe by `jsonable` as the C encoder meets them (no walk of the plain parts).
_fast_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=jsonable).encode


def result_bytes(name: str, version: str, result: Mapping[str, Any], latency_ms: float,
                 meta: Mapping[str, Any] | None = None) -> bytes:
    """``encode(result_document(...))`` of a `predict_raw` result, the same bytes, made
    in one pass of the C JSON encoder: numpy values are converted as they are met, plain
    data is not walked. Anything the one pass refuses (a NaN float, which strict JSON
    writes as null, a key that is not a string) and a result whose label `top_label` could
    only find after conversion (tuples, object arrays, other mappings) take the walked
    path, so the output is always `result_document`'s."""
    label = _plain_top_label(result)
    if label is not False:
        try:
            return _fast_json(_document(name, version, latency_ms, label, result,
                                        meta)).encode("utf-8")
        except (ValueError, TypeError):
            pass
    plain = {key: jsonable(value) for key, value in result.items()}
    return encode(result_document(name, version, plain, latency_ms, meta))


def _plain_top_label(result: Mapping[str, Any]) -> str | None | bool:
    """`top_label` of the raw result when it surely equals that of its JSON-safe form;
    False when unsure (then the caller converts first)."""
    for value in result.values():
        kind = type(value)
        if kind is list:
            if value and isinstance(value[0], Mapping):
                first = value[0]
                if type(first) is not dict:
                    return False
                if "label" in first:
                    label = first["label"]
                    return label if type(label) is str else False
        elif kind is tuple or (kind is np.ndarray and value.dtype.kind == "O"):
            return False        # lists once converted: their first entry decides
    return None


def error_document(reason: str, meta: Mapping[str, Any] | None = None,
                   model: str | None = None, version: str | None = None) -> dict[str, Any]:
    """The error-topic message: a one-line reason and what identifies the input."""
    doc: dict[str, Any] = {"error": " ".join(reason.split())[:500]}
    if model is not None:
        doc["model"] = model
    if version is not None:
        doc["version"] = version
    if meta:
        doc.update(jsonable(dict(meta)))
    return doc


def encode(doc: Mapping[str, Any]) -> bytes:
    """Compact strict JSON bytes (`edgepack.runtime.jsonsafe.json_bytes`)."""
    return json_bytes(doc)


def answer(model: Any, payload: bytes, *, content_type: str | None = None,
           codec: str = "auto", name: str | None = None, version: str | None = None,
           meta: Mapping[str, Any] | None = None, base64_field: str = "data",
           max_payload_bytes: int = DEFAULT_MAX_PAYLOAD) -> bytes:
    """One payload -> the result payload the bridge would publish (JSON bytes).

    `name`/`version` default to the model's own; `meta` is echoed into the result (e.g.
    ``{"topic": ..., "correlation": ...}``). Raises `PayloadError` or the model's
    `EdgepackError` for a message it cannot answer; `answer_or_error` never raises for those.
    """
    start = time.perf_counter()
    result, extras = predict_payload(model, payload, codec=codec, content_type=content_type,
                                     base64_field=base64_field,
                                     max_payload_bytes=max_payload_bytes)
    latency = (time.perf_counter() - start) * 1000.0
    return encode(result_document(name or model.name, version or model.version, result,
                                  latency, {**extras, **(meta or {})}))


def answer_or_error(model: Any, payload: bytes, **options: Any) -> tuple[bool, bytes]:
    """Like `answer`, but a refused message gives (False, error payload) instead of raising."""
    try:
        return True, answer(model, payload, **options)
    except EdgepackError as exc:
        return False, encode(error_document(str(exc), options.get("meta")))
