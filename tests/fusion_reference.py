"""laion_clap's fusion front end, runnable here, with its random crops pinned.

laion_clap's ``get_audio_features(..., data_truncating="fusion")`` calls torchaudio (the
log-mel) and torchvision (``transforms.Resize``), which have no build for the torch on
these machines. :func:`laion_fusion_patches` puts minimal stand-ins for exactly the calls it
makes into ``laion_clap.training.data``, written from those libraries' code:

* ``torchaudio.transforms.MelSpectrogram``: ``torch.stft`` (periodic Hann, centred, reflect
  padding, one-sided), ``abs().pow(power)``, then ``matmul`` with ``melscale_fbanks`` (HTK
  scale, no norm), computed in float32 torch as torchaudio computes it;
* ``torchaudio.transforms.AmplitudeToDB(top_db=None)``: ``10 * log10(clamp(x, 1e-10))``
  minus ``10 * log10(max(1e-10, ref=1))`` (= 0);
* ``torchvision.transforms.Resize(size)`` on a tensor: ``interpolate(img[None], size,
  mode="bilinear", align_corners=False, antialias=A)[0]``. torchvision before 0.17 read the
  default ``antialias=None`` as False for tensors (LAION's training setup); 0.17 and later
  default to True. ``antialias`` picks which one stands in.

and pins ``np.random.choice`` (laion_clap's and transformers' crop draw) to the middle of
the range it is given, the rule of :func:`embedstore.models.clap_fusion.crop_starts`.
"""

from __future__ import annotations

import contextlib
import math
import sys
import types

import numpy as np
import pytest
import torch


def middle_choice(values, *args, **kwargs):
    """``np.random.choice`` pinned: the middle (lower middle) element."""
    values = np.asarray(values)
    return values[(len(values) - 1) // 2]


def _melscale_fbanks(n_freqs, f_min, f_max, n_mels, sample_rate):
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_min = 2595.0 * math.log10(1.0 + (f_min / 700.0))
    m_max = 2595.0 * math.log10(1.0 + (f_max / 700.0))
    m_pts = torch.linspace(m_min, m_max, n_mels + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down_slopes = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up_slopes = slopes[:, 2:] / f_diff[1:]
    return torch.max(torch.zeros(1), torch.min(down_slopes, up_slopes))


class MelSpectrogram(torch.nn.Module):
    """torchaudio.transforms.MelSpectrogram for the arguments laion_clap's ``get_mel`` passes."""

    def __init__(self, sample_rate, n_fft, win_length, hop_length, center, pad_mode, power, norm,
                 onesided, n_mels, f_min, f_max):
        super().__init__()
        assert norm is None and onesided and center
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.pad_mode, self.power = pad_mode, power
        self.window = torch.hann_window(win_length)
        self.fb = _melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate)

    def forward(self, waveform):
        spec = torch.stft(waveform, n_fft=self.n_fft, hop_length=self.hop_length,
                          win_length=self.win_length, window=self.window, center=True,
                          pad_mode=self.pad_mode, normalized=False, onesided=True,
                          return_complex=True).abs().pow(self.power)
        return torch.matmul(spec.transpose(-1, -2), self.fb).transpose(-1, -2)


class AmplitudeToDB(torch.nn.Module):
    """torchaudio.transforms.AmplitudeToDB(stype="power", top_db=None)."""

    def __init__(self, top_db=None):
        super().__init__()
        assert top_db is None

    def forward(self, x):
        return 10.0 * torch.log10(torch.clamp(x, min=1e-10)) - 10.0 * math.log10(max(1e-10, 1.0))


def _resize_class(antialias: bool):
    class Resize:
        """torchvision.transforms.Resize(size) (bilinear) on a float tensor."""

        def __init__(self, size):
            self.size = list(size)

        def __call__(self, img):
            squeeze = img.ndim < 4
            img = img.unsqueeze(0) if squeeze else img
            out = torch.nn.functional.interpolate(img, size=self.size, mode="bilinear",
                                                  align_corners=False, antialias=antialias)
            return out.squeeze(0) if squeeze else out

    return Resize


@contextlib.contextmanager
def pinned_crops():
    """``np.random.choice`` (the crop draw of laion_clap and of transformers'
    ``ClapFeatureExtractor``) pinned to :func:`middle_choice` while active."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(np.random, "choice", middle_choice)
        yield


@contextlib.contextmanager
def laion_fusion_patches(antialias: bool = False):
    """The stand-ins in ``laion_clap.training.data`` and the crops pinned, while active."""
    data = sys.modules["laion_clap.training.data"]
    torchaudio = types.SimpleNamespace(transforms=types.SimpleNamespace(
        MelSpectrogram=MelSpectrogram, AmplitudeToDB=AmplitudeToDB))
    torchvision = types.SimpleNamespace(transforms=types.SimpleNamespace(Resize=_resize_class(antialias)))
    with pytest.MonkeyPatch.context() as patch, pinned_crops():
        patch.setattr(data, "torchaudio", torchaudio)
        patch.setattr(data, "torchvision", torchvision)
        yield data


def laion_features(reference, clips: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """laion_clap's batched input for ``clips``, as ``get_audio_embedding_from_data`` builds it
    (int16 round trip, ``get_audio_features`` with fusion and repeatpad); call it inside
    :func:`laion_fusion_patches`."""
    from laion_clap.training.data import float32_to_int16, get_audio_features, int16_to_float32

    samples = []
    for clip in clips:
        waveform = torch.from_numpy(int16_to_float32(float32_to_int16(clip))).float()
        samples.append(get_audio_features({}, waveform, 480000, data_truncating="fusion",
                                          data_filling="repeatpad",
                                          audio_cfg=reference.model_cfg["audio_cfg"]))
    return {key: torch.cat([s[key].unsqueeze(0) for s in samples]) for key in samples[0]}


def laion_embeddings(reference, clips: list[np.ndarray]) -> dict[str, np.ndarray]:
    """laion_clap's joint (``get_audio_embedding_from_data``) and pre-joint
    (``audio_branch(...)["embedding"]``) vectors of ``clips``, in one batch; call it inside
    :func:`laion_fusion_patches`."""
    joint = reference.get_audio_embedding_from_data(clips)
    with torch.no_grad():
        prejoint = reference.model.audio_branch(laion_features(reference, clips), device="cpu")["embedding"]
    return {"joint": joint, "prejoint": prejoint.numpy()}
