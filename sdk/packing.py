"""Workstation helpers for `edgepack pack`: pipeline files and flags, ONNX opset lookup."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.converters.labels import check_labels  # noqa: F401  (pack uses it too)
from edgepack.runtime.errors import InputError, PipelineError
from edgepack.runtime.specs import format_shape

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (e.g. Ubuntu 22.04 on a Jetson)
    import tomli as tomllib


@dataclass(frozen=True)
class ImagePipeline:
    """The common image-classifier pipeline, as flags; anything richer goes in a file."""

    resize: tuple[int, int] | None = None
    reference: str = "pillow"
    color: str | None = None
    scale: float | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str | None = None          # e.g. "HWC:NCHW"
    softmax: bool = False
    topk: int | None = None
    resize_shorter: int | None = None      # torchvision Resize(N): shorter side to N
    center_crop: tuple[int, int] | None = None  # torchvision CenterCrop rounding
    letterbox: tuple[int, int] | None = None
    letterbox_order: str = "resize_then_pad"
    pad_value: float = 114.0

    def preprocess_steps(self) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = []
        if self.color:
            steps.append({"op": "color", "from": "RGB", "to": self.color.upper()})
        resizing = [flag for flag, value in (("--resize", self.resize), ("--letterbox", self.letterbox),
                                             ("--resize-shorter", self.resize_shorter)) if value]
        if len(resizing) > 1:
            raise InputError(f"{' and '.join(resizing)} both resize the image; give one")
        if self.resize:
            steps.append({"op": "resize", "size": list(self.resize), "method": "bilinear",
                          "reference": self.reference})
        if self.resize_shorter:
            steps.append({"op": "resize", "aspect": "shorter", "size": self.resize_shorter,
                          "method": "bilinear", "reference": self.reference})
        if self.center_crop:
            steps.append({"op": "center_crop", "size": list(self.center_crop),
                          "reference": "torchvision"})
        if self.letterbox:
            pad = int(self.pad_value) if float(self.pad_value).is_integer() else self.pad_value
            steps.append({"op": "letterbox", "size": list(self.letterbox), "value": pad,
                          "order": self.letterbox_order, "method": "bilinear",
                          "reference": self.reference})
        if self.scale is not None:
            steps.append({"op": "scale", "factor": self.scale})
        if self.mean is not None or self.std is not None:
            steps.append({"op": "normalize", "mean": list(self.mean or (0.0,)),
                          "std": list(self.std or (1.0,))})
        if self.layout:
            source, sep, target = self.layout.partition(":")
            if not sep:
                # A bad flag is the user's input (exit 2), not a bad bundle (exit 3).
                raise InputError(f"--layout {self.layout!r} must look like HWC:NCHW")
            steps.append({"op": "layout", "from": source, "to": target})
        return steps

    def postprocess_steps(self) -> list[dict[str, Any]]:
        steps: list[dict[str, Any]] = []
        if self.softmax:
            steps.append({"op": "softmax"})
        if self.topk:
            steps.append({"op": "topk", "k": self.topk})
        return steps


def read_pipeline_file(path: Path) -> dict[str, Any]:
    """A TOML or JSON file with optional `preprocess`, `postprocess` and `layouts` tables."""
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: cannot read the pipeline file ({e})") from e
    # DESIGN §7 tables (task, decode, stream, examples, stages) pass through to the manifest
    known = {"preprocess", "postprocess", "layouts", "task", "decode", "stream", "examples",
             "stages"}
    unknown = set(data) - known
    if unknown:
        raise InputError(f"{path}: unknown tables {sorted(unknown)}; use {sorted(known)}")
    return data


def read_labels(path: Path) -> list[str]:
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read labels ({e})") from e


def onnx_opset(model: bytes) -> int | None:
    """The default-domain opset of an ONNX model, when the onnx package is installed."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        proto = onnx.load_model_from_string(model)
    except Exception:  # a model ORT accepts but onnx cannot parse: leave the opset unknown
        return None
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


#: Steps that take a decoded image (height x width x channels, RGB, uint8) as their input.
IMAGE_STEPS = frozenset({"resize", "center_crop", "letterbox", "color"})


#: Audio steps that take 1-D samples (runtime/ops/audio): fed one stream window.
AUDIO_STEPS = frozenset({"preemphasis", "frames", "stft", "log_mel", "fbank", "resample"})


def synthetic_input(steps: list, spec, stream=None) -> tuple[str, np.ndarray]:
    """An input of the kind the preprocess `steps` declare: a decoded RGB image when they
    start from one (resize, crop, color, or a layout from HWC), samples of one stream
    window (context + window, 1 s without a stream) when they start with an audio step,
    else a tensor of the model input's own shape (batch 1, dynamic dims 1). Returns
    (kind, array)."""
    ops = [s.get("op") for s in steps if isinstance(s, dict)]
    if ops and ops[0] in AUDIO_STEPS:
        stream = stream if isinstance(stream, dict) else {}
        n = int(stream.get("window", 16000)) + int(stream.get("context", 0))
        return "waveform", np.random.default_rng(0).uniform(-0.5, 0.5, n).astype(np.float32)
    layout = next((s for s in steps if isinstance(s, dict) and s.get("op") == "layout"), None)
    from_hwc = layout is not None and str(layout.get("from", "")).upper() in ("HWC", "NHWC")
    if IMAGE_STEPS & set(ops) or from_hwc:
        height, width = _spatial(spec, layout) if "resize" not in ops else (37, 41)
        rng = np.random.default_rng(0)
        return "RGB image", rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    shape = [1 if d == -1 else d for d in spec.shape]
    return "tensor", np.zeros(shape, dtype=np.float32)


def _spatial(spec, layout) -> tuple[int, int]:
    """The model's height and width from its shape and the layout it is fed in."""
    target = str((layout or {}).get("to", "NCHW")).upper().lstrip("N")
    dims = [d for d in spec.shape[-3:]] if len(spec.shape) >= 3 else [32, 32, 3]
    by_axis = dict(zip(target[-3:] if len(target) >= 3 else "CHW", dims))
    height, width = by_axis.get("H", 32), by_axis.get("W", 32)
    return (height if height > 0 else 32, width if width > 0 else 32)


def check_pipeline(model, where: str) -> list[str]:
    """Run every input's preprocessing on a synthetic input of the kind it declares and
    check the result fits the model's input. Returns what was checked (one line per input);
    raises PipelineError naming the input, both shapes and the fix on a mismatch. Inputs
    whose pipeline calls an application hook are skipped (the hook is not registered here)."""
    checked = []
    for spec in model.inputs:
        steps = list(model.manifest.preprocess.get(spec.name, []))
        if not steps:
            continue
        if any(isinstance(s, dict) and s.get("op") == "hook" for s in steps):
            checked.append(f"{spec.name}: not checked (its pipeline calls an application hook)")
            continue
        kind, raw = synthetic_input(steps, spec, model.manifest.stream)
        try:
            value = model.preprocess({spec.name: raw})[spec.name]
            spec.check(value)
        except (InputError, PipelineError) as e:
            raise PipelineError(
                f"{where}: the preprocessing of input {spec.name!r} cannot produce the "
                f"model's input: on a synthetic {kind} of shape {list(raw.shape)} it fails "
                f"({str(e).splitlines()[0]}); the model takes {format_shape(spec.shape)} "
                f"{spec.dtype}. Fix the pipeline (size, channels/--color, layout) to match the "
                "model") from e
        checked.append(f"{spec.name}: preprocessing turns a {kind} into "
                       f"{format_shape(spec.shape)} {spec.dtype}")
    return checked
