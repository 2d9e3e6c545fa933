"""PyTorch digits: train a small CNN, convert it to ONNX in every quantization mode, run each
bundle on edgepack's runtime and print accuracy, size and latency.

    python examples/digits_pytorch.py [--out DIR]

(PyTorch -> TFLite needs the optional `edgepack[convert-torch-tflite]` extra; it is tried
and reported if missing.)
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import digits_common as dc
from edgepack.conversion import convert
from edgepack.runtime import load
from edgepack.runtime.errors import EngineNotInstalledError

MODES = ("none", "fp16", "dynamic", "int8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="where to write the bundles")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="digits-pt-"))
    out.mkdir(parents=True, exist_ok=True)

    import torch
    digits = dc.load()
    model = dc.train_torch(digits)
    x_train, x_test = digits.nchw(digits.x_train), digits.nchw(digits.x_test)
    with torch.no_grad():
        source_acc = float((model(torch.from_numpy(x_test)).argmax(1).numpy()
                            == digits.y_test).mean())
    print(f"PyTorch source model: test accuracy {source_acc * 100:.2f}% on {len(x_test)} images")
    print(f"{'bundle':<34}{'accuracy':>10}{'drop pt':>9}{'model KB':>10}{'ms/img':>8}")
    for mode in MODES:
        path = out / f"digits-pt-onnx-{mode}.edgepack"
        result = convert(
            model, path, target="onnx", quantize=mode, example_inputs=x_train[:1],
            calibration_data=x_train[:300], validation_data=x_test,
            validation_labels=digits.y_test, validation_samples=len(x_test),
            labels=[str(i) for i in range(10)],
            postprocess={"output": [{"op": "softmax"}, {"op": "topk", "k": 1}]})
        acc = dc.bundle_accuracy(path, x_test, digits.y_test)
        ms = dc.latency_ms(path, x_test)
        print(f"{path.name:<34}{acc * 100:>9.2f}%{(source_acc - acc) * 100:>9.2f}"
              f"{result.model_bytes / 1024:>10.1f}{ms:>8.3f}")
    with load(out / "digits-pt-onnx-int8.edgepack") as bundle:
        top = bundle.predict(x_test[:1])["output"]
    print(f"predict() on one test image (label {digits.y_test[0]}): {top}")
    try:
        convert(model, out / "digits-pt-tflite-none.edgepack", target="tflite",
                         example_inputs=x_train[:1], validation_data=x_test)
    except EngineNotInstalledError as e:
        print(f"pytorch -> tflite skipped: {e}")
    print(f"bundles in {out}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
