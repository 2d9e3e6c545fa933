from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))  # toys.py

ALSA = sorted(Path("/usr/share/sounds/alsa").glob("*.wav"))


@pytest.fixture(scope="session")
def speech_files(tmp_path_factory) -> list[Path]:
    """Real recorded speech (alsa-utils' voice prompts) + espeak-ng speech."""
    files = [p for p in ALSA if p.name in ("Front_Center.wav", "Rear_Left.wav")]
    if shutil.which("espeak-ng"):
        out = tmp_path_factory.mktemp("speech") / "espeak.wav"
        subprocess.run(["espeak-ng", "-w", str(out), "the quick brown fox jumps over the lazy dog"],
                       check=True, timeout=60, capture_output=True)
        files.append(out)
    if len(files) < 2:
        pytest.skip("needs alsa-utils voice prompts or espeak-ng (.ci/system_packages.sh)")
    return files


@pytest.fixture(scope="session")
def speech16k(speech_files) -> list[np.ndarray]:
    from edgepack.runtime.ops.audio import read_wav, resample_audio
    clips = []
    for f in speech_files:
        a = read_wav(f)
        clips.append(resample_audio(a.samples, a.rate, 16000))
    return clips
