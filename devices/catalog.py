"""Device profiles: typed views of the TOML data files in ``devices/profiles/``.

A profile is data, not code: adding a board means adding one TOML file. The loader checks
every field it relies on, so a typo in a profile fails with the file and field named.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from edgepack.runtime.errors import DeviceError

log = logging.getLogger(__name__)

PROFILE_DIR = Path(__file__).with_name("profiles")
TARGET_ENGINE = {"onnx": "onnxruntime", "tflite": "litert"}  # runtime engine per model format
#: The bundle formats, and the quantization modes, named the same everywhere: this is the one
#: definition (the lowest layer that knows them); converters, compare and the CLI import it.
TARGETS = tuple(TARGET_ENGINE)
QUANTIZATIONS = ("none", "fp16", "dynamic", "int8")
FEATURES = ("neon", "vfpv4", "crc32", "crypto", "dotprod", "fp16", "i8mm", "sve",
            "sse4_2", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni")


@dataclass(frozen=True)
class EngineSupport:
    """One inference engine package and whether it has wheels for the device."""

    name: str            # "onnxruntime" | "litert" | "tflite-runtime"
    package: str         # PyPI name
    available: bool
    version: str         # version constraint of the wheels that exist ("" when none)
    wheel: str           # wheel tag / how to install, human-readable
    target: str          # model format it runs: "onnx" | "tflite"
    op_table: str = ""   # tflite-runtime version whose op-version limits apply ("" = current)
    notes: str = ""

    @property
    def runtime_engine(self) -> str:
        """The edgepack.runtime engine name that drives this package."""
        return TARGET_ENGINE[self.target]


@dataclass(frozen=True)
class Profile:
    """A board edgepack knows: CPU, memory, OS and the engines that install there."""

    name: str
    title: str
    arch: str                      # `uname -m`: aarch64, armv7l, x86_64
    core: str                      # cortex-a72, ...
    cores: int
    max_mhz: int
    isa: str
    features: tuple[str, ...]
    qemu_cpu: str                  # -cpu value for qemu-user ("" = not emulated)
    ram_mb: int
    os_reserved_mb: int
    os_name: str
    glibc: str
    python: str
    threads: int
    quantization: str
    target: str
    engines: tuple[EngineSupport, ...]
    ram_variants_mb: tuple[int, ...] = ()
    notes: str = ""
    sources: tuple[str, ...] = field(default=())
    aliases: tuple[str, ...] = ()  # other names users type ("rpi4" for "rpi4b")

    @property
    def ram_budget_mb(self) -> int:
        """RAM left for the application after the OS and its services."""
        return self.ram_mb - self.os_reserved_mb

    def has(self, feature: str) -> bool:
        """Whether the CPU has an ISA feature (names as in FEATURES)."""
        return feature in self.features

    def engines_for(self, target: str) -> tuple[EngineSupport, ...]:
        """Engines with wheels for `target` ("onnx" | "tflite"), preferred first."""
        return tuple(e for e in self.engines if e.target == target and e.available)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON view (for `--json` output)."""
        from dataclasses import asdict

        return asdict(self)


def _get(data: dict, key: str, kind: type, source: str) -> Any:
    if key not in data:
        raise DeviceError(f"{source}: missing field '{key}'")
    value = data[key]
    if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
        raise DeviceError(f"{source}: field '{key}' must be {kind.__name__}, "
                          f"got {type(value).__name__}")
    return value


def _engine(data: dict, source: str) -> EngineSupport:
    target = _get(data, "target", str, source)
    if target not in TARGET_ENGINE:
        raise DeviceError(f"{source}: engine target '{target}' is not one of "
                          f"{sorted(TARGET_ENGINE)}")
    return EngineSupport(
        name=_get(data, "name", str, source), package=_get(data, "package", str, source),
        available=_get(data, "available", bool, source), version=data.get("version", ""),
        wheel=data.get("wheel", ""), target=target, op_table=data.get("op_table", ""),
        notes=data.get("notes", ""))


def parse_profile(data: dict, source: str) -> Profile:
    """Build a Profile from the dict of one TOML file; `source` names it in errors."""
    cpu = _get(data, "cpu", dict, source)
    mem = _get(data, "memory", dict, source)
    os_ = _get(data, "os", dict, source)
    rec = _get(data, "recommended", dict, source)
    features = tuple(_get(cpu, "features", list, f"{source} [cpu]"))
    unknown = sorted(set(features) - set(FEATURES))
    if unknown:
        raise DeviceError(f"{source}: unknown CPU features {unknown}; known: {list(FEATURES)}")
    quant = _get(rec, "quantization", str, f"{source} [recommended]")
    if quant not in QUANTIZATIONS:
        raise DeviceError(f"{source}: recommended quantization '{quant}' is not one of "
                          f"{list(QUANTIZATIONS)}")
    engines = tuple(_engine(e, f"{source} [[engines]]")
                    for e in _get(data, "engines", list, source))
    target = _get(rec, "target", str, f"{source} [recommended]")
    if not any(e.target == target and e.available for e in engines):
        raise DeviceError(f"{source}: recommended target '{target}' has no available engine")
    return Profile(
        name=_get(data, "name", str, source), title=_get(data, "title", str, source),
        arch=_get(data, "arch", str, source), core=_get(cpu, "core", str, source),
        cores=_get(cpu, "cores", int, source), max_mhz=_get(cpu, "max_mhz", int, source),
        isa=_get(cpu, "isa", str, source), features=features,
        qemu_cpu=cpu.get("qemu_cpu", ""), ram_mb=_get(mem, "ram_mb", int, source),
        os_reserved_mb=_get(mem, "os_reserved_mb", int, source),
        os_name=_get(os_, "name", str, source), glibc=_get(os_, "glibc", str, source),
        python=_get(os_, "python", str, source), threads=_get(rec, "threads", int, source),
        quantization=quant, target=target, engines=engines,
        ram_variants_mb=tuple(mem.get("ram_variants_mb", ())), notes=data.get("notes", ""),
        sources=tuple(data.get("sources", ())), aliases=tuple(data.get("aliases", ())))


def _toml():
    try:
        import tomllib  # Python >= 3.11
    except ImportError:  # older Pythons (e.g. a Jetson's) read profiles with tomli
        try:
            import tomli as tomllib
        except ImportError as e:
            raise DeviceError("reading device profiles needs Python >= 3.11 or "
                              "`pip install tomli`") from e
    return tomllib


@lru_cache(maxsize=None)
def _load_all() -> dict[str, Profile]:
    tomllib = _toml()
    profiles = {}
    for path in sorted(PROFILE_DIR.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise DeviceError(f"device profile {path.name} is not valid TOML: {e}") from e
        profile = parse_profile(data, path.name)
        if profile.name != path.stem:
            raise DeviceError(f"{path.name}: name '{profile.name}' must match the file name")
        clash = [a for a in profile.aliases if a in profiles or any(
            a in other.aliases for other in profiles.values())]
        if clash:
            raise DeviceError(f"{path.name}: aliases {clash} already name another profile")
        profiles[profile.name] = profile
    log.debug("loaded %d device profiles from %s", len(profiles), PROFILE_DIR)
    return profiles


def list_profiles() -> tuple[Profile, ...]:
    """Every known device profile, sorted by name."""
    return tuple(_load_all().values())


def load_profile(name: str | Profile) -> Profile:
    """The profile called `name` (a Profile passes through).

    Raises DeviceError listing the known names when `name` is unknown.
    """
    if isinstance(name, Profile):
        return name
    profiles = _load_all()
    if name not in profiles:
        # Explicit aliases from the profiles only; a mistyped name is never guessed.
        aliased = [p for p in profiles.values() if name in p.aliases]
        if aliased:
            return aliased[0]
        raise DeviceError(f"unknown device '{name}'; known devices: {', '.join(profiles)} "
                          "(see `edgepack devices`)")
    return profiles[name]
