"""manifest.json: parse, type-check and serialise (bundle format, schema version 1).

Field names are the contract (DESIGN §2): fields may be added, never renamed. Unknown
top-level fields are kept in `Manifest.extra` and written back unchanged, so an older
runtime can rewrite a newer minor version's manifest without dropping data.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ManifestError, SchemaVersionError
from .specs import TensorSpec

FORMAT = "edgepack"
SCHEMA_VERSION = 1
ENGINES = ("onnxruntime", "litert")
MODEL_SUFFIX = {"onnxruntime": ".onnx", "litert": ".tflite"}

_KNOWN = {"format", "schema_version", "name", "version", "created", "model", "inputs",
          "outputs", "preprocess", "postprocess", "labels", "source", "quantization",
          "validation", "requires", "files"}
# DESIGN §7: optional fields for tasks beyond classification. Written back only when set,
# so manifests without them stay byte-identical to what older writers produced.
_TASK_FIELDS = ("task", "assets", "encode", "decode", "stream", "stages", "examples")


@dataclass(frozen=True)
class ModelEntry:
    path: str
    engine: str
    opset: int | None = None


@dataclass(frozen=True)
class FileEntry:
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    """The typed view of manifest.json. `to_dict()` gives back the JSON object."""

    name: str
    version: str
    created: str
    model: ModelEntry
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    preprocess: Mapping[str, list] = field(default_factory=dict)
    postprocess: Mapping[str, list] = field(default_factory=dict)
    labels: str | None = None
    source: Mapping[str, Any] = field(default_factory=dict)
    quantization: Mapping[str, Any] | None = None
    validation: Mapping[str, Any] | None = None
    requires: Mapping[str, Any] = field(default_factory=dict)
    files: Mapping[str, FileEntry] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    # DESIGN §7 (all optional): what the model's whole job is and the data it needs.
    task: Mapping[str, Any] | None = None          # {"kind": "detect", ...}
    assets: Mapping[str, str] = field(default_factory=dict)   # asset name -> member path
    encode: tuple[Mapping[str, Any], ...] = ()     # raw input -> feeds (e.g. tokenize)
    decode: tuple[Mapping[str, Any], ...] = ()     # all outputs -> task result (e.g. nms)
    stream: Mapping[str, Any] | None = None        # windowing + state pairs for stream()
    stages: tuple[Mapping[str, Any], ...] = ()     # several models run in sequence
    examples: Mapping[str, Any] = field(default_factory=dict)  # input -> example value/range

    @property
    def task_kind(self) -> str | None:
        return self.task.get("kind") if self.task else None

    def input(self, name: str) -> TensorSpec:
        return next(s for s in self.inputs if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        model: dict[str, Any] = {"path": self.model.path, "engine": self.model.engine}
        if self.model.opset is not None:
            model["opset"] = self.model.opset
        data: dict[str, Any] = {
            "format": FORMAT, "schema_version": self.schema_version,
            "name": self.name, "version": self.version, "created": self.created,
            "model": model,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
            "preprocess": {k: list(v) for k, v in self.preprocess.items()},
            "postprocess": {k: list(v) for k, v in self.postprocess.items()},
            "labels": self.labels,
            "source": dict(self.source),
            "quantization": dict(self.quantization) if self.quantization is not None else None,
            "validation": dict(self.validation) if self.validation is not None else None,
            "requires": dict(self.requires),
            "files": {k: {"sha256": v.sha256, "bytes": v.bytes} for k, v in self.files.items()},
        }
        for key in _TASK_FIELDS:
            value = getattr(self, key)
            if value:  # unset fields are not written (see _TASK_FIELDS)
                data[key] = ([dict(v) for v in value] if isinstance(value, tuple)
                             else dict(value))
        data.update(self.extra)
        return data

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False).encode("utf-8")


def parse_manifest(raw: bytes) -> Manifest:
    """Parse manifest.json bytes; raise ManifestError/SchemaVersionError naming the field."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ManifestError(f"manifest.json is not UTF-8 ({e.reason} at byte {e.start})") from e
    except (json.JSONDecodeError, RecursionError) as e:
        raise ManifestError(f"manifest.json is not valid JSON: {e}") from e
    return manifest_from_dict(data)


def manifest_from_dict(data: Any) -> Manifest:
    if not isinstance(data, dict):
        raise ManifestError("manifest.json must hold a JSON object")
    if data.get("format") != FORMAT:
        raise SchemaVersionError(
            f"manifest.json: format is {data.get('format')!r}, expected {FORMAT!r}; "
            "this is not an edgepack bundle")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ManifestError("manifest.json: schema_version must be a positive integer")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"manifest.json: schema_version {version} is newer than this runtime reads "
            f"({SCHEMA_VERSION}); upgrade edgepack on this machine")

    model = _obj(data, "model")
    engine = model.get("engine")
    if engine not in ENGINES:
        raise ManifestError(f"manifest.json: model.engine {engine!r} is not one of {list(ENGINES)}")
    opset = model.get("opset")
    if opset is not None and (not isinstance(opset, int) or isinstance(opset, bool)):
        raise ManifestError("manifest.json: model.opset must be an integer or absent")
    inputs = _specs(data, "inputs")
    outputs = _specs(data, "outputs")
    files = {}
    for member, entry in _obj(data, "files").items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or \
                not isinstance(entry.get("bytes"), int) or isinstance(entry.get("bytes"), bool) \
                or entry["bytes"] < 0:
            raise ManifestError(
                f"manifest.json: files[{member!r}] must be {{'sha256': str, 'bytes': int >= 0}}")
        files[member] = FileEntry(entry["sha256"].lower(), entry["bytes"])

    return Manifest(
        name=_str(data, "name"),
        version=_str(data, "version"),
        created=_str(data, "created", required=False) or "",
        model=ModelEntry(_str(model, "path", "model.path"), engine, opset),
        inputs=inputs,
        outputs=outputs,
        preprocess=_steps(data, "preprocess", {s.name for s in inputs}),
        postprocess=_steps(data, "postprocess", {s.name for s in outputs}),
        labels=_str(data, "labels", required=False),
        source=_obj(data, "source", required=False),
        quantization=_obj(data, "quantization", required=False, nullable=True),
        validation=_obj(data, "validation", required=False, nullable=True),
        requires=_obj(data, "requires", required=False),
        files=files,
        extra={k: v for k, v in data.items() if k not in _KNOWN and k not in _TASK_FIELDS},
        schema_version=version,
        **_task_fields(data, files),
    )


def _task_fields(data: Mapping, files: Mapping[str, FileEntry]) -> dict[str, Any]:
    """Structural checks of the DESIGN §7 fields; each step's own parameters are checked
    by its builder when the model is loaded (like pre/post-processing steps)."""
    task = _obj(data, "task", required=False, nullable=True)
    if task is not None and not (isinstance(task.get("kind"), str) and task["kind"]):
        raise ManifestError("manifest.json: task.kind must be a non-empty string, "
                            "e.g. {\"kind\": \"detect\"}")
    assets = _obj(data, "assets", required=False)
    for name, member in assets.items():
        if not isinstance(member, str) or member not in files:
            raise ManifestError(
                f"manifest.json: assets[{name!r}] must name a member listed in files, "
                f"got {member!r}; repack the bundle with that file")
    stream = _obj(data, "stream", required=False, nullable=True)
    # Examples may also name a stage's inputs, so names are not checked against `inputs`.
    examples = _obj(data, "examples", required=False)
    for name, example in examples.items():
        if not isinstance(example, dict):
            raise ManifestError(
                f"manifest.json: examples[{name!r}] must be an object such as "
                "{\"value\": 16000} or {\"range\": [-1, 1]}")
    stages = data.get("stages") or []
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        raise ManifestError("manifest.json: stages must be a list of objects")
    return {"task": task, "assets": assets, "stream": stream, "examples": examples,
            "encode": _step_list(data, "encode"), "decode": _step_list(data, "decode"),
            "stages": tuple(stages)}


def _step_list(data: Mapping, key: str) -> tuple[Mapping[str, Any], ...]:
    steps = data.get(key)
    if steps is None:
        return ()
    if not isinstance(steps, list) or not all(
            isinstance(s, dict) and isinstance(s.get("op"), str) for s in steps):
        raise ManifestError(
            f"manifest.json: {key} must be a list of steps like {{'op': 'nms', ...}}")
    return tuple(steps)


def _str(data: Mapping, key: str, where: str | None = None, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise ManifestError(f"manifest.json: {where or key} must be a non-empty string")
    return value


def _obj(data: Mapping, key: str, required: bool = True, nullable: bool = False) -> Any:
    value = data.get(key)
    if value is None and (nullable or not required):
        return None if nullable else {}
    if not isinstance(value, dict):
        raise ManifestError(f"manifest.json: {key} must be an object")
    return value


def _specs(data: Mapping, key: str) -> tuple[TensorSpec, ...]:
    value = data.get(key)
    if not isinstance(value, list) or not value:
        raise ManifestError(f"manifest.json: {key} must be a non-empty list of tensor specs")
    specs = tuple(TensorSpec.from_dict(item, f"{key}[{i}]") for i, item in enumerate(value))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ManifestError(f"manifest.json: {key} has duplicate tensor names {names}")
    return specs


def _steps(data: Mapping, key: str, tensors: set[str]) -> dict[str, list]:
    value = _obj(data, key, required=False)
    for tensor, steps in value.items():
        if tensor not in tensors:
            raise ManifestError(
                f"manifest.json: {key} names tensor {tensor!r}, which is not among {sorted(tensors)}")
        if not isinstance(steps, list) or not all(
                isinstance(s, dict) and isinstance(s.get("op"), str) for s in steps):
            raise ManifestError(
                f"manifest.json: {key}[{tensor!r}] must be a list of steps like {{'op': 'softmax'}}")
    return value
