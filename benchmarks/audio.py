"""Audio benchmarks (issue 14): run `python benchmarks/audio.py`.

1. log-mel of 1 s of 16 kHz audio (n_fft 512, hop 160, 40 mels): edgepack's `log_mel`
   step vs librosa.feature.melspectrogram + power_to_db (goal: <= 0.35x librosa), and one
   512-sample chunk.
2. `stream.push` of one 32 ms chunk (512 samples) vs the bare engine call on the same
   model and window (goal: overhead <= 1.05x), on a VAD-sized toy model (576 samples in,
   2x1x128 state, a few dense layers) built here.
3. Real-time factor of a full 60 s stream through that model (processing time / audio time).

librosa's mel product runs on OpenBLAS's worker threads, whose wake-up dominates on a busy
machine; edgepack keeps small products on the calling thread. Both settings are printed.
Timings are interleaved (time_interleaved) so background load hits both sides alike;
quote medians and re-run on a quiet machine. CPU line printed first.
"""
from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgepack.runtime import load, pack_bundle
from edgepack.runtime.benchmark import cpu_description, time_interleaved
from edgepack.runtime.ops import Context, compile_steps


def vad_like_model() -> bytes:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    w = lambda *s: numpy_helper.from_array((rng.standard_normal(s) / np.sqrt(s[0])).astype(np.float32))  # noqa: E731
    inits = []
    for name, shape in (("w1", (576, 256)), ("w2", (256, 128)), ("ws", (128, 128)), ("wo", (128, 1))):
        t = w(*shape)
        t.name = name
        inits.append(t)
    nodes = [
        helper.make_node("MatMul", ["input", "w1"], ["h1"]), helper.make_node("Relu", ["h1"], ["r1"]),
        helper.make_node("MatMul", ["r1", "w2"], ["h2"]),
        helper.make_node("Reshape", ["state", "shape2"], ["s2"]),
        helper.make_node("MatMul", ["s2", "ws"], ["hs"]),
        helper.make_node("Add", ["h2", "hs"], ["h3"]), helper.make_node("Tanh", ["h3"], ["h"]),
        helper.make_node("MatMul", ["h", "wo"], ["o"]), helper.make_node("Sigmoid", ["o"], ["output"]),
        helper.make_node("Concat", ["h", "h"], ["hh"], axis=0),
        helper.make_node("Reshape", ["hh", "shape3"], ["stateN"]),
    ]
    inits += [numpy_helper.from_array(np.array([2, 128], np.int64), "shape2"),
              numpy_helper.from_array(np.array([2, 1, 128], np.int64), "shape3")]
    nodes[3] = helper.make_node("Reshape", ["state", "shape2"], ["s2full"])
    nodes.insert(4, helper.make_node("Slice", ["s2full", "z", "one", "z"], ["s2"]))
    inits += [numpy_helper.from_array(np.array([0], np.int64), "z"),
              numpy_helper.from_array(np.array([1], np.int64), "one")]
    graph = helper.make_graph(nodes, "vadlike", [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 576]),
        helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, 128])], [
        helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1]),
        helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, 1, 128])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def median_us(times: np.ndarray) -> float:
    return float(np.median(times) * 1e6)


def log_mel_section(rounds: int) -> None:
    import librosa
    x = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype(np.float32)
    ours = compile_steps([{"op": "log_mel", "rate": 16000, "n_fft": 512, "hop": 160,
                           "n_mels": 40}], Context())
    ref = lambda y: librosa.power_to_db(librosa.feature.melspectrogram(  # noqa: E731
        y=y, sr=16000, n_fft=512, hop_length=160, n_mels=40))
    err = float(np.abs(ours(x) - ref(x)).max())
    from threadpoolctl import threadpool_limits  # a librosa dependency
    for blas in ("default BLAS threads", "BLAS limited to 1 thread"):
        with threadpool_limits(1 if "1 thread" in blas else None):
            for what, y in (("1 s of 16 kHz", x), ("one 512-sample chunk", x[:512])):
                t_ours, t_ref = time_interleaved([lambda: ours(y), lambda: ref(y)],
                                                 rounds=rounds, block=20, warmup=5)
                print(f"log-mel {what} ({blas}): edgepack {median_us(t_ours):.0f} us, librosa "
                      f"{median_us(t_ref):.0f} us, ratio "
                      f"{np.median(t_ours) / np.median(t_ref):.2f}x (goal <= 0.35x; max |diff| "
                      f"{err:.1e} dB on the 1 s clip)")


def stream_section(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = pack_bundle(Path(d) / "vad.edgepack", vad_like_model(), name="vadlike",
                           stream={"rate": 16000, "window": 512, "context": 64,
                                   "state": [{"input": "state", "output": "stateN", "init": 0.0}]},
                           decode=[{"op": "segments", "scores": "output", "on": 0.5}])
        with load(path, threads=1) as model:
            rng = np.random.default_rng(1)
            chunk = (rng.standard_normal(512) * 0.1).astype(np.float32)
            stream = model.stream()
            feeds = {"input": np.zeros((1, 576), np.float32),
                     "state": np.zeros((2, 1, 128), np.float32)}
            bare = model._engine.run
            t_push, t_bare = time_interleaved([lambda: stream.push(chunk), lambda: bare(feeds)],
                                              rounds=rounds, block=50, warmup=20)
            print(f"stream.push per 32 ms chunk: {median_us(t_push):.1f} us vs bare engine "
                  f"call {median_us(t_bare):.1f} us: overhead {np.median(t_push) / np.median(t_bare):.3f}x "
                  "(goal <= 1.05x)")
            audio = (rng.standard_normal(16000 * 60) * 0.1).astype(np.float32)
            stream.reset()
            start = time.perf_counter()
            for i in range(0, len(audio), 512):
                stream.push(audio[i:i + 512])
            stream.flush()
            took = time.perf_counter() - start
            print(f"full stream: 60 s of audio in {took:.3f} s: real-time factor {took / 60:.4f}")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    print(cpu_description())
    print("note: timings on a shared machine are noisy; medians of interleaved blocks")
    log_mel_section(rounds)
    stream_section(rounds)


if __name__ == "__main__":
    main()
