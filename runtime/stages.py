"""Chained models in one bundle (DESIGN §7 `stages`): e.g. mel model -> embedding model ->
classifier, each with its own model member, specs, pipelines, stream window/hop and state.

    "stages": [
      {"name": "mel", "model": "model.onnx", "inputs": [...], "outputs": [...],
       "stream": {"rate": 16000, "window": 1280, "hop": 1280},
       "frames": {"output": "mel", "axis": 1}},
      {"name": "embed", "model": "stages/embed.onnx", "inputs": [...], "outputs": [...],
       "stream": {"window": 76, "hop": 8}, "frames": {"output": "emb"}},
      {"name": "classify", "model": "stages/cls.onnx", ..., "stream": {"window": 16, "hop": 1}}]

The first stage windows samples (its stream has the `rate`); every later stage windows
the frames the previous stage produced: the output named in that stage's `frames`, batch
axis dropped, split along `axis` (default: the whole output is one frame). Each frame
carries the time span of the window it came from, so the last stage's `events`/`segments`
(the manifest's top-level `decode`) report times in the input stream. The top-level
`model`/`inputs` are the first stage's, `outputs` the last stage's, so tools that only
know one model still read a valid manifest; every member is in `files` and checksummed.

`load()` returns a `StagedModel` for such a bundle: `stages` holds one `Model` per stage
(each can be run and verified alone with its own `example_feeds()`); `stream()` chains
them; `predict(samples)` streams a whole clip.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

import numpy as np

from .bundle import Bundle
from .errors import BundleError, PipelineError
from .manifest import MODEL_SUFFIX, ModelEntry
from .specs import TensorSpec
from .stream import Stream, WindowResult, stream_clip
from .stream_config import StreamConfig


class StagedModel:
    """Several models run in sequence; the same surface as `Model` where it makes sense."""

    def __init__(self, bundle: Bundle, **options: Any):
        from .model import Model
        manifest = bundle.manifest
        self.bundle, self.manifest = bundle, manifest
        self.name, self.version = manifest.name, manifest.version
        self.task = manifest.task_kind
        self.stages: list[Model] = []
        self.stage_names: list[str] = []
        self._frames: list[tuple[str, int | None]] = []
        checked = check_stages(manifest, manifest.files, bundle.path)  # as pack_bundle does
        try:
            for i, (entry, (sub, _)) in enumerate(zip(manifest.stages, checked)):
                self.stages.append(Model(_stage_bundle(bundle, sub), **options))
                self.stage_names.append(str(entry.get("name") or f"stage{i}"))
                if i < len(manifest.stages) - 1:
                    self._frames.append(_frames_spec(entry, sub.outputs, f"stages[{i}]"))
        except BaseException:
            self.close()
            raise
        first, last = self.stages[0], self.stages[-1]
        self.inputs, self.outputs = first.inputs, last.outputs
        self.labels = last.labels
        self.engine_name = "+".join(sorted({s.engine_name for s in self.stages}))
        self._configs = [config for _, config in checked]

    # -- Model-like surface ---------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw tensors through the first stage (each stage: `self.stages[i].run`)."""
        return self.stages[0].run(feeds)

    def example_feeds(self, *, seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
        return self.stages[0].example_feeds(seed=seed, batch=batch)

    def verify_stages(self, *, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
        """Run every stage alone on its own example feeds; outputs by stage name."""
        return {name: stage.run(stage.example_feeds(seed=seed))
                for name, stage in zip(self.stage_names, self.stages)}

    def stream(self) -> "StagedStream":
        return StagedStream(self)

    def predict(self, samples: Any) -> dict[str, Any]:
        """Stream a whole clip through the stages: {"events": [...]} / {"segments": [...]}."""
        return stream_clip(self.stream(), samples)

    def close(self) -> None:
        for stage in self.stages:
            stage.close()

    def __enter__(self) -> "StagedModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<edgepack StagedModel {self.name} {self.version}: {' -> '.join(self.stage_names)}>"


class StagedStream:
    """One `Stream` per stage; the frames of each feed the next one's windows."""

    def __init__(self, model: StagedModel):
        self.model = model
        self.streams = [Stream(m, cfg) for m, cfg in zip(model.stages, model._configs)]

    def push(self, samples: Any) -> list[dict[str, Any]]:
        return Stream.collect(self.windows(samples))

    def windows(self, samples: Any) -> list[WindowResult]:
        """Run every stage on what became complete; the last stage's window results."""
        results = self.streams[0].windows(samples)
        for i, stream in enumerate(self.streams[1:]):
            if not results:
                return []
            frames, times = frames_of(results, *self.model._frames[i])
            results = stream.windows(frames, times)
        return results

    def flush(self) -> list[dict[str, Any]]:
        return self.streams[-1].flush()

    def reset(self) -> None:
        for s in self.streams:
            s.reset()

    def close(self) -> None:
        self.reset()

    def __enter__(self) -> "StagedStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def frames_of(results: list[WindowResult], output: str, axis: int | None
              ) -> tuple[np.ndarray, np.ndarray]:
    """The frames (n, *frame_shape) a stage's windows produced, with (start_s, end_s) each."""
    frames, times = [], []
    for r in results:
        v = np.asarray(r.result[output] if output in r.result else r.outputs[output])
        if v.ndim and v.shape[0] == 1:
            v = v[0]  # batch axis
        v = v[None] if axis is None else np.moveaxis(v, axis - 1, 0)
        n = len(v)
        step = (r.end_s - r.t_s) / n
        j = np.arange(n)
        times.append(np.stack([r.t_s + j * step, r.t_s + (j + 1) * step], axis=1) if axis
                     is not None else np.array([[r.t_s, r.end_s]]))
        frames.append(v.astype(np.float32, copy=False))
    return np.concatenate(frames), np.concatenate(times)


def check_stages(manifest, members, path: Any = "bundle") -> list[tuple[Any, StreamConfig]]:
    """Check a manifest's `stages` without opening any model: each stage's entry (member,
    engine, specs), the frames one stage hands the next, each stage's stream, and that a
    window of frames fits the next stage's input. The same checks `load()` makes (it calls
    this), and `pack_bundle` calls it too, so a bad stage graph fails at pack time.
    `members`: the bundle's member names. Returns [(stage manifest, stream config)].
    BundleError (exit 3) for a malformed entry, PipelineError (exit 4) for a bad chain."""
    out = []
    stages = manifest.stages
    for i, entry in enumerate(stages):
        where = f"stages[{i}]"
        if not isinstance(entry, Mapping):
            raise BundleError(f"{path}: {where} must be an object")
        sub = stage_manifest(manifest, entry, where, last=i == len(stages) - 1,
                             members=members, path=path)
        config = StreamConfig.from_manifest(sub.stream, sub.inputs, sub.outputs, sub.examples,
                                            where=f"{where}.stream", needs_rate=i == 0)
        out.append((sub, config))
    for i in range(len(out) - 1):
        (sub, _), (nxt, config) = out[i], out[i + 1]
        output, axis = _frames_spec(stages[i], sub.outputs, f"stages[{i}]")
        _check_frames_fit(sub, output, axis, nxt, config, i)
    return out


def _check_frames_fit(sub, output: str, axis: int | None, nxt, config: StreamConfig,
                      i: int) -> None:
    """A window of stage i's frames must fill stage i+1's input (static shapes, no
    preprocessing in between: with preprocessing the steps decide the shape)."""
    shape = next(s.shape for s in sub.outputs if s.name == output)
    target = next(s for s in nxt.inputs if s.name == config.input)
    if nxt.preprocess.get(target.name) or -1 in shape or -1 in target.shape:
        return
    frame = list(shape[1:]) if len(shape) > 1 and shape[0] == 1 else list(shape)
    if axis is not None:
        if axis - 1 >= len(frame):
            raise PipelineError(f"stages[{i}].frames.axis {axis} is past the last axis of "
                                f"{output!r} {list(shape)}")
        del frame[axis - 1]
    values = config.span * int(np.prod(frame))
    size = int(np.prod(target.shape))
    if values != size:
        raise PipelineError(
            f"stages[{i + 1}]: a window of {config.span} frames of {output!r} (each {frame}) "
            f"is {values} values but input {target.name!r} is {list(target.shape)} = {size}; "
            f"fix stages[{i + 1}].stream.window/context or stages[{i}].frames, or add a "
            f"preprocess step (e.g. reshape) for {target.name!r}")


def stage_manifest(m, entry: Mapping[str, Any], where: str, last: bool, *, members,
                   path: Any = "bundle"):
    """The manifest of one stage (its model member, specs, pipelines, stream, examples)."""
    member = entry.get("model")
    if not isinstance(member, str) or member not in members:
        raise BundleError(f"{path}: {where}.model must name a member listed in files, "
                          f"got {member!r}")
    engine = entry.get("engine") or next(
        (e for e, suffix in MODEL_SUFFIX.items() if member.endswith(suffix)), None)
    if engine not in MODEL_SUFFIX:
        raise BundleError(f"{path}: {where}.engine must be one of {list(MODEL_SUFFIX)}")
    try:
        inputs = tuple(TensorSpec.from_dict(d, f"{where}.inputs[{k}]")
                       for k, d in enumerate(entry.get("inputs") or []))
        outputs = tuple(TensorSpec.from_dict(d, f"{where}.outputs[{k}]")
                        for k, d in enumerate(entry.get("outputs") or []))
    except (TypeError, AttributeError) as e:
        raise BundleError(f"{path}: {where} has malformed specs ({e})") from e
    if not inputs or not outputs:
        raise BundleError(f"{path}: {where} needs 'inputs' and 'outputs' specs")
    for key in ("preprocess", "postprocess", "stream", "examples", "frames"):
        if entry.get(key) is not None and not isinstance(entry[key], Mapping):
            raise BundleError(f"{path}: {where}.{key} must be an object")
    return replace(
        m, model=ModelEntry(member, engine, entry.get("opset")), inputs=inputs, outputs=outputs,
        preprocess=dict(entry.get("preprocess") or {}),
        postprocess=dict(entry.get("postprocess") or {}),
        decode=m.decode if last else (), encode=(), stages=(),
        stream=dict(entry.get("stream") or {}) or None,
        examples=dict(entry.get("examples") or {}))


def _stage_bundle(bundle: Bundle, manifest) -> Bundle:
    """A Bundle view whose manifest is this stage's (same members, same checks done)."""
    return Bundle(bundle.path, manifest, {n: bundle.read(n) for n in bundle.members},
                  bundle.manifest_bytes, bundle.signature, bundle.signed_by)


def _frames_spec(entry: Mapping[str, Any], outputs, where: str) -> tuple[str, int | None]:
    spec = entry.get("frames") or {}
    names = [s.name for s in outputs]
    output = spec.get("output", names[0] if len(names) == 1 else None)
    if output not in names:
        raise PipelineError(f"{where}.frames.output must name one of {names} (the output "
                            "the next stage windows)")
    axis = spec.get("axis")
    if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int) or axis < 1):
        raise PipelineError(f"{where}.frames.axis must be an integer >= 1 (0 is the batch axis)")
    return output, axis


def stage_entry(name: str, member: str, inputs, outputs, *, stream: Mapping[str, Any],
                frames: Mapping[str, Any] | None = None,
                preprocess: Mapping[str, list] | None = None,
                postprocess: Mapping[str, list] | None = None,
                examples: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A manifest `stages` entry (for pack_bundle(stages=[...]))."""
    entry: dict[str, Any] = {"name": name, "model": member,
                             "inputs": [s.to_dict() for s in inputs],
                             "outputs": [s.to_dict() for s in outputs],
                             "stream": dict(stream) if isinstance(stream, Mapping) else stream}
    for key, value in (("frames", frames), ("preprocess", preprocess),
                       ("postprocess", postprocess), ("examples", examples)):
        if value:  # a non-object is kept as given: check_stages names it with its stage
            entry[key] = dict(value) if isinstance(value, Mapping) else value
    return entry
