"""Keras digits: train a small CNN, convert it to TFLite and ONNX in every quantization
mode, run each bundle on edgepack's runtime and print accuracy, size and latency.

    python examples/digits_keras.py [--out DIR]
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import digits_common as dc  # noqa: E402
from edgepack.conversion import convert  # noqa: E402
from edgepack.runtime import load  # noqa: E402

MODES = ("none", "fp16", "dynamic", "int8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="where to write the bundles")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="digits-keras-"))
    out.mkdir(parents=True, exist_ok=True)

    digits = dc.load()
    model = dc.train_keras(digits)
    x_train, x_test = digits.nhwc(digits.x_train), digits.nhwc(digits.x_test)
    source_acc = float((np.asarray(model(x_test)).argmax(1) == digits.y_test).mean())
    print(f"Keras source model: test accuracy {source_acc * 100:.2f}% on {len(x_test)} images")
    print(f"{'bundle':<36}{'accuracy':>10}{'drop pt':>9}{'model KB':>10}{'ms/img':>8}")
    for target in ("tflite", "onnx"):
        for mode in MODES:
            path = out / f"digits-keras-{target}-{mode}.edgepack"
            result = convert(
                model, path, target=target, quantize=mode, calibration_data=x_train[:300],
                validation_data=x_test, validation_labels=digits.y_test,
                validation_samples=len(x_test), labels=[str(i) for i in range(10)])
            acc = dc.bundle_accuracy(path, x_test, digits.y_test)
            ms = dc.latency_ms(path, x_test)
            print(f"{path.name:<36}{acc * 100:>9.2f}%{(source_acc - acc) * 100:>9.2f}"
                  f"{result.model_bytes / 1024:>10.1f}{ms:>8.3f}")
    with load(out / "digits-keras-tflite-int8.edgepack") as bundle:
        print(f"engine {bundle.engine_name}, inputs {bundle.inputs}")
    print(f"bundles in {out}")


if __name__ == "__main__":
    main()
