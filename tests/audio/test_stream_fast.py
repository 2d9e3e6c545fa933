"""The stream's hot path (ONNX Runtime IOBinding over preallocated, alternating buffers)
gives exactly what the plain dict path and a hand-written ORT loop give."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import toys
from edgepack.runtime import load, pack_bundle
from edgepack.runtime import stream as stream_mod

SEGMENTS = [{"op": "segments", "scores": "output", "on": 0.5, "off": 0.35,
             "min_silence_s": 0.05}]


@pytest.fixture(scope="module")
def rvad(tmp_path_factory):
    path = pack_bundle(tmp_path_factory.mktemp("rvad") / "rvad.edgepack", toys.recurrent_vad(),
                       name="rvad", examples={"sr": {"value": 16000}},
                       stream={"rate": 16000, "window": 512, "context": 64,
                               "state": [{"input": "state", "output": "stateN", "init": 0.1}]},
                       decode=SEGMENTS)
    with load(path, threads=1) as model:
        yield model


def _signal(seed):
    rng = np.random.default_rng(seed)
    parts = [rng.normal(0, s, int(16000 * d)) for s, d in
             ((0.01, 0.5), (0.4, 0.4), (0.01, 0.6), (0.5, 0.3), (0.02, 0.4))]
    return np.concatenate(parts).astype(np.float32)


def _by_hand(x, windows):
    """Bare ORT: [64 context | 512 new] windows, state carried, sr = 16000."""
    session = ort.InferenceSession(toys.recurrent_vad(), providers=["CPUExecutionProvider"])
    padded = np.r_[np.zeros(64, np.float32), x]
    state = np.full((2, 1, 8), 0.1, np.float32)
    outs, states = [], []
    for k in range(windows):
        out, state = session.run(None, {"input": padded[512 * k:512 * k + 576][None],
                                        "sr": np.array([16000], np.int64), "state": state})
        outs.append(out.copy())
        states.append(state.copy())
    return outs, states


@pytest.mark.parametrize("seed", [0, 1])
def test_bound_stream_equals_a_hand_written_ort_loop(rvad, seed):
    x = _signal(seed)
    stream = rvad.stream()
    assert stream._bound is not None  # this test is about the IOBinding path
    rng = np.random.default_rng(seed)
    results = [w for c in toys.random_chunks(x, rng, 1500) for w in stream.windows(c)]
    n = len(x) // 512
    assert len(results) == n
    outs, states = _by_hand(x, n)
    # every window's outputs are its own (not overwritten by the later runs)
    for r, o, s in zip(results, outs, states):
        assert np.array_equal(r.outputs["output"], o) and np.array_equal(r.outputs["stateN"], s)
    assert np.array_equal(stream.state["state"], states[-1])
    stream.reset()
    assert np.array_equal(stream.state["state"], np.full((2, 1, 8), 0.1, np.float32))
    again = stream.windows(x)
    assert [r.outputs["output"].item() for r in again] == [o.item() for o in outs]


def test_push_segments_same_on_bound_and_dict_paths(rvad, monkeypatch):
    x = np.tile(_signal(2), 2)
    fast = rvad.stream()
    fast_segments = [e for i in range(0, len(x), 512) for e in fast.push(x[i:i + 512])]
    fast_segments += fast.flush()
    monkeypatch.setattr(stream_mod._BoundSession, "make", classmethod(lambda *a: None))
    slow = rvad.stream()
    assert slow._bound is None
    rng = np.random.default_rng(3)
    slow_segments = [e for c in toys.random_chunks(x, rng, 1500) for e in slow.push(c)] + slow.flush()
    assert fast_segments == slow_segments
    assert len(fast_segments) == 4  # two loud parts per copy of the signal
    assert np.array_equal(fast.state["state"], slow.state["state"])


def test_two_streams_of_one_model_are_independent(rvad):
    x = _signal(4)
    a, b = rvad.stream(), rvad.stream()
    quiet = np.zeros(len(x), np.float32)
    out_a, out_b = [], []
    for i in range(0, len(x), 512):
        out_a += [r.outputs["output"].item() for r in a.windows(x[i:i + 512])]
        out_b += [r.outputs["output"].item() for r in b.windows(quiet[i:i + 512])]
    outs, _ = _by_hand(x, len(x) // 512)
    assert out_a == [o.item() for o in outs]
    assert max(out_b) < 0.5


def test_push_mixing_whole_and_odd_chunks_carries_the_right_context_and_state(rvad):
    """push() puts an exact 512-sample chunk straight into the bound buffer (context from
    the last window); odd chunks go through the windower, which is re-seeded from that
    context: after every push the state equals the hand loop's after as many windows."""
    x = _signal(6)
    n = len(x) // 512
    _, states = _by_hand(x, n)
    sizes = [512, 512, 100, 412, 512, 700, 324, 512, 512, 1, 511, 1024, 512, 3000, 512]
    for attempt in range(2):  # the second time after reset(): no context left over
        stream = rvad.stream() if attempt == 0 else stream
        pos = 0
        for size in sizes * 3:
            if pos + size > len(x):
                break
            stream.push(x[pos:pos + size])
            pos += size
            if pos >= 512:
                assert np.array_equal(stream.state["state"], states[pos // 512 - 1]), (attempt, pos)
        assert pos // 512 > 20
        stream.reset()
