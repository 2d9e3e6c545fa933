"""Hysteresis, refractory period, minimum durations and segments against hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest

from edgepack.runtime.errors import PipelineError
from edgepack.runtime.ops import Context, compile_steps
from edgepack.runtime.ops.audio.events import StreamClock
from edgepack.runtime.ops.trace import Trace
from edgepack.runtime.specs import TensorSpec

OUT = (TensorSpec("p", (1, -1), "float32"),)


def decoder(step, labels=None):
    return compile_steps([step], Context(labels=labels, outputs=OUT), "decode", kind="decode")


def stream_run(fn, scores, hop_s=0.1, window_s=0.1, key="events"):
    """Feed one frame per call as a stream does; frame i's window starts at i * hop_s."""
    state, found = {}, []
    for i, s in enumerate(scores):
        trace = Trace()
        trace.notes["stream"] = StreamClock(i * hop_s, window_s, hop_s, state)
        found += fn({"p": np.asarray([s], np.float32).reshape(1, -1)}, trace)[key]
    trace = Trace()
    trace.notes["stream"] = StreamClock(len(scores) * hop_s, 0.0, 0.0, state, final=True)
    found += fn({"p": np.zeros((0, np.size(scores[0])), np.float32)}, trace)[key]
    return found


def test_hysteresis_one_event_per_crossing():
    # on 0.6 / off 0.3: 0.5 after 0.7 stays on (no new event); drop to 0.2 then 0.7 -> second
    fn = decoder({"op": "events", "on": 0.6, "off": 0.3}, ["kw"])
    scores = [0.1, 0.7, 0.5, 0.65, 0.2, 0.7, 0.1]
    events = stream_run(fn, scores)
    # event times: centre of the onset window (start i*0.1 + 0.05)
    assert events == [{"t_s": 0.15, "label": "kw", "score": 0.7},
                      {"t_s": 0.55, "label": "kw", "score": 0.7}]


def test_without_hysteresis_every_recrossing_fires():
    fn = decoder({"op": "events", "on": 0.6}, ["kw"])  # off defaults to on
    assert [e["t_s"] for e in stream_run(fn, [0.1, 0.7, 0.5, 0.65, 0.2, 0.7])] == [0.15, 0.35, 0.55]


def test_refractory_period_suppresses_onsets():
    fn = decoder({"op": "events", "on": 0.6, "refractory_s": 0.35}, ["kw"])
    # onsets at frames 1, 3, 5 (t 0.15, 0.35, 0.55): 0.35 is 0.2 s after 0.15 -> suppressed;
    # 0.55 is 0.4 s after the last event -> fires
    assert [e["t_s"] for e in stream_run(fn, [0, 0.9, 0, 0.9, 0, 0.9, 0])] == [0.15, 0.55]


def test_min_event_duration_and_peak_score():
    fn = decoder({"op": "events", "on": 0.5, "min_event_s": 0.2}, ["kw"])
    # first burst lasts 2 frames (0.1 s apart: duration 0.1 < 0.2) -> dropped;
    # second lasts 3 frames -> fires at its onset with the peak seen until firing
    events = stream_run(fn, [0.9, 0.8, 0.0, 0.6, 0.95, 0.7, 0.99, 0.0])
    assert events == [{"t_s": 0.35, "label": "kw", "score": 0.95}]


def test_multiclass_ignores_background_and_labels_events():
    fn = decoder({"op": "events", "on": 0.5}, ["_silence_", "yes", "no"])
    frames = [[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.9, 0.0, 0.1]]
    assert [(e["label"], e["t_s"]) for e in stream_run(fn, frames)] == [("yes", 0.15), ("no", 0.25)]
    only_no = decoder({"op": "events", "on": 0.5, "classes": ["no"]}, ["_silence_", "yes", "no"])
    assert [e["label"] for e in stream_run(only_no, frames)] == ["no"]


def test_segments_hand_computed():
    # windows of 0.1 s: speech in frames 2-4 and 6-7 with a 1-frame gap (0.1 s) and
    # min_silence 0.15 -> one merged segment [0.2, 0.8); then frames 11-12 alone.
    fn = decoder({"op": "segments", "on": 0.5, "off": 0.35, "min_silence_s": 0.15})
    p = [0, 0, .9, .6, .4, 0.2, .8, .9, 0, 0, 0, .7, .9, 0, 0]
    segs = stream_run(fn, p, key="segments")
    assert segs == [{"start_s": 0.2, "end_s": 0.8, "label": "speech", "score": 0.9},
                    {"start_s": 1.1, "end_s": 1.3, "label": "speech", "score": 0.9}]


def test_segments_min_duration_and_flush_closes_open_segment():
    fn = decoder({"op": "segments", "on": 0.5, "min_event_s": 0.25, "label": "voice"})
    segs = stream_run(fn, [0.9, 0.0, 0.0, 0.8, 0.8, 0.8], key="segments")
    # the first burst (0.1 s) is too short; the last is open at the end and closed by flush
    assert segs == [{"start_s": 0.3, "end_s": 0.6, "label": "voice", "score": 0.8}]


def test_outside_a_stream_frames_are_frame_s_apart():
    fn = decoder({"op": "segments", "on": 0.5, "frame_s": 0.032})
    out = fn({"p": np.array([[0.1, 0.9, 0.9, 0.1]], np.float32).T}, Trace())
    assert out == {"segments": [{"start_s": 0.032, "end_s": 0.096, "label": "speech", "score": 0.9}]}


def test_smooth_moving_average_keeps_state_per_stream():
    fn = compile_steps([{"op": "smooth", "k": 3}], Context(spec=OUT[0]))
    state = {}
    outs = []
    for v in [3.0, 0.0, 0.0, 6.0]:
        t = Trace()
        t.notes["stream"] = StreamClock(0, 0.1, 0.1, state)
        outs.append(float(fn(np.array([[v]], np.float32), t)[0, 0]))
    assert outs == [3.0, 1.5, 1.0, 2.0]
    assert fn(np.array([[3.0], [0.0], [0.0], [6.0]], np.float32)).ravel().tolist() == [3, 1.5, 1, 2]


@pytest.mark.parametrize("step,message", [
    ({"op": "events", "on": 0.3, "off": 0.5}, "must be <= 'on'"),
    ({"op": "events", "labels": "yes"}, "list of strings"),
    ({"op": "segments", "min_silence_s": "x"}, "finite number"),
])
def test_bad_event_parameters(step, message):
    with pytest.raises(PipelineError, match=message):
        decoder(step)
