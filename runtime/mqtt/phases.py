"""Per-phase timers of the bridge, a diagnostic mode (``[bridge] phases = true``).

Where does a message's CPU go? A process total (what benchmarks/mqtt.py reads from /proc)
cannot tell paho's parsing from a JPEG decode, nor CPU spent from time spent waiting for
the GIL or for a core. With `phases` on, each thread of the bridge keeps a `Laps`: at
every step of its path it charges the thread CPU time (``time.thread_time_ns``) and the
wall time (``time.perf_counter_ns``) since its previous mark to that step's name. Wall
well above CPU in a step means the thread was off the CPU there (waiting for the GIL, or
preempted by another process); CPU above the same work done alone means it ran slower
(caches, a busy sibling core). `PhaseBook.report` also gives each thread's whole CPU time
(``pthread_getcpuclockid``), so the steps can be checked against the thread totals.

Off by default: two clock reads per step cost ~0.3 us each, nothing else changes.
"""
from __future__ import annotations

import threading
import time
from typing import Any

_cpu = time.thread_time_ns
_wall = time.perf_counter_ns


class Laps:
    """One thread's step timers: `mark(name)` charges the time since the last mark."""

    __slots__ = ("cpu", "wall", "count", "_cpu0", "_wall0")

    def __init__(self) -> None:
        self.cpu: dict[str, int] = {}
        self.wall: dict[str, int] = {}
        self.count: dict[str, int] = {}
        self._cpu0 = _cpu()
        self._wall0 = _wall()

    def restart(self) -> None:
        """Forget the time since the last mark (it belongs to no step)."""
        self._cpu0 = _cpu()
        self._wall0 = _wall()

    def mark(self, name: str) -> None:
        cpu, wall = _cpu(), _wall()
        self.cpu[name] = self.cpu.get(name, 0) + cpu - self._cpu0
        self.wall[name] = self.wall.get(name, 0) + wall - self._wall0
        self.count[name] = self.count.get(name, 0) + 1
        self._cpu0, self._wall0 = cpu, wall


class PhaseBook:
    """The `Laps` of every thread that records, by thread name."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._laps: dict[str, tuple[threading.Thread, Laps]] = {}
        self._lock = threading.Lock()

    def laps(self) -> Laps:
        """This thread's `Laps` (made on first use)."""
        laps = getattr(self._local, "laps", None)
        if laps is None:
            laps = self._local.laps = Laps()
            thread = threading.current_thread()
            with self._lock:
                self._laps[thread.name] = (thread, laps)
        return laps

    def report(self) -> dict[str, Any]:
        """Per thread: its native id (as in /proc/PID/task), total CPU seconds (when still
        alive) and, per step, the count and the mean CPU and wall microseconds."""
        out: dict[str, Any] = {}
        with self._lock:
            entries = list(self._laps.items())
        for name, (thread, laps) in entries:
            steps = {}
            for step, n in list(laps.count.items()):
                steps[step] = {"n": n, "cpu_us": round(laps.cpu[step] / n / 1000, 2),
                               "wall_us": round(laps.wall[step] / n / 1000, 2)}
            out[name] = {"tid": thread.native_id, "cpu_s": thread_cpu(thread),
                         "steps": steps}
        return out


def thread_cpu(thread: threading.Thread) -> float | None:
    """CPU seconds a live thread of this process has used (None once it has ended)."""
    ident = thread.ident
    if ident is None or not thread.is_alive():
        return None
    try:
        return round(time.clock_gettime(time.pthread_getcpuclockid(ident)), 4)
    except (OSError, AttributeError):
        return None
