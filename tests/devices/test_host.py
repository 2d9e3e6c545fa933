"""Host detection from /proc text and package metadata, and the closest-profile choice."""
import os
import platform
import subprocess
import sys

import numpy as np

from edgepack.devices import HostInfo, closest_profile, detect_host
from edgepack.devices.host import parse_cpuinfo

RPI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

processor\t: 1
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""


def _host(**kw):
    base = dict(model=None, arch="aarch64", core=None, cores=4, ram_mb=3900, features=(),
                raw_flags=(), python="3.11.2", glibc="2.36", engines={})
    base.update(kw)
    return HostInfo(**base)


def test_parse_rpi4_cpuinfo():
    core, flags, processors = parse_cpuinfo(RPI4_CPUINFO)
    assert core == "cortex-a72"
    assert flags == ("fp", "asimd", "evtstrm", "crc32", "cpuid")
    assert processors == 2


def test_parse_non_arm_cpuinfo_has_no_core():
    core, flags, _ = parse_cpuinfo("processor\t: 0\nflags\t\t: fpu sse4_2 avx2 fma\n")
    assert core is None and "avx2" in flags


def test_board_model_wins():
    p, why = closest_profile(_host(model="Raspberry Pi 4 Model B Rev 1.4"))
    assert p.name == "rpi4b" and "Raspberry Pi 4" in why
    assert closest_profile(_host(model="Raspberry Pi 5 Model B Rev 1.0"))[0].name == "rpi5"
    assert closest_profile(_host(model="Raspberry Pi Zero 2 W Rev 1.0"))[0].name == "rpi-zero2w"


def test_pi_on_32_bit_os_is_armv7l():
    p, why = closest_profile(_host(model="Raspberry Pi 3 Model B Rev 1.2", arch="armv7l"))
    assert p.name == "generic-armv7l" and "32-bit" in why


def test_unknown_boards_fall_back_by_arch():
    assert closest_profile(_host(core="cortex-a72"))[0].name == "generic-aarch64"
    assert closest_profile(_host(arch="x86_64"))[0].name == "x86_64-workstation"


def test_detect_this_host():
    host = detect_host()
    assert host.arch == platform.machine()
    assert host.cores == os.cpu_count()
    assert host.ram_mb and host.ram_mb > 256
    assert host.engines["numpy"] == np.__version__
    assert host.python == platform.python_version()


def test_importing_devices_stays_light():
    code = ("import sys, edgepack.devices, edgepack.devices.emulation; "
            "heavy = [m for m in ('tensorflow', 'torch', 'onnx', 'onnxruntime', 'click', "
            "'ai_edge_litert') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
