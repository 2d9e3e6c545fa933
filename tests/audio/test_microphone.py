"""`edgepack listen --mic` and `arecord ... | edgepack listen -` for real, without audio
hardware: an ALSA capture PCM of the `file` plugin (slave `null`) whose input is read from
a file. For --mic (sounddevice -> PortAudio -> ALSA) the file is a FIFO that the test
writes at 4x real time: the `null` slave has no clock, so a plain file would be captured as
fast as PortAudio can read it (and wrap around), while the FIFO paces the capture the way a
microphone does. HOME points at a tmp dir holding the .asoundrc, so the PCM is the default
device there and nothing outside tmp_path is touched."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import toys
from edgepack.runtime.ops.audio import write_wav

EDGEPACK = str(Path(sys.executable).with_name("edgepack"))
PIPELINE = Path(__file__).with_name("test_listen_cli.py")
ASOUNDRC = """pcm.!default {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{infile}"
    format "raw"
}}
pcm.edgepack_test_mic {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{infile}"
    format "raw"
}}
"""


def _sounddevice_problem() -> str | None:
    try:
        import sounddevice
    except ImportError:
        return "needs the microphone extra: pip install sounddevice (edgepack[microphone])"
    except OSError as e:
        return f"sounddevice cannot load PortAudio ({e}): apt-get install libportaudio2"
    del sounddevice
    return None


@pytest.fixture(scope="module")
def vad(tmp_path_factory):
    from test_listen_cli import VAD_PIPELINE
    d = tmp_path_factory.mktemp("mic")
    (d / "vad.onnx").write_bytes(toys.energy_vad(512, 64))
    (d / "vad.toml").write_text(VAD_PIPELINE)
    r = subprocess.run([EDGEPACK, "pack", "vad.onnx", "--pipeline", "vad.toml", "-o",
                        "vad.edgepack"], cwd=d, capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    rng = np.random.default_rng(5)
    quiet = lambda s: rng.normal(0, 0.003, int(16000 * s))  # noqa: E731
    loud = lambda s: rng.normal(0, 0.3, int(16000 * s))  # noqa: E731
    clip = np.concatenate([quiet(0.6), loud(0.4), quiet(0.9), loud(0.7), quiet(0.8)])
    pcm = (np.clip(clip, -1, 1 - 2 ** -15) * 32768).astype("<i2")
    write_wav(d / "clip.wav", pcm.astype(np.float32) / 32768, 16000)
    (d / "clip.raw").write_bytes(pcm.tobytes())
    r = subprocess.run([EDGEPACK, "listen", "vad.edgepack", "clip.wav"], cwd=d,
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    expected = [json.loads(line) for line in r.stdout.decode().splitlines()]
    assert [(round(s["start_s"], 1), round(s["end_s"], 1)) for s in expected] == \
        [(0.6, 1.0), (1.9, 2.6)]
    return d, pcm, expected


def _home(tmp_path: Path, infile: Path) -> dict:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".asoundrc").write_text(ASOUNDRC.format(infile=infile))
    return {**os.environ, "HOME": str(home)}


@pytest.mark.skipif(shutil.which("arecord") is None, reason="needs alsa-utils (arecord)")
def test_arecord_pipe_into_listen(vad, tmp_path):
    """The README's `arecord -f S16_LE -r 16000 -c 1 | edgepack listen kws.edgepack -`,
    arecord capturing from the ALSA file-plugin device."""
    d, pcm, expected = vad
    env = _home(tmp_path, d / "clip.raw")
    arecord = subprocess.Popen(["arecord", "-D", "edgepack_test_mic", "-q", "-f", "S16_LE",
                                "-r", "16000", "-c", "1", "-t", "raw", f"--samples={len(pcm)}"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    listen = subprocess.run([EDGEPACK, "listen", "vad.edgepack", "-"], stdin=arecord.stdout,
                            capture_output=True, timeout=120, cwd=d, env=env)
    arecord.stdout.close()
    assert arecord.wait(timeout=30) == 0, arecord.stderr.read().decode()
    assert listen.returncode == 0, listen.stderr.decode()
    assert [json.loads(line) for line in listen.stdout.decode().splitlines()] == expected


@pytest.mark.skipif(_sounddevice_problem() is not None, reason=str(_sounddevice_problem()))
def test_listen_mic_through_portaudio(vad, tmp_path):
    """`edgepack listen vad.edgepack --mic`: sounddevice opens the default ALSA device, fed
    from a FIFO at 4x real time; the segments equal those of the same audio as a WAV."""
    d, pcm, expected = vad
    fifo = tmp_path / "mic.fifo"
    os.mkfifo(fifo)
    # held open read-write: ALSA's open of the FIFO (also while PortAudio lists devices)
    # returns at once, and the capture blocks, like a microphone, until audio is written
    fd = os.open(fifo, os.O_RDWR)
    try:
        env = _home(tmp_path, fifo)
        listen = subprocess.Popen([EDGEPACK, "listen", "vad.edgepack", "--mic", "--seconds",
                                   "4"], cwd=d, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        block = 512
        silence = np.zeros(block, "<i2").tobytes()
        deadline = time.monotonic() + 90
        i = 0
        # the clip, then silence until listen stops (bounded): a write blocks while the
        # pipe is full, so nothing runs ahead of the capture by more than the pipe holds
        while listen.poll() is None and time.monotonic() < deadline:
            os.write(fd, pcm[i:i + block].tobytes() if i < len(pcm) else silence)
            i += block
            time.sleep(block / 16000 / 4)
        out, err = listen.communicate(timeout=30)
    finally:
        os.close(fd)
    assert listen.returncode == 0, err.decode()
    segments = [json.loads(line) for line in out.decode().splitlines()]
    assert segments == expected


def test_mic_without_sounddevice_names_the_extra(vad):
    d, _, _ = vad
    code = ("import sys; sys.modules['sounddevice'] = None; "
            "from edgepack.cli.main import main; "
            "sys.argv = ['edgepack', 'listen', 'vad.edgepack', '--mic', '--seconds', '0.1']; "
            "sys.exit(main())")
    r = subprocess.run([sys.executable, "-c", code], cwd=d, capture_output=True, timeout=120)
    assert r.returncode == 7, r.stderr.decode()
    assert "listening to a microphone needs the sounddevice package; pip install " \
        "'edgepack[microphone]'" in r.stderr.decode()
