"""Stateful models over V2 with Triton's sequence parameters (DESIGN §8).

A request to a model whose manifest declares `stream.state` may carry
``"parameters": {"sequence_id": 7, "sequence_start": true, "sequence_end": false}``.
The server keeps the state tensors per (model, version, sequence_id): `sequence_start`
begins a sequence from the state's `init` values, each request feeds the stored state and
stores the state outputs, `sequence_end` forgets it after that request. The client sends
only the other inputs (e.g. `input`, `sr`) and gets the other outputs (state outputs too
when it asks for them by name).

Bounded: at most `max_sequences` live sequences per server and `idle_s` seconds without a
request before a sequence is dropped (both checked on every start). A start beyond the
bound answers 429; a request for an unknown or expired sequence answers 400 naming the
fix. Requests of one sequence run one at a time, in arrival order per connection.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import PipelineError
from .errors import RequestError
from .inference import Output, check_inputs, run_model
from .protocol import InferRequest

log = logging.getLogger(__name__)

SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")
DEFAULT_MAX_SEQUENCES = 64
DEFAULT_IDLE_S = 60.0


@dataclass
class _Sequence:
    state: dict[str, np.ndarray]
    last_used: float
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Inputs:
    """The model's specs minus the state inputs (what a sequence request must send)."""

    def __init__(self, model: Any, state_inputs: set[str]):
        self.inputs = tuple(s for s in model.inputs if s.name not in state_inputs)


class SequenceTable:
    """Live sequences of every model the server holds, bounded in number and idle time."""

    def __init__(self, max_sequences: int = DEFAULT_MAX_SEQUENCES, idle_s: float = DEFAULT_IDLE_S,
                 clock: Callable[[], float] = time.monotonic):
        self.max_sequences, self.idle_s, self._clock = max_sequences, idle_s, clock
        self._live: dict[tuple[str, str, Any], _Sequence] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._live)

    def run(self, model_name: str, version: str, model: Any, request: InferRequest) -> list[Output]:
        """Run one request of a sequence; raises RequestError (400/429/500)."""
        params = request.parameters
        sid = params.get("sequence_id")
        if isinstance(sid, bool) or not isinstance(sid, (int, str)) or sid in ("", 0):
            raise RequestError(400, "parameters.sequence_id must be a non-zero integer or a "
                                    f"non-empty string, got {sid!r}")
        start, end = bool(params.get("sequence_start")), bool(params.get("sequence_end"))
        pairs = _state_pairs(model, model_name)
        key = (model_name, version, sid)
        seq = self._begin(key, model, pairs) if start else self._find(key, model_name)
        with seq.lock:
            feeds = check_inputs(_Inputs(model, {p.input for p in pairs}), request)
            feeds.update(seq.state)
            results = run_model(model, feeds)
            seq.state = {p.input: results[p.output] for p in pairs}
            seq.last_used = self._clock()
        if end:
            with self._lock:
                self._live.pop(key, None)
        state_outputs = {p.output for p in pairs}
        binary = request.binary_output_default
        if request.outputs:
            missing = [o.name for o in request.outputs if o.name not in results]
            if missing:
                raise RequestError(400, f"model has no output(s) {missing}")
            return [(o.name, np.asarray(results[o.name]),
                     binary if o.binary is None else o.binary) for o in request.outputs]
        return [(s.name, np.asarray(results[s.name]), binary) for s in model.outputs
                if s.name not in state_outputs]

    def _begin(self, key, model, pairs) -> _Sequence:
        from ..stream_config import initial_state
        now = self._clock()
        with self._lock:
            self._expire(now)
            if key not in self._live and len(self._live) >= self.max_sequences:
                raise RequestError(429, f"{len(self._live)} sequences are live (the server "
                                        f"keeps at most {self.max_sequences}); end one with "
                                        "sequence_end or retry later")
            seq = self._live[key] = _Sequence({p.input: initial_state(p) for p in pairs}, now)
            return seq

    def _find(self, key, model_name) -> _Sequence:
        with self._lock:
            self._expire(self._clock())
            seq = self._live.get(key)
        if seq is None:
            raise RequestError(400, f"sequence {key[2]!r} of model {model_name!r} is not "
                                    f"running (never started, ended, idle over {self.idle_s:g} s, "
                                    "or the model was updated); send sequence_start: true")
        return seq

    def _expire(self, now: float) -> None:
        for key in [k for k, s in self._live.items() if now - s.last_used > self.idle_s]:
            log.info("sequence %r of %s idle for over %.0f s: dropped", key[2], key[0], self.idle_s)
            del self._live[key]


def is_sequence_request(request: InferRequest) -> bool:
    return any(k in request.parameters for k in SEQUENCE_PARAMETERS)


def _state_pairs(model: Any, model_name: str):
    from ..stream_config import StreamConfig
    manifest = getattr(model, "manifest", None)
    stream = getattr(manifest, "stream", None) if manifest is not None else None
    if not stream or not stream.get("state"):
        raise RequestError(400, f"model {model_name!r} keeps no state (its manifest has no "
                                "stream.state); send requests without sequence parameters")
    try:
        cfg = StreamConfig.from_manifest(stream, model.inputs, model.outputs,
                                         manifest.examples, needs_rate=False)
    except PipelineError as exc:
        raise RequestError(500, f"model {model_name!r}: {exc}") from None
    return cfg.state


_TABLES_LOCK = threading.Lock()


def sequences_for(app: Any) -> SequenceTable:
    """The server's sequence table (made on first use; bounds from the config when set)."""
    table = getattr(app, "sequences", None)
    if table is None:
        with _TABLES_LOCK:
            table = getattr(app, "sequences", None)
            if table is None:
                config = getattr(app, "config", None)
                table = SequenceTable(
                    getattr(config, "max_sequences", DEFAULT_MAX_SEQUENCES),
                    getattr(config, "sequence_idle_s", DEFAULT_IDLE_S))
                app.sequences = table
    return table
