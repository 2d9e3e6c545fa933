"""Which comparison rule `emulate` applies: bit-exact only for fully integer bundles."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent))
import models  # noqa: E402

from edgepack.devices.emulation.run import Tolerance, _compare, _kept_float  # noqa: E402
from edgepack.runtime import pack_bundle  # noqa: E402


def test_kept_float_layers_switch_int8_to_tolerance(tmp_path):
    model = models.onnx_conv_classifier()
    full = pack_bundle(tmp_path / "full.edgepack", model, name="full",
                       quantization={"mode": "int8", "kept_float": []})
    mixed = pack_bundle(tmp_path / "mixed.edgepack", model, name="mixed",
                        quantization={"mode": "int8", "kept_float": [
                            {"node": "conv0", "reason": "reads 1 channel: slow in int8"}]})
    assert not _kept_float(full) and _kept_float(mixed)


def test_compare_rules():
    host = np.array([1.0, 2.0], np.float32)
    near = host + np.float32(4e-7)
    tol = Tolerance(atol=1e-5, rtol=1e-4)
    assert not _compare("y", host, near, True, tol).ok          # strict: any difference fails
    assert _compare("y", host, near, False, tol).ok             # float rule: within tolerance
    ints = np.array([3, -4], np.int8)
    assert not _compare("q", ints, ints + np.int8(1), False, tol).ok   # integers always exact
