"""`model.stream()`: run a bundle over audio (or frames) arriving in chunks of any size.

The manifest's `stream` field declares it (DESIGN §7):

    "stream": {"rate": 16000, "window": 512, "hop": 512, "context": 64,
               "input": "input",                       # the input that gets the samples
               "constants": {"sr": 16000},             # other inputs, fed as given
               "state": [{"input": "state", "output": "stateN", "init": 0.0,
                          "dtype": "float32"}]}

`push(samples)` buffers samples and runs the model once per complete window: the input
gets `context` samples from before the window (zeros at the start) followed by `window`
samples; windows start `hop` samples apart. Each state input is fed the state output of
the previous run (its `init` value at the start and after `reset()`). Per-input
preprocessing (e.g. `log_mel`) and per-output postprocessing run on every window; the
manifest's `decode` steps (`events`, `segments`) see the window's position in the stream
and keep their state per stream, and `push` returns the events/segments completed so far.
A trailing partial window is not run; `flush()` closes open segments at the end.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from .errors import InputError, PipelineError
from .ops.audio.events import StreamClock
from .ops.trace import Trace
from .specs import format_shape
# the configuration and the windowing live in their own modules; importers of
# `edgepack.runtime.stream` (declare_stream in the docs) keep finding them here
from .stream_config import (StatePair, StreamConfig, constant_input, declare_stream,
                            initial_state)
from .windowing import Windower

__all__ = ["Stream", "StreamConfig", "StatePair", "WindowResult", "Windower",
           "declare_stream", "stream_clip"]

log = logging.getLogger(__name__)

RESULT_KEYS = ("events", "segments")
LEAN_DECODERS = ("events", "segments")  # decode steps that keep no array they are given


class WindowResult(NamedTuple):
    """One model run of a stream: its window's place, the raw outputs, the result dict.
    (A NamedTuple: one is made per window, on the hot path.)"""

    index: int
    t_s: float
    end_s: float
    outputs: dict[str, np.ndarray]
    result: dict[str, Any]


class Stream:
    """Chunks in, events out; see the module docstring. Made by `Model.stream()`."""

    def __init__(self, model, config: StreamConfig | None = None):
        from .model import _fit  # the same last touches predict() makes
        m = model.manifest
        self.model = model
        self.config = config or StreamConfig.from_manifest(m.stream, model.inputs,
                                                           model.outputs, m.examples)
        cfg = self.config
        self._fit = _fit
        self._spec = next(s for s in model.inputs if s.name == cfg.input)
        self._pre = model._preprocess[cfg.input]
        self._has_pre = bool(m.preprocess.get(cfg.input))
        if not self._has_pre and cfg.rate is not None and -1 not in self._spec.shape and \
                int(np.prod(self._spec.shape)) != cfg.span:
            raise PipelineError(
                f"stream: input {cfg.input!r} is {format_shape(self._spec.shape)} but a window "
                f"is context {cfg.context} + window {cfg.window} = {cfg.span} samples")
        self._constants = {}
        for name, value in cfg.constants.items():
            spec = next(s for s in model.inputs if s.name == name)
            self._constants[name] = constant_input(spec, value)
        self._windower = Windower(cfg.window, cfg.hop, cfg.context)
        # a window that already is the input tensor (samples -> [1, span] float32) skips _fit
        shape = self._spec.shape
        self._direct_shape = (1, cfg.span) if (cfg.rate is not None and len(shape) == 2 and
                                               shape[0] in (1, -1) and shape[1] in (cfg.span, -1)
                                               and not self._spec.is_quantized) else None
        self._direct_dtype = np.dtype(self._spec.dtype) if self._spec.dtype != "string" else None
        self._checked = False
        self._frames = cfg.rate is None
        state_outputs = {p.output for p in cfg.state}
        quantized = any(s.is_quantized for s in model.outputs)
        plain = not quantized and not any(m.postprocess.get(s.name) for s in model.outputs)
        self._state_outputs = state_outputs
        self._postprocess = model.postprocess
        if plain and model._decode is not None:
            decode = model._decode
            # nothing to dequantize or postprocess: straight to the decoders, without
            # the state outputs (they are carried, not results)
            self._postprocess = lambda outputs, trace: decode(
                {k: v for k, v in outputs.items() if k not in state_outputs}, trace)
        self._window_s = cfg.window / cfg.rate if cfg.rate else 0.0
        self._hop_s = cfg.hop / cfg.rate if cfg.rate else 0.0
        self._result_outputs = tuple(s.name for s in model.outputs if s.name not in state_outputs)
        self._decode = model._decode if plain else None
        # push() may hand the decoders the engine's output buffers themselves (no copy)
        # when they are the event/segment steps, which keep only Python numbers.
        self._lean = self._decode is not None and all(
            isinstance(step, Mapping) and step.get("op") in LEAN_DECODERS for step in m.decode)
        # One feeds dict for the stream's life: constants set once, the window and the
        # state refreshed in place per run (no per-window dict building).
        self._feeds: dict[str, Any] = dict(self._constants)
        self._bound: _BoundSession | None = None
        self.reset()
        if self._direct_shape is not None and self._direct_dtype == np.float32:
            self._bound = _BoundSession.make(model, cfg, self._direct_shape, self._feeds)
            if self._bound is not None:
                self._bound.set_state(self._state)
                # per binding, built once: all outputs (flush reads their shapes) and the
                # ones the decoders get (push's lean path hands them the buffers)
                self._out_dicts = [dict(o) for o in self._bound.outputs]
                self._decode_dicts = [{n: b for n, b in o if n not in state_outputs}
                                      for o in self._bound.outputs]

    # -- state ------------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the start: state inputs to their init values, buffers and events cleared."""
        self._state = {p.input: initial_state(p) for p in self.config.state}
        self._feeds.update(self._state)
        if self._bound is not None:
            self._bound.parity = 0
            self._bound.set_state(self._state)  # in place: the engine reads these buffers
            for window in self._bound.windows:  # push() takes the context from the last one
                window[:] = 0
        self._step_state: dict = {}
        # one Trace and one StreamClock per stream, moved along per window
        self._trace = Trace()
        self._clock = StreamClock(0.0, self._window_s, self._hop_s if self.config.rate else 0.0,
                                  self._step_state)
        self._trace.notes["stream"] = self._clock
        self._windower.reset()
        self._last_post: dict[str, Any] | None = None
        self._end_s = 0.0

    @property
    def state(self) -> dict[str, np.ndarray]:
        """The state that the next run will be fed (by state input name)."""
        if self._bound is not None:
            return self._bound.state()
        return dict(self._state)

    # -- data -------------------------------------------------------------------------------
    def push(self, samples: Any) -> list[dict[str, Any]]:
        """Add samples (float in [-1, 1], or int16 PCM); return the events/segments that
        the complete windows among them produced, in time order."""
        if not self._lean or self._bound is None:
            return self.collect(self.windows(samples))
        items = _as_items(samples, False)
        windower = self._windower
        if windower.exact(len(items)):
            # the usual chunk (hop == window samples, nothing pending): the window is put
            # together in the bound input buffer itself, [context tail of the last window |
            # the chunk], without the windower's buffer and a second copy
            bound = self._bound
            k, context = bound.parity, self.config.context
            window = bound.windows[k]
            if context:
                window[:context] = bound.windows[1 - k][-context:]
            window[context:] = items
            index = windower.skip(len(items))
            t0 = index * self._hop_s
            result = self._run_bound(index, None, t0, t0 + self._window_s, False)
            found: list = []
            for key in RESULT_KEYS:
                if key in result:
                    found.extend(result[key])
            return found
        if windower.stale:
            self._seed_windower()
        ready = windower.push(items)
        if not ready:
            return ready
        found: list = []
        hop_s, window_s, run = self._hop_s, self._window_s, self._run_bound
        for index, window, _ in ready:
            t0 = index * hop_s
            result = run(index, window, t0, t0 + window_s, False)
            for key in RESULT_KEYS:
                if key in result:
                    found.extend(result[key])
        return found

    def _seed_windower(self) -> None:
        bound, context = self._bound, self.config.context
        last = bound.windows[1 - bound.parity]  # the window run last
        self._windower.seed(last[len(last) - context:].copy())

    def windows(self, samples: Any, times: np.ndarray | None = None) -> list[WindowResult]:
        """Add samples (or frames, for a chained stage) and run every complete window."""
        if self._windower.stale:
            self._seed_windower()
        ready = self._windower.push(_as_items(samples, self._frames), times)
        if not ready:
            return ready
        run = self._run_bound if self._bound is not None else self._run
        results = []
        for index, window, item_times in ready:
            if item_times is not None:
                t0, t1 = float(item_times[0, 0]), float(item_times[-1, 1])
            else:
                t0 = index * self._hop_s
                t1 = t0 + self._window_s
            results.append(run(index, window, t0, t1))
        return results

    def _move_clock(self, t0: float, t1: float) -> Trace:
        clock = self._clock
        clock.t_s, clock.window_s = t0, t1 - t0
        if self.config.rate is None:
            clock.hop_s = t1 - t0
        return self._trace

    def _run_bound(self, index: int, window: np.ndarray, t0: float, t1: float,
                   keep: bool = True) -> Any:
        """The hot path (ONNX Runtime, samples straight into the input): the window is
        copied into the bound input buffer and the engine writes into bound output buffers
        (see _BoundSession). With keep=False (push with event/segment decoders) the
        decoders read those buffers and only the result dict is returned."""
        bound = self._bound
        k = bound.parity
        if window is not None:  # None: push() assembled it in place
            np.copyto(bound.windows[k], window)
        bound.runs[k]()  # EngineError from the engine
        bound.parity = 1 - k
        self._end_s = t1
        clock = self._clock
        clock.t_s, clock.window_s = t0, t1 - t0
        if not keep:
            self._last_post = self._out_dicts[k]
            return self._decode(self._decode_dicts[k], self._trace)
        outputs = {name: buf.copy() for name, buf in bound.outputs[k]}
        self._last_post = outputs
        if self._decode is not None:
            result = self._decode({n: outputs[n] for n in self._result_outputs}, self._trace)
        else:
            result = self._postprocess(outputs, self._trace)
        return WindowResult(index, t0, t1, outputs, result)

    def _run(self, index: int, window: np.ndarray, t0: float, t1: float) -> WindowResult:
        model = self.model
        trace = self._move_clock(t0, t1)
        if self._has_pre:
            trace.geometry.clear()
            value = self._fit(np.asarray(self._pre(window, trace)), self._spec)
        elif self._direct_shape is not None and window.dtype == self._direct_dtype:
            value = window.reshape(self._direct_shape)  # the common case: no copy, no checks
        else:
            value = self._fit(np.asarray(window), self._spec)
        feeds = self._feeds
        feeds[self.config.input] = value
        trace.feeds = feeds
        if self._checked:
            outputs = model._run(feeds)  # checked on the first run
        else:
            outputs = model.run(feeds)
            self._checked = True
        for pair in self.config.state:
            feeds[pair.input] = self._state[pair.input] = outputs[pair.output]
        result = self._postprocess(outputs, trace)
        self._last_post = outputs
        self._end_s = t1
        return WindowResult(index, t0, t1, outputs, result)

    @staticmethod
    def collect(results: Sequence[WindowResult]) -> list[dict[str, Any]]:
        """The events and segments of several windows' results, in time order."""
        found = []
        for r in results:
            for key in RESULT_KEYS:
                found.extend(r.result.get(key, ()))
        return found

    def flush(self) -> list[dict[str, Any]]:
        """End of input: close open segments at the last window's end (events need no flush)."""
        model = self.model
        if self._last_post is None or model._decode is None:
            return []
        trace = Trace()
        trace.notes["stream"] = StreamClock(self._end_s, 0.0, 0.0, self._step_state, final=True)
        empty = {}
        for spec in model.outputs:
            v = np.asarray(self._last_post[spec.name])
            empty[spec.name] = np.zeros((0, v.shape[-1] if v.ndim else 1), np.float32)
        result = model._decode(empty, trace)
        return [e for key in RESULT_KEYS for e in result.get(key, ())]

    def close(self) -> None:
        """Forget this stream's state (the model stays loaded)."""
        self.reset()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _BoundSession:
    """The engine bound to buffers allocated once per stream (the hot path; ONNX Runtime's
    IOBinding through OnnxRuntimeEngine.bind).

    Every input is bound to a numpy buffer that ORT reads in place: constants written
    once, the window copied in per run. Outputs are bound to preallocated buffers of their
    static shapes, so a run allocates nothing and crosses into ORT once. Two bindings
    alternate: each one's state inputs are the other one's state output buffers, so the
    state is carried without a copy (run k writes what run k+1 reads, and run k's outputs
    stay intact until run k+2). Made only when the engine can bind and every shape is
    static; otherwise the stream feeds a dict (same results).
    """

    __slots__ = ("runs", "windows", "outputs", "reads", "parity")

    @classmethod
    def make(cls, model, cfg: StreamConfig, window_shape, feeds) -> "_BoundSession | None":
        if not model.can_bind:
            return None
        real_out = {s.name: s for s in model.engine_outputs}
        out_specs = [real_out.get(s.name) for s in model.outputs]
        if any(o is None or -1 in o.shape or o.dtype == "string" for o in out_specs):
            return None
        arrays = {cfg.input: np.zeros(window_shape, np.dtype(_dtype_of(model, cfg.input)))}
        for name, value in feeds.items():
            if name not in arrays:
                arrays[name] = np.array(value, copy=True, order="C")
        if any(a.dtype.kind not in "fiub" for a in arrays.values()):
            return None
        out_by_name = {o.name: o for o in out_specs}
        for p in cfg.state:
            o, a = out_by_name[p.output], arrays[p.input]
            if tuple(o.shape) != a.shape or np.dtype(o.dtype) != a.dtype:
                return None  # state output and input differ: carried through dicts
        # the checks the first run would make (names, dtypes, shapes), made once here
        model.check_feeds(arrays)
        try:
            return cls(model.bind, arrays, out_specs, cfg)
        except Exception as e:  # an engine that cannot bind these: the dict path is correct too
            log.debug("stream: no IOBinding (%s); feeding dicts", e)
            return None

    def __init__(self, bind, arrays, out_specs, cfg: StreamConfig):
        state_in = {p.input: p.output for p in cfg.state}
        self.runs, self.outputs, self.windows = [], [], []
        for _ in range(2):
            outs = {spec.name: np.zeros(spec.shape, np.dtype(spec.dtype)) for spec in out_specs}
            self.outputs.append(tuple(outs.items()))
        for k in range(2):
            window = np.zeros_like(arrays[cfg.input])
            inputs = {}
            for name, a in arrays.items():
                if name in state_in:   # read what the other binding's run wrote
                    a = dict(self.outputs[1 - k])[state_in[name]]
                elif name == cfg.input:
                    a = window
                inputs[name] = a
            self.runs.append(bind(inputs, dict(self.outputs[k])))
            self.windows.append(window.reshape(-1))
        # per binding: {state input: the buffer its next run reads}
        self.reads = [{p.input: dict(self.outputs[1 - k])[p.output] for p in cfg.state}
                      for k in range(2)]
        self.parity = 0

    def set_state(self, state: Mapping[str, np.ndarray]) -> None:
        """The state the next run reads (reset)."""
        for name, buf in self.reads[self.parity].items():
            np.copyto(buf, state[name])

    def state(self) -> dict[str, np.ndarray]:
        return {name: buf.copy() for name, buf in self.reads[self.parity].items()}


def _dtype_of(model, name: str) -> str:
    return next(s.dtype for s in model.inputs if s.name == name)


def _as_items(samples: Any, frames: bool) -> np.ndarray:
    if type(samples) is np.ndarray and samples.dtype == np.float32 and samples.ndim == 1:
        return samples  # the common case, checked in one line
    a = np.asarray(samples)
    if a.dtype == np.int16:
        return a.reshape(-1).astype(np.float32) * np.float32(1.0 / 32768.0)
    if a.dtype.kind not in "fiu":
        raise InputError(f"stream.push takes numeric samples, got {a.dtype}")
    if frames:
        return a  # frames from an upstream stage: (n, *frame_shape)
    if a.ndim > 1:
        if max(a.shape) != a.size:
            raise InputError(f"stream.push takes mono samples (1-D), got shape {a.shape}")
        a = a.reshape(-1)
    return a.astype(np.float32, copy=False)


def stream_clip(stream, samples: Any) -> dict[str, Any]:
    """Push a whole clip through a fresh stream and flush it: the task's result dict
    ({"segments": [...]} and/or {"events": [...]}); what `edgepack run` prints for audio."""
    results = stream.windows(samples)
    found = Stream.collect(results) + stream.flush()
    keys = set()
    for r in results:
        keys.update(k for k in RESULT_KEYS if k in r.result)
    out = {key: [e for e in found if ("t_s" in e) == (key == "events")] for key in sorted(keys)}
    if not keys:  # no events/segments decoder: the per-window results
        out = {"windows": [{"t_s": round(r.t_s, 6),
                            **{k: _plain(v) for k, v in r.result.items()}} for r in results]}
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
