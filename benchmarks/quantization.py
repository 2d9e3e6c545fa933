"""int8 vs fp32 (and fp16, dynamic) on one conv model, for both targets.

A Keras CNN is trained on scikit-learn digits upscaled to 32x32 (so the convolutions do
enough work for latency to mean something), converted to TFLite and ONNX in every mode,
and each bundle is measured through edgepack.runtime:
  - model size (bytes of the model member),
  - latency: median ms per single-image run, same engine and thread count for all modes of a
    target, runs *interleaved* (round-robin blocks over the bundles) so load drift on a
    shared machine hits every mode alike,
  - accuracy on the held-out split.
Prints a table and, per target, the int8/fp32 size and latency ratios.

    python benchmarks/quantization.py [--threads 1] [--rounds 15] [--block 20]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

import digits_common as dc  # noqa: E402

MODES = ("none", "fp16", "dynamic", "int8")
SIZE = 32


def upscale(x: np.ndarray) -> np.ndarray:
    """(N, 8, 8) -> (N, 32, 32, 1) by pixel repetition."""
    k = SIZE // 8
    return np.ascontiguousarray(np.kron(x, np.ones((1, k, k), np.float32))[..., None])


def train(x: np.ndarray, y: np.ndarray, epochs: int):
    import keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 1), name="image"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    return model


def interleaved_latency(paths: list[Path], sample: np.ndarray, threads: int, rounds: int,
                        block: int) -> list[float]:
    """Median ms per run for each bundle; blocks of `block` runs, round-robin."""
    from edgepack.benchmark import pool_pause, time_interleaved
    from edgepack.runtime import load
    models = [load(p, threads=threads) for p in paths]
    try:
        # warm-up: first runs allocate and pack weights
        times = time_interleaved([lambda m=m: dc.run_float(m, sample) for m in models],
                                 rounds=rounds, block=block, warmup=20,
                                 pause=pool_pause(threads))
    finally:
        for model in models:
            model.close()
    return [float(np.median(t)) * 1e3 for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description="int8/fp32 size and latency per target")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    from edgepack.runtime.benchmark import cpu_description
    print(f"CPU: {cpu_description()}", flush=True)

    from edgepack.conversion import convert
    digits = dc.load()
    x_train, x_test = upscale(digits.x_train), upscale(digits.x_test)
    model = train(x_train, digits.y_train, args.epochs)
    source_acc = float((np.asarray(model(x_test)).argmax(1) == digits.y_test).mean())
    print(f"source: Keras CNN {SIZE}x{SIZE}, test accuracy {source_acc * 100:.2f}% "
          f"({len(x_test)} images); threads={args.threads}, {args.rounds} rounds x "
          f"{args.block} runs interleaved")
    out = Path(tempfile.mkdtemp(prefix="edgepack-bench-"))
    for target in ("tflite", "onnx"):
        paths, sizes, accs = [], {}, {}
        for mode in MODES:
            path = out / f"{target}-{mode}.edgepack"
            result = convert(model, path, target=target, quantize=mode,
                             calibration_data=x_train[:200], validation_data=x_test,
                             validation_labels=digits.y_test, validation_samples=len(x_test))
            paths.append(path)
            sizes[mode] = result.model_bytes
            accs[mode] = result.validation["task"]["bundle"]
        latency = dict(zip(MODES, interleaved_latency(paths, x_test[:1], args.threads,
                                                      args.rounds, args.block)))
        print(f"\n{target}:  {'mode':<8}{'size KB':>10}{'ms/img':>9}{'accuracy':>10}")
        for mode in MODES:
            print(f"{'':9}{mode:<8}{sizes[mode] / 1024:>10.1f}{latency[mode]:>9.3f}"
                  f"{accs[mode] * 100:>9.2f}%")
        print(f"{target}: int8/fp32 size ratio {sizes['int8'] / sizes['none']:.3f}, "
              f"latency ratio {latency['int8'] / latency['none']:.3f}, "
              f"accuracy drop {(accs['none'] - accs['int8']) * 100:.2f} pt")


if __name__ == "__main__":
    main()
