"""Can this bundle run on that device? Rules collected into one report, never a first-error.

Each rule looks at the bundle (manifest + model bytes, read and verified by
``edgepack.runtime.read_bundle``) and the profile, and adds findings with a severity and the
fix. ``CheckReport.ok`` is False when any finding is an error.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from edgepack.devices.catalog import EngineSupport, Profile, load_profile
from edgepack.devices.tflite_limits import MAX_OP_VERSIONS
from edgepack.devices.tflite_reader import TFLiteModelInfo, read_tflite

log = logging.getLogger(__name__)

SEVERITIES = ("error", "warning", "info")

# Resident memory of the process before the model, measured with psutil on the x86_64 dev
# machine (python 3.11 + numpy: 27 MB; an onnxruntime 1.32 session on a tiny model: +33 MB;
# an ai-edge-litert 2.3 interpreter: +12 MB), rounded up: ARM builds are of the same order.
BASE_MB = {"python+numpy": 30, "onnxruntime": 35, "litert": 15}
# onnxruntime keeps the initializers and also pre-packs weights for its kernels.
MODEL_COPIES = {"onnxruntime": 2.0, "litert": 1.0}
WARN_FRACTION = 0.5     # warn when the estimate takes more than half the RAM budget


@dataclass(frozen=True)
class Finding:
    """One result of a rule: what, how bad, and what to do."""

    severity: str   # "error" | "warning" | "info"
    code: str       # stable identifier, e.g. "ENGINE_UNAVAILABLE"
    message: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "code": self.code, "message": self.message,
                "fix": self.fix}


@dataclass(frozen=True)
class CheckReport:
    """All findings of `check_bundle` plus the numbers they were based on."""

    device: str
    bundle: str
    findings: tuple[Finding, ...]
    estimates: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no finding is an error (warnings and advice do not block)."""
        return not any(f.severity == "error" for f in self.findings)

    def by_severity(self, severity: str) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == severity)

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "bundle": self.bundle, "ok": self.ok,
                "findings": [f.to_dict() for f in self.findings], "estimates": self.estimates}


@dataclass(frozen=True)
class BundleFacts:
    """What the rules look at, read once from a verified bundle (see `bundle_facts`)."""

    target: str                         # "onnx" | "tflite"
    engine: str                         # runtime engine named by the manifest
    model_bytes: int
    quantization: str                   # none | fp16 | dynamic | int8 | unknown
    tflite: TFLiteModelInfo | None
    activation_bytes: int | None


def _tflite_quantization(info: TFLiteModelInfo) -> str:
    weights = {t.dtype for t in info.tensors if t.has_data}
    activations = {t.dtype for t in info.tensors if not t.has_data}
    if "int8" in activations or "uint8" in activations or "int16" in activations:
        return "int8"
    if "float16" in weights:
        return "fp16"
    if "int8" in weights:
        return "dynamic"
    return "none"


def _onnx_facts(data: bytes) -> tuple[int | None, str | None]:
    """(intermediate tensor bytes at batch 1, quantization mode) via onnx, when installed."""
    try:
        import onnx  # heavy and optional: only on workstations
        from onnx import shape_inference
    except ImportError:
        return None, None
    try:
        model = shape_inference.infer_shapes(onnx.load_from_string(data))
    except Exception as e:  # a model onnx cannot read still gets the other checks
        log.info("onnx shape inference failed (%s); memory estimate uses the model size", e)
        return None, None
    ops = {n.op_type for n in model.graph.node}
    if ops & {"MatMulInteger", "DynamicQuantizeLinear", "ConvInteger"}:
        quant = "dynamic"
    elif ops & {"QuantizeLinear", "QLinearConv", "QLinearMatMul", "QGemm"}:
        quant = "int8"
    elif any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        quant = "fp16"
    else:
        quant = "none"
    total = 0
    graph = model.graph
    for vi in list(graph.value_info) + list(graph.output) + list(graph.input):
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        n = 1
        for d in t.shape.dim:
            n *= d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).itemsize
        except Exception:  # string/unknown element types: count them as 4 bytes
            itemsize = 4
        total += n * itemsize
    return total, quant


def bundle_facts(bundle) -> BundleFacts:
    """Target, engine, size, quantization mode and working memory of a read Bundle.

    The quantization mode comes from the manifest when it says; otherwise it is inferred
    from the model (tensor types for TFLite, quantization ops for ONNX when onnx exists).
    """
    manifest = bundle.manifest
    data = bundle.model_bytes()
    engine = manifest.model.engine
    target = "tflite" if engine == "litert" or manifest.model.path.endswith(".tflite") else "onnx"
    quant = (manifest.quantization or {}).get("mode") if manifest.quantization else None
    info = None
    if target == "tflite":
        info = read_tflite(data)
        activations = sum(t.nbytes() for t in info.tensors if not t.has_data)
        quant = quant or _tflite_quantization(info)
    else:
        activations, inferred = _onnx_facts(data)
        quant = quant or inferred
    return BundleFacts(target, engine, len(data), quant or "unknown", info, activations)


def _engine_rules(s: BundleFacts, p: Profile, out: list[Finding]) -> EngineSupport | None:
    usable = p.engines_for(s.target)
    if usable:
        return usable[0]
    missing = [e for e in p.engines if e.target == s.target]
    why = "; ".join(f"{e.package}: {e.wheel}" for e in missing) or "no engine listed"
    other = "tflite" if s.target == "onnx" else "onnx"
    fix = (f"convert to {other} instead: `edgepack convert MODEL -o MODEL.edgepack --device "
           f"{p.name}` picks target={p.target}, quantization={p.quantization}") if p.engines_for(other) else (
        "use another device profile")
    out.append(Finding("error", "ENGINE_UNAVAILABLE",
                       f"no {s.target} engine installs on {p.name} ({p.arch}): {why}", fix))
    return None


def _op_version_findings(info: TFLiteModelInfo, table_version: str, package: str,
                         quantization: str) -> list[Finding]:
    table = MAX_OP_VERSIONS.get(table_version)
    if table is None:
        return [Finding("warning", "OP_TABLE_MISSING",
                        f"no op-version table for {package} {table_version}: op versions "
                        "not checked", "regenerate devices/tflite_limits.py")]
    found = []
    seen = set()
    for op in info.opcodes:
        if (op.name, op.version) in seen:
            continue
        seen.add((op.name, op.version))
        if op.builtin_code < 0:
            found.append(Finding("error", "CUSTOM_OP",
                                 f"custom op {op.name} is not built into {package}",
                                 "convert with TFLITE_BUILTINS only"))
            continue
        limit = table.get(op.name, 0)
        if limit == 0:
            found.append(Finding(
                "error", "OP_UNKNOWN", f"{package} {table_version} does not know op {op.name}",
                "convert without this op or use an engine built after it was added"))
        elif op.version > limit:
            dynamic_fc = op.name == "FULLY_CONNECTED" and quantization == "dynamic"
            fix = ("use full-integer quantization (`edgepack convert MODEL -o MODEL.edgepack "
                   "-q int8 --calibration-data DATA`): dynamic-range int8 "
                   f"emits FULLY_CONNECTED v{op.version}, {package} {table_version} stops at "
                   f"v{limit}") if dynamic_fc else (
                f"convert with an older TFLite converter or pick a quantization whose kernels "
                f"{package} {table_version} has")
            found.append(Finding(
                "error", "OP_VERSION",
                f"{package} {table_version} cannot run {op.name} version {op.version} "
                f"(highest it registers: {limit}); it fails with \"Didn't find op for builtin "
                f"opcode '{op.name}' version '{op.version}'\"", fix))
    return found


def _tflite_rules(s: BundleFacts, p: Profile, engine: EngineSupport, out: list[Finding]) -> None:
    info = s.tflite
    if info is None:  # bundle_facts reads it for every tflite bundle
        return
    if engine.op_table:
        out.extend(_op_version_findings(info, engine.op_table, engine.package,
                                        s.quantization))
    else:
        # The preferred engine is current; say what happens if the user installs the old one.
        for alt in p.engines_for("tflite")[1:]:
            if alt.op_table and any(f.severity == "error" for f in
                                    _op_version_findings(info, alt.op_table, alt.package,
                                                         s.quantization)):
                out.append(Finding("info", "ALT_ENGINE_OPS",
                                   f"{engine.package} runs it, but {alt.package} "
                                   f"{alt.op_table} would refuse some op versions",
                                   f"install {engine.package}, not {alt.package}"))
    if engine.package == "tflite-runtime" and p.arch in ("aarch64", "armv7l"):
        per_channel = [op for op in info.operators if op.opcode.name == "FULLY_CONNECTED"
                       and len(op.inputs) > 1 and 0 <= op.inputs[1] < len(info.tensors)
                       and info.tensors[op.inputs[1]].dtype == "int8"
                       and info.tensors[op.inputs[1]].scales > 1]
        if per_channel:
            out.append(Finding(
                "warning", "PER_CHANNEL_FC",
                f"{len(per_channel)} FULLY_CONNECTED layer(s) have per-channel int8 weights; "
                "tflite-runtime 2.14 is reported to crash on them on ARM boards (not "
                "reproduced under qemu cortex-a7/a53/a72 emulation here)",
                "convert with per-tensor dense weights (TFLiteConverter "
                "_experimental_disable_per_channel_quantization_for_dense_layers = True) and "
                "confirm on the board"))


def _memory_rules(s: BundleFacts, p: Profile, engine: EngineSupport | None,
                  out: list[Finding]) -> dict[str, Any]:
    runtime_engine = engine.runtime_engine if engine else s.engine
    model_mb = s.model_bytes / 2**20
    act_mb = (s.activation_bytes / 2**20 if s.activation_bytes is not None else model_mb)
    base = BASE_MB["python+numpy"] + BASE_MB.get(runtime_engine, 30)
    need = base + MODEL_COPIES.get(runtime_engine, 2.0) * model_mb + act_mb
    est = {"model_mb": round(model_mb, 3), "working_mb": round(act_mb, 3),
           "runtime_mb": base, "estimated_total_mb": round(need, 1),
           "ram_budget_mb": p.ram_budget_mb,
           "working_estimate": "activations at batch 1" if s.activation_bytes is not None
           else "model size (onnx not installed: no shape inference)"}
    if need > p.ram_budget_mb:
        out.append(Finding("error", "RAM", f"needs about {need:.0f} MB (runtime {base}, model "
                           f"{model_mb:.1f}, working {act_mb:.1f}) but {p.name} leaves "
                           f"{p.ram_budget_mb} MB of its {p.ram_mb} MB",
                           "quantize to int8 (4x smaller weights) or pick a smaller model"))
    elif need > WARN_FRACTION * p.ram_budget_mb:
        out.append(Finding("warning", "RAM", f"needs about {need:.0f} MB, more than half of "
                           f"the {p.ram_budget_mb} MB budget on {p.name}",
                           "leave room for the application: consider int8"))
    return est


def _numeric_rules(s: BundleFacts, p: Profile, out: list[Finding]) -> None:
    arm = p.arch in ("aarch64", "armv7l")
    if s.quantization == "fp16":
        if arm and not p.has("fp16"):
            out.append(Finding(
                "warning", "FP16_NO_ARITH",
                f"fp16 model on {p.core}, which has no half-precision arithmetic: weights are "
                "widened to fp32 at load (no speed-up, fp32 memory at run time)",
                "use int8 for speed, or keep fp16 only to halve the download"))
        elif p.has("fp16"):
            out.append(Finding("info", "FP16_OK",
                               f"{p.core} has fp16 arithmetic: fp16 kernels can run natively"))
    if arm and s.quantization in ("none", "fp16", "dynamic"):
        if p.has("dotprod"):
            out.append(Finding("info", "ADVICE_INT8",
                               f"{p.core} has int8 dot-product instructions (SDOT): a full "
                               "int8 model is usually the fastest choice here",
                               _int8_command(p.name)))
        else:
            out.append(Finding("info", "ADVICE_INT8",
                               f"int8 is about 4x smaller than fp32 and usually faster on "
                               f"{p.core} NEON", _int8_command(p.name)))


def _int8_command(device: str) -> str:
    """The advice to convert for `device` with full int8 (MODEL and DATA are the user's)."""
    return (f"`edgepack convert MODEL -o MODEL.edgepack --device {device} -q int8 "
            "--calibration-data DATA`")


def check_bundle(bundle_path: str | os.PathLike, profile: str | Profile) -> CheckReport:
    """Check whether the bundle at `bundle_path` can run on `profile` (name or Profile).

    Returns a CheckReport (``.ok`` is False when any finding is an error). Raises
    DeviceError for an unknown profile and the runtime's BundleError subclasses when the
    bundle itself cannot be read or verified.
    """
    from edgepack.runtime import read_bundle

    p = load_profile(profile)
    bundle = read_bundle(bundle_path)
    s = bundle_facts(bundle)
    findings: list[Finding] = []
    engine = _engine_rules(s, p, findings)
    if engine is not None and s.target == "tflite":
        _tflite_rules(s, p, engine, findings)
    estimates = _memory_rules(s, p, engine, findings)
    estimates.update(target=s.target, quantization=s.quantization,
                     engine=engine.package if engine else None)
    _numeric_rules(s, p, findings)
    order = {sev: i for i, sev in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: order[f.severity])
    return CheckReport(p.name, str(bundle_path), tuple(findings), estimates)


__all__ = ["CheckReport", "Finding", "BundleFacts", "bundle_facts", "check_bundle"]
