"""WAV decoding (every sample format) and resampling against scipy.signal.resample_poly."""
from __future__ import annotations

import struct
import wave

import numpy as np
import pytest
import scipy.signal

from edgepack.runtime.errors import InputError
from edgepack.runtime.ops.audio import PcmReader, pcm_to_float, read_wav, resample_poly, write_wav
from edgepack.runtime.ops.audio.wav import Audio


def _signal(n=4000, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(rng.standard_normal((n, channels)) * 0.3, -1, 0.999).squeeze()


@pytest.mark.parametrize("bits,tol", [(8, 1 / 128), (16, 1 / 32768), (24, 2 ** -23), (32, 2 ** -31)])
def test_pcm_widths_round_trip(tmp_path, bits, tol):
    x = _signal()
    write_wav(tmp_path / "a.wav", x, 8000, bits=bits)
    a = read_wav(tmp_path / "a.wav")
    assert a.rate == 8000 and a.samples.dtype == np.float32 and a.samples.shape == (4000,)
    assert np.abs(a.samples - x).max() <= tol * 0.51 + 1e-7


def test_known_16bit_values(tmp_path):
    with wave.open(str(tmp_path / "k.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(np.array([0, 16384, -32768, 32767], "<i2").tobytes())
    assert read_wav(tmp_path / "k.wav").samples.tolist() == [0.0, 0.5, -1.0, 32767 / 32768]


def test_stereo_is_averaged_to_mono(tmp_path):
    x = _signal(channels=2)
    write_wav(tmp_path / "s.wav", x, 16000)
    a = read_wav(tmp_path / "s.wav")
    ref = np.round(x * 32768).clip(-32768, 32767) / 32768
    np.testing.assert_allclose(a.samples, ref.mean(axis=1), atol=1e-7)
    assert read_wav(tmp_path / "s.wav", mono=False).samples.shape == (4000, 2)


def _float_wav(x: np.ndarray, rate: int, channels: int, extensible: bool, bits: int = 32) -> bytes:
    data = x.astype("<f4" if bits == 32 else "<f8").tobytes()
    if extensible:
        guid = struct.pack("<H", 3) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * channels * bits // 8,
                          channels * bits // 8, bits, 22, bits, 0) + guid
    else:
        fmt = struct.pack("<HHIIHH", 3, channels, rate, rate * channels * bits // 8,
                          channels * bits // 8, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt
    chunks += b"LIST" + struct.pack("<I", 3) + b"abc\x00"  # odd-sized chunk: padded
    chunks += b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


@pytest.mark.parametrize("extensible", [False, True])
@pytest.mark.parametrize("bits", [32, 64])
def test_ieee_float_wav(extensible, bits):
    x = _signal(channels=2).astype(np.float32)
    a = read_wav(_float_wav(x.reshape(-1), 22050, 2, extensible, bits))
    assert a.rate == 22050
    np.testing.assert_allclose(a.samples, x.mean(axis=1), atol=1e-7)


def test_extensible_24bit_pcm(tmp_path):
    x = _signal(channels=2)
    write_wav(tmp_path / "p.wav", x, 48000, bits=24)
    raw = (tmp_path / "p.wav").read_bytes()
    body = raw[raw.index(b"data") + 8:]
    guid = struct.pack("<H", 1) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 2, 48000, 48000 * 6, 6, 24, 22, 24, 3) + guid
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(body)) + body
    a = read_wav(b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks)
    np.testing.assert_allclose(a.samples, x.mean(axis=1), atol=2 ** -23)


def test_alsa_voice_prompt_decodes():
    a = read_wav("/usr/share/sounds/alsa/Front_Center.wav")
    assert a.rate == 48000 and 1.0 < a.seconds < 2.0 and 0.1 < np.abs(a.samples).max() <= 1.0


def test_bad_files_are_input_errors(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"not a wav at all")
    with pytest.raises(InputError, match="not a WAV file"):
        read_wav(tmp_path / "x.wav")
    with pytest.raises(InputError, match="cannot read"):
        read_wav(tmp_path / "missing.wav")
    truncated = _float_wav(np.zeros(4, np.float32), 8000, 1, False)[:20]
    with pytest.raises(InputError, match="fmt"):
        read_wav(truncated)


def test_raw_pcm_and_reader_across_chunk_boundaries():
    ints = np.array([0, 1000, -1000, 32767, -32768, 5], "<i2")
    assert np.array_equal(pcm_to_float(ints.tobytes()), ints / 32768.0)
    reader = PcmReader("s16le")
    data = ints.tobytes()
    pieces = [reader.feed(data[:3]), reader.feed(data[3:8]), reader.feed(data[8:])]
    assert np.array_equal(np.concatenate(pieces), ints.astype(np.float32) / 32768)
    with pytest.raises(InputError, match="whole number"):
        pcm_to_float(b"\x00\x01\x02")
    with pytest.raises(InputError, match="not one of"):
        pcm_to_float(b"", "s12le")


@pytest.mark.parametrize("up,down", [(1, 3), (160, 441), (2, 3), (3, 2), (441, 160), (1, 1)])
def test_resample_matches_scipy_on_speech(speech_files, up, down):
    x = read_wav(speech_files[0]).samples[:20000]
    ours = resample_poly(x, up, down)
    ref = scipy.signal.resample_poly(x.astype(np.float64), up, down)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() < 1e-6  # stated tolerance (float32 output)


def test_audio_dataclass():
    assert Audio(np.zeros(8000, np.float32), 16000).seconds == 0.5


@pytest.mark.parametrize("rate_in,rate_out", [(48000, 16000), (44100, 16000), (8000, 16000)])
def test_stream_resampler_equals_offline(speech_files, rate_in, rate_out):
    from math import gcd
    from edgepack.runtime.ops.audio.resample import StreamResampler
    x = read_wav(speech_files[0]).samples[:30000]
    rng = np.random.default_rng(0)
    r, out, pos = StreamResampler(rate_in, rate_out), [], 0
    while pos < len(x):
        n = int(rng.integers(1, 2000))
        out.append(r.push(x[pos:pos + n]))
        pos += n
    out.append(r.flush())
    g = gcd(rate_in, rate_out)
    ref = scipy.signal.resample_poly(x.astype(np.float64), rate_out // g, rate_in // g)
    y = np.concatenate(out)
    assert y.shape == ref.shape and np.abs(y - ref).max() < 1e-6
