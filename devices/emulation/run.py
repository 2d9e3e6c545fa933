"""Run a bundle on the host and inside an emulated ARM userland, then compare the outputs.

Rules, by output (the result names the one applied to each):
- "exact": integer outputs must be bit-exact (integer kernels have one right answer).
- "ulp": float outputs of a fully-integer bundle (float I/O) are its int8 result after the
  model's final DEQUANTIZE; the integer result is the same, but the float multiply of that
  dequantize may round differently (FMA, NEON vs x86), so at most 1 ulp apart is allowed.
  Measured: an MNIST int8 CNN on tflite-runtime 2.14 under qemu armv7 was 1 ulp (5.96e-08)
  off in one element.
- "tolerance": float outputs of float bundles must be within ``atol + rtol * |host|``
  element-wise (different SIMD code paths and FMA contraction change the last bits).
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from edgepack.devices.catalog import Profile, load_profile
from edgepack.devices.emulation.environment import Progress, ensure_environment
from edgepack.runtime.errors import DeviceError, InputError

log = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("runner.py")
RUN_TIMEOUT_S = 900


@dataclass(frozen=True)
class Tolerance:
    """Float outputs of float bundles: |device - host| <= atol + rtol * |host|."""

    atol: float = 1e-4
    rtol: float = 1e-3


@dataclass(frozen=True)
class OutputComparison:
    """One output: the rule applied and how far the emulated device was from the host."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    rule: str            # "exact" | "ulp" | "tolerance" (see the module docstring)
    max_abs: float
    mismatches: int      # elements breaking the rule
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                "rule": self.rule, "max_abs": self.max_abs, "mismatches": self.mismatches,
                "ok": self.ok}


@dataclass(frozen=True)
class EmulationResult:
    """What `emulate` found."""

    device: str
    arch: str
    qemu_cpu: str
    host_engine: str
    device_engine: str
    outputs: tuple[OutputComparison, ...]
    tolerance: Tolerance
    seconds: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every output obeys its rule."""
        return all(o.ok for o in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "arch": self.arch, "qemu_cpu": self.qemu_cpu,
                "host_engine": self.host_engine, "device_engine": self.device_engine,
                "ok": self.ok, "tolerance": {"atol": self.tolerance.atol,
                                             "rtol": self.tolerance.rtol},
                "outputs": [o.to_dict() for o in self.outputs], "seconds": self.seconds,
                "notes": list(self.notes)}


def _stage_runtime(workdir: Path) -> Path:
    """A PYTHONPATH dir holding `edgepack.runtime` only (the guest has no click, onnx, ...).

    The installed package layout maps folders onto one namespace, so the source tree cannot
    go on PYTHONPATH as is: link the runtime package under a bare `edgepack/`.
    """
    import edgepack.runtime

    src = workdir / "src"
    (src / "edgepack").mkdir(parents=True)
    (src / "edgepack" / "__init__.py").write_text("")
    (src / "edgepack" / "runtime").symlink_to(Path(edgepack.runtime.__file__).parent)
    return src


def default_inputs(bundle_path: str | os.PathLike, seed: int = 0) -> dict[str, Any]:
    """Seeded inputs matching the bundle's input specs (dynamic dims -> 1)."""
    from edgepack.runtime import read_bundle
    from edgepack.runtime.specs import example_feeds

    return example_feeds(read_bundle(bundle_path).manifest.inputs, seed=seed)


def load_inputs(bundle_path: str | os.PathLike, files: Sequence[str | os.PathLike]) -> dict:
    """Inputs from .npy (one per bundle input, in order) or .npz (keyed by input name)."""
    import numpy as np

    from edgepack.runtime import read_bundle

    names = [s.name for s in read_bundle(bundle_path).manifest.inputs]
    feeds: dict[str, Any] = {}
    npy = []
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise InputError(f"input file {path} does not exist")
        if path.suffix == ".npz":
            with np.load(path) as data:
                feeds.update({k: data[k] for k in data.files})
        elif path.suffix == ".npy":
            npy.append(np.load(path))
        else:
            raise InputError(f"input file {path}: use .npy (one array per input, in order) "
                             "or .npz (arrays named like the inputs)")
    if npy:
        if len(npy) > len(names):
            raise InputError(f"{len(npy)} .npy files for {len(names)} inputs {names}")
        feeds.update(zip(names, npy))
    missing = [n for n in names if n not in feeds]
    if missing:
        raise InputError(f"no data for input(s) {missing}; the bundle's inputs are {names}")
    return feeds


def _run(cmd: list[str], env: dict, where: str) -> float:
    start = time.monotonic()
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True,
                              timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise DeviceError(f"{where} run gave no answer after {RUN_TIMEOUT_S} s") from e
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-6:])
        crash = (f" (killed by signal {-done.returncode})" if done.returncode < 0 else "")
        if "uncaught target signal" in done.stderr:
            crash = " (the program crashed under emulation)"
        raise DeviceError(f"{where} run failed with exit {done.returncode}{crash}:\n{tail}")
    return time.monotonic() - start


def _compare(name: str, host, device, strict: bool, tol: Tolerance) -> OutputComparison:
    import numpy as np

    shape = tuple(host.shape)
    if device.shape != host.shape or device.dtype != host.dtype:
        return OutputComparison(name, str(host.dtype), shape, "exact", float("inf"),
                                int(host.size), False)
    if host.dtype.kind in "iub":
        rule = "exact"
        diff = np.abs(host.astype(np.int64) - device.astype(np.int64))
    else:
        rule = "ulp" if strict else "tolerance"
        diff = np.abs(host.astype(np.float64) - device.astype(np.float64))
    max_abs = float(np.nanmax(diff)) if diff.size and not np.all(np.isnan(diff)) else (
        float("nan") if diff.size else 0.0)
    if rule == "exact":
        bad = int(np.count_nonzero(diff))
    elif rule == "ulp":
        bad = int(np.count_nonzero(ulp_distance(host, device) > MAX_ULPS))
    else:
        bad = int(np.count_nonzero(~(diff <= tol.atol + tol.rtol * np.abs(host))))
    return OutputComparison(name, str(host.dtype), shape, rule, max_abs, bad, bad == 0)


#: Float outputs of fully-integer bundles: the final dequantize may round 1 ulp apart.
MAX_ULPS = 1


def ulp_distance(a, b):
    """Element-wise distance in units in the last place between two float arrays of one
    dtype (NaN anywhere counts as infinitely far; +0 and -0 are 0 apart)."""
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    ints = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]

    def ordered(x):
        # Reinterpret the bits so that consecutive floats are consecutive integers.
        i = x.view(ints).astype(np.int64)
        return np.where(i < 0, -(i & np.iinfo(ints).max), i)

    distance = np.abs(ordered(a) - ordered(b)).astype(np.float64)
    return np.where(np.isnan(a) | np.isnan(b), np.inf, distance)


def _kept_float(bundle_path) -> bool:
    """True when the converter kept some layers of an int8 model in float.

    Integer kernels have one right answer, float ones do not: a mixed-precision bundle is
    compared within the float tolerance, not bit for bit.
    """
    from edgepack.runtime import read_bundle

    quantization = read_bundle(bundle_path).manifest.quantization or {}
    return bool(quantization.get("kept_float"))


def _bundle_kind(bundle_path) -> tuple[str, str]:
    """(target, quantization) of the bundle, as the checks see it."""
    from edgepack.runtime import read_bundle

    from edgepack.devices.check import bundle_facts

    s = bundle_facts(read_bundle(bundle_path))
    return s.target, s.quantization


def _mismatch_notes(target: str, quantization: str, host_engine: str,
                    device_engine: str) -> tuple[str, ...]:
    """Known causes of a host/device difference that are the host's, not the device's."""
    from edgepack.devices.host import detect_host

    if host_engine != device_engine:
        return (f"host ran {host_engine}, the device {device_engine}: engine releases differ "
                "in the last bit of some kernels, so part of the difference may be the "
                "version, not the CPU",)
    features = detect_host().features
    if (target == "onnx" and quantization == "int8" and "avx2" in features
            and not {"avx512_vnni", "avx_vnni"} & set(features)):
        return ("this host has AVX2 but no VNNI: onnxruntime documents that its x86 u8s8 "
                "kernels can saturate with full-range int8 weights, so the host reference "
                "itself can be off by one quantization step; quantize with reduce_range=True "
                "(7-bit weights) or compare on a VNNI host",)
    return ()


def emulate(bundle_path: str | os.PathLike, device: str | Profile,
            inputs: dict[str, Any] | None = None, *, threads: int = 1,
            tolerance: Tolerance = Tolerance(), cache_dir: str | os.PathLike | None = None,
            rebuild: bool = False, progress: Progress | None = None) -> EmulationResult:
    """Run `bundle_path` on the host and under qemu as `device`; compare outputs.

    `inputs`: dict of arrays keyed by input name (default: seeded random inputs from the
    specs). `threads`: engine threads on both sides (1 keeps runs reproducible and light).
    Returns an EmulationResult (`.ok`). Raises DeviceError when the environment cannot be
    built or either run fails (a crash under emulation is reported as such).
    """
    import numpy as np

    profile = load_profile(device)
    bundle = Path(bundle_path).resolve()
    target, quantization = _bundle_kind(bundle)
    if not profile.engines_for(target):
        # qemu would happily run an engine the board cannot install: refuse like check does.
        raise DeviceError(f"{profile.name} has no {target} engine (see `edgepack check "
                          f"{bundle.name} --device {profile.name}`): nothing to emulate")
    env_info = ensure_environment(profile, cache_dir=cache_dir, rebuild=rebuild,
                                  progress=progress)
    feeds = inputs if inputs is not None else default_inputs(bundle)
    strict = quantization == "int8" and not _kept_float(bundle)
    work = Path(tempfile.mkdtemp(prefix="edgepack-emulate-"))
    try:
        src = _stage_runtime(work)
        np.savez(work / "inputs.npz", **feeds)
        base_env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("PYTHON", "OPENBLAS", "LD_", "QEMU_"))}
        # The device first: when it refuses the model, that is the news.
        guest_env = dict(base_env, PYTHONPATH=f"{src}:{env_info.site}", PYTHONNOUSERSITE="1")
        cmd = [env_info.qemu, "-cpu", env_info.qemu_cpu, "-L", env_info.view, env_info.python,
               str(RUNNER), str(bundle), str(work / "inputs.npz"), str(work / "device.npz"),
               str(threads)]
        if progress:
            progress(f"[emulation] running {bundle.name} on {profile.name} "
                     f"(qemu {env_info.qemu_cpu})")
        dev_s = _run(cmd, guest_env, f"emulated {profile.name} ({env_info.qemu_cpu})")
        if env_info.host_site:
            # Isolated (-S: no site-packages) so only the device's engine release is seen.
            host_env = dict(base_env, PYTHONPATH=f"{src}:{env_info.host_site}")
            host_cmd = [sys.executable, "-S", "-s"]
        else:
            host_env = dict(base_env, PYTHONPATH=str(src), PYTHONNOUSERSITE="1")
            host_cmd = [sys.executable]
        host_s = _run(host_cmd + [str(RUNNER), str(bundle), str(work / "inputs.npz"),
                                  str(work / "host.npz"), str(threads)], host_env, "host")
        with np.load(work / "host.npz") as h, np.load(work / "device.npz") as d:
            names = [n for n in h.files if not n.startswith("__")]
            outs = tuple(_compare(n, h[n], d[n], strict, tolerance) if n in d.files else
                         OutputComparison(n, str(h[n].dtype), tuple(h[n].shape), "exact",
                                          float("inf"), int(h[n].size), False)
                         for n in names)
            host_engine, dev_engine = str(h["__engine__"]), str(d["__engine__"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ok = all(o.ok for o in outs)
    return EmulationResult(profile.name, profile.arch, env_info.qemu_cpu, host_engine,
                           dev_engine, outs, tolerance,
                           {"environment_build": round(env_info.built_seconds, 2),
                            "host_run": round(host_s, 2), "emulated_run": round(dev_s, 2)},
                           () if ok else _mismatch_notes(target, quantization, host_engine,
                                                         dev_engine))
