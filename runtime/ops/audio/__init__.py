"""Audio steps (DESIGN §7): WAV/PCM decoding, resampling, spectral features, events.

Importing this package registers its steps (`stft`, `mel`, `log_mel`, `mfcc`, `fbank`,
`resample`, `smooth`, the `events`/`segments` decoders, ...); the functions are also usable
directly, e.g. `read_wav`, `resample`, `mel_filterbank`.
"""
from . import events, features, resample  # noqa: F401  (registers the steps)
from .resample import resample as resample_audio, resample_poly
from .wav import Audio, PcmReader, pcm_to_float, read_wav, write_wav

__all__ = ["Audio", "PcmReader", "pcm_to_float", "read_wav", "write_wav", "resample_audio",
           "resample_poly"]
