"""Audio input: WAV files (stdlib `wave` + numpy) and raw PCM byte streams -> float32 mono.

Samples come out as float32 in [-1, 1) at the file's rate: integer PCM is divided by its
full scale (8-bit unsigned: (x - 128) / 128; 16/24/32-bit signed: x / 2**(bits-1)), the
convention of soundfile/librosa. Several channels are averaged to mono. `wave` does not
read IEEE-float WAVs (format tag 3, or WAVE_FORMAT_EXTENSIBLE with the float sub-format),
so those are read by walking the RIFF chunks here.
"""
from __future__ import annotations

import io
import os
import struct
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import InputError

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE
PCM_FORMATS = ("s16le", "s32le", "f32le", "u8", "s24le")


@dataclass(frozen=True)
class Audio:
    """Decoded audio: float32 mono `samples` in [-1, 1) and their `rate` in Hz."""

    samples: np.ndarray
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate


def read_wav(source: bytes | str | os.PathLike, *, mono: bool = True) -> Audio:
    """Decode a WAV file (path or bytes): PCM 8/16/24/32-bit or IEEE float 32/64.

    Returns `Audio`; with `mono=False` the samples keep a (frames, channels) shape.
    Raises InputError naming the problem for anything that is not a readable WAV.
    """
    name = "WAV data" if isinstance(source, (bytes, bytearray)) else str(source)
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise InputError(f"{name}: cannot read ({e.strerror or e})") from e
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise InputError(f"{name}: not a WAV file (no RIFF/WAVE header); convert it with "
                         "`sox IN -e signed -b 16 OUT.wav`")
    fmt = _fmt_chunk(data, name)
    if fmt["tag"] == _FLOAT:
        samples, rate, channels = _read_float(data, fmt, name)
    elif fmt["tag"] == _PCM and fmt["extensible"]:  # `wave` before 3.12 refuses these
        samples, rate, channels = _read_extensible_pcm(data, fmt, name)
    else:
        samples, rate, channels = _read_pcm(data, name)
    samples = samples.reshape(-1, channels)
    if mono:
        samples = samples[:, 0] if channels == 1 else samples.mean(axis=1, dtype=np.float32)
    return Audio(np.ascontiguousarray(samples, dtype=np.float32), rate)


def pcm_to_float(data: bytes, fmt: str = "s16le", channels: int = 1) -> np.ndarray:
    """Raw interleaved PCM bytes -> float32 mono samples (a trailing partial frame is an error;
    streams should keep it for the next call, see `PcmReader`)."""
    if fmt not in PCM_FORMATS:
        raise InputError(f"PCM format {fmt!r} is not one of {list(PCM_FORMATS)}")
    width = {"s16le": 2, "s32le": 4, "f32le": 4, "u8": 1, "s24le": 3}[fmt] * channels
    if len(data) % width:
        raise InputError(f"{len(data)} bytes is not a whole number of {width}-byte frames")
    samples = _decode_ints(data, width // channels, fmt == "f32le")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return samples


class PcmReader:
    """Turns a byte stream cut at arbitrary points into whole float32 samples.

    `feed(chunk)` returns the samples complete so far and keeps any trailing partial frame.
    """

    def __init__(self, fmt: str = "s16le", channels: int = 1):
        pcm_to_float(b"", fmt, channels)  # validates fmt
        self.fmt, self.channels = fmt, channels
        self.frame_bytes = {"s16le": 2, "s32le": 4, "f32le": 4, "u8": 1, "s24le": 3}[fmt] * channels
        self._rest = b""

    def feed(self, chunk: bytes) -> np.ndarray:
        data = self._rest + chunk
        cut = len(data) - len(data) % self.frame_bytes
        self._rest = data[cut:]
        return pcm_to_float(data[:cut], self.fmt, self.channels)


def write_wav(path: str | os.PathLike, samples: np.ndarray, rate: int, *, bits: int = 16) -> None:
    """Write float samples in [-1, 1] as PCM `bits`-bit WAV (for tests, tools and examples)."""
    x = np.asarray(samples, dtype=np.float64)
    channels = 1 if x.ndim == 1 else x.shape[1]
    scale = 2 ** (bits - 1)
    if bits == 8:
        ints = np.clip(np.round(x * 128 + 128), 0, 255).astype(np.uint8).tobytes()
    elif bits == 24:
        v = np.clip(np.round(x * scale), -scale, scale - 1).astype("<i4").reshape(-1)
        ints = np.frombuffer(v.tobytes(), np.uint8).reshape(-1, 4)[:, :3].tobytes()
    else:
        dtype = {16: "<i2", 32: "<i4"}[bits]
        ints = np.clip(np.round(x * scale), -scale, scale - 1).astype(dtype).tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(bits // 8)
        w.setframerate(int(rate))
        w.writeframes(ints)


# -- internals ------------------------------------------------------------------------------
def _chunks(data: bytes, name: str):
    pos = 12
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = data[pos + 8:pos + 8 + size]
        yield cid, body
        pos += 8 + size + (size & 1)  # chunks are word-aligned


def _fmt_chunk(data: bytes, name: str) -> dict:
    for cid, body in _chunks(data, name):
        if cid == b"fmt ":
            if len(body) < 16:
                break
            tag, channels, rate, _, align, bits = struct.unpack_from("<HHIIHH", body)
            extensible = tag == _EXTENSIBLE
            if extensible and len(body) >= 40:
                tag = struct.unpack_from("<H", body, 24)[0]  # first 2 bytes of the sub-format GUID
            return {"tag": tag, "channels": channels, "rate": rate, "align": align, "bits": bits,
                    "extensible": extensible}
    raise InputError(f"{name}: WAV file without a valid 'fmt ' chunk")


def _read_float(data: bytes, fmt: dict, name: str):
    if fmt["bits"] not in (32, 64) or fmt["channels"] < 1 or fmt["rate"] < 1:
        raise InputError(f"{name}: float WAV with {fmt['bits']} bits and {fmt['channels']} "
                         "channels is not supported (32- or 64-bit float)")
    body = next((b for cid, b in _chunks(data, name) if cid == b"data"), None)
    if body is None:
        raise InputError(f"{name}: WAV file without a 'data' chunk")
    frame = fmt["bits"] // 8 * fmt["channels"]
    body = body[:len(body) - len(body) % frame]
    samples = np.frombuffer(body, "<f4" if fmt["bits"] == 32 else "<f8").astype(np.float32)
    return samples, fmt["rate"], fmt["channels"]


def _read_extensible_pcm(data: bytes, fmt: dict, name: str):
    width = fmt["bits"] // 8 if fmt["bits"] % 8 == 0 else 0
    if width not in (1, 2, 3, 4) or fmt["align"] != width * fmt["channels"] or fmt["rate"] < 1:
        raise InputError(f"{name}: {fmt['bits']}-bit PCM with {fmt['channels']} channels is "
                         "not supported")
    body = next((b for cid, b in _chunks(data, name) if cid == b"data"), None)
    if body is None:
        raise InputError(f"{name}: WAV file without a 'data' chunk")
    body = body[:len(body) - len(body) % fmt["align"]]
    return _decode_ints(body, width, False), fmt["rate"], fmt["channels"]


def _read_pcm(data: bytes, name: str):
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError, struct.error) as e:
        raise InputError(f"{name}: unreadable WAV ({e}); PCM 8/16/24/32-bit and 32/64-bit "
                         "float are supported") from e
    if width not in (1, 2, 3, 4) or channels < 1 or rate < 1:
        raise InputError(f"{name}: {8 * width}-bit PCM with {channels} channels is not supported")
    frames = frames[:len(frames) - len(frames) % (width * channels)]
    return _decode_ints(frames, width, False), rate, channels


def _decode_ints(data: bytes, width: int, is_float: bool) -> np.ndarray:
    if is_float:
        return np.frombuffer(data, "<f4").astype(np.float32)
    if width == 1:  # 8-bit WAV is unsigned
        return (np.frombuffer(data, np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 3:
        b = np.frombuffer(data, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        return (v / float(1 << 23)).astype(np.float32)
    dtype = {2: "<i2", 4: "<i4"}[width]
    return (np.frombuffer(data, dtype).astype(np.float64) / float(1 << (8 * width - 1))).astype(np.float32)
