"""Spinning vs sleeping engine threads: what `load(..., spin_wait=False)` costs and saves.

    python benchmarks/spin_wait.py [--threads 2] [--rounds 40] [--repeats 3]

onnxruntime's intra-op workers spin after a run, waiting for the next one. Three scenes,
each timed with the engine default (spinning) and with spin_wait=False, one MobileNetV2
224x224 fp32 bundle and its int8 twin (benchmarks/int8.py builds both; random weights):

- solo: one model in a tight loop (where spinning should help);
- alternating: two models run one after the other, as a detector + classifier app does;
- work between runs: one model, then 5 ms of numpy work on the calling thread (an app's
  preprocessing or camera capture) per frame; the figure is the whole frame time.

Printed: median ms per run (per frame for the last scene) and the ratio sleeping/spinning
(< 1: spin_wait=False is faster). Nothing is downloaded.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Seconds between scenes, so the previous scene's spinning workers are idle again.
SETTLE_S = 0.3


def busy_work(seconds: float = 0.005) -> None:
    """Numpy work on the calling thread for about `seconds` (an app's own per-frame work)."""
    a = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = np.tanh(a @ a.T * 1e-3)


def median_ms(fn, rounds: int, warmup: int = 5) -> float:
    """Median ms per call of `fn` in a tight loop, then a pause so its workers go idle."""
    from edgepack.benchmark import time_calls
    times = time_calls(fn, rounds, warmup)
    time.sleep(SETTLE_S)
    return 1e3 * float(np.median(times))


def scenes(paths: dict[str, Path], threads: int, spin_wait: bool | None,
           rounds: int) -> dict[str, float]:
    from edgepack.runtime import load
    from edgepack.runtime.specs import example_feeds
    models = {n: load(p, threads=threads, spin_wait=spin_wait) for n, p in paths.items()}
    try:
        feeds = {n: example_feeds(m.inputs, seed=1) for n, m in models.items()}
        fp32, int8 = models["fp32"], models["int8"]
        out = {"solo fp32": median_ms(lambda: fp32.run(feeds["fp32"]), rounds),
               "solo int8": median_ms(lambda: int8.run(feeds["int8"]), rounds)}
        # Alternating: each model's own run time, while the other one ran just before.
        per: dict[str, list[float]] = {"fp32": [], "int8": []}
        for _ in range(rounds + 5):
            for name in ("fp32", "int8"):
                start = time.perf_counter()
                models[name].run(feeds[name])
                per[name].append(time.perf_counter() - start)
        time.sleep(SETTLE_S)
        out["alternating fp32"] = 1e3 * float(np.median(per["fp32"][5:]))
        out["alternating int8"] = 1e3 * float(np.median(per["int8"][5:]))
        out["frame = int8 + 5 ms work"] = median_ms(
            lambda: (int8.run(feeds["int8"]), busy_work()), rounds)
    finally:
        for m in models.values():
            m.close()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3, help="spin/sleep pairs measured")
    args = parser.parse_args(argv)
    from edgepack.runtime.benchmark import cpu_description
    print(f"CPU: {cpu_description()}", flush=True)
    from int8 import bundle, export_onnx, mobilenet_v2

    from edgepack.converters.int8 import Int8Options, quantize_int8
    x = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    fp32 = export_onnx(mobilenet_v2(), x)
    calib = {"x": np.random.default_rng(1).standard_normal((16, 3, 224, 224)).astype(np.float32)}
    int8 = quantize_int8(fp32, calib, Int8Options()).model_bytes
    print(f"host: {os.cpu_count()} cores; load average "
          f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}; threads={args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"fp32": bundle(Path(tmp), "fp32", fp32), "int8": bundle(Path(tmp), "int8", int8)}
        for repeat in range(args.repeats):
            spinning = scenes(paths, args.threads, None, args.rounds)
            sleeping = scenes(paths, args.threads, False, args.rounds)
            print(f"\n  repeat {repeat + 1}: {'scene':28s} {'spinning':>9s} {'sleeping':>9s}  ratio")
            for scene, spin_ms in spinning.items():
                print(f"             {scene:28s} {spin_ms:7.2f}ms {sleeping[scene]:7.2f}ms  "
                      f"x{sleeping[scene] / spin_ms:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
