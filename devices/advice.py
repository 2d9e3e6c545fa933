"""Conversion defaults per device, and the combinations a device cannot run.

Used by ``edgepack convert --device NAME``: the converter takes its defaults from here and
refuses (with the reason) what the device's engines cannot run, before any work starts.
"""
from __future__ import annotations

from typing import NamedTuple

from edgepack.devices.catalog import QUANTIZATIONS, TARGET_ENGINE, Profile, load_profile
from edgepack.devices.tflite_limits import MAX_OP_VERSIONS
from edgepack.runtime.errors import DeviceError


class ConvertDefaults(NamedTuple):
    """What `edgepack convert --device` uses when the user does not say otherwise.

    A named tuple: `target, engine, quantization, threads = defaults_for("rpi4b")` works.
    """

    target: str        # "onnx" | "tflite"
    engine: str        # runtime engine: "onnxruntime" | "litert"
    quantization: str  # "none" | "fp16" | "dynamic" | "int8"
    threads: int


def defaults_for(profile: str | Profile) -> ConvertDefaults:
    """Target, engine, quantization and threads recommended for `profile` (name or Profile)."""
    p = load_profile(profile)
    return ConvertDefaults(p.target, TARGET_ENGINE[p.target], p.quantization, p.threads)


def refuse_reason(profile: str | Profile, target: str, quantization: str) -> str | None:
    """Why `target` + `quantization` cannot run on `profile`, or None when it can.

    Raises DeviceError when `target` or `quantization` is not a known name.
    """
    p = load_profile(profile)
    if target not in TARGET_ENGINE:
        raise DeviceError(f"unknown target '{target}'; known: {sorted(TARGET_ENGINE)}")
    if quantization not in QUANTIZATIONS:
        raise DeviceError(f"unknown quantization '{quantization}'; known: {list(QUANTIZATIONS)}")
    engines = p.engines_for(target)
    if not engines:
        missing = "; ".join(f"{e.package}: {e.wheel}" for e in p.engines if e.target == target)
        return (f"{p.name} ({p.arch}) has no {target} engine ({missing or 'none listed'}); "
                f"use --target {p.target}")
    engine = engines[0]
    if target == "tflite" and quantization == "dynamic" and engine.op_table:
        limit = MAX_OP_VERSIONS.get(engine.op_table, {}).get("FULLY_CONNECTED", 0)
        return (f"dynamic-range int8 TFLite models use FULLY_CONNECTED v12 (TF 2.21 "
                f"converter, measured), but "
                f"{engine.package} {engine.op_table} (the only TFLite engine for {p.name}) "
                f"stops at v{limit}; use -q int8 (with --calibration-data)")
    return None
