"""int8 recipes: which quantization settings pay off for one engine on one CPU family.

A recipe is data (a frozen dataclass), picked from a device profile or from the host and
overridable field by field. The table below is what was measured, not folklore; where a
setting could not be measured here (ARM timings need a board, not qemu), the row says whose
advice it follows.

Measurements (host: AMD EPYC Zen 3, x86_64 AVX2+FMA, **no** VNNI; onnxruntime 1.32;
MobileNetV2 1.0 at 224x224, batch 1, 1 thread, int8/fp32 ratio of summed kernel times from
onnxruntime profiling, all sessions interleaved in one process; command:
`python benchmarks/int8.py --only ops`):

    QDQ S8S8 per-channel (onnxruntime's quantize_static defaults) ... x1.02-1.14 (slower: ORT
        keeps DQ -> float Conv -> Q for int8 activations on x86, QuantizeLinear/Dequantize
        alone cost 2.2 ms of 13.7)
    QDQ U8S8 per-channel ............................................ x0.72-0.78
    QDQ U8S8 per-channel reduce_range ............................... x0.72-0.80
    QDQ U8S8 per-tensor reduce_range ................................ x0.70-0.81 (per-channel
        costs nothing measurable)
    QOperator U8S8 per-channel reduce_range ......................... x0.77-0.81 (no gain)
    QDQ U8U8 per-channel ............................................ x1.01-1.12 (no fast path)
    U8S8 + first conv (3 input channels) kept float ................. x0.68-0.78, 1-9%
        better than all-int8 in 4 of 4 runs (its own time -40..-50%, minus a float->NCHWc
        reorder and a larger QuantizeLinear): hence float_thin_convs=4 on x86
    U8S8 + all depthwise convs kept float ........................... x0.79-0.89 (slower: they
        run as NHWC float convs between Q/DQ pairs)
    per op kind (U8S8): pointwise Conv x0.57-0.65, depthwise Conv x0.99-1.07, first Conv
        x1.3-1.6, Gemm x0.36.
Whole bundles through edgepack.runtime (`python benchmarks/int8.py --only speed`, 40-60
interleaved rounds, medians, load average 3-7 from other users): before float_thin_convs
x0.76-0.78 at 1 thread and x0.67-0.69 at 2 threads; with it x0.69-0.74 and x0.55-0.65;
S8S8 defaults x0.96-1.04 at both.
So on this CPU family only the stem conv is worth leaving in float on onnxruntime (no op
type as a whole: depthwise convs kept float cost more than they save), and int8 pays
x0.7-0.8, not x0.5: without VNNI, u8s8 products go through vpmaddubsw+vpmaddwd (about
twice the fp32 FMA rate at best) and onnxruntime's fp32 depthwise NCHWc kernels are
already as fast as its int8 ones.

LiteRT 2.3 (XNNPACK) on the same host and model (Keras MobileNetV2, full-int8 builtins):
    int8/fp32 x1.01-1.19 at 1 thread, x1.06-1.14 at 2 threads (int8 not faster); dynamic
    range (int8 weights) x1.5-2.7; without the XNNPACK delegate both are ~3.5x slower.
    XNNPACK's QS8 kernels on AVX2 widen to 16 bits, so they cannot beat its fp32 FMA
    kernels; on ARM (NEON/dotprod) int8 is XNNPACK's fast path.

On an AVX512-VNNI + AMX Intel Xeon (2 cores; onnxruntime 1.32; same model and command;
load average 5-8 from other users, so per-op shares, which hold under load, not absolute
times): U8S8 per-channel, kernel time vs fp32 per op kind: pointwise Conv x0.34-0.38,
depthwise Conv x0.70-0.80 (the 32-channel one at 112x112 x0.96: MLAS's AVX-512 depthwise
kernel works on 64 channels at a time), head Gemm x0.46-0.51, stem Conv (3 channels)
x1.9-2.3: 17-19% of the int8 model. MLAS's symmetric conv kernels (indirect conv, fused
requantization) take int8 weights with zero point 0 and input channels a multiple of 4;
the stem falls to im2col + integer GEMM. Padding it to 4 channels (pad_conv_channels=4,
exact) gives x0.7-0.9 of fp32 and the whole model x0.48-0.56 (median 0.50) instead of
x0.55-0.63 in the same runs, 9-14% less int8 time in each (ORT's own quantize_static U8S8:
x0.56-0.64); keeping the stem float instead gives x0.51-0.57 (its fp32 output must be
reordered from NCHWc and quantized). docs/int8.md has the per-op table.
Per-tensor weights, QOperator: no change. AMX: MLAS requests the tile permission at import
and runs U8S8 GEMMs on it (383 GMAC/s on a 1024^3 MatMulInteger, 1 core), but convs take
the VNNI symmetric kernels; forcing pointwise convs onto the GEMM path (nonzero weight
zero point) measured x3.8 slower, so nothing is to be done for AMX.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from typing import Any, Iterable

from edgepack.runtime.errors import ConversionError

log = logging.getLogger(__name__)

ENGINES = ("onnxruntime", "litert")
FORMATS = ("qdq", "qoperator")
INT8_TYPES = ("uint8", "int8")
#: CPU families a recipe can be chosen for, from the profile's/host's ISA features.
CPU_FAMILIES = ("x86-vnni", "x86-avx2", "x86-generic", "arm-dotprod", "arm-neon", "unknown")
#: Convolutions and matrix products, as ONNX op types and TFLite builtin names: a model
#: with at least as many of the first as of the second is "conv-heavy" and must not be
#: quantized dynamically.
CONV_OPS = ("Conv", "ConvTranspose", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV",
            "CONV_3D")
MATMUL_OPS = ("MatMul", "Gemm", "FULLY_CONNECTED", "BATCH_MATMUL")


@dataclass(frozen=True)
class Recipe:
    """How to quantize to int8 for one engine on one CPU family.

    activation_type / weight_type: "uint8" | "int8" (U8S8 = uint8 activations, int8 weights).
    reduce_range: 7-bit weights, so u8*s8 pair sums cannot saturate 16 bits on x86 without
        VNNI (vpmaddubsw); onnxruntime documents it for that CPU class.
    quant_format: "qdq" (QuantizeLinear/DequantizeLinear around float ops, fused by the
        engine) or "qoperator" (QLinearConv & co. written out).
    per_channel: one weight scale per output channel.
    graph_prep: shape inference + BatchNorm/activation fusion before quantization.
    float_op_types: op types left in float because their int8 kernels are slower on this
        engine/CPU (measured; empty when nothing was worth it).
    float_thin_convs: convolutions reading at most this many input channels stay float
        (0 = none): an image stem (3 channels) is an int8 GEMM with K = 27, too short to
        pay for the int8 packing; measured x1.3-1.6 of float for MobileNetV2's stem.
    allow_dynamic: whether "dynamic" (weights-only int8) is acceptable for conv-heavy models.
    pad_conv_channels: after quantization, pad the input channels of int8 convs to a
        multiple of this (0 = never): onnxruntime's symmetric x86 conv kernels need a
        multiple of 4, and a 3-channel stem otherwise runs as im2col + GEMM at x1.9-2.3 of
        its fp32 time (ort_fast_paths.py; exact: zero-point padding, zero weights).
    global_pool: after quantization, write a spatial ReduceMean between Q/DQ as
        GlobalAveragePool, which onnxruntime runs in int8 NHWC (QLinearGlobalAveragePool)
        instead of transposing, dequantizing and quantizing around a float mean.
    why: one line naming the evidence (shown in the manifest).
    """

    name: str
    engine: str
    cpu_family: str
    activation_type: str = "uint8"
    weight_type: str = "int8"
    reduce_range: bool = False
    quant_format: str = "qdq"
    per_channel: bool = True
    graph_prep: bool = True
    float_op_types: tuple[str, ...] = ()
    float_thin_convs: int = 0
    allow_dynamic: bool = False
    pad_conv_channels: int = 0
    global_pool: bool = False
    why: str = ""

    def __post_init__(self) -> None:
        checks = (("engine", ENGINES), ("cpu_family", CPU_FAMILIES),
                  ("activation_type", INT8_TYPES), ("weight_type", INT8_TYPES),
                  ("quant_format", FORMATS))
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ConversionError(f"int8 recipe field {name}={getattr(self, name)!r} is not "
                                      f"one of {', '.join(allowed)}")
        if self.engine == "litert" and (self.activation_type, self.weight_type) != ("int8", "int8"):
            raise ConversionError("LiteRT int8 models are int8 activations and int8 weights; "
                                  "uint8 is not a TFLite full-integer type")
        if not isinstance(self.pad_conv_channels, int) or self.pad_conv_channels < 0:
            raise ConversionError(f"int8 recipe field pad_conv_channels must be an integer >= 0 "
                                  f"(0 = off), got {self.pad_conv_channels!r}")
        object.__setattr__(self, "float_op_types", tuple(self.float_op_types))

    @property
    def types(self) -> str:
        """"U8S8"-style short name of the activation/weight types."""
        short = {"uint8": "U8", "int8": "S8"}
        return short[self.activation_type] + short[self.weight_type]

    def to_record(self) -> dict[str, Any]:
        """The `recipe` entry of the manifest's `quantization` field."""
        return {"name": self.name, "engine": self.engine, "cpu_family": self.cpu_family,
                "types": self.types, "reduce_range": self.reduce_range,
                "format": self.quant_format, "per_channel": self.per_channel,
                "graph_prep": self.graph_prep, "float_op_types": list(self.float_op_types),
                "float_thin_convs": self.float_thin_convs,
                "pad_conv_channels": self.pad_conv_channels, "global_pool": self.global_pool,
                "why": self.why}

    def with_overrides(self, **changes: Any) -> "Recipe":
        """A copy with the given fields replaced (None values are ignored), re-validated."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConversionError(f"unknown int8 recipe field(s) {unknown}; known: {sorted(known)}")
        changes = {k: v for k, v in changes.items()
                   if v is not None and getattr(self, k) != (tuple(v) if isinstance(v, list)
                                                             else v)}
        if not changes:
            return self
        return replace(self, name=f"{self.name}+custom", **changes)


_ORT_X86 = ("onnxruntime's quantize_static guidance for x86; measured here "
            "(AVX2, no VNNI): S8S8 x1.02-1.14, U8S8 x0.72 of fp32 on MobileNetV2")

#: (engine, cpu family) -> recipe. Families without a row fall back to the engine default.
RECIPES: dict[tuple[str, str], Recipe] = {(r.engine, r.cpu_family): r for r in (
    Recipe("ort-x86-vnni", "onnxruntime", "x86-vnni", "uint8", "int8", reduce_range=False,
           pad_conv_channels=4, global_pool=True,
           why="VNNI (vpdpbusd) accumulates u8*s8 without 16-bit saturation; " + _ORT_X86
               + "; on an AVX512-VNNI Xeon the 3-channel stem padded to 4 channels runs in "
               "MLAS's symmetric conv kernel (x0.7-0.8 of fp32 instead of x1.9-2.3)"),
    Recipe("ort-x86-avx2", "onnxruntime", "x86-avx2", "uint8", "int8", reduce_range=True,
           float_thin_convs=4,
           why="without VNNI u8*s8 pairs go through vpmaddubsw and can saturate: 7-bit "
               "weights avoid it at no measured speed cost; " + _ORT_X86),
    Recipe("ort-x86-generic", "onnxruntime", "x86-generic", "uint8", "int8", reduce_range=True,
           float_thin_convs=4,
           why="pre-AVX2 x86: same saturation risk as AVX2, U8S8 per " + _ORT_X86),
    # ARM: not measurable on this host (qemu timings are meaningless). onnxruntime's own
    # guidance: symmetric int8 activations on ARM, whose sdot/NEON kernels take S8S8 and
    # which keeps QDQ int8 activations fused by default there.
    Recipe("ort-arm-dotprod", "onnxruntime", "arm-dotprod", "int8", "int8",
           why="ARMv8.2 sdot kernels take S8S8 directly (onnxruntime guidance for ARM)"),
    Recipe("ort-arm-neon", "onnxruntime", "arm-neon", "int8", "int8",
           why="onnxruntime guidance for ARM (S8S8, QDQ); no dotprod, so int8 gains are "
               "smaller than on ARMv8.2+ and the speed check matters"),
    Recipe("litert-x86", "litert", "x86-avx2", "int8", "int8",
           why="TFLite full-integer is S8 per-channel; measured here XNNPACK int8 is x1.15 "
               "of fp32 on MobileNetV2: the speed check will warn"),
    Recipe("litert-x86-vnni", "litert", "x86-vnni", "int8", "int8",
           why="TFLite full-integer is S8 per-channel (XNNPACK QS8 kernels)"),
    Recipe("litert-arm", "litert", "arm-neon", "int8", "int8",
           why="TFLite full-integer is S8 per-channel; XNNPACK QS8 NEON kernels"),
    Recipe("litert-arm-dotprod", "litert", "arm-dotprod", "int8", "int8",
           why="TFLite full-integer is S8 per-channel; XNNPACK QS8 sdot kernels"),
)}



def cpu_family(arch: str, features: Iterable[str]) -> str:
    """The CPU family of an `arch` (`uname -m`) with ISA `features` (profile names)."""
    feats = set(features)
    if arch in ("x86_64", "amd64", "AMD64", "i686"):
        if feats & {"avx512_vnni", "avx_vnni"}:
            return "x86-vnni"
        return "x86-avx2" if "avx2" in feats else "x86-generic"
    if arch in ("aarch64", "arm64", "armv7l", "armv8l"):
        return "arm-dotprod" if "dotprod" in feats else "arm-neon"
    return "unknown"


def recipe_for(engine: str, family: str) -> Recipe:
    """The recipe for `engine` on CPU `family` (the engine's default row when none matches)."""
    if engine not in ENGINES:
        raise ConversionError(f"no int8 recipes for engine {engine!r}; known: {', '.join(ENGINES)}")
    if family not in CPU_FAMILIES:
        raise ConversionError(f"unknown CPU family {family!r}; known: {', '.join(CPU_FAMILIES)}")
    recipe = RECIPES.get((engine, family))
    if recipe is None:
        # The conservative row of the same architecture: x86 without VNNI, ARM without sdot.
        fallback = "arm-neon" if family.startswith("arm") else "x86-avx2"
        recipe = RECIPES[(engine, fallback)]
        log.info("no int8 recipe for %s on %s; using %s", engine, family, recipe.name)
    return recipe


def choose_recipe(engine: str, device: Any = None, *, host: Any = None,
                  **overrides: Any) -> Recipe:
    """The int8 recipe for `engine` on `device`, with field `overrides` applied.

    device: a device profile name or Profile (edgepack.devices), a HostInfo, or None for
        the machine this runs on (read from /proc/cpuinfo by edgepack.devices).
    host: the machine that converts and validates (HostInfo; None = this one). See
        `for_validation_host`: a target recipe is adjusted so validating it here is honest.
    Raises ConversionError for an unknown engine/device or override field.
    """
    arch, features, label = _describe(device)
    family = cpu_family(arch, features)
    recipe = recipe_for(engine, family)
    if device is not None:
        host_arch, host_features, _ = _describe(host)
        recipe = for_validation_host(recipe, cpu_family(host_arch, host_features))
    recipe = recipe.with_overrides(**overrides)
    log.info("int8 recipe %s for %s (%s, %s)", recipe.name, label, arch, family)
    return recipe


def for_validation_host(recipe: Recipe, host_family: str) -> Recipe:
    """`recipe` made safe to validate on a host of `host_family`.

    The bundle is validated on the converting machine before it ships. 8-bit weights are
    exact on ARM and VNNI kernels but saturate in onnxruntime's x86 kernels without VNNI:
    validating an ARM recipe on such a host measured top-1 agreement 0.70 instead of
    ~1.0 on a small MLP (tests/converters/test_device.py). 7-bit weights run correctly
    on both, so the validation numbers in the manifest are the device's numbers.
    """
    if (recipe.engine == "onnxruntime" and not recipe.reduce_range
            and host_family in ("x86-avx2", "x86-generic")):
        return replace(recipe, reduce_range=True,
                       why=recipe.why + "; 7-bit weights because the converting host "
                       f"({host_family}, no VNNI) validates the bundle and its int8 "
                       "kernels saturate with 8-bit weights")
    return recipe


def _describe(device: Any) -> tuple[str, tuple[str, ...], str]:
    from edgepack import devices
    from edgepack.runtime.errors import DeviceError
    if device is None:
        host = devices.detect_host()
        return host.arch, host.features, "this machine"
    if isinstance(device, devices.HostInfo):
        return device.arch, device.features, "host"
    try:
        profile = devices.load_profile(device)
    except DeviceError as e:
        raise ConversionError(str(e)) from e
    return profile.arch, profile.features, profile.name


def dynamic_refusal(model_op_types: Iterable[str], asked_explicitly: bool,
                    engine: str = "onnxruntime") -> str | None:
    """Why "dynamic" quantization should not be used on this model, or None.

    model_op_types: one entry per node (ONNX op types, or TFLite builtin names for
        engine "litert").
    Dynamic quantization of a conv-heavy ONNX model either leaves the convolutions in float
    (edgepack's dynamic mode quantizes only MatMul/Gemm: no gain) or makes them ConvInteger,
    which onnxruntime's CPU provider runs 10-15x slower than float (issue 8's measurement on
    MobileNetV2); measured here on LiteRT, dynamic MobileNetV2 is x1.5-2.7 of fp32. A recipe
    never picks it; when the user asks explicitly, this warns and returns None.
    """
    if engine not in ENGINES:
        raise ConversionError(f"no int8 recipes for engine {engine!r}; known: {', '.join(ENGINES)}")
    ops = list(model_op_types)
    convs = sum(op in CONV_OPS for op in ops)
    mats = sum(op in MATMUL_OPS for op in ops)
    if convs and convs >= mats:
        # The figures are MobileNetV2's, not this model's: say so (issue 12 item 21).
        cost = ("leaves them float or makes them ConvInteger, which ran 10-15x slower than "
                "float on onnxruntime for MobileNetV2" if engine == "onnxruntime" else
                "ran x1.5-2.7 of fp32 latency on LiteRT for MobileNetV2 224x224")
        message = (f"the model has {convs} convolutions: dynamic int8 (weights only) {cost} "
                   "(measured by benchmarks/int8.py on an x86 host, not on this model: time "
                   "yours with `edgepack bench`); use int8 with calibration data")
        if asked_explicitly:
            log.warning("%s (kept because it was asked explicitly)", message)
            return None
        return message
    return None
