"""An install is quiet and the CLI prints only edgepack's own lines unless --verbose
(issue 12 item 30: ~90 lines of setuptools deprecations from the project's metadata; TF,
absl and LiteRT log lines on every conversion and run)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from edgepack.cli.quiet import NATIVE_LINE
from edgepack.runtime import pack_bundle

ROOT = Path(__file__).resolve().parents[2]
EXE = Path(sys.executable).with_name("edgepack")


def test_building_the_package_prints_no_warnings(tmp_path):
    source = tmp_path / "src"
    for folder in ("runtime", "sdk", "converters", "devices"):
        shutil.copytree(ROOT / folder, source / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, source / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "--disable-pip-version-check", str(source),
                           "-w", str(tmp_path / "wheel")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    log = done.stdout + done.stderr
    assert "Warning" not in log and "deprecated" not in log, log[-3000:]
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert sum(n.startswith("edgepack/devices/profiles/") and n.endswith(".toml")
               for n in names) == len(list((ROOT / "devices" / "profiles").glob("*.toml")))
    assert "edgepack/devices/emulation/setup_ci.sh" in names


def test_native_log_lines_are_recognised():
    native = [b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
              b"W1201 11:13:51.504000 10519 torch/onnx/_internal/exporter/_registration.py:107] "
              b"torchvision is not installed",
              b"I0000 00:00:1733050000.123456 4242 cpu_feature_guard.cc:210] This TensorFlow",
              b"WARNING: All log messages before absl::InitializeLog() is called are written "
              b"to STDERR"]
    ours = [b"error: input 'x': expected shape [?, 3, 8, 8], got [2, 2]", b"convert ...",
            b"warning: --threads 4 is more than this machine's 2 cores", b"INFO edgepack.x: y"]
    assert all(NATIVE_LINE.match(line) for line in native)
    assert not any(NATIVE_LINE.match(line) for line in ours)


def test_filter_drops_native_lines_and_keeps_ours(tmp_path):
    script = textwrap.dedent("""
        import os, sys
        from edgepack.cli.quiet import NativeLogFilter
        with NativeLogFilter():
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
            print("error: one line of ours", file=sys.stderr)
            os.write(2, b"W1201 11:13:51.504000 1 f.py:1] noise\\npartial")
        print("after", file=sys.stderr)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0
    assert done.stderr == "error: one line of ours\npartialafter\n"


@pytest.fixture
def tflite_bundle(tmp_path, conv_tflite):
    return pack_bundle(tmp_path / "t.edgepack", conv_tflite, name="t")


def test_run_on_litert_prints_no_native_lines(tmp_path, tflite_bundle):
    import numpy as np

    from edgepack.runtime import read_bundle
    spec = read_bundle(tflite_bundle).manifest.inputs[0]
    np.save(tmp_path / "x.npy", np.zeros([1 if d == -1 else d for d in spec.shape], np.float32))
    quiet = subprocess.run([EXE, "run", tflite_bundle, tmp_path / "x.npy", "--raw"],
                           capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "" and quiet.stdout.count("\n") == 1
    verbose = subprocess.run([EXE, "--verbose", "run", tflite_bundle, tmp_path / "x.npy",
                              "--raw"], capture_output=True, text=True, timeout=120)
    assert verbose.returncode == 0 and "XNNPACK" in verbose.stderr
