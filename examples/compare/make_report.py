"""Build the example compare report: a tiny digits CNN, every target x quantization.

    python examples/compare/make_report.py [--framework keras|torch] [--device rpi4b]

Trains a small CNN on scikit-learn's 8x8 digits for a few seconds (no download), then runs
`edgepack.compare` on the images it did not train on and writes, next to this script,
digits-<framework>.html (the self-contained report) and digits-<framework>.txt (the table).
The same comparison from the command line, given a saved model and an .npz of inputs and
labels:

    edgepack compare digits.keras --data digits.npz --device rpi4b --html report.html
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).parent
TRAIN = 1200


def digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    return (d.images[:, None] / 16.0).astype(np.float32), d.target.astype(np.int64)


def train_keras(x, y):
    import keras
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x.transpose(0, 2, 3, 1), y, epochs=4, batch_size=64, verbose=0)
    return model


def train_torch(x, y):
    import torch
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(32 * 64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(4):
        for i in range(0, len(xs), 64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xs[i:i + 64]), ys[i:i + 64]).backward()
            optimizer.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=["keras", "torch"], default="keras")
    parser.add_argument("--device", default="rpi4b")
    parser.add_argument("--max-drop", type=float, default=1.0)
    args = parser.parse_args()

    from edgepack.compare import CompareConfig, compare, render_html, render_table

    x, y = digits()
    if args.framework == "keras":
        model = train_keras(x[:TRAIN], y[:TRAIN])
        data = {"image": np.ascontiguousarray(x[TRAIN:].transpose(0, 2, 3, 1)),
                "labels": y[TRAIN:]}
    else:
        model = train_torch(x[:TRAIN], y[:TRAIN])
        data = {"x": x[TRAIN:], "labels": y[TRAIN:]}
    name = f"digits-{args.framework}"
    result = compare(model, data, CompareConfig(device=args.device, max_drop=args.max_drop,
                                                name=name),
                     progress=lambda message: print(message, flush=True))
    table = render_table(result)
    (HERE / f"{name}.txt").write_text(table + "\n", encoding="utf-8")
    (HERE / f"{name}.html").write_text(render_html(result), encoding="utf-8")
    print(table)
    print(f"wrote {HERE / (name + '.html')}")


if __name__ == "__main__":
    main()
