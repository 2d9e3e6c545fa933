"""CPU accounting of the benchmark's processes and threads, from /proc (Linux)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of a process, by native thread id, from /proc."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue        # ended meanwhile
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def thread_sched(pid: int) -> dict[int, tuple[int, int, int]]:
    """Per thread of a process, by native id: (voluntary switches, involuntary switches,
    ns spent runnable but waiting for a CPU), from /proc/PID/task/TID/{status,schedstat}."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            wait_ns = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue        # ended meanwhile
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        out[int(tid)] = (int(fields["voluntary_ctxt_switches"]),
                         int(fields["nonvoluntary_ctxt_switches"]), wait_ns)
    return out


@dataclass
class Cpu:
    """CPU seconds of the bridge, mosquitto and this process between two points."""

    bridge: float
    broker: float
    here: float

    @classmethod
    def now(cls, bridge_pid: int, broker_pid: int) -> "Cpu":
        return cls(cpu_seconds(bridge_pid), cpu_seconds(broker_pid), time.process_time())

    def per(self, later: "Cpu", count: int) -> str:
        n = max(1, count)
        return (f"bridge {(later.bridge - self.bridge) * 1000 / n:.2f}, mosquitto "
                f"{(later.broker - self.broker) * 1000 / n:.2f}, publisher+collector "
                f"{(later.here - self.here) * 1000 / n:.2f} ms")
