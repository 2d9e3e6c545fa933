"""`load()` and `Model`: a verified bundle bound to an engine, with its pipelines compiled."""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from typing import Any, Callable, Mapping

import numpy as np

from . import engines
from .bundle import Bundle, BundleLimits, read_bundle
from .errors import BundleError, EngineError, InputError
from .ops import Context, compile_steps
from .ops.tensor import dequantize_array, quantize_array
from .ops.trace import Trace
from .ops.vision.candidates import check_decode_ends
from .specs import TensorSpec, example_feeds, format_shape

log = logging.getLogger(__name__)


def load(path: str | os.PathLike | Bundle, *, engine: str | None = None,
         threads: int | None = None, spin_wait: bool | None = None,
         hooks: Mapping[str, Callable[..., Any]] | None = None,
         trusted_key: bytes | str | os.PathLike | None = None,
         limits: BundleLimits = BundleLimits()) -> "Model":
    """Verify a bundle, open its engine and compile its pre/post-processing.

    `engine` overrides the manifest's engine name (e.g. a custom one registered under the
    `edgepack.engines` entry-point group); `threads` sets the engine's intra-op threads;
    `hooks` adds application hooks for this model only. Raises BundleError, EngineError,
    PipelineError/HookError: all problems surface here, not at the first request.

    `spin_wait=False` makes the engine's worker threads sleep between runs instead of
    spinning (None: the engine's default, which for ONNX Runtime is to spin). Set it when
    the process runs more than one multi-threaded model, or does real work between runs
    (camera capture, preprocessing): measured here with two 2-thread MobileNetV2 sessions
    run alternately on 2 cores, spinning made each one 1.6-2.2x slower than with sleeping
    workers, and a frame of one run + 5 ms of app work 1.1-1.2x slower; a single model in
    a tight loop was 0-65% slower with sleeping workers (benchmarks/spin_wait.py).
    Engines without such a setting (LiteRT) ignore it.
    """
    bundle = path if isinstance(path, Bundle) else read_bundle(
        path, limits=limits, trusted_key=trusted_key)
    if bundle.manifest.stages:  # chained models (DESIGN §7): runtime/stages.py
        from .stages import StagedModel
        return StagedModel(bundle, engine=engine, threads=threads, spin_wait=spin_wait,
                           hooks=hooks)
    return Model(bundle, engine=engine, threads=threads, spin_wait=spin_wait, hooks=hooks)


class Model:
    """A loaded bundle. `run` takes raw tensors; `predict` applies the manifest's pipelines."""

    def __init__(self, bundle: Bundle, *, engine: str | None = None, threads: int | None = None,
                 spin_wait: bool | None = None,
                 hooks: Mapping[str, Callable[..., Any]] | None = None):
        manifest = bundle.manifest
        self.bundle = bundle
        self.manifest = manifest
        self.name, self.version = manifest.name, manifest.version
        self.inputs: tuple[TensorSpec, ...] = manifest.inputs
        self.outputs: tuple[TensorSpec, ...] = manifest.outputs
        labels = bundle.labels()
        self.labels = tuple(labels) if labels is not None else None
        self.engine_name = engine or manifest.model.engine
        self.threads = threads
        hooks = dict(hooks or {})
        self.assets = {name: bundle.read(member) for name, member in manifest.assets.items()}
        self.task = manifest.task_kind
        context = Context(None, self.labels, hooks, self.assets, self.inputs, self.outputs)
        self._preprocess = {
            s.name: compile_steps(manifest.preprocess.get(s.name, []),
                                  replace(context, spec=s), f"preprocess[{s.name!r}]")
            for s in self.inputs}
        self._postprocess = {
            s.name: compile_steps(manifest.postprocess.get(s.name, []),
                                  replace(context, spec=s), f"postprocess[{s.name!r}]")
            for s in self.outputs}
        self._encode = (compile_steps(manifest.encode, context, "encode", kind="encode")
                        if manifest.encode else None)
        self._decode = (compile_steps(manifest.decode, context, "decode", kind="decode")
                        if manifest.decode else None)
        check_decode_ends(manifest.decode)   # a decoder's candidates are not a result
        self._checks = [_Check(s) for s in self.inputs]
        self._engine = engines.open_engine(self.engine_name, bundle.model_bytes(),
                                           threads=threads, spin_wait=spin_wait)
        self._run = self._engine.run  # bound once: run() is the hot path
        self._check_engine_agrees()
        log.debug("loaded %s %s on %s", self.name, self.version, self.engine_name)

    def _check_engine_agrees(self) -> None:
        """Refuse a manifest that contradicts its model: names, dtypes, ranks and static dims.

        A dim the manifest declares dynamic (-1) may be static in the model, and a static
        declared dim may narrow a dynamic one; two different static sizes are a contradiction
        (the engine would return tensors the manifest, and serve's metadata, do not describe).
        Every model input must be declared, or run() could never feed it.
        """
        for kind, declared, actual in (("input", self.inputs, self._engine.inputs()),
                                       ("output", self.outputs, self._engine.outputs())):
            found = {s.name: s for s in actual}
            if kind == "input":
                names = {s.name for s in declared}
                for real in actual:
                    if real.name not in names:
                        raise BundleError(
                            f"{self.bundle.path}: model input {real.name!r} {real.dtype} "
                            f"{format_shape(real.shape)} is not in the manifest (manifest has "
                            f"{sorted(names)}); repack the bundle")
            for spec in declared:
                real = found.get(spec.name)
                if real is None:
                    raise BundleError(
                        f"{self.bundle.path}: manifest {kind} {spec.name!r} is not in the model "
                        f"(model has {sorted(found)}); repack the bundle")
                if real.dtype != spec.dtype or len(real.shape) != len(spec.shape) or any(
                        want != -1 and got != -1 and want != got
                        for want, got in zip(spec.shape, real.shape)):
                    raise BundleError(
                        f"{self.bundle.path}: manifest {kind} {spec.name!r} is {spec.dtype} "
                        f"{format_shape(spec.shape)} but the model has {real.dtype} "
                        f"{format_shape(real.shape)}; repack the bundle")

    # -- raw tensors --------------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on raw tensors keyed by input name; returns raw outputs by name."""
        if type(feeds) is not dict:  # exact-type test first: this is the hot path
            if not isinstance(feeds, Mapping):
                raise InputError(
                    f"run() takes a dict of input name -> array, got {type(feeds).__name__}")
            feeds = dict(feeds)
        self.check_feeds(feeds)
        return self._run(feeds)

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Make the checks run() makes on every call (names, dtypes, shapes), once: for
        callers that bind buffers of fixed shape and run them many times (`bind`)."""
        if len(feeds) != len(self._checks):
            self._explain_names(feeds)
        for check in self._checks:
            check(feeds.get(check.name, _MISSING), self, feeds)

    @property
    def engine_outputs(self) -> tuple[TensorSpec, ...]:
        """The outputs as the engine reports them: static sizes where the manifest may
        declare a dim dynamic (-1), e.g. to allocate output buffers for `bind`."""
        if self._engine is None:
            raise EngineError(f"model {self.name!r} is closed")
        return tuple(self._engine.outputs())

    @property
    def can_bind(self) -> bool:
        """Whether `bind` can give a run over fixed buffers on this engine."""
        return self._engine is not None and hasattr(self._engine, "bind")

    def bind(self, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]
             ) -> Callable[[], None] | None:
        """A run() over caller-owned buffers (ONNX Runtime IOBinding): it reads `inputs`
        and writes `outputs` in place, with no checks, dict or allocation per call. None
        when the engine cannot bind (LiteRT): use run(). Call `check_feeds(inputs)` first;
        the buffers must stay alive, C-contiguous and of fixed shape while it is used."""
        if self._engine is None:
            raise EngineError(f"model {self.name!r} is closed")
        bind = getattr(self._engine, "bind", None)  # an optional engine capability
        return None if bind is None else bind(inputs, outputs)

    def _explain_names(self, feeds: Mapping[str, Any]):
        expected = [s.name for s in self.inputs]
        missing = [n for n in expected if n not in feeds]
        extra = [n for n in feeds if n not in expected]
        raise InputError(f"model {self.name!r} takes inputs {expected}; missing {missing}, "
                         f"unexpected {extra}")

    # -- with the manifest's pipelines ----------------------------------------------------
    def preprocess(self, raw: Mapping[str, Any], trace: Trace | None = None
                   ) -> dict[str, np.ndarray]:
        """Per-input preprocessing; geometric steps record their transform in `trace`."""
        feeds = {}
        for spec in self.inputs:
            if spec.name not in raw:
                self._explain_names(raw)
            value = self._preprocess[spec.name](raw[spec.name], trace)
            feeds[spec.name] = _fit(np.asarray(value), spec)
        return feeds

    def postprocess(self, outputs: Mapping[str, np.ndarray], trace: Trace | None = None
                    ) -> dict[str, Any]:
        """Dequantize, per-output postprocess, then the manifest's `decode` steps if any."""
        result = {}
        for spec in self.outputs:
            value = outputs[spec.name]
            if spec.is_quantized and np.issubdtype(value.dtype, np.integer):
                value = dequantize_array(value, *_quant_arrays(spec))
            result[spec.name] = self._postprocess[spec.name](value, trace)
        if self._decode is not None:
            result = self._decode(result, trace if trace is not None else Trace())
        return result

    def predict(self, *args: Any, **inputs: Any) -> dict[str, Any]:
        """Encode -> preprocess -> run -> postprocess -> decode; returns a dict.

        `predict(x)` for a one-input model (or any raw input, e.g. text, when the bundle
        has `encode` steps), `predict(name=x, ...)` or `predict({...})` for several.
        Quantized (int8/uint8) inputs are quantized and outputs dequantized here. Without
        `decode` steps the dict is keyed by output name; with them it is the task's result
        (e.g. {"detections": [...]}, DESIGN §7).
        """
        trace = Trace()
        if self._encode is not None:
            if len(args) + len(inputs) != 1:
                raise InputError(f"model {self.name!r} takes one input (its encode steps "
                                 "turn it into the model's tensors)")
            raw = args[0] if args else next(iter(inputs.values()))
            inputs = self._encode(raw, trace)
        elif args:
            if len(args) > 1 or inputs:
                raise InputError("predict() takes one positional input, or inputs by name")
            if isinstance(args[0], Mapping):
                inputs = dict(args[0])
            elif len(self.inputs) == 1:
                inputs = {self.inputs[0].name: args[0]}
            else:
                raise InputError(f"model {self.name!r} has inputs {[s.name for s in self.inputs]}; "
                                 "pass them by name")
        feeds = self.preprocess(inputs, trace)
        trace.feeds = feeds
        return self.postprocess(self.run(feeds), trace)

    def example_feeds(self, *, seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
        """Inputs for smoke runs (verify, serve's load check, speed checks): the manifest's
        `examples` where given (values, ranges, shapes, stored arrays), seeded data else."""
        return example_feeds(self.inputs, seed=seed, batch=batch,
                             examples=self.manifest.examples, assets=self.assets)

    def stream(self) -> "Stream":
        """A `Stream` over this model as the manifest's `stream` declares: push chunks of
        any size, get events/segments (runtime/stream.py). One per audio source."""
        from .stream import Stream
        return Stream(self)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
            self._engine = None
            self._run = _closed

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<edgepack Model {self.name} {self.version} on {self.engine_name}>"


_MISSING = object()


def _closed(feeds):
    raise EngineError("this model was closed; load the bundle again to run it")


class _Check:
    """Precomputed spec check: run() sits on the hot path, so avoid per-call work."""

    __slots__ = ("name", "spec", "dtype", "exact", "rank", "static")

    def __init__(self, spec: TensorSpec):
        self.name, self.spec = spec.name, spec
        self.dtype = np.dtype(spec.dtype) if spec.dtype != "string" else None
        self.exact = spec.shape if -1 not in spec.shape else None
        self.rank = len(spec.shape)
        self.static = tuple((i, d) for i, d in enumerate(spec.shape) if d != -1)

    def __call__(self, value: Any, model: "Model", feeds: Mapping[str, Any]) -> None:
        if type(value) is not np.ndarray:
            if value is _MISSING:
                model._explain_names(feeds)
            if not isinstance(value, np.ndarray):
                raise InputError(f"input {self.name!r} must be a numpy array, got "
                                 f"{type(value).__name__}; wrap it with numpy.asarray")
        dtype = value.dtype
        if dtype is not self.dtype and self.dtype is not None and dtype != self.dtype:
            self.spec.check(value)
        shape = value.shape
        if shape == self.exact:
            return
        if len(shape) != self.rank:
            self.spec.check(value)
        for i, d in self.static:
            if shape[i] != d:
                self.spec.check(value)


def _fit(value: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Last touches predict() makes: batch axis, quantization, dtype width."""
    if value.ndim == len(spec.shape) - 1 and spec.shape and spec.shape[0] in (-1, 1):
        value = value[None]
    if spec.is_quantized and np.issubdtype(value.dtype, np.floating):
        scale, zero, axis = _quant_arrays(spec)
        return quantize_array(value, scale, zero, spec.dtype, axis)
    if np.issubdtype(value.dtype, np.number) and spec.dtype != "string" and \
            value.dtype != np.dtype(spec.dtype) and np.can_cast(value.dtype, spec.dtype, "same_kind"):
        return value.astype(spec.dtype)
    return value


def _quant_arrays(spec: TensorSpec) -> tuple[np.ndarray, np.ndarray, int]:
    q = spec.quantization
    return (np.asarray(q.scale, np.float32), np.asarray(q.zero_point, np.float32),
            q.axis if q.axis is not None else -1)
