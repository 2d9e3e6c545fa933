"""manifest.json: parse, type-check and serialise (bundle format, schema version 1).

Field names are the contract (DESIGN §2): fields may be added, never renamed. Unknown
top-level fields are kept in `Manifest.extra` and written back unchanged, so an older
runtime can rewrite a newer minor version's manifest without dropping data.
"""
from __future__ import annotations

import json
import math
import string
from dataclasses import dataclass, field
from typing import Any, Mapping

from . import schema
from .errors import ManifestError, SchemaVersionError
from .specs import DTYPES, TensorSpec

_HEX = frozenset(string.hexdigits)

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
    """Parse manifest.json bytes; raise ManifestError/SchemaVersionError naming the field.

    Every field is checked here, once, through the typed checkers of `schema` (types, finite
    numbers, bounded integers and shapes, known names); nothing else escapes.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ManifestError(f"manifest.json is not UTF-8 ({e.reason} at byte {e.start})") from e
    return manifest_from_dict(schema.loads(text))


def manifest_from_dict(data: Any) -> Manifest:
    if not isinstance(data, dict):
        raise ManifestError("manifest.json must hold a JSON object")
    if data.get("format") != FORMAT:
        raise SchemaVersionError(
            f"manifest.json: format is {schema.show(data.get('format'))}, expected {FORMAT!r}; "
            "this is not an edgepack bundle")
    version = data.get("schema_version")
    if not schema.is_int(version) or version < 1:
        raise ManifestError("manifest.json: schema_version must be a positive integer")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"manifest.json: schema_version {schema.show(version)} is newer than this runtime "
            f"reads ({SCHEMA_VERSION}); upgrade edgepack on this machine")
    schema.check_document(data)

    model = schema.obj(data.get("model"), "model")
    engine = schema.string(model.get("engine"), "model.engine", choices=ENGINES)
    opset = schema.integer(model.get("opset"), "model.opset", lo=1, hi=1000, nullable=True)
    inputs = _specs(data, "inputs")
    outputs = _specs(data, "outputs")
    files = _files(data.get("files"))
    return Manifest(
        name=_str(data, "name"),
        version=_str(data, "version"),
        created=schema.string(data.get("created"), "created", nonempty=False,
                              nullable=True) or "",
        model=ModelEntry(schema.string(model.get("path"), "model.path"), engine, opset),
        inputs=inputs,
        outputs=outputs,
        preprocess=_steps(data, "preprocess", {s.name for s in inputs}),
        postprocess=_steps(data, "postprocess", {s.name for s in outputs}),
        labels=schema.string(data.get("labels"), "labels", nullable=True),
        source=_obj(data, "source", required=False),
        quantization=_obj(data, "quantization", required=False, nullable=True),
        validation=_obj(data, "validation", required=False, nullable=True),
        requires=_obj(data, "requires", required=False),
        files=files,
        extra={k: v for k, v in data.items() if k not in _KNOWN and k not in _TASK_FIELDS},
        schema_version=version,
        **_task_fields(data, files),
    )


def _files(value: Any) -> dict[str, FileEntry]:
    files = {}
    for member, entry in schema.obj(value, "files").items():
        where = f"files[{member!r}]"
        entry = schema.obj(entry, where)
        digest = entry.get("sha256")
        if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= _HEX:
            raise schema.fail(f"{where}.sha256", "64 hexadecimal characters", digest)
        size = schema.integer(entry.get("bytes"), f"{where}.bytes", lo=0)
        files[member] = FileEntry(digest.lower(), size)
    return files


def _task_fields(data: Mapping, files: Mapping[str, FileEntry]) -> dict[str, Any]:
    """Structural checks of the DESIGN §7 fields: types, bounded numbers and shapes, members
    that exist; each step's own parameters are checked by its builder when the model is
    loaded (like pre/post-processing steps)."""
    task = _obj(data, "task", required=False, nullable=True)
    if task is not None:
        schema.string(task.get("kind"), "task.kind")
    assets = _obj(data, "assets", required=False)
    for name, member in assets.items():
        if not isinstance(member, str) or member not in files:
            raise ManifestError(
                f"manifest.json: assets[{name!r}] must name a member listed in files, "
                f"got {schema.show(member)}; repack the bundle with that file")
    stream = _stream(data.get("stream"), "stream")
    # Examples may also name a stage's inputs, so names are not checked against `inputs`.
    examples = _examples(data.get("examples"), "examples")
    stages = schema.array(data.get("stages") or [], "stages", max_len=64)
    for i, stage in enumerate(stages):
        _stage(stage, f"stages[{i}]", files)
    return {"task": task, "assets": assets, "stream": stream, "examples": examples,
            "encode": _step_list(data, "encode"), "decode": _step_list(data, "decode"),
            "stages": tuple(stages)}


#: stream fields that are counts of samples/frames (DESIGN §7), bounded like a dimension.
_STREAM_COUNTS = ("window", "hop", "context")


def _stream(value: Any, where: str) -> dict | None:
    stream = schema.obj(value, where, nullable=True)
    if stream is None:
        return None
    if stream.get("rate") is not None:
        schema.integer(stream["rate"], f"{where}.rate", lo=1, hi=10_000_000)
    for key in _STREAM_COUNTS:
        if stream.get(key) is not None:
            schema.integer(stream[key], f"{where}.{key}", lo=0, hi=schema.MAX_DIM)
    for i, pair in enumerate(schema.array(stream.get("state") or [], f"{where}.state")):
        at = f"{where}.state[{i}]"
        pair = schema.obj(pair, at)
        schema.string(pair.get("input"), f"{at}.input")
        schema.string(pair.get("output"), f"{at}.output")
        if pair.get("init") is not None:
            schema.number(pair["init"], f"{at}.init")
        if pair.get("shape") is not None:
            schema.shape(pair["shape"], f"{at}.shape")
        if pair.get("dtype") is not None:
            schema.string(pair["dtype"], f"{at}.dtype", choices=DTYPES)
    return stream


def _examples(value: Any, where: str) -> dict:
    examples = schema.obj(value if value is not None else {}, where)
    for name, example in examples.items():
        at = f"{where}[{name!r}]"
        if not isinstance(example, dict):
            raise schema.fail(at, 'an object such as {"value": 16000} or {"range": [-1, 1]}',
                              example)
        if "range" in example:
            bounds = example["range"]
            if not (isinstance(bounds, list) and len(bounds) == 2 and all(
                    schema.is_number(b) and math.isfinite(b) for b in bounds)
                    and bounds[0] <= bounds[1]):
                raise schema.fail(f"{at}.range", "two finite numbers [low, high], low <= high",
                                  bounds)
        if "value" in example:
            _finite_values(example["value"], f"{at}.value")
        if "shape" in example:
            schema.shape(example["shape"], f"{at}.shape")
        if "asset" in example:
            schema.string(example["asset"], f"{at}.asset")
    return examples


def _finite_values(value: Any, where: str) -> None:
    """A scalar or nested list of finite numbers, booleans or strings (an example input)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, float) and not math.isfinite(item):
            raise schema.fail(where, "finite numbers, booleans or strings", value)
        elif not isinstance(item, (bool, int, float, str)):
            raise schema.fail(where, "finite numbers, booleans or strings", value)


def _stage(stage: Any, where: str, files: Mapping[str, FileEntry]) -> None:
    stage = schema.obj(stage, where)
    schema.string(stage.get("name"), f"{where}.name", nullable=True)
    member = stage.get("model")
    if not isinstance(member, str) or member not in files:
        raise ManifestError(f"manifest.json: {where}.model must name a member listed in "
                            f"files, got {schema.show(member)}")
    schema.string(stage.get("engine"), f"{where}.engine", choices=ENGINES, nullable=True)
    schema.integer(stage.get("opset"), f"{where}.opset", lo=1, hi=1000, nullable=True)
    specs = {}
    for key in ("inputs", "outputs"):
        items = schema.array(stage.get(key) or [], f"{where}.{key}", max_len=1024)
        specs[key] = {TensorSpec.from_dict(d, f"{where}.{key}[{k}]").name
                      for k, d in enumerate(items)}
    _steps(stage, "preprocess", specs["inputs"], f"{where}.preprocess")
    _steps(stage, "postprocess", specs["outputs"], f"{where}.postprocess")
    _stream(stage.get("stream"), f"{where}.stream")
    _examples(stage.get("examples"), f"{where}.examples")
    frames = schema.obj(stage.get("frames"), f"{where}.frames", nullable=True)
    if frames is not None:
        schema.string(frames.get("output"), f"{where}.frames.output", nullable=True)
        schema.integer(frames.get("axis"), f"{where}.frames.axis", lo=1, hi=schema.MAX_RANK,
                       nullable=True)


def _step_list(data: Mapping, key: str) -> tuple[Mapping[str, Any], ...]:
    steps = data.get(key)
    if steps is None:
        return ()
    return tuple(schema.steps(steps, key))


def _str(data: Mapping, key: str, where: str | None = None, required: bool = True) -> str | None:
    return schema.string(data.get(key), where or key, nullable=not required)


def _obj(data: Mapping, key: str, required: bool = True, nullable: bool = False) -> Any:
    value = data.get(key)
    if value is None and (nullable or not required):
        return None if nullable else {}
    return schema.obj(value, key)


def _specs(data: Mapping, key: str) -> tuple[TensorSpec, ...]:
    value = schema.array(data.get(key), key, nonempty=True, max_len=1024)
    specs = tuple(TensorSpec.from_dict(item, f"{key}[{i}]") for i, item in enumerate(value))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ManifestError(f"manifest.json: {key} has duplicate tensor names {names}")
    return specs


def _steps(data: Mapping, key: str, tensors: set[str], where: str | None = None
           ) -> dict[str, list]:
    where = where or key
    value = schema.obj(data.get(key) if data.get(key) is not None else {}, where)
    for tensor, steps in value.items():
        if tensor not in tensors:
            raise ManifestError(
                f"manifest.json: {where} names tensor {tensor!r}, which is not among "
                f"{sorted(tensors)}")
        schema.steps(steps, f"{where}[{tensor!r}]")
    return value
