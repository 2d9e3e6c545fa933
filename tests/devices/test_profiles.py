"""Profiles: every board loads, carries the facts the checks rely on, and bad data fails clearly."""
import tomllib

import pytest

from edgepack.devices import defaults_for, list_profiles, load_profile, refuse_reason
from edgepack.devices.catalog import PROFILE_DIR, parse_profile
from edgepack.runtime.errors import DeviceError

BOARDS = {"rpi-zero2w", "rpi3b", "rpi4b", "rpi5", "jetson-nano", "generic-aarch64",
          "generic-armv7l", "x86_64-workstation"}


def test_every_board_has_a_profile():
    assert {p.name for p in list_profiles()} == BOARDS


@pytest.mark.parametrize("name,core,ram_mb", [
    ("rpi-zero2w", "cortex-a53", 512), ("rpi3b", "cortex-a53", 1024),
    ("rpi4b", "cortex-a72", 4096), ("rpi5", "cortex-a76", 4096),
    ("jetson-nano", "cortex-a57", 4096), ("generic-armv7l", "cortex-a7", 1024)])
def test_board_facts(name, core, ram_mb):
    p = load_profile(name)
    assert (p.core, p.cores, p.ram_mb) == (core, 4, ram_mb)
    assert p.has("neon")
    assert 0 < p.ram_budget_mb < p.ram_mb


def test_isa_features_follow_the_core():
    # Only the Cortex-A76 (ARMv8.2-A) of the Pi 5 has dot-product and fp16 arithmetic.
    with_dotprod = {p.name for p in list_profiles() if p.has("dotprod")}
    with_fp16 = {p.name for p in list_profiles() if p.has("fp16")}
    assert with_dotprod == with_fp16 == {"rpi5"}


def test_armv7l_has_only_tflite_runtime_2_14():
    p = load_profile("generic-armv7l")
    available = [(e.package, e.version) for e in p.engines if e.available]
    assert available == [("tflite-runtime", "==2.14.0")]
    assert p.engines_for("onnx") == ()
    assert p.engines_for("tflite")[0].op_table == "2.14.0"


def test_defaults_and_refusals():
    assert tuple(defaults_for("generic-armv7l")) == ("tflite", "litert", "int8", 4)
    assert tuple(defaults_for("rpi4b")) == ("onnx", "onnxruntime", "int8", 4)
    assert "no onnx engine" in refuse_reason("generic-armv7l", "onnx", "int8")
    reason = refuse_reason("generic-armv7l", "tflite", "dynamic")
    assert "FULLY_CONNECTED v12" in reason and "v10" in reason and "-q int8" in reason
    assert refuse_reason("generic-armv7l", "tflite", "int8") is None
    assert refuse_reason("rpi4b", "tflite", "dynamic") is None  # ai-edge-litert runs it
    with pytest.raises(DeviceError, match="unknown quantization 'int4'"):
        refuse_reason("rpi4b", "onnx", "int4")
    with pytest.raises(DeviceError, match="unknown target"):
        refuse_reason("rpi4b", "coreml", "int8")


def test_unknown_device_lists_the_known_ones():
    with pytest.raises(DeviceError) as e:
        load_profile("rpi9")
    assert "rpi9" in str(e.value) and "rpi4b" in str(e.value) and "generic-armv7l" in str(e.value)


def _rpi4_data():
    return tomllib.loads((PROFILE_DIR / "rpi4b.toml").read_text())


def test_missing_field_is_named():
    data = _rpi4_data()
    del data["cpu"]["cores"]
    with pytest.raises(DeviceError, match=r"bad\.toml: missing field 'cores'"):
        parse_profile(data, "bad.toml")


@pytest.mark.parametrize("section,key,value,match", [
    ("cpu", "cores", "four", "must be int"),
    ("cpu", "features", ["neon", "warp-drive"], "unknown CPU features"),
    ("recommended", "quantization", "int3", "recommended quantization 'int3'"),
    ("recommended", "target", "coreml", "no available engine"),
])
def test_bad_values_are_refused(section, key, value, match):
    data = _rpi4_data()
    data[section][key] = value
    with pytest.raises(DeviceError, match=match):
        parse_profile(data, "bad.toml")


def test_aliases_resolve_to_their_profile_and_typos_are_not_guessed():
    from edgepack.devices.catalog import list_profiles, load_profile
    from edgepack.runtime.errors import DeviceError
    assert load_profile("rpi4").name == "rpi4b"
    assert load_profile("armhf").name == "generic-armv7l"
    every = [a for p in list_profiles() for a in (p.name, *p.aliases)]
    assert len(every) == len(set(every))          # no alias names two boards
    with pytest.raises(DeviceError, match="unknown device 'rpi44'"):
        load_profile("rpi44")
