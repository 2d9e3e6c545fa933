"""PCM messages into a bundle's `model.stream()`: one stream per source topic.

A bundle whose manifest declares `stream` (window, hop, context, state; runtime/stream.py)
is fed PCM payloads as chunks of one continuous signal per topic (a microphone per topic),
so windows span message boundaries and state carries over. The answer to each message holds
what the windows it completed produced: ``{"windows": N, "events": [...]}`` (or
``"segments"``), or, for a bundle without an events/segments decoder, the per-window results
under ``"results"``. Times are seconds since that topic's first message.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Hashable

import numpy as np

RESULT_KEYS = ("events", "segments")


def is_streaming(model: Any) -> bool:
    """True when `model` has a `stream()` and its manifest declares a stream."""
    manifest = getattr(model, "manifest", None)
    return bool(getattr(manifest, "stream", None)) and callable(getattr(model, "stream", None))


class StreamCache:
    """Streams by key (topic, model, version), the least recently used dropped beyond
    `limit` so a thousand short-lived topics cannot grow memory without bound."""

    def __init__(self, limit: int = 256):
        self.limit = limit
        self._streams: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def push(self, key: Hashable, model: Any, samples: np.ndarray) -> dict[str, Any]:
        """Feed `samples` to the stream of `key` (made on first use); the windows' results."""
        with self._lock:
            stream = self._streams.pop(key, None)
            if stream is None:
                stream = model.stream()
            self._streams[key] = stream
            while len(self._streams) > self.limit:
                _, old = self._streams.popitem(last=False)
                _close(old)
        results = stream.windows(samples)
        out: dict[str, Any] = {"windows": len(results)}
        found = [r.result for r in results]
        keys = [k for k in RESULT_KEYS if any(k in r for r in found)]
        for key in keys:
            out[key] = [item for r in found for item in r.get(key, ())]
        if not keys and results:
            out["results"] = [{"t_s": round(r.t_s, 6), **r.result} for r in results]
        return out

    def close(self) -> None:
        with self._lock:
            streams, self._streams = list(self._streams.values()), OrderedDict()
        for stream in streams:
            _close(stream)


def _close(stream: Any) -> None:
    close = getattr(stream, "close", None)
    if callable(close):
        close()
