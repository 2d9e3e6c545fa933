"""Fixtures for the int8 tests: calibration and held-out images (fixed seeds)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from int8_models import images  # noqa: E402


@pytest.fixture(scope="session")
def calib() -> np.ndarray:
    return images(200, seed=1)


@pytest.fixture(scope="session")
def held_out() -> np.ndarray:
    return images(200, seed=2)
