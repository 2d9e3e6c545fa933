"""Digits (scikit-learn's 8x8 images, no download) and two tiny CNNs trained in seconds."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: The first TRAIN images train the CNNs; compare gets the rest (calibration + held-out).
TRAIN = 1200


@pytest.fixture(scope="session")
def digits():
    """(images NCHW float32 in [0, 1], labels int64) for all 1797 digits."""
    from sklearn.datasets import load_digits
    d = load_digits()
    return (d.images[:, None] / 16.0).astype(np.float32), d.target.astype(np.int64)


@pytest.fixture(scope="session")
def unseen_digits(digits):
    """The digits the CNNs never trained on: compare's calibration and held-out samples."""
    x, y = digits
    return x[TRAIN:], y[TRAIN:]


@pytest.fixture(scope="session")
def torch_digits(digits):
    torch = pytest.importorskip("torch")
    x, y = digits
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(32 * 64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    xs, ys = torch.from_numpy(x[:TRAIN]), torch.from_numpy(y[:TRAIN])
    for _ in range(4):
        for i in range(0, TRAIN, 64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xs[i:i + 64]), ys[i:i + 64]).backward()
            optimizer.step()
    return model.eval()


@pytest.fixture(scope="session")
def keras_digits(digits):
    pytest.importorskip("tensorflow")
    import keras
    x, y = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1), name="image"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:TRAIN].transpose(0, 2, 3, 1), y[:TRAIN], epochs=4, batch_size=64, verbose=0)
    return model
