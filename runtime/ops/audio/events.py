"""Score frames -> events and segments, with small per-stream state (DESIGN §7).

- `smooth` (per-tensor step): causal moving average over the last `k` frames.
- `events` (decode step): threshold with hysteresis (`on`/`off`), a minimum duration before
  an event fires (`min_event_s`) and a refractory period per label (`refractory_s`) ->
  `{"events": [{"t_s", "label", "score"}]}` (keywords, sound events). `t_s` is the onset: the
  centre of the first window at or above `on`; `score` the highest score up to firing.
- `segments` (decode step): the same hysteresis, closed after `min_silence_s` below `off`,
  kept when at least `min_event_s` long -> `{"segments": [{"start_s", "end_s", "label",
  "score"}]}` (voice activity). `start_s`/`end_s` are window edges; `score` the maximum.

Timing and state come from the call's Trace: a stream (runtime/stream.py) puts
`trace.notes["stream"] = StreamClock(...)` with the window's start, length, hop and a state
dict that lives as long as the stream (cleared by `reset()`). Outside a stream (one
`predict`), the frames of the output are spaced `frame_s` apart from t=0 and the state is
fresh for each call (open segments close at the last frame).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .. import Context, Params, register_decode, register_op, traced
from ..trace import Trace

DEFAULT_IGNORE = ("_silence_", "_unknown_", "_background_", "_background_noise_",
                  "silence", "unknown", "background", "noise")


@dataclass(slots=True)
class StreamClock:
    """Where the current window sits in the stream; `state` is owned by the stream."""

    t_s: float                 # start of the window (seconds from the stream's start)
    window_s: float            # its length
    hop_s: float               # distance to the next window
    state: dict = field(default_factory=dict)
    final: bool = False

    def frame_times(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(starts, ends) of `n` output frames spread over this window's hop."""
        if n == 1:
            return (self.t_s,), (self.t_s + self.window_s,)
        step = self.hop_s / max(n, 1)
        starts = self.t_s + step * np.arange(n)
        return starts, starts + (self.window_s - self.hop_s) + step


def _clock(trace: Trace | None, frame_s: float, n: int) -> StreamClock:
    clock = trace.notes.get("stream") if trace is not None else None
    if type(clock) is StreamClock:
        return clock
    return StreamClock(0.0, frame_s * max(n, 1), frame_s * max(n, 1), {}, final=True)


def _frames(x: Any) -> np.ndarray:
    a = x if type(x) is np.ndarray and x.dtype == np.float32 else np.asarray(x, dtype=np.float32)
    if a.ndim == 2:
        return a
    if a.ndim <= 1:  # a scalar score, or one score per frame
        return a.reshape(-1, 1)
    return a.reshape(-1, a.shape[-1])


# -- smoothing ------------------------------------------------------------------------------
@register_op("smooth")
def _smooth(p: Params, ctx: Context):
    """`{"op": "smooth", "k": 3}`: each frame -> mean of it and the k-1 frames before it."""
    k = p.integer("k", 3, minimum=1)
    key = p.where

    @traced
    def run(x, trace):
        a = np.asarray(x, dtype=np.float32)
        frames = _frames(a)
        clock = trace.notes.get("stream") if trace is not None else None
        state = clock.state if isinstance(clock, StreamClock) else {}
        history = state.get(key)
        if history is None or history.maxlen != k - 1:
            history = state[key] = deque(maxlen=max(k - 1, 0))
        out = np.empty_like(frames)
        for i, f in enumerate(frames):
            total = f.copy()
            for h in history:
                total += h
            out[i] = total / (len(history) + 1)
            if k > 1:
                history.append(f.copy())
        return out.reshape(a.shape)
    return run


# -- events and segments -----------------------------------------------------------------------
@dataclass
class _Track:
    active: bool = False
    onset: float = 0.0
    start: float = 0.0
    end: float = 0.0
    peak: float = 0.0
    fired: bool = False
    last_fire: float | None = None
    below_since: float | None = None


class _Detector:
    """Shared parameter parsing for `events` and `segments`."""

    def __init__(self, p: Params, ctx: Context, default_label: str | None):
        self.scores = p.string("scores") if p.has("scores") else (
            ctx.outputs[0].name if len(ctx.outputs) == 1 else None)
        if self.scores is None:
            raise p.fail("'scores' must name the output holding the scores; the model has "
                         f"{[s.name for s in ctx.outputs]}")
        self.on = p.number("on", 0.5)
        self.off = p.number("off", self.on)
        if self.off > self.on:
            raise p.fail(f"'off' ({self.off}) must be <= 'on' ({self.on}): hysteresis keeps "
                         "an event on until the score falls below 'off'")
        self.min_event_s = p.number("min_event_s", 0.0)
        self.frame_s = p.number("frame_s", 1.0)
        labels = p.get("labels")
        if labels is not None and (not isinstance(labels, list) or
                                   not all(isinstance(v, str) for v in labels)):
            raise p.fail("'labels' must be a list of strings")
        self.labels: Sequence[str] | None = labels or ctx.labels
        self.default_label = default_label
        classes = p.get("classes")
        if classes is not None and (not isinstance(classes, list) or not all(
                isinstance(c, (int, str)) and not isinstance(c, bool) for c in classes)):
            raise p.fail("'classes' must be a list of labels or class indices")
        self.classes = classes
        ignore = p.get("ignore", list(DEFAULT_IGNORE))
        if not isinstance(ignore, list):
            raise p.fail("'ignore' must be a list of labels")
        self.ignore = set(ignore)
        self.key = p.where
        self._watch: list[int] | None = None
        self.p = p

    def watched(self, n_classes: int) -> list[int]:
        if self._watch is not None and (not self._watch or self._watch[-1] < n_classes):
            return self._watch
        if self.classes is not None:
            out = []
            for c in self.classes:
                if isinstance(c, int):
                    out.append(c)
                elif self.labels is not None and c in self.labels:
                    out.append(list(self.labels).index(c))
                else:
                    raise ValueError(f"class {c!r} is not among the labels {self.labels}")
        else:
            out = [c for c in range(n_classes) if self.label(c) not in self.ignore]
        if any(c >= n_classes for c in out):
            raise ValueError(f"classes {out} do not fit a score vector of {n_classes}")
        self._watch = out
        return out

    def label(self, c: int) -> str:
        if self.labels is not None and c < len(self.labels):
            return self.labels[c]
        if self.default_label is not None and c == 0:
            return self.default_label
        return str(c)

    def tracks(self, state: dict) -> dict[int, _Track]:
        return state.setdefault(self.key, {})


@register_decode("events")
def _events(p: Params, ctx: Context):
    """`{"op": "events", "scores": "probs", "on": 0.6, "off": 0.4, "refractory_s": 1.0,
    "min_event_s": 0.0, "classes": [...], "ignore": [...]}` -> {"events": [...]}."""
    d = _Detector(p, ctx, None)
    refractory = p.number("refractory_s", 0.0)

    def run(tensors, trace):
        frames = _frames(tensors[d.scores])
        clock = _clock(trace, d.frame_s, len(frames))
        starts, ends = clock.frame_times(len(frames))
        tracks = d.tracks(clock.state)
        found = []
        watched = d.watched(frames.shape[1]) if len(frames) else ()
        for i, row in enumerate(frames.tolist()):
            t = float((starts[i] + ends[i]) / 2)
            for c in watched:
                s = row[c]
                tr = tracks.get(c)
                if tr is None:  # (setdefault would build a _Track per frame)
                    tr = tracks[c] = _Track()
                if not tr.active:
                    if s >= d.on and (tr.last_fire is None or t - tr.last_fire >= refractory - 1e-9):
                        tr.active, tr.onset, tr.peak, tr.fired = True, t, s, False
                    else:
                        continue
                elif s < d.off:
                    tr.active = False
                    continue
                tr.peak = max(tr.peak, s)
                if not tr.fired and t - tr.onset >= d.min_event_s - 1e-9:
                    tr.fired, tr.last_fire = True, tr.onset
                    found.append({"t_s": round(tr.onset, 6), "label": d.label(c),
                                  "score": round(tr.peak, 6)})
        if len(found) > 1:
            found.sort(key=lambda e: e["t_s"])
        return _merge(tensors, "events", found)
    return run


@register_decode("segments")
def _segments(p: Params, ctx: Context):
    """`{"op": "segments", "scores": "output", "on": 0.5, "off": 0.35, "min_event_s": 0.25,
    "min_silence_s": 0.1, "label": "speech"}` -> {"segments": [...]}."""
    d = _Detector(p, ctx, p.string("label", "speech"))
    min_silence = p.number("min_silence_s", 0.0) - 1e-9
    on, off, key = d.on, d.off, d.key

    def close(tr: _Track, c: int, out: list) -> None:
        tr.active, tr.below_since = False, None
        if tr.end - tr.start >= d.min_event_s - 1e-9:
            out.append({"start_s": round(tr.start, 6), "end_s": round(tr.end, 6),
                        "label": d.label(c), "score": round(tr.peak, 6)})

    def run(tensors, trace):
        frames = _frames(tensors[d.scores])
        clock = _clock(trace, d.frame_s, len(frames))
        starts, ends = clock.frame_times(len(frames))
        tracks = clock.state.get(key)
        if tracks is None:
            tracks = clock.state[key] = {}
        found: list = []
        watched = d.watched(frames.shape[1]) if len(frames) else ()
        for i, row in enumerate(frames.tolist()):  # Python floats: cheaper per element
            start, end = float(starts[i]), float(ends[i])
            for c in watched:
                s = row[c]
                tr = tracks.get(c)
                if tr is None:  # (setdefault would build a _Track per frame)
                    tr = tracks[c] = _Track()
                if not tr.active:
                    if s >= on:
                        tr.active, tr.start, tr.end, tr.peak, tr.below_since = True, start, end, s, None
                elif s >= off:
                    tr.end, tr.peak, tr.below_since = end, max(tr.peak, s), None
                else:
                    if tr.below_since is None:
                        tr.below_since = start
                    if end - tr.below_since >= min_silence:
                        close(tr, c, found)
        if clock.final:
            for c, tr in tracks.items():
                if tr.active:
                    close(tr, c, found)
        if len(found) > 1:
            found.sort(key=lambda e: e["start_s"])
        return _merge(tensors, "segments", found)
    return run


def _merge(tensors: dict, key: str, found: list) -> dict:
    """Keep results of earlier event steps, drop the raw tensors (the task's result only)."""
    if "events" not in tensors and "segments" not in tensors:
        return {key: found}
    out = {}
    for k in ("events", "segments"):
        if k in tensors:
            out[k] = tensors[k]
    out[key] = out[key] + found if key in out else found
    return out
