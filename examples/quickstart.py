"""edgepack in one run: train a digits CNN, convert it with the CLI, run the bundle.

    bash examples/quickstart.sh          # sets up .venv first, then runs this
    python examples/quickstart.py [--out out/quickstart] [--quantize int8]

1. Trains a small PyTorch CNN on scikit-learn's bundled digits (seconds, no download) and
   saves it as an exported program (`.pt2`), with calibration and held-out data as .npz.
2. `edgepack convert` -> an int8 ONNX bundle whose manifest carries the preprocessing that
   turns a PNG into the model's input (gray, 8x8, [0, 1], NCHW), the labels, and the
   validation numbers measured against the PyTorch model.
3. `edgepack inspect`, `verify`, `run` (on PNG files), `bench` — the device-side commands.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import digits_common as dc  # noqa: E402

PREPROCESS = [{"op": "color", "from": "RGB", "to": "GRAY"},
              {"op": "resize", "size": [8, 8], "method": "bilinear"},
              {"op": "scale", "factor": 1 / 255},
              {"op": "layout", "from": "HWC", "to": "NCHW"}]
POSTPROCESS = [{"op": "softmax"}, {"op": "topk", "k": 3}]


def edgepack(*args: object) -> str:
    """Run the installed `edgepack` command, echoing it, and return its stdout.

    Its stderr is not captured: progress, warnings (e.g. "int8 is not faster than fp32 on
    this machine") and errors reach the terminal as the command prints them."""
    exe = Path(sys.executable).with_name("edgepack")
    command = [str(exe), *map(str, args)]
    print("$ edgepack " + " ".join(map(str, args)), flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"edgepack failed with exit code {done.returncode} (its error is above)")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/quickstart"))
    from edgepack.devices.catalog import QUANTIZATIONS
    parser.add_argument("--quantize", default="int8", choices=QUANTIZATIONS)
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    import torch
    from PIL import Image

    print("1. training a PyTorch CNN on scikit-learn's digits ...", flush=True)
    digits = dc.load()
    model = dc.train_torch(digits).eval()
    x_train, x_test = digits.nchw(digits.x_train), digits.nchw(digits.x_test)
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(x_test)).argmax(1).numpy() == digits.y_test).mean())
    print(f"   trained: {accuracy * 100:.2f}% on {len(x_test)} held-out digits")
    exported = torch.export.export(model, (torch.from_numpy(x_train[:2]),),
                                   dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(exported, out / "digits.pt2")
    np.save(out / "calibration.npy", x_train[:300])
    np.savez(out / "heldout.npz", x=x_test, labels=digits.y_test)
    (out / "labels.txt").write_text("\n".join(str(i) for i in range(10)) + "\n")
    # The converter names a PyTorch model's tensors input/output (input_1, … for several).
    (out / "preprocess.json").write_text(json.dumps({"input": PREPROCESS}))
    (out / "postprocess.json").write_text(json.dumps({"output": POSTPROCESS}))
    for i in range(3):  # a few held-out digits as PNG files, as a camera would deliver them
        pixels = (digits.x_test[i] * 255).round().astype(np.uint8)
        Image.fromarray(np.repeat(pixels[:, :, None], 3, axis=2)).resize((32, 32)).save(
            out / f"digit-{i}-label-{digits.y_test[i]}.png")

    bundle = out / f"digits-{args.quantize}.edgepack"
    print(f"\n2. convert to ONNX, quantization {args.quantize}, validated against PyTorch")
    # Without --json: convert's progress (one line per stage) and warnings show as it runs.
    print(edgepack(
        "convert", out / "digits.pt2", "-o", bundle, "--target", "onnx", "--quantize", args.quantize,
        "--calibration-data", out / "calibration.npy", "--validation-data", out / "heldout.npz",
        "--labels", out / "labels.txt", "--preprocess", out / "preprocess.json",
        "--postprocess", out / "postprocess.json"), end="")
    from edgepack.runtime import read_bundle
    manifest = read_bundle(bundle).manifest
    validation = manifest.validation
    task = validation["task"]
    print(f"   accuracy kept: PyTorch {task['source'] * 100:.2f}% -> bundle "
          f"{task['bundle'] * 100:.2f}% on {validation['samples']} held-out digits; top-1 "
          f"agreement {validation['top1_agreement'] * 100:.1f}%; model "
          f"{manifest.files[manifest.model.path].bytes / 1024:.1f} KiB")

    print("\n3. on the device side")
    print(edgepack("inspect", bundle))
    print(edgepack("verify", bundle))
    print(edgepack("run", bundle, *sorted(out.glob("digit-*.png"))))
    print(edgepack("bench", bundle, "--runs", 200, "--threads", 1))
    print(f"bundle: {bundle} ({bundle.stat().st_size / 1024:.1f} KiB); serve it with "
          f"`edgepack serve {bundle}`")


if __name__ == "__main__":
    main()
