"""Each feature step against its named reference on recorded and synthesized speech.

Stated tolerances (also in runtime/ops/audio/features.py): stft power within 1e-4 of each
frame's peak bin; mel filters within 1e-5 relative; log-mel within 0.01 dB; mfcc within
0.01; Kaldi fbank within 0.01 (log energy) of kaldi-native-fbank; pre-emphasis 1e-6.
"""
from __future__ import annotations

import kaldi_native_fbank as knf
import librosa
import numpy as np
import pytest

from edgepack.runtime.errors import PipelineError
from edgepack.runtime.ops import apply_steps, compile_steps, Context
from edgepack.runtime.ops.audio import features as F


def run(step, x):
    return apply_steps([step], x)


def test_preemphasis_vs_librosa(speech16k):
    for x in speech16k:
        ours = run({"op": "preemphasis", "coef": 0.97}, x)
        np.testing.assert_allclose(ours, librosa.effects.preemphasis(x, coef=0.97), atol=1e-6)


@pytest.mark.parametrize("center,pad_mode", [(True, "constant"), (True, "reflect"), (False, "constant")])
def test_frames_vs_librosa(speech16k, center, pad_mode):
    x = speech16k[0]
    ours = run({"op": "frames", "length": 400, "hop": 160, "center": center, "pad_mode": pad_mode}, x)
    xp = np.pad(x, 200, mode=pad_mode) if center else x
    ref = librosa.util.frame(xp, frame_length=400, hop_length=160, axis=0)
    assert np.array_equal(ours, ref)


@pytest.mark.parametrize("power,window,win_length", [(2.0, "hann", 512), (1.0, "hann", 400),
                                                    (2.0, "hamming", 512)])
def test_stft_vs_librosa(speech16k, power, window, win_length):
    for x in speech16k:
        ours = run({"op": "stft", "n_fft": 512, "hop": 160, "win_length": win_length,
                    "window": window, "power": power}, x)
        ref = np.abs(librosa.stft(x, n_fft=512, hop_length=160, win_length=win_length,
                                  window=window)) ** power
        assert ours.shape == ref.shape
        assert (np.abs(ours - ref) / np.maximum(ref.max(axis=0), 1e-12)).max() < 1e-4


@pytest.mark.parametrize("scale", ["slaney", "htk"])
@pytest.mark.parametrize("norm", ["slaney", None])
def test_mel_filterbank_vs_librosa(scale, norm):
    for rate, n_fft, n_mels, fmin, fmax in ((16000, 512, 40, 0.0, None), (22050, 1024, 64, 20.0, 8000.0)):
        ours = F.mel_filterbank(rate, n_fft, n_mels, fmin, fmax, scale == "htk", norm)
        ref = librosa.filters.mel(sr=rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                                  htk=scale == "htk", norm=norm)
        assert np.abs(ours - ref).max() <= 1e-5 * ref.max()


def test_mel_step_applies_the_filterbank(speech16k):
    spec = np.abs(librosa.stft(speech16k[0], n_fft=512, hop_length=160)) ** 2
    ours = run({"op": "mel", "rate": 16000, "n_fft": 512, "n_mels": 40, "scale": "htk"}, spec)
    ref = librosa.feature.melspectrogram(S=spec, sr=16000, n_mels=40, htk=True)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-6 * ref.max())


@pytest.mark.parametrize("top_db", [80.0, None])
def test_log_mel_vs_librosa(speech16k, top_db):
    step = {"op": "log_mel", "rate": 16000, "n_fft": 512, "hop": 160, "n_mels": 40,
            "fmin": 20.0, "fmax": 7600.0, "top_db": top_db}
    for x in speech16k:
        ours = run(step, x)
        ref = librosa.power_to_db(librosa.feature.melspectrogram(
            y=x, sr=16000, n_fft=512, hop_length=160, n_mels=40, fmin=20, fmax=7600), top_db=top_db)
        assert ours.shape == ref.shape and np.abs(ours - ref).max() < 0.01
    assert run({**step, "transpose": True}, x).shape == ref.T.shape


def test_log_ln_offset(speech16k):
    x = speech16k[0]
    ours = run({"op": "log_mel", "rate": 16000, "n_fft": 400, "hop": 160, "n_mels": 64,
                "log": "ln", "offset": 1e-6}, x)
    ref = np.log(librosa.feature.melspectrogram(y=x, sr=16000, n_fft=400, hop_length=160,
                                                n_mels=64) + 1e-6)
    assert np.abs(ours - ref).max() < 1e-3


def test_power_to_db_vs_librosa(speech16k):
    s = np.abs(librosa.stft(speech16k[1], n_fft=512)) ** 2
    ours = run({"op": "power_to_db", "top_db": 60.0, "amin": 1e-8, "ref": 2.0}, s)
    assert np.abs(ours - librosa.power_to_db(s, top_db=60.0, amin=1e-8, ref=2.0)).max() < 1e-3


def test_mfcc_vs_librosa(speech16k):
    steps = [{"op": "log_mel", "rate": 16000, "n_fft": 512, "hop": 160, "n_mels": 40},
             {"op": "mfcc", "n_mfcc": 13}]
    for x in speech16k:
        ours = apply_steps(steps, x)
        ref = librosa.feature.mfcc(y=x, sr=16000, n_mfcc=13, n_fft=512, hop_length=160, n_mels=40)
        assert ours.shape == ref.shape and np.abs(ours - ref).max() < 0.01


def test_normalize_features(speech16k):
    feats = run({"op": "log_mel", "rate": 16000, "n_fft": 512, "hop": 160, "n_mels": 40}, speech16k[0])
    ours = run({"op": "normalize_features", "axis": 1}, feats)
    ref = (feats - feats.mean(1, keepdims=True)) / feats.std(1, keepdims=True)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    mean, std = feats.mean(1), feats.std(1)
    fixed = run({"op": "normalize_features", "axis": 1, "mean": mean.tolist(),
                 "std": std.tolist()}, feats)
    np.testing.assert_allclose(fixed, ref, atol=1e-4)
    fixed_t = run({"op": "normalize_features", "axis": 0, "mean": mean.tolist(),
                   "std": std.tolist()}, feats.T)
    np.testing.assert_allclose(fixed_t, ref.T, atol=1e-4)


def _knf(x, **mel):
    o = knf.FbankOptions()
    o.frame_opts.dither = 0.0
    for k, v in mel.items():
        setattr(o.mel_opts, k, v)
    fb = knf.OnlineFbank(o)
    fb.accept_waveform(16000, (x * 32768).tolist())
    fb.input_finished()
    return np.array([fb.get_frame(i) for i in range(fb.num_frames_ready)])


@pytest.mark.parametrize("num_bins,low", [(23, 20.0), (80, 40.0)])
def test_fbank_vs_kaldi_native_fbank(speech16k, num_bins, low):
    for x in speech16k:
        ours = run({"op": "fbank", "reference": "kaldi", "num_bins": num_bins, "low_freq": low,
                    "scale": 32768}, x)
        ref = _knf(x, num_bins=num_bins, low_freq=low)
        assert ours.shape == ref.shape and np.abs(ours - ref).max() < 0.01


def test_caches_make_per_call_work_small():
    F.mel_filterbank.cache_clear()
    step = compile_steps([{"op": "log_mel", "rate": 16000, "n_fft": 512, "hop": 160}], Context())
    for _ in range(3):
        step(np.zeros(16000, np.float32))
    info = F.mel_filterbank.cache_info()
    assert info.misses == 1 and info.currsize == 1  # built once, at load
    assert F.window("hann", 512) is F.window("hann", 512)


@pytest.mark.parametrize("step,message", [
    ({"op": "stft", "n_fft": 256, "win_length": 400}, "win_length"),
    ({"op": "log_mel", "rate": 16000, "fmin": 9000.0}, "fmin"),
    ({"op": "mel", "rate": 16000, "norm": "l2"}, "norm"),
    ({"op": "fbank", "dither": 1.0}, "dither"),
    ({"op": "log_mel", "rate": 16000, "reference": "torchaudio"}, "reference"),
    ({"op": "mfcc", "n_mfcc": 13, "dct": 3}, "unknown parameter"),
])
def test_bad_parameters_fail_at_load(step, message):
    with pytest.raises(PipelineError, match=message):
        compile_steps([step], Context())


def test_bad_input_is_a_pipeline_error():
    step = compile_steps([{"op": "mel", "rate": 16000, "n_fft": 512}], Context())
    with pytest.raises(PipelineError, match="257 frequency bins"):
        step(np.zeros((100, 3), np.float32))
