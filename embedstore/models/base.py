"""The contract every audio-text encoder meets; the extraction pipeline talks only to it.

An encoder is HEAR-like: it declares its input rate and window length, and turns a batch
of fixed-length windows (or a list of texts) into one vector per input in each of its
embedding *spaces*. An encoder whose input is not a window but the whole clip (LAION-CLAP's
fusion models) names a *clip front end* instead: the pipeline hands it each whole decoded
clip and batches the fixed-size item it returns (see :attr:`Encoder.clip_front_end`).
Every model has at least the two spaces the study compares:

``"prejoint"``
    the tower's own pooled output, before the projection head (raw, not normalised);
``"joint"``
    the projection into the shared audio-text space, L2-normalised.

Both come from ONE forward pass, so the two spaces always describe the same input.

Registry
--------
``embedstore.models.MODELS`` is a plain dict ``{name: loader}``. A loader is a callable
``loader(checkpoint, device, precision, cache_dir) -> Encoder`` where ``checkpoint`` is a
user-given local path or ``None`` (fetch or find the published file), ``device`` a torch
device string that :func:`embedstore.models.device.resolve_device` has checked,
``precision`` one of :data:`PRECISIONS` and ``cache_dir`` a directory for downloaded
files or ``None`` for the standard Hugging Face cache (see :mod:`embedstore.models.hub`).
A new model family registers itself by adding one line to that dict.
"""

from __future__ import annotations

import abc

import numpy as np

from embedstore.errors import InputError

#: Numeric precisions a loader accepts.
PRECISIONS = ("fp32", "fp16", "bf16")


class Encoder(abc.ABC):
    """An audio-text model with its audio and text towers, ready for inference.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"clap-music"``.
    sample_rate : int
        Rate (Hz) of the audio windows :meth:`embed_audio` expects.
    window_seconds : float
        Length of one audio window in seconds; windows hold
        ``round(sample_rate * window_seconds)`` samples.
    int16_roundtrip : bool
        Whether the front end quantises audio to int16 and back before embedding, as
        the model's published code does.
    padding : str
        How the pipeline fills a clip shorter than one window, as the model's published
        code does: ``"repeatpad"`` (laion_clap: whole copies, then zeros; the default) or
        ``"repeat"`` (msclap: copies until full, cut).
    audio_dims, text_dims : dict[str, int]
        Width of each space, e.g. ``{"prejoint": 1024, "joint": 512}``.
    device : str or torch.device
        Where the towers run; :meth:`forward_audio` takes and returns tensors there.
    precision : str
        One of :data:`PRECISIONS`, applied by the policy of :mod:`embedstore.models.device`.
    clip_front_end : callable or None
        None (the default): the pipeline cuts every clip into windows of
        :attr:`window_samples` and :meth:`embed_audio` takes windows. Otherwise a picklable
        callable ``clip_front_end(mono) -> (item_size,) float32`` with an ``item_size``
        attribute and a ``describe() -> dict`` for the provenance: the pipeline decodes each
        clip whole (mono, at :attr:`sample_rate`, after the int16 round trip when
        :attr:`int16_roundtrip`), hands it to this front end in its decoding workers, and
        feeds the one item it returns; :meth:`embed_audio` and :meth:`forward_audio` then
        take ``(B, item_size)`` batches of such items.
    """

    device = "cpu"
    precision = "fp32"

    name: str
    sample_rate: int
    window_seconds: float
    int16_roundtrip: bool
    padding: str = "repeatpad"
    audio_dims: dict[str, int]
    text_dims: dict[str, int]
    clip_front_end = None

    @property
    def window_samples(self) -> int:
        """Number of samples in one audio window."""
        return int(round(self.sample_rate * self.window_seconds))

    @property
    def item_size(self) -> int:
        """Width of one audio input: :attr:`window_samples`, or the clip front end's item."""
        return self.window_samples if self.clip_front_end is None else self.clip_front_end.item_size

    def checked_windows(self, windows) -> np.ndarray:
        """``windows`` as a float32 ``(B, item_size)`` array; InputError on another shape."""
        windows = np.asarray(windows)
        if windows.ndim != 2 or windows.shape[1] != self.item_size:
            what = (f"windows at {self.sample_rate} Hz" if self.clip_front_end is None
                    else "items of its clip front end")
            raise InputError(f"{self.name} embeds (batch, {self.item_size}) {what}, "
                             f"got shape {windows.shape}")
        return np.ascontiguousarray(windows, dtype=np.float32)

    @staticmethod
    def checked_texts(texts) -> list[str]:
        """``texts`` as a list; InputError unless it is a sequence of strings."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InputError("embed_text takes a list of strings")
        return list(texts)

    @staticmethod
    def empty(dims: dict[str, int]) -> dict[str, np.ndarray]:
        """The vectors of an empty batch: ``(0, width)`` per space."""
        return {space: np.zeros((0, width), np.float32) for space, width in dims.items()}

    @abc.abstractmethod
    def embed_audio(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        """Embed a batch of audio windows.

        Parameters
        ----------
        windows : np.ndarray, shape (B, item_size), float32
            Mono audio at :attr:`sample_rate`, already cut or padded to one window; for an
            encoder with a :attr:`clip_front_end`, items that front end made.

        Returns
        -------
        dict[str, np.ndarray]
            ``{"prejoint": (B, audio_dims["prejoint"]), "joint": (B, audio_dims["joint"])}``,
            float32, from one forward pass; ``joint`` rows have unit L2 norm.
        """

    def forward_audio(self, windows):
        """Embed a batch that is already a float32 tensor on :attr:`device`.

        The pipeline's path: the result stays on the device, as float32 tensors, and the
        call need not wait for the device to finish (no host synchronisation). This default
        goes through :meth:`embed_audio`; encoders on accelerators override it.

        Returns
        -------
        dict[str, torch.Tensor]
            The same spaces and shapes as :meth:`embed_audio`.
        """
        import torch

        out = self.embed_audio(windows.detach().cpu().numpy())
        return {space: torch.from_numpy(np.ascontiguousarray(vec)) for space, vec in out.items()}

    @abc.abstractmethod
    def embed_text(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Embed a list of texts.

        Returns
        -------
        dict[str, np.ndarray]
            ``{"prejoint": (len(texts), text_dims["prejoint"]), "joint": (len(texts), ...)}``,
            float32, from one forward pass; ``joint`` rows have unit L2 norm.
        """

    @abc.abstractmethod
    def provenance(self) -> dict:
        """JSON-able description of exactly what computed the vectors.

        Holds at least the registry name, the architecture config, the checkpoint file
        name and SHA-256, the precision, the device and the library versions.
        """
