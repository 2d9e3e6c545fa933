"""Which int8 settings are chosen for which device, and overrides/refusals."""
from __future__ import annotations

import pytest

from edgepack.converters.int8 import RECIPES, choose_recipe, cpu_family, dynamic_refusal
from edgepack.devices import HostInfo, list_profiles
from edgepack.runtime.errors import ConversionError


def _host(arch: str, features: tuple[str, ...]) -> HostInfo:
    return HostInfo(model=None, arch=arch, core=None, cores=2, ram_mb=4096, features=features,
                    raw_flags=features, python="3.11", glibc="2.36", engines={})


@pytest.mark.parametrize("device, name, types, reduce_range", [
    ("rpi4b", "ort-arm-neon", "S8S8", False),           # Cortex-A72: NEON, no sdot
    ("rpi3b", "ort-arm-neon", "S8S8", False),
    ("rpi5", "ort-arm-dotprod", "S8S8", False),         # Cortex-A76: sdot
    ("generic-armv7l", "ort-arm-neon", "S8S8", False),
    ("x86_64-workstation", "ort-x86-avx2", "U8S8", True),  # AVX2 without VNNI: saturation
])
def test_onnxruntime_recipe_per_profile(device, name, types, reduce_range):
    # Converted on an ARM board (no validation-host adjustment): the recipe as designed.
    recipe = choose_recipe("onnxruntime", device, host=_host("aarch64", ("neon", "dotprod")))
    assert (recipe.name, recipe.types, recipe.reduce_range) == (name, types, reduce_range)
    assert recipe.quant_format == "qdq" and recipe.per_channel and recipe.graph_prep
    assert recipe.float_op_types == ()   # measured: no op type pays to keep float on ORT
    # Only the x86 stem rule was measured (MobileNetV2's 3-channel conv: x1.3-1.6 in int8).
    assert recipe.float_thin_convs == (4 if device == "x86_64-workstation" else 0)


@pytest.mark.parametrize("host_features, reduce_range", [
    (("avx2", "fma"), True),                   # x86 without VNNI validates: 7-bit weights
    (("avx2", "fma", "avx512_vnni"), False),   # VNNI host: 8-bit weights validate exactly
])
def test_arm_recipe_converted_on_x86_host(host_features, reduce_range):
    recipe = choose_recipe("onnxruntime", "rpi4b", host=_host("x86_64", host_features))
    assert (recipe.name, recipe.types, recipe.reduce_range) == ("ort-arm-neon", "S8S8",
                                                                 reduce_range)
    assert ("converting host" in recipe.why) is reduce_range
    # An explicit choice still wins.
    explicit = choose_recipe("onnxruntime", "rpi4b", host=_host("x86_64", host_features),
                             reduce_range=False)
    assert explicit.reduce_range is False


def test_every_profile_gets_a_recipe_for_both_engines():
    for profile in list_profiles():
        for engine in ("onnxruntime", "litert"):
            recipe = choose_recipe(engine, profile)
            assert recipe.engine == engine
            if engine == "litert":
                assert recipe.types == "S8S8"   # TFLite full-integer has no uint8 choice
            if profile.arch == "x86_64" and engine == "onnxruntime":
                assert recipe.types == "U8S8"   # S8S8 measured x1.02-1.14 of fp32 on x86


@pytest.mark.parametrize("features, family, reduce_range", [
    (("avx2", "fma", "avx512f", "avx512_vnni"), "x86-vnni", False),
    (("avx2", "fma", "avx_vnni"), "x86-vnni", False),
    (("avx2", "fma"), "x86-avx2", True),
    (("sse4_2",), "x86-generic", True),
])
def test_x86_hosts_by_cpu_flags(features, family, reduce_range):
    host = _host("x86_64", features)
    recipe = choose_recipe("onnxruntime", host, host=host)   # converted on that machine
    assert recipe.cpu_family == family
    assert (recipe.types, recipe.reduce_range) == ("U8S8", reduce_range)


def test_this_machine_is_read_from_cpuinfo():
    from edgepack.devices import detect_host
    host = detect_host()
    recipe = choose_recipe("onnxruntime")
    assert recipe.cpu_family == cpu_family(host.arch, host.features)


def test_overrides_replace_fields_and_are_validated():
    arm = _host("aarch64", ("neon",))
    recipe = choose_recipe("onnxruntime", "rpi4b", host=arm, activation_type="uint8",
                           reduce_range=True)
    assert (recipe.types, recipe.reduce_range) == ("U8S8", True)
    assert recipe.name == "ort-arm-neon+custom"
    assert choose_recipe("onnxruntime", "rpi4b", host=arm, reduce_range=None).name == \
        "ort-arm-neon"
    with pytest.raises(ConversionError, match="unknown int8 recipe field"):
        choose_recipe("onnxruntime", "rpi4b", bits=4)
    with pytest.raises(ConversionError, match="quant_format"):
        choose_recipe("onnxruntime", "rpi4b", quant_format="fake")
    with pytest.raises(ConversionError, match="uint8 is not a TFLite"):
        choose_recipe("litert", "rpi4b", activation_type="uint8")


def test_unknown_device_and_engine_are_refused_with_the_known_names():
    with pytest.raises(ConversionError, match="known devices"):
        choose_recipe("onnxruntime", "toaster")
    with pytest.raises(ConversionError, match="known: onnxruntime, litert"):
        choose_recipe("tensorrt", "rpi4b")


def test_recipe_record_names_the_evidence():
    record = RECIPES[("onnxruntime", "x86-avx2")].to_record()
    assert record["types"] == "U8S8" and record["format"] == "qdq"
    assert "VNNI" in record["why"] and "x0.72" in record["why"]


def test_dynamic_is_refused_for_conv_heavy_models_unless_asked(caplog):
    convnet = ["Conv", "Relu", "Conv", "Relu", "Gemm"]
    assert "ConvInteger" in dynamic_refusal(convnet, asked_explicitly=False)
    with caplog.at_level("WARNING"):
        assert dynamic_refusal(convnet, asked_explicitly=True) is None
    assert "10-15x slower" in caplog.text
    assert dynamic_refusal(["MatMul", "Add", "MatMul", "Softmax"], False) is None


def test_dynamic_refusal_reads_tflite_op_names(caplog):
    mobilenet_like = ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD", "FULLY_CONNECTED"]
    assert "LiteRT" in dynamic_refusal(mobilenet_like, False, engine="litert")
    with caplog.at_level("WARNING"):
        assert dynamic_refusal(mobilenet_like, True, engine="litert") is None
    assert "x1.5-2.7" in caplog.text
    assert dynamic_refusal(["FULLY_CONNECTED", "FULLY_CONNECTED", "CONV_2D"], False,
                           engine="litert") is None
