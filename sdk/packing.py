"""Workstation helpers for `edgepack pack`: pipeline files and flags, ONNX opset lookup."""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.runtime.errors import InputError

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
