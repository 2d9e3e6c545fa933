"""edgepack Model.run vs the bare engine call, and predict() vs a hand-written pipeline.

Both sides run in one process, interleaved in short blocks, so machine noise hits them alike;
the printed figure is the median over blocks of (edgepack time / bare time). Target <= 1.05.

    python benchmarks/runtime_overhead.py [--blocks 30] [--calls 50] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import models  # noqa: E402  (tiny model builders shared with the tests)

from edgepack.runtime import load, pack_bundle  # noqa: E402


def interleaved_ratio(ours, bare, blocks: int, calls: int) -> tuple[float, float, float]:
    """Median of per-block time ratios, plus the median per-call ms of each side."""
    for fn in (ours, bare):
        for _ in range(calls):
            fn()
    ratios, ours_ms, bare_ms = [], [], []
    for block in range(blocks):
        order = (ours, bare) if block % 2 == 0 else (bare, ours)
        spent = {}
        for fn in order:
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            spent[fn] = (time.perf_counter() - start) / calls
        ratios.append(spent[ours] / spent[bare])
        ours_ms.append(spent[ours] * 1e3)
        bare_ms.append(spent[bare] * 1e3)
    return float(np.median(ratios)), float(np.median(ours_ms)), float(np.median(bare_ms))


def conv_onnx(size: int, width: int) -> bytes:
    return models.onnx_conv_classifier(seed=0, channels=3, size=size, classes=10, width=width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=30)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--size", type=int, default=64, help="input height/width of the conv model")
    parser.add_argument("--width", type=int, default=32, help="conv filters of the model")
    args = parser.parse_args()
    from edgepack.runtime.benchmark import cpu_description
    print(f"CPU: {cpu_description()}", flush=True)
    tmp = Path(tempfile.mkdtemp())
    x_nchw = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    print(f"runtime overhead, conv model 3x{args.size}x{args.size} -> {args.width} filters, "
          f"threads={args.threads}, "
          f"{args.blocks} blocks x {args.calls} calls, interleaved")

    # --- ONNX Runtime ------------------------------------------------------------------
    import onnxruntime as ort  # noqa: F401  (fails early when the engine is missing)
    onnx_bytes = conv_onnx(args.size, args.width)
    bundle = pack_bundle(tmp / "conv.edgepack", onnx_bytes, name="conv")
    model = load(bundle, threads=args.threads)
    # The bare call goes to the very session edgepack opened (same options, same memory):
    # two sessions of one model differ by a few percent on their own, which is not overhead.
    session = model._engine.session
    del ort
    feeds = {"x": x_nchw}
    ratio, ours, bare = interleaved_ratio(lambda: model.run(feeds), lambda: session.run(None, feeds),
                                          args.blocks, args.calls)
    print(f"  onnxruntime  Model.run {ours:.4f} ms  session.run {bare:.4f} ms  ratio {ratio:.3f}"
          f"  {'OK' if ratio <= 1.05 else 'ABOVE TARGET'} (target <= 1.05)")

    # --- LiteRT ------------------------------------------------------------------------
    try:
        from edgepack.runtime.engines.litert_engine import interpreter_class
        tflite = models.tflite_conv_classifier(seed=0, size=args.size, width=args.width)
    except Exception as e:  # tensorflow missing: LiteRT half cannot be built here
        print(f"  litert       skipped: {e}")
    else:
        lite_bundle = pack_bundle(tmp / "conv-lite.edgepack", tflite, name="conv-lite")
        lite_model = load(lite_bundle, threads=args.threads)
        interpreter = lite_model._engine.interpreter  # same instance, as for ORT above
        del interpreter_class
        detail_in = interpreter.get_input_details()[0]
        detail_out = interpreter.get_output_details()[0]
        x_nhwc = np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
        lite_feeds = {lite_model.inputs[0].name: x_nhwc}

        def bare_invoke():
            interpreter.set_tensor(detail_in["index"], x_nhwc)
            interpreter.invoke()
            return interpreter.get_tensor(detail_out["index"])

        ratio, ours, bare = interleaved_ratio(lambda: lite_model.run(lite_feeds), bare_invoke,
                                              args.blocks, args.calls)
        print(f"  litert       Model.run {ours:.4f} ms  invoke {bare:.4f} ms  ratio {ratio:.3f}"
              f"  {'OK' if ratio <= 1.05 else 'ABOVE TARGET'} (target <= 1.05)")

    # --- predict() with resize + normalize vs the same written by hand -------------------
    photo = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    steps = [{"op": "resize", "size": [args.size, args.size], "reference": "opencv"},
             {"op": "scale", "factor": 1 / 255},
             {"op": "normalize", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
             {"op": "layout", "from": "HWC", "to": "NCHW"}]
    piped = load(pack_bundle(tmp / "piped.edgepack", onnx_bytes, name="piped",
                             preprocess={"x": steps}), threads=args.threads)
    mean = np.array([0.485, 0.456, 0.406], np.float32)
    inv_std = 1 / np.array([0.229, 0.224, 0.225], np.float32)
    size = args.size

    def by_hand():
        # OpenCV-style bilinear (half-pixel centres), written directly in numpy.
        def axis_weights(n_in):
            src = np.maximum((np.arange(size) + 0.5) * n_in / size - 0.5, 0)
            lo = np.minimum(np.floor(src).astype(int), n_in - 1)
            return lo, np.minimum(lo + 1, n_in - 1), (src - lo).astype(np.float32)
        y0, y1, fy = axis_weights(photo.shape[0])
        x0, x1, fx = axis_weights(photo.shape[1])
        img = photo.astype(np.float32)
        rows = img[y0] * (1 - fy)[:, None, None] + img[y1] * fy[:, None, None]
        out = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
        x = ((np.rint(out) / 255 - mean) * inv_std).transpose(2, 0, 1)[None]
        return session.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})

    try:
        import cv2  # noqa: F401
        path = "OpenCV fast path"
    except ImportError:
        path = "numpy path"
    ratio, ours, bare = interleaved_ratio(lambda: piped.predict(photo), by_hand,
                                          max(args.blocks // 2, 5), max(args.calls // 5, 5))
    print(f"  predict (480x640 uint8 -> resize+normalize+layout, {path}) {ours:.3f} ms  "
          f"hand-written numpy {bare:.3f} ms  ratio {ratio:.3f}")
    from edgepack.runtime.ops import image
    numpy_only = lambda: image.resize_image(photo, (size, size), "bilinear", "opencv", fast=False)
    ratio, ours, bare = interleaved_ratio(numpy_only, lambda: by_hand() and None, 10, 10)
    print(f"  edgepack numpy resize alone {ours:.3f} ms (no fast path)")


if __name__ == "__main__":
    main()
