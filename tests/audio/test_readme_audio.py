"""Runs the README.md audio section as written: its pipeline files, its commands (the
`arecord ... |` source replaced by PCM fed through a pipe) and its Python snippet."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import toys
from edgepack.runtime.ops.audio import write_wav

ROOT = Path(__file__).resolve().parents[2]
EDGEPACK = str(Path(sys.executable).with_name("edgepack"))


def section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Audio: voice activity")
    end = text.index("\n## ", start + 3)
    return text[start:end]


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section(), flags=re.S)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("readme-audio")
    (d / "vad.onnx").write_bytes(toys.energy_vad(512, 64))
    (d / "kws.onnx").write_bytes(toys.loudness_keyword())
    (d / "kws-labels.txt").write_text("_silence_\nbeep\n")
    for block in blocks("toml"):
        name = block.splitlines()[0].lstrip("# ").strip()
        (d / name).write_text(block)
    rng = np.random.default_rng(0)
    quiet = lambda s: rng.normal(0, 0.003, int(16000 * s))  # noqa: E731
    clip = np.concatenate([quiet(1.0), rng.normal(0, 0.3, 8000), quiet(1.0)])
    write_wav(d / "clip.wav", clip, 16000)
    return d


def _beeps() -> tuple[bytes, list[float]]:
    rng = np.random.default_rng(1)
    parts, centres, t = [], [], 0.0
    for gap in (1.5, 2.0, 1.7):
        parts.append(rng.normal(0, 0.003, int(gap * 16000)))
        t += gap
        tone = 0.4 * np.sin(2 * np.pi * 1000 * np.arange(4800) / 16000)
        parts.append(tone)
        centres.append(t + 0.15)
        t += 0.3
    parts.append(rng.normal(0, 0.003, 16000))
    pcm = (np.concatenate(parts) * 32767).astype("<i2").tobytes()
    return pcm, centres


def _run(line: str, cwd: Path) -> subprocess.CompletedProcess:
    command = line.split("#")[0].strip()
    stdin = None
    if "|" in command:
        source, command = (part.strip() for part in command.split("|", 1))
        assert source == "arecord -f S16_LE -r 16000 -c 1"
        stdin, _ = _beeps()
    args = shlex.split(command)
    assert args[0] == "edgepack"
    r = subprocess.run([EDGEPACK, *args[1:]], cwd=cwd, input=stdin, capture_output=True,
                       timeout=120)
    assert r.returncode == 0, (line, r.stderr.decode())
    return r


def test_readme_audio_section_runs(workdir):
    bash = blocks("bash")
    assert len(bash) == 2 and len(blocks("toml")) == 2
    outputs = [_run(line, workdir) for block in bash for line in block.splitlines() if line.strip()]
    segments = json.loads(outputs[1].stdout)[0]["segments"]
    assert len(segments) == 1 and abs(segments[0]["start_s"] - 1.0) <= 0.032
    assert "stream: 16000 Hz, window 512, context 64" in outputs[2].stdout.decode()
    events = [json.loads(line) for line in outputs[4].stdout.decode().splitlines()]
    _, centres = _beeps()
    assert [e["label"] for e in events] == ["beep"] * 3
    assert all(abs(e["t_s"] - c) <= 0.5 for e, c in zip(events, centres)), (events, centres)

    [python] = blocks("python")
    r = subprocess.run([sys.executable, "-c", python], cwd=workdir, capture_output=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    printed = r.stdout.decode().splitlines()
    assert printed[-1] == "[]" and [eval(p) for p in printed[:-1]] == segments  # noqa: S307
