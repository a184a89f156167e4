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
provenance. An encoder with a *clip front end* (LAION-CLAP's fusion models) replaces step 5:
:func:`decode` hands it the whole clip and returns the one item it makes.

Memory is bounded by the work, never by the clip's length or what its header claims:
:func:`decode` reads a file in blocks of :data:`DECODE_BLOCK_FRAMES` frames, downmixes
and resamples each block as it comes (soxr's streaming resampler gives the one-shot
output bit for bit), and keeps the result only for clips of at most
:data:`EAGER_WINDOWS` windows. A longer clip comes back as a :class:`StreamedClip` that
decodes again, block by block, and hands out one window at a time. Sample rates outside
:data:`MIN_SAMPLE_RATE`..:data:`MAX_SAMPLE_RATE` and more than :data:`MAX_CHANNELS`
channels are refused as unusable audio.

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

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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

#: Frames decoded at a time (times the channels, in float32).
DECODE_BLOCK_FRAMES = 1 << 16
#: Clips of at most this many windows are decoded into memory at once; longer ones stream.
EAGER_WINDOWS = 8
#: Sample rates (Hz) and channel counts outside these bounds are refused as unusable audio.
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768_000
MAX_CHANNELS = 64


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
    path = _check_file(path)
    try:
        samples, sample_rate = sf.read(path, dtype="float32", always_2d=True)
    except PermissionError:
        raise AudioError(path, "not readable (permission denied)") from None
    except _DECODE_ERRORS as err:
        raise _not_decodable(path, err) from None
    if samples.shape[0] == 0:
        raise AudioError(path, "no samples (zero-length audio)")
    if not np.isfinite(samples).all():
        raise AudioError(path, "non-finite samples (NaN or infinity)")
    return samples, int(sample_rate)


def _check_file(path: str | Path) -> Path:
    """``path`` as a Path, or AudioError when it is no non-empty regular file."""
    path = Path(path)
    if path.is_dir():
        raise AudioError(path, "is a directory")
    if not path.exists():
        raise AudioError(path, "missing file")
    if not path.is_file():  # a FIFO or device would block or never end
        raise AudioError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    return path


def _not_decodable(path: Path, err: Exception) -> AudioError:
    # libsndfile's own message says what it disliked (format, header); keep its first line
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return AudioError(path, f"not decodable audio ({detail})")


_DECODE_ERRORS = (sf.SoundFileError, RuntimeError, EOFError, ValueError)


def mono_blocks(path: str | Path) -> Iterator[tuple[np.ndarray, int]]:
    """Decode a file block by block: ``(mono float32 block, sample rate)`` pairs.

    Raises
    ------
    AudioError
        As :func:`load_audio`, and for a sample rate outside
        ``MIN_SAMPLE_RATE..MAX_SAMPLE_RATE`` or more than ``MAX_CHANNELS`` channels (a
        header claiming 1 Hz would otherwise turn 4 KB into hours of audio).
    """
    path = _check_file(path)
    try:
        f = sf.SoundFile(path)
    except PermissionError:
        raise AudioError(path, "not readable (permission denied)") from None
    except _DECODE_ERRORS as err:
        raise _not_decodable(path, err) from None
    with f:
        if not MIN_SAMPLE_RATE <= f.samplerate <= MAX_SAMPLE_RATE:
            raise AudioError(path, f"sample rate {f.samplerate} Hz is outside "
                                   f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
        if not 1 <= f.channels <= MAX_CHANNELS:
            raise AudioError(path, f"{f.channels} channels (at most {MAX_CHANNELS})")
        frames = 0
        try:
            for block in f.blocks(DECODE_BLOCK_FRAMES, dtype="float32", always_2d=True):
                if not np.isfinite(block).all():
                    raise AudioError(path, "non-finite samples (NaN or infinity)")
                frames += len(block)
                yield to_mono(block), int(f.samplerate)
        except _DECODE_ERRORS as err:
            raise _not_decodable(path, err) from None
    if frames == 0:
        raise AudioError(path, "no samples (zero-length audio)")


def resampled(blocks: Iterable[tuple[np.ndarray, int]], sr_out: int) -> Iterator[np.ndarray]:
    """Mono blocks resampled to ``sr_out`` as they come (soxr streaming, quality ``"HQ"``).

    The concatenated output equals :func:`resample` of the whole signal bit for bit.
    """
    stream = None
    for block, sr_in in blocks:
        if sr_in == sr_out:
            yield block
            continue
        if stream is None:
            stream = _soxr().ResampleStream(sr_in, sr_out, 1, dtype="float32", quality=RESAMPLER_QUALITY)
        yield stream.resample_chunk(block)
    if stream is not None:
        yield stream.resample_chunk(np.zeros(0, np.float32), last=True)


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


def repeat(samples: np.ndarray, n: int) -> np.ndarray:
    """msclap's padding: whole copies until at least ``n`` samples, then cut to ``n``."""
    length = len(samples)
    if length == 0 or length > n:
        raise ValueError(f"repeat needs 0 < len <= {n}, got {length}")
    return np.tile(samples, -(-n // length))[:n]


#: How a clip shorter than the window is filled, by name (the Encoder's ``padding``).
PADDINGS = {"repeatpad": repeatpad, "repeat": repeat}


def windows(samples: np.ndarray, n: int, mode: str = CLAP_LONG_MODE,
            padding: str = "repeatpad") -> np.ndarray:
    """Cut a mono clip into ``(k, n)`` model inputs.

    Parameters
    ----------
    samples : np.ndarray, shape (n_samples,)
    n : int
        Window length in samples.
    mode : {"first", "center", "mean"}
        For clips longer than ``n``: the first ``n`` samples, the centred ``n`` samples
        (start ``(len - n) // 2``), or every consecutive ``n``-sample window with the last,
        shorter one padded. Clips of at most ``n`` samples give one padded window in
        every mode.
    padding : {"repeatpad", "repeat"}
        How a short clip is filled: laion_clap's :func:`repeatpad` or msclap's :func:`repeat`.

    Returns
    -------
    np.ndarray, shape (k, n)
        ``k = 1`` except in ``mean`` mode, where ``k = ceil(len / n)``.
    """
    if mode not in LONG_MODES:
        raise InputError(f"unknown long-clip mode {mode!r}; use one of {', '.join(LONG_MODES)}")
    pad = PADDINGS[padding]
    length = len(samples)
    if length <= n:
        return pad(samples, n)[None]
    if mode == "first":
        return samples[None, :n].copy()
    if mode == "center":
        start = (length - n) // 2
        return samples[None, start:start + n].copy()
    full = length // n
    out = samples[:full * n].reshape(full, n)
    if length > full * n:
        out = np.vstack([out, pad(samples[full * n:], n)])
    return out


def prepare(path: str | Path, *, sample_rate: int = CLAP_SAMPLE_RATE,
            window_seconds: float = CLAP_WINDOW_SECONDS, long_mode: str = CLAP_LONG_MODE,
            int16: bool = True, padding: str = "repeatpad") -> np.ndarray:
    """Load a file and return all its model-ready windows in memory (see :func:`decode`).

    Returns
    -------
    np.ndarray, shape (k, round(sample_rate * window_seconds)), float32
    """
    clip = decode(path, sample_rate=sample_rate, window_seconds=window_seconds, long_mode=long_mode,
                  int16=int16, padding=padding)
    return clip if isinstance(clip, np.ndarray) else np.stack(list(clip))


def decode(path: str | Path, *, sample_rate: int = CLAP_SAMPLE_RATE,
           window_seconds: float = CLAP_WINDOW_SECONDS, long_mode: str = CLAP_LONG_MODE,
           int16: bool = True, padding: str = "repeatpad", clip_front_end=None):
    """A clip's model-ready windows, in memory when short and streamed when long.

    The file is read once, block by block: every sample is checked (non-finite samples
    fail the clip), and the resampled signal is kept only while it fits in
    :data:`EAGER_WINDOWS` windows.

    With a ``clip_front_end`` (an encoder's :attr:`~embedstore.models.base.Encoder.clip_front_end`)
    the whole clip is kept, whatever its length, and the front end's one item is returned:
    ``long_mode`` and ``padding`` do not apply.

    Returns
    -------
    np.ndarray or StreamedClip
        ``(k, n)`` float32 windows for a clip of at most ``EAGER_WINDOWS`` windows' worth
        of samples; otherwise a :class:`StreamedClip` of the checked file, which decodes
        it again one window at a time. Both give the same windows. With a clip front end,
        ``(1, item_size)`` float32.

    Raises
    ------
    AudioError
        An unusable file (see :func:`mono_blocks`), or one too short to give a sample at
        ``sample_rate``.
    """
    n = window_length(sample_rate, window_seconds)
    if long_mode not in LONG_MODES:
        raise InputError(f"unknown long-clip mode {long_mode!r}; use one of {', '.join(LONG_MODES)}")
    limit = EAGER_WINDOWS * n if clip_front_end is None else float("inf")
    kept: list[np.ndarray] | None = []
    total = frames = 0
    rates = []

    def counted():
        nonlocal frames
        for block, sr in mono_blocks(path):
            frames += len(block)
            rates.append(sr)
            yield block, sr

    for chunk in resampled(counted(), sample_rate):
        total += len(chunk)
        if kept is not None and total <= limit:
            kept.append(chunk)
        else:
            kept = None  # too long to hold: stream it later
    if total == 0:  # e.g. 3 samples at 192 kHz hold less than one sample at 16 kHz
        raise AudioError(path, f"too short: {frames} sample(s) at {rates[0]} Hz give none at "
                               f"{sample_rate} Hz")
    if kept is None:
        return StreamedClip(str(path), total, sample_rate, float(window_seconds), long_mode, bool(int16),
                            padding)
    mono = np.concatenate(kept)
    if int16:
        mono = int16_roundtrip(mono)
    if clip_front_end is not None:
        return np.asarray(clip_front_end(mono), dtype=np.float32)[None]
    return windows(mono, n, long_mode, padding).astype(np.float32, copy=False)


@dataclass(frozen=True)
class StreamedClip:
    """A long clip, checked by :func:`decode`, that hands out its windows one at a time.

    Iterating decodes the file again block by block, so it holds about one window and
    one decoded block whatever the clip's length. ``len()`` is the number of windows.
    The windows equal :func:`windows` of the whole signal.
    """

    path: str
    n_samples: int  # resampled length, as decode counted it
    sample_rate: int
    window_seconds: float
    long_mode: str
    int16: bool
    padding: str = "repeatpad"

    @property
    def window(self) -> int:
        return window_length(self.sample_rate, self.window_seconds)

    def __len__(self) -> int:
        n = self.window
        if self.long_mode != "mean" or self.n_samples <= n:
            return 1
        return -(-self.n_samples // n)

    def __iter__(self) -> Iterator[np.ndarray]:
        chunks = resampled(mono_blocks(self.path), self.sample_rate)
        if self.int16:
            chunks = (int16_roundtrip(c) for c in chunks)
        yield from cut_windows(chunks, self.n_samples, self.window, self.long_mode, self.path,
                               self.padding)


def cut_windows(chunks: Iterable[np.ndarray], total: int, n: int, mode: str, path="",
                padding: str = "repeatpad") -> Iterator[np.ndarray]:
    """The windows :func:`windows` cuts from a signal of ``total`` samples, from its chunks in order.

    Holds at most one window plus one chunk; stops reading once the last needed sample
    has come (``first`` and ``center`` modes).
    """
    if total <= n:
        yield PADDINGS[padding](np.concatenate(list(chunks)), n)
        return
    start = (total - n) // 2 if mode == "center" else 0
    end = total if mode == "mean" else start + n
    pos, held = 0, np.zeros(0, np.float32)
    for chunk in chunks:
        lo, hi = max(start - pos, 0), min(end - pos, len(chunk))
        pos += len(chunk)
        if hi > lo:
            held = np.concatenate([held, chunk[lo:hi]])
        while len(held) >= n:
            yield held[:n].copy()
            held = held[n:]
        if pos >= end:
            break
    if pos < end or (mode == "mean" and pos != total):
        raise AudioError(path, f"changed while being read ({pos} samples, {total} before)")
    if len(held):
        yield PADDINGS[padding](held, n)


def window_length(sample_rate: int, window_seconds: float) -> int:
    """Window length in samples."""
    n = int(round(sample_rate * window_seconds))
    if n <= 0:
        raise InputError(f"window of {window_seconds} s at {sample_rate} Hz holds no samples")
    return n


def frontend_config(sample_rate: int = CLAP_SAMPLE_RATE,
                    window_seconds: float = CLAP_WINDOW_SECONDS,
                    long_mode: str = CLAP_LONG_MODE, int16: bool = True,
                    padding: str = "repeatpad", clip_front_end=None) -> dict:
    """Describe :func:`decode` with these settings, for a store's provenance.

    With a ``clip_front_end``, ``long_mode`` reads ``"whole clip"`` and ``clip_front_end``
    holds the front end's own description (its ``describe()``).
    """
    if long_mode not in LONG_MODES:
        raise InputError(f"unknown long-clip mode {long_mode!r}; "
                         f"use one of {', '.join(LONG_MODES)}")
    if clip_front_end is not None:
        return {**frontend_config(sample_rate, window_seconds, long_mode, int16, padding),
                "long_mode": "whole clip", "clip_front_end": clip_front_end.describe()}
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
        "padding": padding,
        "long_mode": long_mode,
    }


def _soxr():
    """soxr, which comes with the ``extract`` extra."""
    try:
        import soxr
    except ImportError:
        raise EmbedstoreError("resampling needs soxr: pip install 'embedstore[extract]'") from None
    return soxr
