"""Digits (scikit-learn's 8x8 images, no download) and two tiny CNNs trained in seconds."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The example report's own CNNs: the tests train them exactly as the example does.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "compare"))
import make_report  # noqa: E402

#: The first TRAIN images train the CNNs; compare gets the rest (calibration + held-out).
TRAIN = make_report.TRAIN


@pytest.fixture(scope="session")
def digits():
    """(images NCHW float32 in [0, 1], labels int64) for all 1797 digits."""
    return make_report.digits()


@pytest.fixture(scope="session")
def unseen_digits(digits):
    """The digits the CNNs never trained on: compare's calibration and held-out samples."""
    x, y = digits
    return x[TRAIN:], y[TRAIN:]


@pytest.fixture(scope="session")
def torch_digits(digits):
    pytest.importorskip("torch")
    x, y = digits
    return make_report.train_torch(x[:TRAIN], y[:TRAIN])


@pytest.fixture(scope="session")
def keras_digits(digits):
    pytest.importorskip("tensorflow")
    x, y = digits
    return make_report.train_keras(x[:TRAIN], y[:TRAIN])
