"""Build (once) and cache an ARM userland that qemu-user can run edgepack.runtime in.

Recipe (measured on a Debian bookworm x86_64 host):
- sysroot: Debian bookworm packages for the target arch (python3.11, libstdc++6, libgomp1
  and their dependencies), resolved by apt with a private configuration (own sources,
  lists, status and archive dirs: the host's apt state is never touched) and unpacked with
  `dpkg -x`. No maintainer scripts run, so the two BLAS alternatives links Debian's numpy
  needs are made by hand.
- wheels: `pip install --target` with `--only-binary=:all: --python-version 3.11` and one
  `--platform` per manylinux tag the engines publish (ai-edge-litert is manylinux_2_27 only,
  onnxruntime 1.32 manylinux_2_28). armhf has only tflite-runtime 2.14: installed with
  `--no-deps` next to Debian's python3-numpy (1.24, numpy < 2 as tflite-runtime needs).
- a fake ARM /proc/cpuinfo per emulated core: qemu-user passes the host's through, and
  onnxruntime's cpuinfo parser crashes (SIGSEGV) on an x86 one. qemu's `-L` prefix is
  searched first for every absolute path, so `<view>/proc/cpuinfo` shadows the real one.

Layout under the cache dir (``$EDGEPACK_CACHE_DIR`` or ``$XDG_CACHE_HOME/edgepack`` or
``~/.cache/edgepack``): ``emulation/<debian arch>/{apt,sysroot,site,views/<core>,stamp.json}``.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable

from edgepack.devices.catalog import Profile
from edgepack.devices.host import ARM_PARTS
from edgepack.runtime.errors import DeviceError

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
SUITE = "bookworm"          # Raspberry Pi OS Bookworm's base: python 3.11, glibc 2.36
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
COMMAND_TIMEOUT_S = 900


@dataclass(frozen=True)
class ArchRecipe:
    """What one emulated architecture needs."""

    debian_arch: str                  # arm64 | armhf
    qemu: tuple[str, ...]             # qemu-user binaries to look for, preferred first
    packages: tuple[str, ...]         # Debian packages (dependencies resolved by apt)
    wheels: tuple[str, ...]           # pip requirements
    platforms: tuple[str, ...]        # pip --platform tags
    no_deps: bool                     # pip --no-deps (armhf: numpy comes from Debian)
    triplet: str                      # multiarch lib dir
    # Wheels for an isolated *host* reference run with the device's engine release; empty:
    # the host's own packages are that release already (the arm64 wheels are pinned to them).
    host_wheels: tuple[str, ...] = ()


def _pinned(package: str) -> str:
    """`package==<host version>` when the host has it: host and device then run the same
    engine release, so a mismatch means the CPU, not a version skew."""
    try:
        return f"{package}=={metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return package


def recipe_for(profile: Profile) -> ArchRecipe:
    """The emulation recipe for a profile's architecture; DeviceError if not emulated."""
    base = ("python3.11", "libstdc++6", "libgomp1")
    if profile.arch == "aarch64":
        return ArchRecipe(
            "arm64", ("qemu-aarch64-static", "qemu-aarch64"), base,
            (_pinned("numpy"), _pinned("onnxruntime"), _pinned("ai-edge-litert")),
            ("manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_27_aarch64",
             "manylinux_2_28_aarch64"), False, "aarch64-linux-gnu")
    if profile.arch == "armv7l":
        return ArchRecipe(
            "armhf", ("qemu-arm-static", "qemu-arm"), base + ("python3-numpy",),
            ("tflite-runtime==2.14.0",), ("manylinux_2_34_armv7l", "linux_armv7l"), True,
            "arm-linux-gnueabihf",
            # Measured: ai-edge-litert 2.3 and tflite-runtime 2.14 differ in the last bit of
            # some int8 outputs on the same CPU, so the host must run 2.14 too.
            host_wheels=("tflite-runtime==2.14.0", "numpy<2"))
    raise DeviceError(f"device {profile.name} is {profile.arch}: only aarch64 and armv7l "
                      "profiles are emulated (run x86_64 bundles directly)")


@dataclass(frozen=True)
class Environment:
    """A ready emulated userland for one core."""

    debian_arch: str
    qemu: str            # path of the qemu-user binary
    qemu_cpu: str        # -cpu value
    view: str            # -L prefix: the sysroot seen through a per-core /proc/cpuinfo
    python: str          # interpreter path on the host (qemu does not map the program path)
    site: str            # wheels dir for PYTHONPATH
    built_seconds: float  # 0 when it came from the cache
    host_site: str = ""  # host-side wheels of the device's engine release ("" = host's own)


def cache_root() -> Path:
    """Where edgepack caches things (see module doc)."""
    if os.environ.get("EDGEPACK_CACHE_DIR"):
        return Path(os.environ["EDGEPACK_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "edgepack"


def find_qemu(recipe: ArchRecipe) -> str:
    """Path of a qemu-user binary for the recipe, or DeviceError saying how to install one."""
    for name in recipe.qemu:
        path = shutil.which(name)
        if path:
            return path
    raise DeviceError(f"no qemu-user binary found (looked for {', '.join(recipe.qemu)}): "
                      "install it with `apt-get install -y qemu-user-static`")


def debian_mirror() -> str:
    """The Debian archive URI: $EDGEPACK_DEBIAN_MIRROR, else the one the host's apt uses."""
    if os.environ.get("EDGEPACK_DEBIAN_MIRROR"):
        return os.environ["EDGEPACK_DEBIAN_MIRROR"].rstrip("/")
    texts = []
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d")
                                                       .glob("*.sources"))]:
        try:
            texts.append(path.read_text(encoding="utf-8", errors="replace"))
        except OSError:
            continue
    for text in texts:
        # deb822 stanzas ("URIs: ...") and one-line entries ("deb [opts] URI suite ...").
        for uri in re.findall(r"^URIs:\s*(\S+)", text, re.M) + re.findall(
                r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", text, re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri.rstrip("/")
    raise DeviceError("no Debian archive found in the host's apt sources: set "
                      "EDGEPACK_DEBIAN_MIRROR to a Debian mirror URI (…/debian)")


def _run(cmd: list[str], what: str, env: dict | None = None) -> str:
    log.debug("running %s", " ".join(cmd))
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except FileNotFoundError as e:
        raise DeviceError(f"{what}: {cmd[0]} is not installed") from e
    except subprocess.TimeoutExpired as e:
        raise DeviceError(f"{what}: no answer after {COMMAND_TIMEOUT_S} s") from e
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise DeviceError(f"{what} failed (exit {done.returncode}): {tail}")
    return done.stdout


def _apt_options(root: Path, arch: str) -> list[str]:
    apt = root / "apt"
    return ["-o", f"APT::Architecture={arch}", "-o", f"APT::Architectures={arch}",
            "-o", f"Dir::State={apt}", "-o", f"Dir::State::status={apt / 'status'}",
            "-o", f"Dir::Cache={apt / 'cache'}",
            "-o", f"Dir::Etc::SourceList={apt / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/nonexistent", "-o", f"Dir::Etc::Parts={apt / 'conf.d'}",
            "-o", f"Dir::Etc::Preferences={apt / 'preferences'}",
            "-o", f"Dir::Etc::PreferencesParts={apt / 'preferences.d'}",
            "-o", "Debug::NoLocking=1", "-o", "APT::Install-Recommends=0",
            "-o", "Acquire::Languages=none", "-q"]


def _build_sysroot(root: Path, recipe: ArchRecipe, progress: Progress) -> None:
    apt = root / "apt"
    for d in ("lists/partial", "cache/archives/partial", "conf.d", "preferences.d"):
        (apt / d).mkdir(parents=True, exist_ok=True)
    (apt / "status").write_text("")
    signed = f" signed-by={KEYRING}" if Path(KEYRING).exists() else ""
    (apt / "sources.list").write_text(
        f"deb [arch={recipe.debian_arch}{signed}] {debian_mirror()} {SUITE} main\n")
    opts = _apt_options(root, recipe.debian_arch)
    progress(f"[emulation {recipe.debian_arch}] apt: reading the {SUITE} package index")
    _run(["apt-get", *opts, "update"], "apt-get update (private config)")
    progress(f"[emulation {recipe.debian_arch}] apt: downloading {', '.join(recipe.packages)}"
             " and their dependencies")
    _run(["apt-get", *opts, "install", "-y", "--download-only", *recipe.packages],
         "apt-get install --download-only (private config)")
    debs = sorted((apt / "cache" / "archives").glob("*.deb"))
    sysroot = root / "sysroot"
    progress(f"[emulation {recipe.debian_arch}] unpacking {len(debs)} packages")
    for deb in debs:
        _run(["dpkg-deb", "-x", str(deb), str(sysroot)], f"dpkg-deb -x {deb.name}")
    libdir = sysroot / "usr" / "lib" / recipe.triplet
    # Debian points these at blas/ and lapack/ through update-alternatives in postinst.
    for name, sub in (("libblas.so.3", "blas"), ("liblapack.so.3", "lapack")):
        if (libdir / sub / name).exists() and not (libdir / name).exists():
            (libdir / name).symlink_to(f"{sub}/{name}")
    shutil.rmtree(apt / "cache" / "archives", ignore_errors=True)  # 16 MB of .debs


def _install_wheels(root: Path, recipe: ArchRecipe, progress: Progress) -> None:
    progress(f"[emulation {recipe.debian_arch}] pip: {', '.join(recipe.wheels)}")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--target", str(root / "site"), "--only-binary=:all:", "--python-version", "3.11",
           "--implementation", "cp", "--abi", "cp311"]
    for tag in recipe.platforms:
        cmd += ["--platform", tag]
    if recipe.no_deps:
        cmd.append("--no-deps")
    _run(cmd + list(recipe.wheels), "pip install of the ARM wheels")


def _install_host_wheels(root: Path, recipe: ArchRecipe, progress: Progress) -> None:
    if not recipe.host_wheels:
        return
    progress(f"[emulation {recipe.debian_arch}] pip (host reference): "
             f"{', '.join(recipe.host_wheels)}")
    try:
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              "--only-binary=:all:", "--target", str(root / "host-site"),
              *recipe.host_wheels], "pip install of the host reference wheels")
    except DeviceError as e:
        # e.g. no wheel for this host's Python: fall back to the host's own engine.
        log.warning("%s; the host reference run uses the host's own engine", e)
        shutil.rmtree(root / "host-site", ignore_errors=True)


def cpuinfo_text(core: str, cores: int, arch: str) -> str:
    """An ARM /proc/cpuinfo for `cores` cores of type `core` (e.g. cortex-a72)."""
    parts = {v: k for k, v in ARM_PARTS.items()}
    part = parts.get(core, 0xD08)
    if arch == "armhf":
        features, isa = "half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt", "7"
    else:
        features, isa = "fp asimd evtstrm crc32 cpuid", "8"
        if core == "cortex-a76":
            features = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid " \
                       "asimdrdm lrcpc dcpop asimddp"
    blocks = [f"processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\n"
              f"CPU implementer\t: 0x41\nCPU architecture: {isa}\nCPU variant\t: 0x0\n"
              f"CPU part\t: 0x{part:03x}\nCPU revision\t: 3\n" for i in range(cores)]
    return "\n".join(blocks) + "\n"


def _view(root: Path, profile: Profile, debian_arch: str) -> Path:
    """sysroot seen with this core's /proc/cpuinfo: symlinks to the shared top-level dirs."""
    view = root / "views" / profile.qemu_cpu
    cpuinfo = view / "proc" / "cpuinfo"
    text = cpuinfo_text(profile.core, profile.cores, debian_arch)
    if cpuinfo.exists() and cpuinfo.read_text() == text:
        return view
    (view / "proc").mkdir(parents=True, exist_ok=True)
    for entry in (root / "sysroot").iterdir():
        link = view / entry.name
        if entry.name != "proc" and not link.exists():
            link.symlink_to(os.path.relpath(entry, view))
    tmp = cpuinfo.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(cpuinfo)
    return view


def _stamp(recipe: ArchRecipe) -> str:
    return hashlib.sha256(json.dumps(asdict(recipe), sort_keys=True).encode()).hexdigest()[:16]


def ensure_environment(profile: Profile, *, cache_dir: str | os.PathLike | None = None,
                       rebuild: bool = False,
                       progress: Progress | None = None) -> Environment:
    """Return the emulated userland for `profile`, building it on first use.

    Builds under a lock in a temporary dir and renames it into place, so an interrupted
    build never leaves a half environment behind. Raises DeviceError when qemu, apt or pip
    is missing or fails, with the step and the command's last lines.
    """
    if not profile.qemu_cpu:
        raise DeviceError(f"device {profile.name} has no qemu CPU model: it is not emulated")
    say = progress or (lambda msg: log.info("%s", msg))
    recipe = recipe_for(profile)
    qemu = find_qemu(recipe)
    base = Path(cache_dir) if cache_dir else cache_root()
    base = base / "emulation"
    base.mkdir(parents=True, exist_ok=True)
    root = base / recipe.debian_arch
    stamp = _stamp(recipe)
    built = 0.0
    with open(base / f"{recipe.debian_arch}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp_file = root / "stamp.json"
        current = json.loads(stamp_file.read_text()).get("stamp") if stamp_file.exists() else None
        if rebuild or current != stamp:
            start = time.monotonic()
            say(f"[emulation {recipe.debian_arch}] building the environment in {root} "
                "(first use; cached afterwards)")
            tmp = base / f"{recipe.debian_arch}.building"
            shutil.rmtree(tmp, ignore_errors=True)
            _build_sysroot(tmp, recipe, say)
            _install_wheels(tmp, recipe, say)
            _install_host_wheels(tmp, recipe, say)
            built = time.monotonic() - start
            (tmp / "stamp.json").write_text(json.dumps(
                {"stamp": stamp, "recipe": asdict(recipe), "seconds": round(built, 1)},
                indent=1))
            shutil.rmtree(root, ignore_errors=True)
            tmp.rename(root)
            say(f"[emulation {recipe.debian_arch}] ready in {built:.0f} s")
        view = _view(root, profile, recipe.debian_arch)
    host_site = root / "host-site"
    return Environment(recipe.debian_arch, qemu, profile.qemu_cpu, str(view),
                       str(view / "usr" / "bin" / "python3.11"), str(root / "site"), built,
                       str(host_site) if host_site.is_dir() else "")
