"""The comparison rules of emulated runs, and the CLI's exit code on a mismatch."""
import numpy as np
import pytest
from click.testing import CliRunner

import edgepack.devices.emulation as emulation
from edgepack.devices.emulation.environment import cpuinfo_text, recipe_for
from edgepack.devices.emulation.run import (EmulationResult, OutputComparison, Tolerance,
                                            _compare, default_inputs, load_inputs)
from edgepack.devices import load_profile
from edgepack.devices.host import parse_cpuinfo
from edgepack.runtime.errors import DeviceError, InputError

TOL = Tolerance(atol=1e-4, rtol=1e-3)


def test_integer_outputs_must_be_exact():
    host = np.array([[-5, 7, 127]], dtype=np.int8)
    assert _compare("y", host, host.copy(), False, TOL).ok
    off = host.copy()
    off[0, 1] += 1
    c = _compare("y", host, off, False, TOL)
    assert (c.rule, c.ok, c.mismatches, c.max_abs) == ("exact", False, 1, 1.0)


def test_float_outputs_of_int8_bundles_within_one_ulp():
    # issue 12 item 26c: the final dequantize may round 1 ulp apart; 2 ulps is a mismatch
    host = np.array([0.5, 1.0], dtype=np.float32)
    dev = host + np.float32(1e-7)  # 0.5 + 2 ulps, 1.0 + 1 ulp
    assert _compare("y", host, dev, False, TOL).ok
    strict = _compare("y", host, dev, True, TOL)
    assert strict.rule == "ulp" and not strict.ok and strict.mismatches == 1


def test_float_tolerance_is_atol_plus_rtol():
    host = np.array([0.0, 100.0], dtype=np.float32)
    within = np.array([0.9e-4, 100.0 + 0.09], dtype=np.float32)    # 1e-4 and 0.1001 allowed
    beyond = np.array([2e-4, 100.0 + 0.2], dtype=np.float32)
    assert _compare("y", host, within, False, TOL).ok
    assert _compare("y", host, beyond, False, TOL).mismatches == 2


def test_shape_or_dtype_change_is_a_mismatch():
    host = np.zeros((2, 3), np.float32)
    assert not _compare("y", host, np.zeros((3, 2), np.float32), False, TOL).ok
    assert not _compare("y", host, np.zeros((2, 3), np.float64), False, TOL).ok


def test_emulated_cpuinfo_is_parsed_as_the_board_core():
    """The fake /proc/cpuinfo onnxruntime reads under qemu names the profile's core."""
    for name in ("rpi3b", "rpi4b", "rpi5", "jetson-nano"):
        p = load_profile(name)
        core, flags, n = parse_cpuinfo(cpuinfo_text(p.core, p.cores, "arm64"))
        assert (core, n) == (p.core, p.cores)
        assert ("asimddp" in flags) == p.has("dotprod")


def test_recipes():
    assert recipe_for(load_profile("generic-armv7l")).wheels == ("tflite-runtime==2.14.0",)
    assert recipe_for(load_profile("generic-armv7l")).no_deps
    assert "python3-numpy" in recipe_for(load_profile("generic-armv7l")).packages
    with pytest.raises(DeviceError, match="only aarch64 and armv7l"):
        recipe_for(load_profile("x86_64-workstation"))


def test_inputs_from_specs_and_files(bundles, tmp_path):
    feeds = default_inputs(bundles["tflite-int8"])
    (name, x), = feeds.items()
    assert x.dtype == np.int8 and x.shape == (1, 8, 8, 1)
    np.testing.assert_array_equal(x, default_inputs(bundles["tflite-int8"])[name])  # seeded
    np.save(tmp_path / "a.npy", x)
    assert set(load_inputs(bundles["tflite-int8"], [tmp_path / "a.npy"])) == {name}
    (tmp_path / "a.txt").write_text("1 2 3")
    with pytest.raises(InputError, match=r"use \.npy"):
        load_inputs(bundles["tflite-int8"], [tmp_path / "a.txt"])
    np.savez(tmp_path / "b.npz", wrong=x)
    with pytest.raises(InputError, match="no data for input"):
        load_inputs(bundles["tflite-int8"], [tmp_path / "b.npz"])


def test_emulating_an_engine_the_board_lacks_is_refused(bundles):
    with pytest.raises(DeviceError, match="generic-armv7l has no onnx engine"):
        emulation.emulate(bundles["onnx-int8"], "generic-armv7l")
    with pytest.raises(DeviceError, match="jetson-nano has no onnx engine"):
        emulation.emulate(bundles["onnx-int8"], "jetson-nano")


def test_cli_exits_1_on_mismatch(bundles, monkeypatch):
    from edgepack.cli.main import cli

    bad = OutputComparison("y", "int8", (1, 10), "exact", 1.0, 3, False)
    result = EmulationResult("rpi4b", "aarch64", "cortex-a72", "litert", "litert", (bad,), TOL,
                             {"environment_build": 0.0, "host_run": 0.1, "emulated_run": 1.0})
    monkeypatch.setattr(emulation, "emulate", lambda *a, **k: result)
    res = CliRunner().invoke(cli, ["emulate", str(bundles["tflite-int8"]), "-d", "rpi4b"])
    assert res.exit_code == 1
    assert "MISMATCH (3 elements)" in res.output and res.output.rstrip().endswith("MISMATCH")
