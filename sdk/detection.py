"""Workstation/CLI helpers for detection bundles: pack flags -> decode steps, drawing
detections on a photo (`run --draw`), and the `inspect` lines for task and decoders."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

from edgepack.runtime.errors import InputError

#: `pack --detect` choices -> the yolo decoder's version.
DETECTORS = {"yolov8": "v8", "yolov5": "v5"}


def detection_steps(detector: str, *, output: str | None = None,
                    coordinates: str = "pixels", score_threshold: float = 0.25,
                    iou: float = 0.45, max_detections: int = 100, nms_mode: str = "hard",
                    agnostic: bool = False) -> list[dict[str, Any]]:
    """The decode steps `pack --detect` writes: the yolo decoder, then nms."""
    if detector not in DETECTORS:
        raise InputError(f"--detect {detector!r}: use one of {sorted(DETECTORS)} (other layouts: "
                         "ssd_anchors or boxes decode steps in a --pipeline file)")
    decoder: dict[str, Any] = {"op": "yolo", "version": DETECTORS[detector],
                               "coordinates": coordinates, "score_threshold": score_threshold}
    if output:
        decoder["output"] = output
    nms: dict[str, Any] = {"op": "nms", "iou": iou, "max_detections": max_detections,
                           "mode": nms_mode}
    if agnostic:
        nms["agnostic"] = True
    return [decoder, nms]


def add_sigmoid(postprocess: dict[str, list], outputs: Sequence[Any],
                names: Sequence[str]) -> dict[str, list]:
    """`--sigmoid OUTPUT` (repeatable): a sigmoid step first on each named output."""
    known = [s.name for s in outputs]
    for name in names:
        if name not in known:
            raise InputError(f"--sigmoid {name!r}: the model's outputs are {known}")
        postprocess[name] = [{"op": "sigmoid"}] + list(postprocess.get(name, []))
    return postprocess


_COLORS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128)]


def draw_detections(image: Any, detections: Sequence[dict], out: Path) -> Path:
    """Write `image` (an (H, W, 3) uint8 array) with boxes, labels and scores to `out`."""
    import numpy as np
    from PIL import Image, ImageDraw
    picture = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    pen = ImageDraw.Draw(picture)
    width = max(2, round(min(picture.size) / 200))
    for d in detections:
        color = _COLORS[int(d.get("class", 0)) % len(_COLORS)]
        x0, y0, x1, y1 = (float(v) for v in d["box"])
        pen.rectangle([x0, y0, x1, y1], outline=color, width=width)
        text = f"{d.get('label', d.get('class'))} {float(d['score']):.2f}"
        left, top, right, bottom = pen.textbbox((x0, y0), text)
        lift = bottom - top + 2
        ty = y0 - lift if y0 - lift >= 0 else y0
        pen.rectangle([x0, ty, x0 + (right - left) + 4, ty + lift], fill=color)
        pen.text((x0 + 2, ty), text, fill=(255, 255, 255))
        for point in d.get("keypoints") or []:
            px, py = point[0], point[1]
            pen.ellipse([px - width, py - width, px + width, py + width], fill=color)
    try:
        picture.save(out)
    except (OSError, ValueError) as e:
        raise InputError(f"--draw {out}: cannot write the image ({e}); use a .jpg or .png "
                         "path in a writable folder") from e
    return out


def _params(step: dict) -> str:
    shown = []
    for key, value in step.items():
        if key == "op":
            continue
        if isinstance(value, dict):
            value = "{" + ", ".join(f"{k}={v}" for k, v in value.items()) + "}"
        shown.append(f"{key}={value}")
    return f"{step.get('op')}({', '.join(shown)})"


def task_lines(manifest) -> Iterator[str]:
    """`inspect` lines: the task kind and each decode step with its parameters."""
    if manifest.task:
        extra = {k: v for k, v in manifest.task.items() if k != "kind"}
        yield f"task: {manifest.task_kind}" + (f" {extra}" if extra else "")
    if manifest.decode:
        yield "decode: " + " -> ".join(_params(s) if isinstance(s, dict) else repr(s)
                                       for s in manifest.decode)
    if manifest.assets:
        yield "assets: " + ", ".join(f"{k} ({v})" for k, v in manifest.assets.items())
