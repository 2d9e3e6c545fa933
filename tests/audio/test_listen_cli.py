"""The README's audio commands: pack a VAD with a pipeline file, run it on a WAV, stream
raw PCM into `edgepack listen` through a pipe (as arecord would), inspect, errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import toys
from edgepack.runtime.ops.audio import write_wav

EDGEPACK = str(Path(sys.executable).with_name("edgepack"))

VAD_PIPELINE = """\
[task]
kind = "vad"

[stream]
rate = 16000
window = 512
context = 64
state = [{input = "state", output = "stateN", init = 0.0}]

[examples]
sr = {value = 16000}

[[decode]]
op = "segments"
scores = "output"
on = 0.5
off = 0.35
min_silence_s = 0.1
min_event_s = 0.1
"""


def edgepack(*args, stdin=None, cwd=None):
    return subprocess.run([EDGEPACK, *args], input=stdin, capture_output=True, timeout=120,
                          cwd=cwd)


@pytest.fixture(scope="module")
def vad_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("vad")
    (d / "vad.onnx").write_bytes(toys.energy_vad(512, 64))
    (d / "vad.toml").write_text(VAD_PIPELINE)
    rng = np.random.default_rng(0)
    quiet = lambda s: rng.normal(0, 0.003, int(16000 * s))  # noqa: E731
    loud = lambda s: rng.normal(0, 0.3, int(16000 * s))  # noqa: E731
    clip = np.concatenate([quiet(1.0), loud(0.5), quiet(1.0), loud(0.8), quiet(0.5)])
    write_wav(d / "clip.wav", clip, 16000)
    write_wav(d / "clip48k.wav", np.repeat(clip, 3), 48000)
    return d


def test_readme_audio_commands(vad_dir):
    r = edgepack("pack", "vad.onnx", "--pipeline", "vad.toml", "-o", "vad.edgepack", cwd=vad_dir)
    assert r.returncode == 0, r.stderr.decode()
    r = edgepack("run", "vad.edgepack", "clip.wav", "--json", cwd=vad_dir)
    assert r.returncode == 0, r.stderr.decode()
    [result] = json.loads(r.stdout)
    segs = result["segments"]
    assert [(round(s["start_s"], 1), round(s["end_s"], 1)) for s in segs] == [(1.0, 1.5), (2.5, 3.3)]
    # 48 kHz WAV: resampled to the bundle's 16 kHz first, same segments within a window
    r = edgepack("run", "vad.edgepack", "clip48k.wav", "--json", cwd=vad_dir)
    segs48 = json.loads(r.stdout)[0]["segments"]
    assert all(abs(a["start_s"] - b["start_s"]) <= 0.032 for a, b in zip(segs, segs48))
    # arecord -f S16_LE -r 16000 -c 1 | edgepack listen vad.edgepack -   (PCM piped in)
    from edgepack.runtime.ops.audio import read_wav
    pcm = (read_wav(vad_dir / "clip.wav").samples * 32768).astype("<i2").tobytes()
    r = edgepack("listen", "vad.edgepack", "-", stdin=pcm, cwd=vad_dir)
    assert r.returncode == 0, r.stderr.decode()
    lines = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert lines == segs
    # 48 kHz PCM on stdin: resampled as it arrives; same segments as the 48 kHz WAV
    pcm48 = (read_wav(vad_dir / "clip48k.wav").samples * 32768).astype("<i2").tobytes()
    r = edgepack("listen", "vad.edgepack", "-", "--rate", "48000", stdin=pcm48, cwd=vad_dir)
    assert r.returncode == 0, r.stderr.decode()
    assert [json.loads(line) for line in r.stdout.decode().splitlines()] == segs48
    r = edgepack("run", "vad.edgepack", "clip.wav", cwd=vad_dir)
    assert r.stdout.decode().startswith("clip.wav: segments: 0.99-1.50s speech 1.000  2.50-")
    r = edgepack("inspect", "vad.edgepack", cwd=vad_dir)
    out = r.stdout.decode()
    assert "stream: 16000 Hz, window 512, context 64; state state <- stateN (init 0.0)" in out
    r = edgepack("verify", "vad.edgepack", cwd=vad_dir)
    assert r.returncode == 0, r.stderr.decode()


def test_listen_errors(vad_dir):
    edgepack("pack", "vad.onnx", "--pipeline", "vad.toml", "-o", "vad.edgepack", cwd=vad_dir)
    r = edgepack("listen", "vad.edgepack", cwd=vad_dir)
    assert r.returncode == 2 and b"give SOURCE" in r.stderr
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):
        r = edgepack("listen", "vad.edgepack", "--mic", "--seconds", "0.1", cwd=vad_dir)
        assert r.returncode == 7
        assert b"pip install 'edgepack[microphone]'" in r.stderr
    (vad_dir / "bad.wav").write_bytes(b"RIFFxxxxWAVEjunk")
    r = edgepack("run", "vad.edgepack", "bad.wav", cwd=vad_dir)
    assert r.returncode == 2 and b"fmt" in r.stderr


def test_set_stream_on_an_existing_bundle(vad_dir, tmp_path):
    from edgepack.runtime import pack_bundle
    plain = pack_bundle(tmp_path / "plain.edgepack", toys.energy_vad(512, 64), name="plain")
    r = edgepack("set-stream", str(plain), "--pipeline", str(vad_dir / "vad.toml"))
    assert r.returncode == 0, r.stderr.decode()
    r = edgepack("run", str(plain), str(vad_dir / "clip.wav"), "--json")
    assert r.returncode == 0, r.stderr.decode()
    assert len(json.loads(r.stdout)[0]["segments"]) == 2
    (tmp_path / "none.toml").write_text("[task]\nkind = 'vad'\n")
    r = edgepack("set-stream", str(plain), "--pipeline", str(tmp_path / "none.toml"))
    assert r.returncode == 2 and b"no [stream] table" in r.stderr
