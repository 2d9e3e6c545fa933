"""Detection validation: compare the detections of the source model and of the bundle.

For a bundle whose task is `detect`, argmax agreement means nothing; what a user cares
about is whether the bundle finds the same objects. Both models' outputs on the held-out
samples go through the bundle's own postprocess + decode steps (the runtime's functions,
so the decoding is identical on both sides); then, per sample, each bundle detection is
matched greedily (highest score first) to the unmatched source detection of the same class
with the highest IoU, if that IoU >= 0.5 (the PASCAL VOC / COCO AP50 criterion).

Recorded (manifest `validation.task`): recall of the bundle against the source (matched /
source detections), precision (matched / bundle detections), mean IoU of the matches,
mean and max absolute score error of the matches. `DetectionTolerances` gate the
conversion as top-1 agreement does for classifiers.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from edgepack.runtime.errors import ConversionError

log = logging.getLogger(__name__)

#: A bundle detection matches a source detection of the same class at IoU >= this.
MATCH_IOU = 0.5


@dataclass(frozen=True)
class DetectionTolerances:
    """Pass/fail thresholds for detection validation (all in [0, 1])."""

    min_recall: float
    min_precision: float
    min_mean_iou: float

    def __post_init__(self) -> None:
        for name in ("min_recall", "min_precision", "min_mean_iou"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not 0.0 <= value <= 1.0:
                raise ConversionError(f"detection tolerance {name} must be in [0, 1], "
                                      f"got {value!r}")

    @classmethod
    def for_mode(cls, mode: str | None) -> "DetectionTolerances":
        return cls(**_DEFAULTS.get(mode or "none", _DEFAULTS["int8"]))

    def to_dict(self) -> dict[str, float]:
        return {"min_recall": self.min_recall, "min_precision": self.min_precision,
                "min_mean_iou": self.min_mean_iou}


# int8 moves boxes by a pixel or two and scores near the threshold flip in or out; the
# matched boxes must still overlap well.
_DEFAULTS = {
    "none": dict(min_recall=0.99, min_precision=0.99, min_mean_iou=0.95),
    "fp16": dict(min_recall=0.98, min_precision=0.98, min_mean_iou=0.9),
    "dynamic": dict(min_recall=0.95, min_precision=0.95, min_mean_iou=0.85),
    "int8": dict(min_recall=0.9, min_precision=0.9, min_mean_iou=0.8),
}


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from edgepack.runtime.ops.vision.nms import iou_matrix
    return iou_matrix(a.reshape(-1, 4), b.reshape(-1, 4))


def match_detections(source: Sequence[Mapping[str, Any]], bundle: Sequence[Mapping[str, Any]],
                     iou: float = MATCH_IOU) -> list[tuple[int, int, float]]:
    """Greedy matches (source index, bundle index, IoU): bundle detections by descending
    score, each to the unmatched source detection of its class with the highest IoU."""
    if not source or not bundle:
        return []
    sb = np.array([d["box"] for d in source], np.float64)
    bb = np.array([d["box"] for d in bundle], np.float64)
    overlap = _box_iou(bb, sb)
    same = np.array([[d["class"] == s["class"] for s in source] for d in bundle])
    overlap = np.where(same, overlap, -1.0)
    taken = np.zeros(len(source), bool)
    matches = []
    for j in sorted(range(len(bundle)), key=lambda k: -bundle[k]["score"]):
        row = np.where(taken, -1.0, overlap[j])
        i = int(np.argmax(row))
        if row[i] >= iou:
            taken[i] = True
            matches.append((i, j, float(row[i])))
    return matches


def compare_detections(source: Sequence[Sequence[Mapping[str, Any]]],
                       bundle: Sequence[Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Per-sample detection lists of both models -> recall, precision, mean IoU, score error."""
    found = wanted = produced = 0
    ious, errors = [], []
    for src, got in zip(source, bundle):
        matches = match_detections(src, got)
        found += len(matches)
        wanted += len(src)
        produced += len(got)
        ious += [m[2] for m in matches]
        errors += [abs(src[i]["score"] - got[j]["score"]) for i, j, _ in matches]
    recall = found / wanted if wanted else 1.0
    precision = found / produced if produced else 1.0
    return {"metric": "detection", "match_iou": MATCH_IOU,
            "source_detections": wanted, "bundle_detections": produced, "matched": found,
            "recall": recall, "precision": precision, "agreement": min(recall, precision),
            "mean_iou": float(np.mean(ious)) if ious else 1.0,
            "score_error_mean": float(np.mean(errors)) if errors else 0.0,
            "score_error_max": float(np.max(errors)) if errors else 0.0}


def detections_per_sample(postprocess, outputs: Mapping[str, np.ndarray],
                          feeds: Mapping[str, np.ndarray] | None = None) -> list[list[dict]]:
    """Run `postprocess(outputs, trace)` (a bundle's `Model.postprocess`: postprocess +
    decode, or compiled decode steps) on each sample's outputs (float, batch first)."""
    from edgepack.runtime.ops.trace import Trace
    count = len(next(iter(outputs.values())))
    results = []
    for i in range(count):
        trace = Trace(feeds={k: v[i:i + 1] for k, v in (feeds or {}).items()})
        result = postprocess({k: v[i:i + 1] for k, v in outputs.items()}, trace)
        detections = result.get("detections") if isinstance(result, dict) else None
        if detections is None:
            raise ConversionError("the bundle's task is 'detect' but its decode steps return no "
                                  "'detections'; end them with {\"op\": \"nms\"}")
        results.append(detections)
    return results


def tolerance_failures(record: Mapping[str, Any], tolerances: DetectionTolerances) -> list[str]:
    """The failure messages of a detection record outside `tolerances`."""
    failures = []
    for key, limit in (("recall", tolerances.min_recall),
                       ("precision", tolerances.min_precision),
                       ("mean_iou", tolerances.min_mean_iou)):
        if record[key] < limit:
            failures.append(f"detection {key} {record[key]:.4f} < {limit} "
                            f"({record['matched']} of {record['source_detections']} source "
                            f"detections matched at IoU >= {MATCH_IOU})")
    return failures


def detection_validation(bundle_path: Path, output_names: Sequence[str],
                         reference: Sequence[np.ndarray], produced: Sequence[np.ndarray],
                         mode: str | None, feeds: Mapping[str, np.ndarray] | None = None
                         ) -> tuple[dict[str, Any], list[str]] | None:
    """(task record, failures) for a detection bundle, or None when it is not one."""
    from edgepack.runtime import load, read_bundle
    manifest = read_bundle(bundle_path).manifest
    if manifest.task_kind != "detect" or not manifest.decode:
        return None
    tolerances = DetectionTolerances.for_mode(mode)
    with load(bundle_path) as model:
        src = detections_per_sample(model.postprocess, dict(zip(output_names, reference)),
                                    feeds)
        got = detections_per_sample(model.postprocess, dict(zip(output_names, produced)),
                                    feeds)
    record = compare_detections(src, got)
    record["tolerances"] = tolerances.to_dict()
    failures = tolerance_failures(record, tolerances)
    log.info("detection validation: recall %.4f precision %.4f mean IoU %.4f",
             record["recall"], record["precision"], record["mean_iou"])
    return record, failures


def detection_agreement(record: Mapping[str, Any]) -> float:
    """One number for a detection record: min(recall, precision) of the bundle against the
    source. It is what `--accuracy-target` and compare's accuracy budget compare, as top-1
    agreement is for classifiers: both missed and invented detections count."""
    return float(min(record["recall"], record["precision"]))


def apply_accuracy_target(record: dict[str, Any], target: float | None) -> None:
    """Gate a validation record of a detect bundle on `target` (an --accuracy-target).

    For classifiers the target steers the int8 search by top-1 agreement; a detector's
    outputs have no top-1, so here the target is the detection agreement the bundle must
    reach: it replaces the mode's default min recall / min precision (the min mean IoU
    stays). Recorded under validation.task (agreement, accuracy_target, tolerances)."""
    task = record.get("task")
    if target is None or not task or task.get("metric") != "detection":
        return
    before = DetectionTolerances(**task["tolerances"])
    after = DetectionTolerances(float(target), float(target), before.min_mean_iou)
    replaced = [f for f in tolerance_failures(task, before) if "mean_iou" not in f]
    failures = [f for f in record["failures"] if f not in replaced]
    agreement = detection_agreement(task)
    if agreement < target:
        failures.append(
            f"detection agreement {agreement:.4f} < accuracy target {target} (recall "
            f"{task['recall']:.4f}, precision {task['precision']:.4f} against the source at "
            f"IoU >= {task['match_iou']})")
    task.update(agreement=agreement, accuracy_target=float(target),
                tolerances=after.to_dict())
    record["failures"] = failures
    record["passed"] = not failures and not record.get("fatal")


def detection_metric(decode: Sequence[Mapping[str, Any]], inputs: Sequence[Any],
                     outputs: Sequence[Any] | None = None,
                     labels: Sequence[str] | None = None):
    """The task metric the int8 accuracy-aware search scores a detector's candidates by
    (`Int8Options.task_metric`): each sample's outputs, of the float model and of the
    candidate, go through the `decode` steps (the runtime's own, compiled once against the
    model's input/output TensorSpecs; outputs None: specs of the arrays of the first call),
    and the result is `detection_agreement` of the matched detections, what validation and
    `--accuracy-target` gate on."""
    from edgepack.runtime.ops import Context, compile_steps
    from edgepack.runtime.specs import TensorSpec
    compiled: list = []

    def decoder(values: Mapping[str, np.ndarray]):
        if not compiled:
            specs = tuple(outputs) if outputs is not None else tuple(
                TensorSpec(k, (1, *np.shape(v)[1:]), "float32") for k, v in values.items())
            compiled.append(compile_steps(list(decode), Context(
                labels=labels, inputs=tuple(inputs), outputs=specs), "decode",
                kind="decode"))
        return compiled[0]

    def detections(values: Mapping[str, np.ndarray]) -> list[list[dict]]:
        return detections_per_sample(decoder(values), {k: np.asarray(v, np.float32)
                                                       for k, v in values.items()})

    def metric(reference: Mapping[str, np.ndarray],
               produced: Mapping[str, np.ndarray]) -> float:
        return detection_agreement(compare_detections(detections(reference),
                                                      detections(produced)))
    return metric


def with_detection_metric(config: Any, source: Any) -> Any:
    """`config` (a ConversionConfig) with the detection metric as its int8 task metric when
    it converts a detector (task kind "detect" with decode steps) to int8 with an accuracy
    target, so the accuracy-aware search is steered by detection agreement, the metric the
    target gates on; else `config` unchanged. `source`: the loaded SourceModel (its input
    names, example shapes and layouts are the model's inputs the decode steps read)."""
    from dataclasses import replace

    from edgepack.runtime.specs import TensorSpec
    quant = config.quantization
    task = config.task if isinstance(config.task, Mapping) else {}
    if quant.mode != "int8" or quant.accuracy_target is None or \
            task.get("kind") != "detect" or not config.decode:
        return config
    inputs = [TensorSpec(name, (1, *np.shape(example)[1:]), "float32", layout)
              for name, example, layout in zip(source.input_names, source.example_inputs,
                                                source.layouts)]
    metric = detection_metric(list(config.decode), inputs, None, config.labels)
    return replace(config, quantization=replace(quant, task_metric=metric))
