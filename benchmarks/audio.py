"""Audio benchmarks (issue 14): run `python benchmarks/audio.py`.

1. log-mel of 1 s of 16 kHz audio (n_fft 512, hop 160, 40 mels): edgepack's `log_mel`
   step vs librosa.feature.melspectrogram + power_to_db (goal: <= 0.35x librosa), and one
   512-sample chunk.
2. `stream.push` of one 32 ms chunk (512 samples) vs the bare engine call on the same
   model and window (goal: overhead <= 1.05x), on two models built here: a VAD-sized toy
   (576 samples in, 2x1x128 state, a few dense layers; ~25 us a call) and a stand-in of a
   real stateful VAD's architecture (STFT conv front-end, 4 conv layers, LSTM over the
   2x1x128 state, `sr` input; a few hundred us a call). Each line also gives push against
   the stream's own IOBinding call alone: the absolute Python overhead per chunk.
3. Real-time factor of a full stream through each model (processing time / audio time).

`python benchmarks/audio.py [rounds] [stream]`: `stream` skips the log-mel section.
librosa's mel product runs on OpenBLAS's worker threads, whose wake-up dominates on a busy
machine; edgepack keeps small products on the calling thread. Both settings are printed.
Timings are interleaved (time_interleaved) so background load hits both sides alike;
quote medians and re-run on a quiet machine. CPU line printed first.
"""
from __future__ import annotations

import argparse
import os
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


def vad_standin(width: int = 256, bins: int = 129, hidden: int = 128, seed: int = 0,
                layers: int = 4) -> bytes:
    """A stand-in for a real stateful VAD (inputs `input` [1, 576], `state` [2, 1, 128],
    `sr`; outputs `output`, `stateN`), built here with random weights (no download): reflect
    pad 64, an STFT as a strided Conv1d with a Hann-windowed DFT basis (256-point, hop 64,
    129 bins) and magnitude, 4 Conv1d+ReLU layers (width 256/128, two of stride 2), a 1x1
    projection to 128, mean over time, one LSTM step whose (h, c) is the [2, 1, 128] state,
    ReLU + linear + sigmoid. Sized so that one call costs a few hundred us at 1 thread, as
    the real model's does; the numbers it returns mean nothing."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    inits = []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(name, *shape):
        fan_in = int(np.prod(shape[1:]))
        return const(name, (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32))

    def node(op, inputs, outputs, **attrs):
        return helper.make_node(op, inputs, outputs, **attrs)

    n_fft = 2 * (bins - 1)
    k, f = np.arange(n_fft), np.arange(bins)[:, None]
    hann = np.hanning(n_fft + 1)[:-1]
    basis = np.concatenate([np.cos(2 * np.pi * f * k / n_fft),
                            -np.sin(2 * np.pi * f * k / n_fft)]) * hann
    nodes = [
        node("Pad", ["input", const("pads", np.array([0, 0, 0, 64], np.int64)), "", ""],
             ["padded"], mode="reflect"),
        node("Unsqueeze", ["padded", const("ax1", np.array([1], np.int64))], ["x3"]),
        node("Conv", ["x3", const("stft_w", basis[:, None, :].astype(np.float32))], ["spec"],
             strides=[n_fft // 4]),
        node("Split", ["spec", const("halves", np.array([bins, bins], np.int64))], ["re", "im"],
             axis=1),
        node("Mul", ["re", "re"], ["re2"]), node("Mul", ["im", "im"], ["im2"]),
        node("Add", ["re2", "im2"], ["power"]), node("Sqrt", ["power"], ["mag"]),
    ]
    prev, channels = "mag", bins
    for i in range(layers):
        out = width if i % 2 == 0 else width // 2
        nodes += [node("Conv", [prev, weight(f"c{i}_w", out, channels, 3),
                                const(f"c{i}_b", np.zeros(out, np.float32))], [f"c{i}"],
                       pads=[1, 1], strides=[2 if i in (1, 2) else 1]),
                  node("Relu", [f"c{i}"], [f"r{i}"])]
        prev, channels = f"r{i}", out
    nodes += [
        node("Conv", [prev, weight("proj_w", hidden, channels, 1),
                      const("proj_b", np.zeros(hidden, np.float32))], ["proj"]),
        node("ReduceMean", ["proj", const("ax2", np.array([2], np.int64))], ["pooled"],
             keepdims=0),                                                  # [1, hidden]
        node("Unsqueeze", ["pooled", const("ax0", np.array([0], np.int64))], ["seq"]),
        node("Split", ["state", const("ones", np.array([1, 1], np.int64))], ["h0", "cell0"],
             axis=0),
        node("LSTM", ["seq", weight("W", 1, 4 * hidden, hidden), weight("R", 1, 4 * hidden, hidden),
                      const("B", np.zeros((1, 8 * hidden), np.float32)), "", "h0", "cell0"],
             ["Y", "Yh", "Yc"], hidden_size=hidden),
        node("Concat", ["Yh", "Yc"], ["stateN"], axis=0),
        node("Relu", ["Yh"], ["hr"]),
        node("Reshape", ["hr", const("flat", np.array([1, hidden], np.int64))], ["h2"]),
        node("MatMul", ["h2", weight("dec_w", hidden, 1)], ["logit"]),
        node("Sigmoid", ["logit"], ["p"]),
        # sr is an input, as in the real model (it picks the 8/16 kHz branch there)
        node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
        node("Mul", ["srf", const("zero", np.array(0.0, np.float32))], ["sr0"]),
        node("Add", ["p", "sr0"], ["output"]),
    ]
    graph = helper.make_graph(nodes, "vad_standin", [
        helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 576]),
        helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, hidden]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, [1])], [
        helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1]),
        helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, 1, hidden])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
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


def stream_section(rounds: int, name: str, model_bytes: bytes, feeds: dict, block: int) -> None:
    """push of one 32 ms chunk vs (a) the bare engine call (ORT InferenceSession.run on a
    feeds dict, what Model.run does) and (b) the stream's own IOBinding call alone (the
    cheapest ORT call there is: push minus it is the per-chunk Python overhead)."""
    examples = {"sr": {"value": 16000}} if "sr" in feeds else None
    with tempfile.TemporaryDirectory() as d:
        path = pack_bundle(Path(d) / "vad.edgepack", model_bytes, name="vadlike",
                           stream={"rate": 16000, "window": 512, "context": 64,
                                   "state": [{"input": "state", "output": "stateN", "init": 0.0}]},
                           examples=examples,
                           decode=[{"op": "segments", "scores": "output", "on": 0.5}])
        with load(path, threads=1) as model:
            rng = np.random.default_rng(1)
            chunk = (rng.standard_normal(512) * 0.1).astype(np.float32)
            stream = model.stream()
            bare = model._engine.run
            bound = stream._bound
            if bound is None:
                raise SystemExit("the stream did not take its IOBinding path")
            run_bound = bound.runs[0]  # the engine's bound run (IOBinding), nothing else
            # wall clock, and the thread's CPU time (which leaves out the time other
            # processes had the core: on a loaded machine that is most of the noise)
            for clock_name, clock in (("wall", time.perf_counter), ("thread CPU", time.thread_time)):
                load_before = os.getloadavg()[0]
                t_push, t_bare, t_raw = time_interleaved(
                    [lambda: stream.push(chunk), lambda: bare(feeds), run_bound],
                    rounds=rounds, block=block, warmup=block, clock=clock)
                load_after = os.getloadavg()[0]
                push, bare_us, raw = median_us(t_push), median_us(t_bare), median_us(t_raw)
                rounds_push = np.median(t_push.reshape(rounds, block), axis=1)
                rounds_raw = np.median(t_raw.reshape(rounds, block), axis=1)
                lo, hi = (float(np.percentile(rounds_push - rounds_raw, q)) * 1e6 for q in (25, 75))
                print(f"{name} [{clock_name}]: stream.push per 32 ms chunk {push:.1f} us vs bare "
                      f"engine call (InferenceSession.run) {bare_us:.1f} us: overhead "
                      f"{push / bare_us:.3f}x (goal <= 1.05x); vs the IOBinding call alone "
                      f"{raw:.1f} us: {push / raw:.3f}x, +{push - raw:.1f} us per chunk "
                      f"(IQR over rounds {lo:.1f}..{hi:.1f} us); load average "
                      f"{load_before:.1f} -> {load_after:.1f}")
            seconds = 60 if raw < 100 else 20
            audio = (rng.standard_normal(16000 * seconds) * 0.1).astype(np.float32)
            stream.reset()
            start = time.perf_counter()
            for i in range(0, len(audio), 512):
                stream.push(audio[i:i + 512])
            stream.flush()
            took = time.perf_counter() - start
            print(f"{name}: full stream, {seconds} s of audio in {took:.3f} s: real-time factor "
                  f"{took / seconds:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rounds", nargs="?", type=int, default=30,
                        help="interleaved timed blocks per figure (default 30)")
    parser.add_argument("sections", nargs="?", choices=("stream",),
                        help="'stream': skip the log-mel section")
    args = parser.parse_args()
    rounds = args.rounds
    print(cpu_description())
    print("note: timings on a shared machine are noisy; medians of interleaved blocks")
    if args.sections != "stream":
        log_mel_section(rounds)
    state = np.zeros((2, 1, 128), np.float32)
    x = np.zeros((1, 576), np.float32)
    stream_section(rounds, "toy (4 dense layers)", vad_like_model(),
                   {"input": x, "state": state}, block=50)
    stream_section(rounds, "VAD stand-in (STFT conv + 4 conv + LSTM 128)", vad_standin(),
                   {"input": x, "state": state, "sr": np.array([16000], np.int64)}, block=10)


if __name__ == "__main__":
    main()
