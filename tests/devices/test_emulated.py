"""Bundles under qemu ARM emulation must give the host's outputs (int8: bit for bit).

Needs qemu-user(-static) and access to Debian + PyPI on first use; the userland is cached
under ~/.cache/edgepack/emulation (or $EDGEPACK_CACHE_DIR). Select with `-m emulated`.
"""
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgepack.devices.emulation import Tolerance, emulate
from edgepack.runtime.errors import DeviceError

pytestmark = pytest.mark.emulated

_HAS_QEMU = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
if not _HAS_QEMU and not os.environ.get("CI"):  # in CI a missing qemu must fail, not skip
    pytest.skip("qemu-user is not installed (apt-get install -y qemu-user-static)",
                allow_module_level=True)


def _inputs(shape, dtype, seed=3):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype) == np.int8:
        return rng.integers(-128, 128, size=shape, dtype=np.int8)
    return rng.normal(size=shape).astype(dtype)


def _assert_bit_exact(result):
    assert result.ok, result.to_dict()
    for out in result.outputs:
        # int8 ONNX with float I/O is compared by the 1-ulp rule (the final dequantize's
        # rounding); measured here it is still bit-exact: max_abs 0
        assert out.rule in ("exact", "ulp") and out.max_abs == 0.0 and out.mismatches == 0


def test_int8_onnx_on_pi4_with_onnxruntime(bundles):
    feeds = {"x": _inputs((16, 64), np.float32)}
    result = emulate(bundles["onnx-int8"], "rpi4b", feeds)
    assert result.qemu_cpu == "cortex-a72"
    assert result.device_engine.startswith("onnxruntime")
    _assert_bit_exact(result)


def test_int8_tflite_on_pi5_with_litert(bundles):
    result = emulate(bundles["tflite-int8"], "rpi5")  # seeded random int8 input
    assert result.qemu_cpu == "cortex-a76"
    assert "ai_edge_litert" in result.device_engine
    _assert_bit_exact(result)


@pytest.mark.parametrize("bundle", ["tflite-int8_per_tensor", "tflite-int8"])
def test_int8_tflite_on_armhf_with_tflite_runtime(bundles, bundle):
    # tflite-int8 has per-channel dense weights: reported to crash tflite-runtime on ARM
    # boards; under qemu it runs and matches (check keeps it a warning, not an error).
    result = emulate(bundles[bundle], "generic-armv7l")
    assert result.arch == "armv7l" and result.qemu_cpu == "cortex-a7"
    # Same engine release on both sides: the host reference runs tflite-runtime 2.14 too.
    assert "tflite_runtime 2.14.0" in result.device_engine
    assert "tflite_runtime 2.14.0" in result.host_engine
    _assert_bit_exact(result)


def test_float_tflite_on_pi3_within_tolerance(bundles):
    tol = Tolerance(atol=1e-4, rtol=1e-3)
    result = emulate(bundles["tflite-none"], "rpi3b", tolerance=tol)
    assert result.ok, result.to_dict()
    (out,) = result.outputs
    assert out.rule == "tolerance" and out.max_abs <= 1e-4


def test_float_onnx_on_pi5_within_tolerance(bundles):
    result = emulate(bundles["onnx-none"], "rpi5", {"x": _inputs((8, 64), np.float32)})
    assert result.ok, result.to_dict()
    (out,) = result.outputs
    assert out.rule == "tolerance" and out.max_abs <= 1e-4


def test_check_verdict_matches_the_real_runtime(bundles):
    """What check says of dynamic-range int8 on armv7l is what tflite-runtime 2.14 does."""
    with pytest.raises(DeviceError) as e:
        emulate(bundles["tflite-dynamic"], "generic-armv7l")
    assert "emulated generic-armv7l (cortex-a7) run failed" in str(e.value)
    assert "Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'" in str(e.value)


def test_emulate_cli_with_input_file(bundles, tmp_path):
    from edgepack.cli.main import cli

    x = tmp_path / "x.npy"
    np.save(x, _inputs((4, 64), np.float32, seed=5))
    res = CliRunner().invoke(cli, ["emulate", str(bundles["onnx-int8"]), str(x),
                                   "--device", "generic-aarch64"])
    assert res.exit_code == 0, res.output
    assert "max |diff| 0, within 1 ulp (int8 model: float output after its dequantize): ok" \
        in res.output and "OK: outputs match the host" in res.output
