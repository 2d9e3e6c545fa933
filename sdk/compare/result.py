"""What a comparison found: one row per (target, mode), the pick, and the context."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .accuracy import Accuracy
from .latency import Latency
from .memory import Memory

#: Row status values.
OK, OVER_BUDGET, FAILED = "ok", "over-budget", "failed"


@dataclass(frozen=True)
class Row:
    """One combination: its bundle and every number measured on it.

    status: "ok" (measured, within the accuracy budget), "over-budget" (measured, accuracy
        drop above max_drop) or "failed" (no bundle; `reason` says why).
    bundle_bytes: size of the .edgepack file; model_bytes: of the model member inside it.
    slower_than_fp32: p50 ratio to the fp32 bundle of the same target when a quantized
        bundle is slower than it here (None otherwise).
    check: `edgepack check` for the device: {"ok", "errors", "warnings"} (None: no device).
    on_device: emulation result for the device (bit-exactness; never latency).
    """

    target: str
    mode: str
    status: str
    reason: str = ""
    path: Path | None = None
    bundle_bytes: int | None = None
    model_bytes: int | None = None
    memory: Memory | None = None
    latency: Latency | None = None
    accuracy: Accuracy | None = None
    check: dict[str, Any] | None = None
    slower_than_fp32: float | None = None
    on_device: dict[str, Any] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def key(self) -> str:
        return f"{self.target}/{self.mode}"

    @property
    def measured(self) -> bool:
        return self.status != FAILED

    def to_dict(self, with_samples: bool = False) -> dict[str, Any]:
        return {
            "key": self.key, "target": self.target, "mode": self.mode, "status": self.status,
            "reason": self.reason, "path": str(self.path) if self.path else None,
            "bundle_bytes": self.bundle_bytes, "model_bytes": self.model_bytes,
            "memory": self.memory.to_dict() if self.memory else None,
            "latency": self.latency.to_dict(with_samples) if self.latency else None,
            "accuracy": self.accuracy.to_dict() if self.accuracy else None,
            "check": self.check, "slower_than_fp32": self.slower_than_fp32,
            "on_device": self.on_device, "notes": list(self.notes)}


@dataclass(frozen=True)
class Pick:
    """The chosen bundle (None when nothing qualified) and why every other one was not."""

    key: str | None
    path: Path | None
    reason: str
    rejected: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "path": str(self.path) if self.path else None,
                "reason": self.reason,
                "rejected": [{"key": k, "why": w} for k, w in self.rejected]}


@dataclass(frozen=True)
class CompareResult:
    """Everything `compare` measured.

    threads: engine threads used for latency (the device's recommendation, capped at the
        host's cores); host: where latency was measured (it is host latency, not device).
    """

    model: str
    device: str | None
    threads: int | None
    host: dict[str, Any]
    max_drop: float
    metric: str                     # "accuracy" | "top1_agreement" | "detection_agreement"
    source_accuracy: float | None
    held_out: int
    calibration: int
    rows: tuple[Row, ...]
    pick: Pick
    latency_runs: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    def row(self, key: str) -> Row:
        return next(r for r in self.rows if r.key == key)

    def without_work_paths(self, pick_path: Path | None = None) -> "CompareResult":
        """A copy whose bundle paths no longer point into a deleted work directory: rows
        have none, the pick has `pick_path` (where it was copied to, if anywhere)."""
        rows = tuple(replace(r, path=None) for r in self.rows)
        pick = replace(self.pick, path=Path(pick_path) if pick_path and self.pick.key
                       else None)
        return replace(self, rows=rows, pick=pick)

    def best(self) -> dict[str, str | None]:
        """Keys of the fastest (p50), smallest (bundle file) and most accurate measured rows."""
        measured = [r for r in self.rows if r.measured]

        def pick(values):
            values = [(v, r.key) for r, v in values if v is not None]
            return min(values)[1] if values else None

        return {
            "fastest": pick((r, r.latency.p50_ms if r.latency else None) for r in measured),
            "smallest": pick((r, r.bundle_bytes) for r in measured),
            # Ties in the task metric (common: several bundles lose nothing) go to the
            # bundle whose outputs are closest to the source's.
            "most_accurate": pick((r, (r.accuracy.drop_points,
                                       r.accuracy.outputs[0].mean_abs if r.accuracy.outputs
                                       else 0.0))
                                  if r.accuracy and r.accuracy.drop_points is not None
                                  else (r, None) for r in measured),
        }

    def to_dict(self, with_samples: bool = False) -> dict[str, Any]:
        return {"model": self.model, "device": self.device, "threads": self.threads,
                "host": self.host, "max_drop": self.max_drop, "metric": self.metric,
                "source_accuracy": self.source_accuracy, "held_out": self.held_out,
                "calibration": self.calibration, "latency_runs": self.latency_runs,
                "rows": [r.to_dict(with_samples) for r in self.rows], "best": self.best(),
                "pick": self.pick.to_dict(), "notes": list(self.notes)}
