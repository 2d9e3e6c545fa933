"""`pack` options for geometry (resize-shorter, center-crop, letterbox), sigmoid and YOLO
detection, and `run --draw`; kept here so runtime_cmds.py only wires them in."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import click

from edgepack.runtime.errors import InputError
from edgepack.runtime.ops.vision.candidates import CANDIDATE_DECODERS as DECODERS

from ..detection import add_sigmoid, detection_steps, draw_detections
from .values import height_width

_OPTIONS = [
    click.option("--resize-shorter", type=click.IntRange(min=1), metavar="N",
                 help="Resize the shorter side to N, keeping the aspect (torchvision Resize(N))."),
    click.option("--center-crop", metavar="H,W",
                 help="Crop the centre H,W (or N) after resizing (torchvision CenterCrop)."),
    click.option("--letterbox", metavar="H,W",
                 help="Fit inside H,W keeping the aspect and pad the rest (boxes map back)."),
    click.option("--letterbox-order", type=click.Choice(["resize_then_pad", "pad_then_resize"]),
                 default="resize_then_pad", show_default=True,
                 help="Ultralytics-style resize_then_pad, or MediaPipe-style pad_then_resize."),
    click.option("--pad-value", type=click.FloatRange(0.0, 255.0), default=114.0, show_default=True,
                 help="Letterbox padding value (in input pixel units)."),
    click.option("--sigmoid", "sigmoid_outputs", multiple=True, metavar="OUTPUT",
                 help="Apply a sigmoid to OUTPUT (repeatable)."),
    click.option("--detect", type=click.Choice(["yolov8", "yolov5"]),
                 help="Decode YOLO output into detections + NMS (task 'detect'); other "
                      "layouts (ssd_anchors, boxes) go in a --pipeline file."),
    click.option("--box-coordinates", type=click.Choice(["pixels", "normalized"]),
                 default="pixels", show_default=True,
                 help="--detect: boxes in model-input pixels or normalized to [0, 1]."),
    click.option("--score-threshold", type=click.FloatRange(0.0, 1.0), default=0.25,
                 show_default=True, help="--detect: keep candidates scoring above this."),
    click.option("--iou", type=click.FloatRange(0.0, 1.0), default=0.45, show_default=True,
                 help="--detect: NMS IoU threshold (IoU above it suppresses)."),
    click.option("--max-detections", type=click.IntRange(min=1), default=100,
                 show_default=True, help="--detect: at most this many detections per image."),
    click.option("--agnostic", is_flag=True,
                 help="--detect: class-agnostic NMS (boxes of any class suppress each other)."),
]


def detection_options(command):
    """Decorate `pack` with the options above (they arrive in **kwargs)."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command




def geometry_flags(options: dict[str, Any]) -> dict[str, Any]:
    """ImagePipeline keyword arguments from the options."""
    return {"resize_shorter": options.get("resize_shorter"),
            "center_crop": height_width(options.get("center_crop"), "--center-crop"),
            "letterbox": height_width(options.get("letterbox"), "--letterbox"),
            "letterbox_order": options.get("letterbox_order") or "resize_then_pad",
            "pad_value": options.get("pad_value", 114.0)}


def apply_detection(options: dict[str, Any], outputs: Sequence[Any], postprocess: dict,
                    task_fields: dict[str, Any]) -> tuple[dict, dict[str, Any]]:
    """(postprocess, pack_bundle task fields) with --sigmoid and --detect applied."""
    postprocess = add_sigmoid(dict(postprocess), outputs, options.get("sigmoid_outputs") or ())
    decode = task_fields.get("decode") or []
    if decode and isinstance(decode[-1], dict) and decode[-1].get("op") in DECODERS:
        raise InputError(f"the decode steps end with {decode[-1]['op']!r}, which yields "
                         "candidates, not detections; add {op = \"nms\"} after it "
                         "(mode = \"none\" when the model already suppressed)")
    detector = options.get("detect")
    if detector:
        if task_fields.get("decode"):
            raise InputError("--detect and a decode table in the pipeline file both describe "
                             "the decoding; give one of them")
        task_fields = dict(task_fields)
        task_fields["task"] = {**(task_fields.get("task") or {}), "kind": "detect"}
        task_fields["decode"] = detection_steps(
            detector, coordinates=options["box_coordinates"],
            score_threshold=options["score_threshold"], iou=options["iou"],
            max_detections=options["max_detections"], agnostic=options["agnostic"])
    return postprocess, task_fields


def draw_results(out: Path, arguments: Sequence[str], results: Sequence[dict]) -> None:
    """`run --draw OUT`: the one input photo with its detections drawn on it."""
    from edgepack.runtime.images import IMAGE_SUFFIXES, decode_image
    if len(arguments) != 1 or len(results) != 1:
        raise InputError("--draw takes exactly one input image")
    path = Path(arguments[0].partition("=")[2] or arguments[0]) if "=" in arguments[0] \
        else Path(arguments[0])
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(f"--draw needs an image input ({', '.join(IMAGE_SUFFIXES)}), got {path}")
    detections = results[0].get("detections")
    if detections is None:
        raise InputError("--draw needs a detection bundle (its result has no 'detections'); "
                         "pack it with --detect or decode steps")
    if detections and isinstance(detections[0], list):
        detections = detections[0]
    draw_detections(decode_image(path), detections, out)
