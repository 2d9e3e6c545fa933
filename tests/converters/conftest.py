"""Tiny source models (fixed seeds) and sample data for the converter tests."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF's C++ banner, not our logging

from tiny_models import make_keras_cnn, make_torch_cnn, teacher_labels  # noqa: E402


@pytest.fixture(scope="session")
def nchw_data() -> np.ndarray:
    """Smooth-ish random images (not white noise) in [-1, 1]."""
    rng = np.random.default_rng(0)
    base = rng.uniform(-1, 1, size=(320, 1, 4, 4)).astype(np.float32)
    return np.repeat(np.repeat(base, 2, axis=2), 2, axis=3)


@pytest.fixture(scope="session")
def nhwc_data(nchw_data) -> np.ndarray:
    return np.ascontiguousarray(nchw_data.transpose(0, 2, 3, 1))


@pytest.fixture(scope="session")
def torch_cnn(nchw_data):
    torch = pytest.importorskip("torch")
    model = make_torch_cnn().train()
    x, y = torch.from_numpy(nchw_data), torch.from_numpy(teacher_labels(nchw_data))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(40):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture(scope="session")
def keras_cnn(nchw_data, nhwc_data):
    pytest.importorskip("tensorflow")
    import keras
    model = make_keras_cnn()
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(nhwc_data, teacher_labels(nchw_data), epochs=15, batch_size=64, verbose=0)
    return model
