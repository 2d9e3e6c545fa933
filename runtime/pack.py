"""`pack_bundle`: wrap a serialized .onnx/.tflite model and its metadata into a bundle."""
from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import engines
from .bundle import write_bundle
from .errors import BundleError, ManifestError
from .manifest import MODEL_SUFFIX, Manifest, ModelEntry
from .ops import Context, compile_steps
from .ops.vision.candidates import check_decode_ends
from .specs import TensorSpec

EDGEPACK_VERSION = "0.1.0"
_ENGINE_REQUIREMENT = {"onnxruntime": "onnxruntime>=1.17", "litert": "ai-edge-litert>=1.0"}


def detect_engine(model: bytes) -> str:
    """TFLite flatbuffers carry the identifier 'TFL3' at bytes 4-8; anything else is ONNX."""
    return "litert" if model[4:8] == b"TFL3" else "onnxruntime"


class _AnyHook(dict):
    """At pack time the application's hooks are not here; accept any hook name."""

    def get(self, key, default=None):
        return lambda x, **_: x


def pack_bundle(out_path: str | os.PathLike, model: bytes | str | os.PathLike, *,
                name: str, version: str = "1.0.0", engine: str | None = None,
                inputs: Sequence[TensorSpec] | None = None,
                outputs: Sequence[TensorSpec] | None = None,
                preprocess: Mapping[str, list] | None = None,
                postprocess: Mapping[str, list] | None = None,
                labels: Sequence[str] | None = None,
                layouts: Mapping[str, str] | None = None,
                opset: int | None = None,
                source: Mapping[str, Any] | None = None,
                quantization: Mapping[str, Any] | None = None,
                validation: Mapping[str, Any] | None = None,
                extra: Mapping[str, Any] | None = None,
                created: str | None = None,
                directory: bool = False,
                task: Mapping[str, Any] | None = None,
                encode: Sequence[Mapping[str, Any]] | None = None,
                decode: Sequence[Mapping[str, Any]] | None = None,
                stream: Mapping[str, Any] | None = None,
                stages: Sequence[Mapping[str, Any]] | None = None,
                examples: Mapping[str, Any] | None = None,
                assets: Mapping[str, Any] | None = None,
                members: Mapping[str, bytes] | None = None) -> Path:
    """Write a bundle around `model`. Specs not given are read from the model by its engine.

    Every pipeline step is checked now (hooks excepted: the device supplies them), so a
    bundle that packs is a bundle whose manifest the runtime accepts.

    DESIGN §7 fields: `task`, `encode`, `decode`, `stream`, `stages`, `examples` go into the
    manifest as given. `assets` maps an asset name to its data: bytes (stored as
    `assets/<name>`), a path (stored as `assets/<file name>`) or a `(member, bytes)` pair.
    `members` adds other files (e.g. a stage's model) under their own names; every member
    is checksummed like the model.
    """
    data = Path(model).read_bytes() if isinstance(model, (str, os.PathLike)) else bytes(model)
    if not data:
        raise BundleError("the model is empty")
    engine = engine or detect_engine(data)
    if inputs is None or outputs is None:
        probe = engines.open_engine(engine, data)
        try:
            inputs = list(inputs) if inputs is not None else probe.inputs()
            outputs = list(outputs) if outputs is not None else probe.outputs()
        finally:
            probe.close()
    if layouts:
        unknown = set(layouts) - {s.name for s in inputs}
        if unknown:
            raise ManifestError(f"layouts name unknown inputs {sorted(unknown)}")
        inputs = [TensorSpec(s.name, s.shape, s.dtype, layouts.get(s.name, s.layout),
                             s.quantization) for s in inputs]
    model_member = "model" + MODEL_SUFFIX.get(engine, ".bin")
    extra_members, members = members, {model_member: data}
    if labels is not None:
        labels = [str(label).strip() for label in labels]
        if any(not label or "\n" in label for label in labels):
            raise ManifestError("labels must be non-empty single-line strings")
        members["labels.txt"] = ("\n".join(labels) + "\n").encode("utf-8")
    members.update(dict(extra_members or {}))
    asset_members = _asset_members(assets or {})
    members.update({member: data for member, data in asset_members.values()})

    manifest = Manifest(
        name=name, version=version,
        created=created or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        model=ModelEntry(model_member, engine, opset),
        inputs=tuple(inputs), outputs=tuple(outputs),
        preprocess=dict(preprocess or {}), postprocess=dict(postprocess or {}),
        labels="labels.txt" if labels is not None else None,
        source={"edgepack_version": EDGEPACK_VERSION, **dict(source or {})},
        quantization=dict(quantization) if quantization is not None else None,
        validation=dict(validation) if validation is not None else None,
        requires={"engines": [_ENGINE_REQUIREMENT.get(engine, engine)], "edgepack": ">=0.1"},
        extra=dict(extra or {}),
        task=dict(task) if task else None,
        assets={name: member for name, (member, _) in asset_members.items()},
        encode=tuple(encode or ()), decode=tuple(decode or ()),
        stream=dict(stream) if stream else None, stages=tuple(stages or ()),
        examples=dict(examples or {}),
    )
    _check_pipelines(manifest, labels, {n: d for n, (_, d) in asset_members.items()})
    _check_stream_and_stages(manifest, members, labels,
                             {n: d for n, (_, d) in asset_members.items()}, out_path)
    return write_bundle(out_path, manifest, members, directory=directory)


def _asset_members(assets: Mapping[str, Any]) -> dict[str, tuple[str, bytes]]:
    out = {}
    for name, value in assets.items():
        if isinstance(value, tuple):
            member, data = value
        elif isinstance(value, (str, os.PathLike)):
            member, data = f"assets/{Path(value).name}", Path(value).read_bytes()
        else:
            member, data = f"assets/{name}", bytes(value)
        out[name] = (member, bytes(data))
    return out


def _check_pipelines(manifest: Manifest, labels, assets: Mapping[str, bytes]) -> None:
    base = Context(None, labels, _AnyHook(), assets, manifest.inputs, manifest.outputs)
    for kind, specs, table in (("preprocess", manifest.inputs, manifest.preprocess),
                               ("postprocess", manifest.outputs, manifest.postprocess)):
        names = {s.name: s for s in specs}
        for tensor, steps in table.items():
            if tensor not in names:
                raise ManifestError(f"{kind} names tensor {tensor!r}; the model has {sorted(names)}")
            compile_steps(steps, replace(base, spec=names[tensor]), f"{kind}[{tensor!r}]")
    for kind in ("encode", "decode"):
        steps = getattr(manifest, kind)
        if steps:
            compile_steps(steps, base, kind, kind=kind)
    check_decode_ends(manifest.decode)  # as load() does: candidates are not a result


def _check_stream_and_stages(manifest: Manifest, members: Mapping[str, bytes], labels,
                             assets: Mapping[str, bytes], out_path) -> None:
    """The stream and the stage graph, checked as load()/model.stream() will check them
    (runtime/stream.py, runtime/stages.py): a bundle that packs is one whose stream and
    stages the runtime accepts. PipelineError (exit 4) / BundleError (exit 3)."""
    from .stages import check_stages
    from .stream_config import StreamConfig
    if manifest.stages:
        for sub, _ in check_stages(manifest, members, out_path):
            _check_pipelines(sub, labels, assets)
    elif manifest.stream:
        StreamConfig.from_manifest(manifest.stream, manifest.inputs, manifest.outputs,
                                   manifest.examples)
