"""Typed configuration of a comparison, checked before any conversion starts."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from edgepack.devices.catalog import QUANTIZATIONS as MODES
from edgepack.devices.catalog import TARGETS
from edgepack.runtime.errors import EdgepackError


class CompareError(EdgepackError):
    """A comparison cannot start (bad options, unreadable data); one combination failing
    is never this: it becomes a row with its reason."""

    exit_code = 2  # the user's options or data: the input family


@dataclass(frozen=True)
class LatencyConfig:
    """How latency is sampled.

    rounds x block timed runs per bundle. Within a round every bundle runs one block in
    turn (the order rotates each round), so a burst of machine noise lands on all bundles
    alike instead of on whichever one happened to be measured during it. Each block starts
    with one untimed run, which absorbs the switch from the previous bundle (cold caches,
    thread pools waking up), after a pause for the previous bundle's thread pool to stop
    spinning when there is more than one thread.
    warmup: untimed runs per bundle before the first round.
    threads: engine threads; None means the device profile's recommended count (capped at
        the host's cores), or the engine default without a device.
    """

    rounds: int = 10
    block: int = 20
    warmup: int = 10
    threads: int | None = None

    def __post_init__(self) -> None:
        for name in ("rounds", "block"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise CompareError(f"latency {name} must be a positive integer, got {value!r}")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise CompareError(f"latency warmup must be >= 0, got {self.warmup!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise CompareError(f"threads must be a positive integer, got {self.threads!r}")

    @property
    def runs(self) -> int:
        return self.rounds * self.block


@dataclass(frozen=True)
class CompareConfig:
    """What to compare and how.

    targets/modes: the matrix; every (target, mode) pair is converted.
    device: a device profile name (edgepack.devices); gives the thread count and the
        `check` every pick must pass. None: host defaults, no device check.
    max_drop: accuracy budget, in points (0-100) below the source model: task accuracy
        when labels are given, else top-1 agreement with the source.
    holdout: fraction of the data held out for accuracy (the rest calibrates int8); the
        split is a seeded permutation, so sorted data does not bias it.
    calibration_samples: at most this many samples calibrate int8.
    memory: measure peak memory of each bundle in a fresh subprocess.
    on_device: run each bundle under qemu emulation of `device` (bit-exactness/accuracy
        there; emulated time is never reported as latency).
    task/decode/class_names: the DESIGN §7 task, decode steps and labels written into every
        bundle (edgepack.convert's task=, decode=, labels=). A `detect` bundle is judged by
        detection agreement instead of top-1: min(recall, precision) of its detections
        against the source's at IoU >= 0.5, both through the bundle's own decode + NMS.
    """

    targets: tuple[str, ...] = TARGETS
    modes: tuple[str, ...] = MODES
    device: str | None = None
    max_drop: float = 1.0
    holdout: float = 0.3
    seed: int = 0
    calibration_samples: int = 200
    latency: LatencyConfig = field(default_factory=LatencyConfig)
    memory: bool = True
    on_device: bool = False
    on_device_samples: int = 64
    name: str = "model"
    task: Mapping[str, Any] | None = None
    decode: tuple[Mapping[str, Any], ...] = ()
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "decode", tuple(self.decode or ()))
        if self.class_names is not None:
            object.__setattr__(self, "class_names", tuple(self.class_names))
        if self.decode and not isinstance(self.task, Mapping):
            raise CompareError("decode steps need a task, e.g. task={'kind': 'detect'}")
        object.__setattr__(self, "modes", tuple(self.modes))
        for kind, values, known in (("target", self.targets, TARGETS), ("mode", self.modes, MODES)):
            if not values:
                raise CompareError(f"no {kind}s to compare; use some of {', '.join(known)}")
            unknown = [v for v in values if v not in known]
            if unknown:
                raise CompareError(f"unknown {kind}(s) {', '.join(map(repr, unknown))}; "
                                   f"use some of {', '.join(known)}")
            if len(set(values)) != len(values):
                raise CompareError(f"{kind}s listed twice: {', '.join(values)}")
        if not isinstance(self.max_drop, (int, float)) or not 0.0 <= self.max_drop <= 100.0:
            raise CompareError(f"--max-drop is in accuracy points, 0..100; got {self.max_drop!r}")
        if not 0.0 < self.holdout < 1.0:
            raise CompareError(f"holdout must be a fraction in (0, 1), got {self.holdout!r}")
        if not isinstance(self.calibration_samples, int) or self.calibration_samples < 1:
            raise CompareError("calibration_samples must be a positive integer")
        if self.on_device and not self.device:
            raise CompareError("--on-device needs --device NAME (the board to emulate)")

    @property
    def combinations(self) -> list[tuple[str, str]]:
        """Every (target, mode), targets outermost, in the order given."""
        return [(t, m) for t in self.targets for m in self.modes]
