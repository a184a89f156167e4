"""The front end of LAION-CLAP's fusion models, made deterministic.

laion_clap's fusion checkpoints (``enable_fusion=True``, fusion type ``aff_2d``) do not take
a 10-s window: each whole clip becomes a ``(4, 1001, 64)`` stack of log-mel spectrograms
(``get_audio_features(..., data_truncating="fusion")`` in ``laion_clap/training/data.py``),
which HTSAT's patch embedding fuses (``mel_conv2d`` and an attentional feature fusion block).

The log-mel is torchaudio's ``MelSpectrogram`` + ``AmplitudeToDB`` as laion_clap sets them,
not the torchlibrosa one of the non-fusion models: ``torch.stft`` (periodic Hann window of
1024, hop 480, centred, reflect padding), power 2, an HTK-scale mel filterbank without
normalisation (64 bands, 50-14,000 Hz), then ``10 * log10(max(mel, 1e-10))``.

A clip of at most 480,000 samples (10 s at 48 kHz) is repeat-padded to that length and its
mel (1001 frames) is stacked four times; its ``longer`` flag is False and the model uses the
first channel only. A longer clip's mel is computed whole; when it has more than 1001 frames,
channel 0 is the whole mel resized to 1001 frames (bilinear, ``align_corners=False``, no
antialiasing: torchvision's tensor ``Resize`` before torchvision 0.17, which LAION trained
with and transformers' ``ClapFeatureExtractor`` follows) and channels 1-3 are three
1001-frame crops, one from each third of the possible start frames, and ``longer`` is True.
laion_clap draws each crop's start at random in its third; here it is the **middle** of the
third (:func:`crop_starts`), so the same clip always gives the same vectors.

An item (:meth:`FusionFrontEnd.__call__`) is the stack flattened, followed by the ``longer``
flag as 0.0 or 1.0: ``4 * 1001 * 64 + 1`` float32 numbers (:func:`split_items` undoes it).
Memory per clip: its samples and its mel (the STFT runs in blocks of frames, padding only
the blocks at the ends).
"""

from __future__ import annotations

import numpy as np

#: The rule that picks the three local crops, as the provenance names it.
CROP_RULE = "middle"
CROP_RULE_TEXT = ("start frame = the middle (lower middle for an even count) of each third of "
                  "np.array_split(range(frames - 1001 + 1), 3); laion_clap draws it at random")
#: STFT frames computed at a time (bounds the complex spectrum of a long clip).
STFT_BLOCK_FRAMES = 8192
CHANNELS = 4


def htk_mel_filters(mel) -> np.ndarray:
    """torchaudio's ``melscale_fbanks`` as laion_clap's fusion front end uses it: HTK scale,
    no normalisation, shape ``(n_fft // 2 + 1, n_mels)``, float32 (computed in float64, as
    transformers' ``ClapFeatureExtractor`` computes it for ``truncation="fusion"``)."""
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(num_frequency_bins=mel.n_fft // 2 + 1, num_mel_filters=mel.n_mels,
                           min_frequency=mel.fmin, max_frequency=mel.fmax,
                           sampling_rate=mel.sample_rate, norm=None,
                           mel_scale="htk").astype(np.float32)


def crop_starts(frames: int, chunk: int) -> list[int]:
    """Start frames of the three local crops of a ``frames``-long mel: the middle of each
    third of the possible starts (laion_clap's ranges, its empty-third fallback to 0)."""
    ranges = np.array_split(np.arange(frames - chunk + 1), 3)
    return [int(r[(len(r) - 1) // 2]) if len(r) else 0 for r in ranges]


def repeat_padded(samples: np.ndarray, n: int) -> np.ndarray:
    """laion_clap's ``repeatpad``: whole copies ``n // len`` times, then zeros up to ``n``."""
    repeated = np.tile(samples, n // len(samples))
    return np.pad(repeated, (0, n - len(repeated)))


def reflect_slice(wave, start: int, stop: int):
    """``wave[start:stop]`` of the signal reflect-padded at both ends (as ``torch.stft``'s
    ``center=True`` pads it), without padding the whole signal: ``start`` may be negative and
    ``stop`` past the end, by less than the signal's length."""
    import torch

    n = len(wave)
    left = wave[1:1 - start].flip(0) if start < 0 else wave[:0]
    right = wave[2 * n - 1 - stop:n - 1].flip(0) if stop > n else wave[:0]
    return torch.cat([left, wave[max(start, 0):min(stop, n)], right])


class FusionFrontEnd:
    """Whole mono clip at 48 kHz -> one fused item (see the module docstring).

    Picklable (plain numbers and one filterbank array), so decoding workers run it.

    Parameters
    ----------
    mel : embedstore.models.clap.MelConfig
        Rate, FFT size, hop, bands, band edges and the clip length (``clip_samples``).
    """

    def __init__(self, mel):
        self.mel = mel
        self.filters = htk_mel_filters(mel)
        self.frames = mel.clip_samples // mel.hop_length + 1  # laion_clap's chunk_frames
        self.item_size = CHANNELS * self.frames * mel.n_mels + 1

    def __call__(self, mono: np.ndarray) -> np.ndarray:
        stack, longer = self.features(mono)
        return np.concatenate([stack.reshape(-1), [np.float32(longer)]]).astype(np.float32, copy=False)

    def features(self, mono: np.ndarray) -> tuple[np.ndarray, bool]:
        """The ``(4, frames, n_mels)`` float32 stack of one clip and its ``longer`` flag."""
        mono = np.asarray(mono, dtype=np.float32)
        if len(mono) == 0:
            raise ValueError("the fusion front end needs at least one sample")
        n = self.mel.clip_samples
        if len(mono) <= n:
            mel = self.log_mel(repeat_padded(mono, n))
            return np.stack([mel] * CHANNELS), False
        mel = self.log_mel(mono)
        if len(mel) == self.frames:  # laion_clap: longer than 10 s by less than one hop
            return np.stack([mel] * CHANNELS), False
        crops = [mel[s:s + self.frames] for s in crop_starts(len(mel), self.frames)]
        return np.stack([self.shrink(mel), *crops]), True

    def log_mel(self, samples: np.ndarray) -> np.ndarray:
        """torchaudio's ``MelSpectrogram`` + ``AmplitudeToDB`` (see the module docstring),
        ``(frames, n_mels)`` float32, computed ``STFT_BLOCK_FRAMES`` frames at a time."""
        import torch

        cfg = self.mel
        half = cfg.n_fft // 2
        wave = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
        window = torch.hann_window(cfg.n_fft)
        filters = torch.from_numpy(self.filters)
        frames = len(samples) // cfg.hop_length + 1
        out = np.empty((frames, cfg.n_mels), np.float32)
        with torch.inference_mode():
            for first in range(0, frames, STFT_BLOCK_FRAMES):
                last = min(first + STFT_BLOCK_FRAMES, frames)
                segment = reflect_slice(wave, first * cfg.hop_length - half, (last - 1) * cfg.hop_length + half)
                spectrum = torch.stft(segment, cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.n_fft,
                                      window=window, center=False, onesided=True, return_complex=True)
                power = spectrum.abs().pow(2.0)  # (freq, frames), as torchaudio's spectrogram
                mel = power.transpose(0, 1) @ filters
                out[first:last] = (10.0 * torch.log10(mel.clamp(min=1e-10))).numpy()
        return out

    def shrink(self, mel: np.ndarray) -> np.ndarray:
        """The whole mel resized to ``frames`` rows: bilinear, ``align_corners=False``, no
        antialiasing (torchvision's tensor ``Resize`` as LAION trained with it)."""
        import torch

        with torch.inference_mode():
            resized = torch.nn.functional.interpolate(
                torch.from_numpy(mel)[None, None], size=(self.frames, self.mel.n_mels),
                mode="bilinear", align_corners=False, antialias=False)
        return resized[0, 0].numpy()

    def describe(self) -> dict:
        """The settings, for a store's provenance."""
        cfg = self.mel
        return {
            "type": "laion-clap fusion (aff_2d)",
            "log_mel": {"stft": "torch.stft", "n_fft": cfg.n_fft, "hop_length": cfg.hop_length,
                        "window": "hann (periodic)", "center": True, "pad_mode": "reflect",
                        "power": 2.0, "n_mels": cfg.n_mels, "fmin": cfg.fmin, "fmax": cfg.fmax,
                        "mel_scale": "htk", "mel_norm": None, "log": "10*log10(max(mel, 1e-10))"},
            "clip_samples": cfg.clip_samples,
            "frames": self.frames,
            "short_clips": "repeatpad to clip_samples, mel stacked 4 times, longer = false",
            "longer": f"more than {self.frames} mel frames (clip of at least "
                      f"{cfg.clip_samples + cfg.hop_length} samples)",
            "global_channel": f"whole mel resized to {self.frames} frames: bilinear, "
                              "align_corners=False, antialias=False",
            "crops": CROP_RULE,
            "crop_rule": CROP_RULE_TEXT,
            "item": f"stack (4, {self.frames}, {cfg.n_mels}) flattened, then the longer flag (0.0 or 1.0)",
            "item_size": self.item_size,
        }


def split_items(items, frames: int, n_mels: int):
    """``(B, item_size)`` items (a torch tensor) -> ``(B, 4, frames, n_mels)`` features and the
    ``(B, 1)`` boolean ``longer`` flags."""
    features = items[:, :-1].reshape(len(items), CHANNELS, frames, n_mels)
    return features, items[:, -1:] > 0.5
