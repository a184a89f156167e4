"""Audio front end: file -> model-ready windows, exactly as the study fed LAION-CLAP.

The chain, one small function per step:

1. :func:`load_audio` decodes with soundfile (libsndfile: wav, flac, ogg, mp3, aiff) to
   float32 ``(n_samples, n_channels)``;
2. :func:`to_mono` averages the channels;
3. :func:`resample` converts to the model's rate with soxr at quality ``"HQ"`` (librosa's
   default ``soxr_hq``, which the study's ``librosa.load(path, sr=48000)`` used);
4. :func:`int16_roundtrip` quantises to int16 and back, as laion_clap's
   ``int16_to_float32(float32_to_int16(x))`` does before embedding;
5. :func:`windows` cuts the clip into the model's input length: short clips are
   repeat-padded (laion_clap's ``repeatpad``), long ones give one window (``first``,
   ``center``) or all consecutive windows (``mean``; the caller averages their vectors).

:func:`prepare` chains the steps and :func:`frontend_config` describes them for a store's
provenance.

Examples
--------
>>> import numpy as np
>>> repeatpad(np.array([1.0, 2.0, 3.0]), 8)
array([1., 2., 3., 1., 2., 3., 0., 0.])
>>> windows(np.arange(5.0), 2, "mean")
array([[0., 1.],
       [2., 3.],
       [4., 4.]])
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from embedstore.errors import EmbedstoreError, InputError

#: How a clip longer than the window becomes model input.
LONG_MODES = ("first", "center", "mean")

#: LAION-CLAP's input: 10 s at 48 kHz, all windows of a long clip averaged.
CLAP_SAMPLE_RATE = 48000
CLAP_WINDOW_SECONDS = 10.0
CLAP_LONG_MODE = "mean"

RESAMPLER_QUALITY = "HQ"


class AudioError(InputError):
    """An audio file that cannot be used: missing, undecodable, empty or non-finite."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"cannot use audio {path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode an audio file.

    Parameters
    ----------
    path : path
        Any format libsndfile reads (wav, flac, ogg, mp3, aiff, ...).

    Returns
    -------
    samples : np.ndarray, shape (n_samples, n_channels), float32
    sample_rate : int

    Raises
    ------
    AudioError
        With ``reason`` one of: missing file, is a directory, not a regular file, empty
        file, not readable, not decodable audio, no samples, non-finite samples.
    """
    path = Path(path)
    if path.is_dir():
        raise AudioError(path, "is a directory")
    if not path.exists():
        raise AudioError(path, "missing file")
    if not path.is_file():  # a FIFO or device would block or never end
        raise AudioError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        samples, sample_rate = sf.read(path, dtype="float32", always_2d=True)
    except PermissionError:
        raise AudioError(path, "not readable (permission denied)") from None
    except (sf.SoundFileError, RuntimeError, EOFError, ValueError) as err:
        # libsndfile's own message says what it disliked (format, header); keep its first line
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise AudioError(path, f"not decodable audio ({detail})") from None
    if samples.shape[0] == 0:
        raise AudioError(path, "no samples (zero-length audio)")
    if not np.isfinite(samples).all():
        raise AudioError(path, "non-finite samples (NaN or infinity)")
    return samples, int(sample_rate)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Average ``(n_samples, n_channels)`` to ``(n_samples,)``; 1-D input is returned as is."""
    samples = np.asarray(samples, dtype=np.float32)
    return samples if samples.ndim == 1 else samples.mean(axis=1, dtype=np.float32)


def resample(samples: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample along the first axis with soxr (quality ``"HQ"``); float32 out.

    Output length is ``round(len * sr_out / sr_in)`` (soxr's whole-signal convention).
    """
    if sr_in <= 0 or sr_out <= 0:
        raise InputError(f"sample rates must be positive, got {sr_in} -> {sr_out}")
    samples = np.asarray(samples, dtype=np.float32)
    if sr_in == sr_out:
        return samples.copy()
    return _soxr().resample(samples, sr_in, sr_out, quality=RESAMPLER_QUALITY).astype(
        np.float32, copy=False)


def int16_roundtrip(samples: np.ndarray) -> np.ndarray:
    """laion_clap's ``int16_to_float32(float32_to_int16(x))``.

    Clip to [-1, 1], scale by 32767, cast to int16 (truncating toward zero), divide by 32767.
    """
    as_int16 = (np.clip(samples, -1.0, 1.0) * 32767.0).astype(np.int16)
    return (as_int16 / 32767.0).astype(np.float32)


def repeatpad(samples: np.ndarray, n: int) -> np.ndarray:
    """laion_clap's ``repeatpad``: whole copies ``n // len`` times, then zeros up to ``n``.

    Raises ``ValueError`` for empty input or input longer than ``n`` (see :func:`windows`).
    """
    length = len(samples)
    if length == 0 or length > n:
        raise ValueError(f"repeatpad needs 0 < len <= {n}, got {length}")
    repeated = np.tile(samples, n // length)
    return np.pad(repeated, (0, n - len(repeated)))


def windows(samples: np.ndarray, n: int, mode: str = CLAP_LONG_MODE) -> np.ndarray:
    """Cut a mono clip into ``(k, n)`` model inputs.

    Parameters
    ----------
    samples : np.ndarray, shape (n_samples,)
    n : int
        Window length in samples.
    mode : {"first", "center", "mean"}
        For clips longer than ``n``: the first ``n`` samples, the centred ``n`` samples
        (start ``(len - n) // 2``), or every consecutive ``n``-sample window with the last,
        shorter one repeat-padded. Clips of at most ``n`` samples give one repeat-padded
        window in every mode.

    Returns
    -------
    np.ndarray, shape (k, n)
        ``k = 1`` except in ``mean`` mode, where ``k = ceil(len / n)``.
    """
    if mode not in LONG_MODES:
        raise InputError(f"unknown long-clip mode {mode!r}; use one of {', '.join(LONG_MODES)}")
    length = len(samples)
    if length <= n:
        return repeatpad(samples, n)[None]
    if mode == "first":
        return samples[None, :n].copy()
    if mode == "center":
        start = (length - n) // 2
        return samples[None, start:start + n].copy()
    full = length // n
    out = samples[:full * n].reshape(full, n)
    if length > full * n:
        out = np.vstack([out, repeatpad(samples[full * n:], n)])
    return out


def prepare(path: str | Path, *, sample_rate: int = CLAP_SAMPLE_RATE,
            window_seconds: float = CLAP_WINDOW_SECONDS, long_mode: str = CLAP_LONG_MODE,
            int16: bool = True) -> np.ndarray:
    """Load a file and return its model-ready windows.

    Returns
    -------
    np.ndarray, shape (k, round(sample_rate * window_seconds)), float32
    """
    samples, sr = load_audio(path)
    mono = resample(to_mono(samples), sr, sample_rate)
    if len(mono) == 0:  # e.g. 3 samples at 192 kHz hold less than one sample at 16 kHz
        raise AudioError(path, f"too short: {len(samples)} sample(s) at {sr} Hz give none at "
                               f"{sample_rate} Hz")
    if int16:
        mono = int16_roundtrip(mono)
    return windows(mono, window_length(sample_rate, window_seconds), long_mode).astype(
        np.float32, copy=False)


def window_length(sample_rate: int, window_seconds: float) -> int:
    """Window length in samples."""
    n = int(round(sample_rate * window_seconds))
    if n <= 0:
        raise InputError(f"window of {window_seconds} s at {sample_rate} Hz holds no samples")
    return n


def frontend_config(sample_rate: int = CLAP_SAMPLE_RATE,
                    window_seconds: float = CLAP_WINDOW_SECONDS,
                    long_mode: str = CLAP_LONG_MODE, int16: bool = True) -> dict:
    """Describe :func:`prepare` with these settings, for a store's provenance."""
    if long_mode not in LONG_MODES:
        raise InputError(f"unknown long-clip mode {long_mode!r}; "
                         f"use one of {', '.join(LONG_MODES)}")
    return {
        "decoder": "soundfile",
        "decoder_version": f"soundfile {sf.__version__}, libsndfile {sf.__libsndfile_version__}",
        "downmix": "mean of channels",
        "resampler": "soxr",
        "resampler_version": _soxr().__version__,
        "resampler_quality": RESAMPLER_QUALITY,
        "sample_rate": int(sample_rate),
        "int16_roundtrip": bool(int16),
        "window_seconds": float(window_seconds),
        "window_samples": window_length(sample_rate, window_seconds),
        "padding": "repeatpad",
        "long_mode": long_mode,
    }


def _soxr():
    """soxr, which comes with the ``extract`` extra."""
    try:
        import soxr
    except ImportError:
        raise EmbedstoreError("resampling needs soxr: pip install 'embedstore[extract]'") from None
    return soxr
