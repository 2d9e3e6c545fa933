"""--on-device: each bundle under qemu emulation of the board; int8 must be bit-exact with
the host, float within the emulation tolerance, and emulated time must not appear as latency.

Needs qemu-user and the cached ARM userland (built on first use; see tests/devices)."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
import models  # noqa: E402

from edgepack.compare import CompareConfig, LatencyConfig, compare, render_table  # noqa: E402

pytestmark = [pytest.mark.emulated, pytest.mark.slow]

if not (shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")) and \
        not os.environ.get("CI"):
    pytest.skip("qemu-user is not installed (apt-get install -y qemu-user-static)",
                allow_module_level=True)


def test_on_device_is_exact_for_int8_and_reports_no_emulated_latency(tmp_path):
    pytest.importorskip("onnx")
    model = tmp_path / "conv.onnx"
    model.write_bytes(models.onnx_conv_classifier(seed=0))
    rng = np.random.default_rng(0)
    data = {"x": rng.uniform(-1, 1, (120, 3, 8, 8)).astype(np.float32)}
    result = compare(str(model), data, CompareConfig(
        targets=("onnx",), modes=("none", "int8"), device="rpi4b", on_device=True,
        memory=False, latency=LatencyConfig(rounds=3, block=5, warmup=2)), work_dir=tmp_path)
    by = {r.key: r for r in result.rows}
    assert all(r.measured for r in result.rows), [(r.key, r.reason) for r in result.rows]
    int8, fp32 = by["onnx/int8"].on_device, by["onnx/none"].on_device
    # float I/O int8: checked by the 1-ulp rule, measured bit-exact
    assert int8["ok"] and int8["rule"] == "ulp" and int8["max_abs"] == 0.0, int8
    assert int8["mismatches"] == 0 and int8["samples"] == 36
    assert fp32["ok"] and fp32["rule"] == "tolerance" and fp32["max_abs"] <= 1e-4, fp32
    assert fp32["device_engine"].startswith("onnxruntime")
    text = json.dumps(result.to_dict()) + render_table(result)
    for word in ("emulated_run", "seconds", "environment_build"):
        assert word not in text
    assert "bit-exact vs host on 36 samples" in render_table(result)
