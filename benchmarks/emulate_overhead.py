"""How much slower is a bundle under qemu-user than on the host, per device core?

Builds a tiny float and int8 TFLite/ONNX model (fixed seeds), packs them, and runs
`edgepack.devices.emulation.emulate` for a few devices, printing the emulated/host time
ratio of one whole run (process start, imports, bundle load, one inference). The first
call per arch also builds the cached userland; that time is printed separately.

    python benchmarks/emulate_overhead.py [--devices rpi4b,rpi5,generic-armv7l]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np


def _models(out: Path) -> dict[str, Path]:
    import tensorflow as tf

    from edgepack.runtime import pack_bundle

    tf.keras.utils.set_random_seed(0)
    keras = tf.keras.Sequential([tf.keras.Input((32, 32, 3)),
                                 tf.keras.layers.Conv2D(16, 3, activation="relu"),
                                 tf.keras.layers.MaxPooling2D(),
                                 tf.keras.layers.Conv2D(32, 3, activation="relu"),
                                 tf.keras.layers.GlobalAveragePooling2D(),
                                 tf.keras.layers.Dense(10)])
    rng = np.random.default_rng(0)
    bundles = {}
    for mode in ("none", "int8"):
        conv = tf.lite.TFLiteConverter.from_keras_model(keras)
        if mode == "int8":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = lambda: (
                [rng.normal(size=(1, 32, 32, 3)).astype(np.float32)] for _ in range(16))
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        path = out / f"tflite-{mode}.tflite"
        path.write_bytes(conv.convert())
        bundles[f"tflite-{mode}"] = pack_bundle(out / f"tflite-{mode}.edgepack", path,
                                                name=f"bench-{mode}",
                                                quantization={"mode": mode})
    return bundles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="rpi3b,rpi4b,rpi5,generic-armv7l")
    args = ap.parse_args()
    from edgepack.runtime.benchmark import cpu_description
    print(f"CPU: {cpu_description()}", flush=True)
    from edgepack.devices.emulation import emulate

    with tempfile.TemporaryDirectory() as tmp:
        bundles = _models(Path(tmp))
        print(f"{'device':<16} {'bundle':<12} {'host s':>7} {'qemu s':>7} {'ratio':>6} "
              f"{'env build s':>11}  match")
        for device in args.devices.split(","):
            for name, bundle in bundles.items():
                r = emulate(bundle, device, progress=lambda m: print(m, file=sys.stderr))
                s = r.seconds
                print(f"{device:<16} {name:<12} {s['host_run']:>7.2f} {s['emulated_run']:>7.2f} "
                      f"{s['emulated_run'] / max(s['host_run'], 1e-3):>6.1f} "
                      f"{s['environment_build']:>11.1f}  {r.ok}")


if __name__ == "__main__":
    main()
