"""What machine is this? Board, CPU, memory and installed engines, from files, not imports.

Everything here reads /proc, /sys and package metadata only: `edgepack doctor` must be quick
and must work on a board where importing an engine would take seconds or crash.
"""
from __future__ import annotations

import os
import platform
import re
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from edgepack.devices.catalog import Profile, list_profiles

# Packages doctor reports, in the order shown.
ENGINE_PACKAGES = ("onnxruntime", "ai-edge-litert", "tflite-runtime", "tensorflow",
                   "tensorflow-cpu", "numpy")

# /proc/cpuinfo "CPU part" of Arm Ltd (implementer 0x41) cores edgepack has profiles for.
ARM_PARTS = {0xD03: "cortex-a53", 0xD04: "cortex-a35", 0xD05: "cortex-a55",
             0xD07: "cortex-a57", 0xD08: "cortex-a72", 0xD09: "cortex-a73",
             0xD0B: "cortex-a76", 0xC07: "cortex-a7", 0xC0F: "cortex-a15"}

# cpuinfo flag -> profile feature name. aarch64 says asimd/asimddp/asimdhp, armv7 says neon,
# x86 says avx2 etc.
_FLAG_MAP = {"asimd": "neon", "neon": "neon", "vfpv4": "vfpv4", "crc32": "crc32",
             "aes": "crypto", "asimddp": "dotprod", "asimdhp": "fp16", "i8mm": "i8mm",
             "sve": "sve", "sse4_2": "sse4_2", "avx2": "avx2", "fma": "fma",
             "avx512f": "avx512f", "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni"}


@dataclass(frozen=True)
class HostInfo:
    """The machine edgepack runs on."""

    model: str | None              # device-tree board model, e.g. "Raspberry Pi 4 Model B Rev 1.4"
    arch: str                      # platform.machine()
    core: str | None               # Arm core name when /proc/cpuinfo says it
    cores: int
    ram_mb: int | None
    features: tuple[str, ...]      # normalized names (see catalog.FEATURES)
    raw_flags: tuple[str, ...]     # the cpuinfo flags as the kernel spells them
    python: str
    glibc: str | None
    engines: dict[str, str]        # installed package -> version

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view (for `--json`)."""
        return asdict(self)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def parse_cpuinfo(text: str) -> tuple[str | None, tuple[str, ...], int]:
    """(Arm core name or None, raw flags, processor count) from /proc/cpuinfo text."""
    flags: list[str] = []
    core = None
    implementer = None
    processors = 0
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "processor":
            processors += 1
        elif key in ("flags", "features") and not flags:
            flags = value.split()
        elif key == "cpu implementer":
            implementer = int(value, 16) if value.startswith("0x") else None
        elif key == "cpu part" and core is None and implementer == 0x41:
            try:
                core = ARM_PARTS.get(int(value, 16))
            except ValueError:
                core = None
    return core, tuple(flags), processors


def _ram_mb() -> int | None:
    text = _read("/proc/meminfo") or ""
    m = re.search(r"^MemTotal:\s+(\d+)\s+kB", text, re.M)
    return int(m.group(1)) // 1024 if m else None


def _board_model() -> str | None:
    for path in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        text = _read(path)
        if text:
            return text.rstrip("\x00\n ")
    return None


def installed_engines() -> dict[str, str]:
    """Installed engine packages and their versions, from package metadata (no imports)."""
    found = {}
    for name in ENGINE_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def detect_host() -> HostInfo:
    """Describe the machine this process runs on (see HostInfo)."""
    core, flags, processors = parse_cpuinfo(_read("/proc/cpuinfo") or "")
    features = tuple(sorted({_FLAG_MAP[f] for f in flags if f in _FLAG_MAP}))
    libc, libc_version = platform.libc_ver()
    return HostInfo(model=_board_model(), arch=platform.machine(), core=core,
                    cores=os.cpu_count() or processors or 1, ram_mb=_ram_mb(),
                    features=features, raw_flags=flags, python=platform.python_version(),
                    glibc=libc_version if libc == "glibc" else None,
                    engines=installed_engines())


_BOARD_PATTERNS = (("Raspberry Pi Zero 2", "rpi-zero2w"), ("Raspberry Pi 3", "rpi3b"),
                   ("Raspberry Pi 4", "rpi4b"), ("Raspberry Pi 5", "rpi5"),
                   ("Jetson Nano", "jetson-nano"), ("Jetson-Nano", "jetson-nano"))


def closest_profile(host: HostInfo | None = None) -> tuple[Profile, str]:
    """The profile that best describes `host` (default: this machine), and why.

    The board model from the device tree wins; otherwise the generic profile of the same
    arch (closest RAM size when several).
    """
    host = host or detect_host()
    profiles = {p.name: p for p in list_profiles()}
    if host.model:
        for pattern, name in _BOARD_PATTERNS:
            if pattern.lower() in host.model.lower() and name in profiles:
                if name.startswith("rpi") and host.arch == "armv7l":
                    # A Pi running the 32-bit OS only gets what armv7l wheels give it.
                    return profiles["generic-armv7l"], (
                        f"board '{host.model}' runs a 32-bit OS (armv7l)")
                return profiles[name], f"board model '{host.model}'"
    same_arch = [p for p in profiles.values() if p.arch == host.arch]
    if not same_arch:
        return profiles["generic-aarch64"], f"no profile for arch {host.arch}; nearest generic"
    # Without a board name, a same-core board profile would claim facts (RAM, OS) nobody
    # checked: the generic profile of the arch is the honest answer.
    pool = [p for p in same_arch if p.name.startswith(("generic", "x86_64"))] or same_arch
    ram = host.ram_mb or 0
    best = min(pool, key=lambda p: abs(p.ram_mb - ram))
    return best, f"arch {host.arch}" + (f", core {host.core}" if host.core else "")
