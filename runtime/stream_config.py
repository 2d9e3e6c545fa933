"""The manifest's `stream` field, checked against a model: windowing, state carried
from one run to the next, constant inputs (`StreamConfig`), and `declare_stream`, which
adds one to an existing bundle. `runtime/stream.py` runs it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import PipelineError
from .specs import TensorSpec, format_shape


@dataclass(frozen=True)
class StatePair:
    """A state input fed from an output of the previous run."""

    input: str
    output: str
    init: Any = 0.0
    dtype: str | None = None
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class StreamConfig:
    """Windowing, state and constant inputs of a stream (see the module docstring).

    For a stage fed by another stage (runtime/stages.py), `window`/`hop`/`context` count
    frames of the previous stage's output instead of samples, and `rate` is unused.
    """

    window: int
    hop: int
    context: int = 0
    rate: int | None = None
    input: str = ""
    state: tuple[StatePair, ...] = ()
    constants: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_manifest(cls, stream: Mapping[str, Any] | None, inputs: Sequence[TensorSpec],
                      outputs: Sequence[TensorSpec], examples: Mapping[str, Any] | None = None,
                      *, where: str = "stream", needs_rate: bool = True) -> "StreamConfig":
        """Check a manifest `stream` object against the model's specs; PipelineError if wrong."""
        if not stream:
            raise PipelineError(f"{where}: this bundle declares no stream (manifest 'stream' "
                                "with rate/window/hop); pack it with --stream-window etc.")
        if not isinstance(stream, Mapping):
            raise PipelineError(f"{where} must be an object")
        known = {"rate", "window", "hop", "context", "input", "state", "constants", "frames"}
        unknown = sorted(set(stream) - known)
        if unknown:
            raise PipelineError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")

        def integer(key, default=None, minimum=1):
            value = stream.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise PipelineError(f"{where}.{key} must be an integer >= {minimum}, got {value!r}")
            return value

        window = integer("window")
        hop = integer("hop", window)
        context = integer("context", 0, minimum=0)
        rate = integer("rate") if needs_rate or "rate" in stream else None
        in_names = {s.name: s for s in inputs}
        out_names = {s.name for s in outputs}
        pairs = []
        for i, entry in enumerate(stream.get("state") or []):
            loc = f"{where}.state[{i}]"
            if not isinstance(entry, Mapping) or entry.get("input") not in in_names or \
                    entry.get("output") not in out_names:
                raise PipelineError(
                    f"{loc} must be {{'input': one of {sorted(in_names)}, 'output': one of "
                    f"{sorted(out_names)}, 'init': number}}, got {entry!r}")
            spec = in_names[entry["input"]]
            shape = entry.get("shape")
            if shape is None:
                if -1 in spec.shape:
                    raise PipelineError(f"{loc}: input {spec.name!r} has dynamic shape "
                                        f"{format_shape(spec.shape)}; give the state's 'shape'")
                shape = spec.shape
            pairs.append(StatePair(entry["input"], entry["output"], entry.get("init", 0.0),
                                   entry.get("dtype") or spec.dtype, tuple(shape)))
        constants = dict(stream.get("constants") or {})
        state_inputs = {p.input for p in pairs}
        free = [n for n in in_names if n not in state_inputs and n not in constants]
        # manifest examples with a fixed value (e.g. sr = 16000) count as constants
        examples = examples or {}
        fixed = {n: examples[n]["value"] for n in free
                 if isinstance(examples.get(n), Mapping) and "value" in examples[n]}
        target = stream.get("input")
        if target is None:
            # the audio input: the one input left once state and constants are accounted for
            rest = [n for n in free if n not in fixed]
            if len(rest) != 1:
                raise PipelineError(
                    f"{where}: cannot tell which input gets the samples among {free}; set "
                    f"{where}.input")
            target = rest[0]
        elif target not in in_names:
            raise PipelineError(f"{where}.input {target!r} is not a model input {sorted(in_names)}")
        for n, value in fixed.items():
            if n != target:
                constants[n] = value
        missing = [n for n in in_names if n != target and n not in state_inputs and n not in constants]
        if missing:
            raise PipelineError(f"{where}: inputs {missing} get no value; add them to "
                                f"{where}.constants or {where}.state")
        return cls(window, hop, context, rate, target, tuple(pairs), constants)

    @property
    def span(self) -> int:
        return self.context + self.window


def initial_state(pair: StatePair) -> np.ndarray:
    """The value a state input starts from (and returns to on reset)."""
    try:
        value = np.asarray(pair.init, dtype=pair.dtype)
        return np.full(pair.shape, value, dtype=pair.dtype) if value.ndim == 0 else \
            value.reshape(pair.shape)
    except (TypeError, ValueError) as e:
        raise PipelineError(f"stream.state {pair.input!r}: init {pair.init!r} does not give "
                            f"{pair.dtype} {list(pair.shape)} ({e})") from e


def constant_input(spec: TensorSpec, value: Any) -> np.ndarray:
    """A `constants` entry as the array fed to its input every run."""
    try:
        a = np.asarray(value, dtype=spec.dtype)
    except (TypeError, ValueError) as e:
        raise PipelineError(f"stream.constants[{spec.name!r}] = {value!r} is not "
                            f"{spec.dtype} ({e})") from e
    if a.ndim == 0 and spec.shape:
        a = np.full([1 if d == -1 else d for d in spec.shape], a, dtype=a.dtype)
    return a


def declare_stream(path, stream: Mapping[str, Any], *, decode: Sequence[Mapping[str, Any]] | None = None,
                   task: Mapping[str, Any] | None = None,
                   examples: Mapping[str, Any] | None = None) -> None:
    """Add (or replace) the `stream` (and `decode`/`task`/`examples`) of an existing bundle,
    e.g. one `edgepack convert` wrote, keeping every member and record. The stream is
    checked against the model first. A signed bundle loses its signature: sign it again."""
    from dataclasses import replace
    from .bundle import read_bundle, write_bundle
    bundle = read_bundle(path)
    m = bundle.manifest
    StreamConfig.from_manifest(stream, m.inputs, m.outputs, examples or m.examples)
    manifest = replace(m, stream=dict(stream),
                       decode=tuple(decode) if decode is not None else m.decode,
                       task=dict(task) if task is not None else m.task,
                       examples=dict(examples) if examples is not None else m.examples)
    members = {n: bundle.read(n) for n in bundle.members if n != "signature.ed25519"}
    write_bundle(bundle.path, manifest, members, directory=bundle.path.is_dir())
