"""Fixtures for the optimize tests: tiny models built here, digits data, a trained CNN."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

# optimize_digits.py is shared with benchmarks/optimize.py; make it importable whatever
# pytest's import mode is.
sys.path.insert(0, str(Path(__file__).resolve().parent))

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")


@pytest.fixture(scope="session")
def digits():
    from optimize_digits import digits_split
    return digits_split()


@pytest.fixture(scope="session")
def trained_cnn(digits):
    """The unpruned digits CNN, trained once per session (about 40 s of one core)."""
    from edgepack.converters import optimize
    from optimize_digits import BASE_TRAIN, digits_cnn, one_torch_thread

    x_train, y_train, _, _ = digits
    model = digits_cnn()
    with one_torch_thread():
        optimize.fine_tune(model, (x_train, y_train), BASE_TRAIN)
    return model
