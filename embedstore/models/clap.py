"""LAION-CLAP encoders: published ``.pt`` checkpoints and transformers ``ClapModel`` s.

Both routes end in the same place: a transformers :class:`~transformers.ClapModel`
(HTSAT audio tower, RoBERTa text tower) fed by a log-mel front end that reproduces
laion_clap's torchlibrosa one number for number. A published checkpoint is read safely
(``weights_only=True``), its keys are mapped to transformers' layout (the mapping of
transformers' ``convert_clap_original_pytorch_to_hf.py``, made strict), and the
architecture is read from its own tensors. Nothing is fetched at construction unless a
file is missing and the network answers.

Spaces, from one forward pass per batch:

* audio ``prejoint``: HTSAT's pooled latent (laion_clap's ``audio_branch(...)["embedding"]``),
  768-d for HTSAT-tiny, 1024-d for HTSAT-base;
* text ``prejoint``: RoBERTa's pooler output (dense + tanh on ``<s>``), which is what
  laion_clap feeds its text projection;
* ``joint``: the two-layer projection of each, L2-normalised (512-d).

Fusion checkpoints (``630k-fusion-best.pt``, ``630k-audioset-fusion-best.pt``: HTSAT with
``aff_2d`` feature fusion) load as a :class:`FusionClapEncoder`, whose input is one fused
log-mel item per whole clip (:mod:`embedstore.models.clap_fusion`) rather than a window.
"""

from __future__ import annotations

import dataclasses
import platform
import re
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from embedstore.errors import InputError
from embedstore.models import hub
from embedstore.models.base import PRECISIONS, Encoder
from embedstore.models.clap_fusion import FusionFrontEnd, split_items
from embedstore.models.device import PRECISION_POLICY, autocast, full_precision, resolve_device

HUB_REPO = "lukewys/laion_clap"
TOKENIZER_ID = "roberta-base"
CONTEXT_LENGTH = 77  # laion_clap pads and truncates every text to 77 tokens


@dataclasses.dataclass(frozen=True)
class Published:
    """A checkpoint published by LAION (on the hub repo ``lukewys/laion_clap``)."""

    file: str
    audio_model: str
    sha256: str | None  # None: no trustworthy digest known; the file's own is still recorded
    fusion: bool = False  # an aff_2d feature-fusion model (whole clips, not windows)


PUBLISHED = {
    "clap-music": Published("music_audioset_epoch_15_esc_90.14.pt", "HTSAT-base",
                            "fae3e9c087f2909c28a09dc31c8dfcdacbc42ba44c70e972b58c1bd1caf6dedd"),
    "clap-music-speech": Published("music_speech_audioset_epoch_15_esc_89.98.pt", "HTSAT-base", None),
    "clap-general": Published("630k-audioset-best.pt", "HTSAT-tiny", None),
    "clap-general-fusion": Published("630k-audioset-fusion-best.pt", "HTSAT-tiny", None, fusion=True),
    "clap-630k-fusion": Published("630k-fusion-best.pt", "HTSAT-tiny", None, fusion=True),
}


# --------------------------------------------------------------------------- front end

@dataclasses.dataclass(frozen=True)
class MelConfig:
    """laion_clap's audio front end (the ``audio_cfg`` of its HTSAT model configs)."""

    sample_rate: int = 48000
    n_fft: int = 1024
    hop_length: int = 480
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    clip_samples: int = 480000


def slaney_mel_filters(config: MelConfig) -> np.ndarray:
    """librosa's default mel filterbank (Slaney scale and area norm), shape (n_fft//2+1, n_mels).

    This is the ``melW`` torchlibrosa's ``LogmelFilterBank`` holds.
    """
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(num_frequency_bins=config.n_fft // 2 + 1, num_mel_filters=config.n_mels,
                           min_frequency=config.fmin, max_frequency=config.fmax,
                           sampling_rate=config.sample_rate, norm="slaney", mel_scale="slaney")


def stft_kernels(n_fft: int) -> np.ndarray:
    """torchlibrosa's STFT as convolution kernels: (2 * (n_fft//2+1), 1, n_fft) float32.

    Rows are the real then imaginary parts of the windowed DFT basis, built the way
    torchlibrosa builds them (powers of the root of unity, periodic Hann window), so that
    the spectrogram matches laion_clap's to the last bit rather than to FFT rounding
    (about 1e-4 dB, which deep random-weight towers amplify).
    """
    index = np.arange(n_fft)
    basis = np.power(np.exp(-2j * np.pi / n_fft), np.outer(index, index))[:, : n_fft // 2 + 1]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * index / n_fft)
    kernels = basis * window[:, None]
    return np.concatenate([kernels.real.T, kernels.imag.T])[:, None, :].astype(np.float32)


class LogMel(torch.nn.Module):
    """torchlibrosa's ``Spectrogram`` + ``LogmelFilterBank`` as laion_clap's HTSAT sets them.

    Centred frames with reflect padding, power spectrum (see :func:`stft_kernels`), mel
    projection, then ``10 * log10(max(mel, 1e-10))`` (``ref=1``, no ``top_db``).
    Input (B, samples) -> output (B, 1, frames, n_mels), always computed in float32, with
    autocast off (TF32 or half precision here moves the log-mel by up to about 1 dB).
    ``mel_filters`` (n_fft//2+1, n_mels) replaces the computed filterbank, for models whose
    published code uses the one stored in the checkpoint.
    """

    def __init__(self, config: MelConfig, mel_filters: np.ndarray | None = None):
        super().__init__()
        self.config = config
        filters = slaney_mel_filters(config) if mel_filters is None else mel_filters
        self.register_buffer("kernels", torch.from_numpy(stft_kernels(config.n_fft)), persistent=False)
        self.register_buffer("mel_filters", torch.as_tensor(np.asarray(filters, np.float32)),
                             persistent=False)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        half = self.config.n_fft // 2
        with full_precision(waveforms.device):  # float32 even inside an fp16/bf16 autocast pass
            padded = F.pad(waveforms.float()[:, None], (half, half), mode="reflect")
            parts = F.conv1d(padded, self.kernels, stride=self.config.hop_length)
            n_bins = half + 1
            power = parts[:, :n_bins].square() + parts[:, n_bins:].square()  # (B, freq, frames)
            mel = power.transpose(1, 2) @ self.mel_filters
            return (10.0 * torch.log10(mel.clamp(min=1e-10)))[:, None]


# --------------------------------------------------------------------------- checkpoints

def _numpy_safe_globals():
    """The numpy types published LAION checkpoints pickle next to their tensors (plain
    scalars and dtypes, rebuilt from bytes: no code runs)."""
    core = getattr(np, "_core", None) or np.core
    allowed = [(core.multiarray.scalar, "numpy.core.multiarray.scalar"), core.multiarray.scalar,
               np.dtype]
    allowed += [getattr(np.dtypes, n) for n in ("Float64DType", "Float32DType", "Int64DType")
                if hasattr(np, "dtypes") and hasattr(np.dtypes, n)]
    return allowed


def safe_torch_load(path, extra_globals=()):
    """``torch.load(path, weights_only=True)``, allowing only ``extra_globals`` besides
    tensors and plain containers. Raises InputError (one line) for a missing, unreadable or
    unsafe file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals(list(extra_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for unreadable or unsafe files
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"cannot read checkpoint {path} safely: {first_line}") from None


def tensor_state(state, path, what: str) -> dict[str, torch.Tensor]:
    """``state`` as a state dict without the ``module.`` prefix, or InputError when it is
    not a non-empty dict of tensors (``what`` names the expected layout)."""
    if not isinstance(state, dict) or not state or not all(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path} is not {what}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def read_checkpoint(path) -> dict[str, torch.Tensor]:
    """The state dict of a laion_clap ``.pt`` file, without the ``module.`` prefix.

    Accepts ``{"state_dict": {...}}`` and bare state dicts. Loads with
    ``weights_only=True``: a file that needs arbitrary unpickling is refused.
    """
    loaded = safe_torch_load(path, _numpy_safe_globals())
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    return tensor_state(state, path, "a CLAP checkpoint (no state dict of tensors)")


# Parts of a laion_clap state dict that the embedding path never uses: the training-time
# MLPs, the AudioSet tagging head, cached attention masks and index tables (rebuilt by
# transformers), and torchlibrosa's fixed STFT/mel weights (checked, then recomputed).
_UNUSED = re.compile(r"^(audio_transform|text_transform)\.|^audio_branch\.(tscam_conv|head)\."
                     r"|\.attn_mask$|\.relative_position_index$|^text_branch\.embeddings\.position_ids$"
                     r"|^audio_branch\.(spectrogram_extractor|logmel_extractor)\.")
_RENAMES = [("text_branch", "text_model"), ("audio_branch", "audio_model.audio_encoder"),
            ("attn", "attention.self"), ("self.proj", "output.dense"),
            ("mlp.fc1", "intermediate.dense"), ("mlp.fc2", "output.dense"),
            ("norm1", "layernorm_before"), ("norm2", "layernorm_after"), ("bn0", "batch_norm")]


def convert_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map laion_clap keys to transformers ``ClapModel`` keys (splitting fused ``qkv``)."""
    converted = {}
    for key, value in state.items():
        if _UNUSED.search(key):
            continue
        for old, new in _RENAMES:
            key = key.replace(old, new)
        key = re.sub(r"_projection\.0\.", "_projection.linear1.", key)
        key = re.sub(r"_projection\.2\.", "_projection.linear2.", key)
        if ".qkv." in key:
            for part, chunk in zip(("query", "key", "value"), value.chunk(3, dim=0)):
                converted[key.replace("qkv", part)] = chunk
        else:
            converted[key] = value
    return converted


def count_indexed(state, pattern: str) -> int:
    """1 + the largest number ``pattern``'s group matches in the keys (0 when none)."""
    found = {int(m.group(1)) for k in state for m in [re.match(pattern, k)] if m}
    return max(found) + 1 if found else 0


def fusion_settings(state: dict[str, torch.Tensor]) -> dict:
    """``ClapAudioConfig`` fusion arguments read from an HTSAT's tensors.

    ``enable_fusion=False`` without fusion tensors; for laion_clap's ``aff_2d`` fusion (the
    published fusion checkpoints: ``patch_embed.mel_conv2d`` and an AFF block) the fusion
    type and the AFF reduction ratio. Other fusion types are refused in one line.
    """
    if any(k.startswith(("audio_branch.mel_conv1d.", "audio_branch.fusion_model.")) for k in state):
        raise InputError("1-D feature fusion CLAP checkpoints (daf_1d, aff_1d, iaff_1d) are not "
                         "supported; only aff_2d, the fusion of LAION's published checkpoints")
    if "audio_branch.patch_embed.mel_conv2d.weight" not in state:
        return {"enable_fusion": False}
    local = state.get("audio_branch.patch_embed.fusion_model.local_att.0.weight")
    if local is None or any(".fusion_model.local_att2." in k for k in state):
        raise InputError("this fusion CLAP checkpoint is not aff_2d (daf_2d or iaff_2d?); only "
                         "aff_2d, the fusion of LAION's published checkpoints, is supported")
    return {"enable_fusion": True, "fusion_type": "aff_2d",
            "aff_block_r": local.shape[1] // local.shape[0]}


def infer_audio_config(state: dict[str, torch.Tensor]) -> dict:
    """``ClapAudioConfig`` arguments of an HTSAT read from its ``audio_branch.*`` tensors:
    patch width, stage depths, heads (from the relative-position tables), window,
    spectrogram size (from the cached shifted-window mask, else 256), mel bands, MLP ratio,
    pooled width, AudioSet classes and feature fusion (:func:`fusion_settings`)."""
    n_stages = count_indexed(state, r"audio_branch\.layers\.(\d+)\.")
    depths = [count_indexed(state, rf"audio_branch\.layers\.{i}\.blocks\.(\d+)\.") for i in range(n_stages)]
    heads = [state[f"audio_branch.layers.{i}.blocks.0.attn.relative_position_bias_table"].shape[1]
             for i in range(n_stages)]
    table_rows = state["audio_branch.layers.0.blocks.0.attn.relative_position_bias_table"].shape[0]
    window = (int(round(table_rows ** 0.5)) + 1) // 2
    patch = state["audio_branch.patch_embed.proj.weight"]
    embed_dim = patch.shape[0]
    fc1 = state["audio_branch.layers.0.blocks.0.mlp.fc1.weight"]
    spec_size = 256
    mask_key = "audio_branch.layers.0.blocks.1.attn_mask"
    if mask_key in state:  # (windows, w*w, w*w) over the first stage's (spec/4)^2 patch grid
        spec_size = int(round(state[mask_key].shape[0] ** 0.5)) * window * patch.shape[-1]
    audio = dict(patch_embeds_hidden_size=embed_dim, depths=depths, num_attention_heads=heads,
                 window_size=window, patch_size=patch.shape[-1], patch_stride=[patch.shape[-1]] * 2,
                 patch_embed_input_channels=patch.shape[1],
                 num_mel_bins=state["audio_branch.bn0.weight"].shape[0], spec_size=spec_size,
                 hidden_size=state["audio_branch.norm.weight"].shape[0], mlp_ratio=fc1.shape[0] / embed_dim,
                 **fusion_settings(state))
    if "audio_branch.head.weight" in state:
        audio["num_classes"] = state["audio_branch.head.weight"].shape[0]
    return audio


def infer_config(state: dict[str, torch.Tensor]):
    """A ``ClapConfig`` read from a laion_clap state dict's own tensor shapes.

    The text tower is RoBERTa (laion_clap always builds it from roberta-base's config),
    so only attention heads (64-wide, as in RoBERTa) and the norm epsilon are taken from
    that family rather than from tensors.
    """
    from transformers import ClapConfig

    required = ["audio_branch.patch_embed.proj.weight", "audio_branch.bn0.weight",
                "audio_projection.0.weight", "text_projection.0.weight",
                "text_branch.embeddings.word_embeddings.weight"]
    missing = [k for k in required if k not in state]
    if missing:
        raise InputError(f"not a LAION-CLAP HTSAT/RoBERTa checkpoint: no {missing[0]}")
    audio = infer_audio_config(state)
    audio_projection = state["audio_projection.0.weight"]

    words = state["text_branch.embeddings.word_embeddings.weight"]
    hidden = words.shape[1]
    text = dict(vocab_size=words.shape[0], hidden_size=hidden,
                num_hidden_layers=count_indexed(state, r"text_branch\.encoder\.layer\.(\d+)\."),
                num_attention_heads=hidden // 64,
                intermediate_size=state["text_branch.encoder.layer.0.intermediate.dense.weight"].shape[0],
                max_position_embeddings=state["text_branch.embeddings.position_embeddings.weight"].shape[0],
                type_vocab_size=state["text_branch.embeddings.token_type_embeddings.weight"].shape[0],
                layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    return ClapConfig(audio_config=audio, text_config=text,
                      projection_dim=audio_projection.shape[0])


def _check_front_end(state: dict[str, torch.Tensor], config: MelConfig, source: str) -> None:
    """Refuse a checkpoint whose stored mel filterbank is not the one we compute."""
    stored = state.get("audio_branch.logmel_extractor.melW")
    if stored is None:
        return
    ours = torch.from_numpy(slaney_mel_filters(config)).float()
    if stored.shape != ours.shape or not torch.allclose(stored.float(), ours, rtol=1e-4, atol=1e-7):
        raise InputError(f"{source}: its mel filterbank differs from laion_clap's default "
                         f"({config.n_mels} bands, {config.fmin:g}-{config.fmax:g} Hz at "
                         f"{config.sample_rate} Hz); this front end is not supported")


def load_exactly(module, weights: dict[str, torch.Tensor], what: str, source: str) -> None:
    """Load ``weights`` into ``module``: every tensor present, none extra, every shape right.

    Buffers a model rebuilds itself (index tables, position ids, batch counts) may be
    absent. Raises InputError naming the first missing or unexpected key, or a shape mismatch.
    """
    expected = module.state_dict()
    derived = {k for k in expected if k.endswith(("position_ids", "token_type_ids",
                                                  "relative_position_index", "num_batches_tracked"))}
    missing = sorted(set(expected) - set(weights) - derived)
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        parts = [f"{len(missing)} missing keys (first: {missing[0]})"] if missing else []
        parts += [f"{len(unexpected)} unexpected keys (first: {unexpected[0]})"] if unexpected else []
        raise InputError(f"{source} does not match {what}: " + ", ".join(parts))
    for key, value in weights.items():
        if expected[key].shape != value.shape:
            raise InputError(f"{source}: {key} has shape {tuple(value.shape)}, the architecture "
                             f"read from the checkpoint needs {tuple(expected[key].shape)}")
    module.load_state_dict(weights, strict=False)


def build_clap_model(state: dict[str, torch.Tensor], source: str):
    """A transformers ``ClapModel`` holding exactly the checkpoint's weights.

    Raises InputError naming the first missing or unexpected key, or a shape mismatch.
    """
    from transformers import ClapModel

    config = infer_config(state)
    converted = convert_state_dict(state)
    model = ClapModel(config).eval()
    load_exactly(model, converted, "a LAION-CLAP model", source)
    return model


# --------------------------------------------------------------------------- tokenizer

def load_tokenizer(tokenizer_dir=None, hub_id: str = TOKENIZER_ID, cache_dir=None,
                   files: str = "vocab.json, merges.txt, tokenizer_config.json"):
    """The text tower's tokenizer: from ``tokenizer_dir``, else ``hub_id`` from the Hugging
    Face cache, or downloaded into it when allowed (:func:`embedstore.models.hub.snapshot`).

    Returns the tokenizer and where it came from (recorded in the provenance).

    Raises
    ------
    ModelUnavailable
        When no local copy exists and downloads are off or fail (one line naming ``hub_id``,
        ``files`` and ``--tokenizer DIR``).
    """
    if tokenizer_dir is None:
        hint = (f"fetch the '{hub_id}' tokenizer files ({files}) into a directory and pass it "
                f"with --tokenizer DIR")
        folder, revision, source = hub.snapshot(hub_id, ["*.json", "*.txt", "*.model"],
                                                cache_dir=cache_dir, hint=hint)
        return _tokenizer_from(folder), f"{source}:{hub_id}@{revision}"
    if not Path(tokenizer_dir).is_dir():
        raise InputError(f"tokenizer directory {tokenizer_dir} does not exist")
    return _tokenizer_from(tokenizer_dir), str(tokenizer_dir)


def _tokenizer_from(folder):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        raise InputError(f"cannot load a tokenizer from {folder} "
                         f"({str(err).splitlines()[0]}); pass one with --tokenizer DIR") from None


# --------------------------------------------------------------------------- encoder

def check_tokenizer_fits(tokenizer, vocab_size: int) -> None:
    """Refuse a tokenizer with more tokens than the text tower's vocabulary (a wrong one)."""
    if len(tokenizer) > vocab_size:
        raise InputError(f"the tokenizer has {len(tokenizer)} tokens but the checkpoint's text "
                         f"tower only {vocab_size}: wrong tokenizer")


def project_tensors(prejoint: torch.Tensor, projection) -> dict[str, torch.Tensor]:
    """Both spaces from a tower's pooled output, float32 on its device: ``prejoint`` as it
    is, ``joint`` its projection L2-normalised."""
    joint = F.normalize(projection(prejoint).float(), dim=-1)
    return {"prejoint": prejoint.float(), "joint": joint}


def to_numpy(vectors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Each space's vectors as a numpy array on the CPU."""
    return {space: vec.cpu().numpy() for space, vec in vectors.items()}


def project(prejoint: torch.Tensor, projection) -> dict[str, np.ndarray]:
    """:func:`project_tensors` as float32 numpy."""
    return to_numpy(project_tensors(prejoint, projection))


class ClapEncoder(Encoder):
    """A LAION-CLAP model behind the :class:`~embedstore.models.base.Encoder` contract."""

    int16_roundtrip = True

    def __init__(self, name, model, tokenizer, mel: MelConfig, device="cpu", precision="fp32",
                 checkpoint_info: dict | None = None, tokenizer_source: str = ""):
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        # fp32 weights in every precision: fp16/bf16 come from autocast (embedstore.models.device)
        self.device = resolve_device(device)
        try:
            self.model = model.to(device=self.device, dtype=torch.float32).eval()
        except (RuntimeError, ValueError) as err:
            raise InputError(f"cannot use device {device!r}: {str(err).splitlines()[0]}") from None
        self.name = name
        self.precision = precision
        self.tokenizer = tokenizer
        self.mel = mel
        self.front_end = LogMel(mel).to(self.device)
        self.sample_rate = mel.sample_rate
        self.window_seconds = mel.clip_samples / mel.sample_rate
        audio_width = model.config.audio_config.hidden_size
        text_width = model.config.text_config.hidden_size
        joint = model.config.projection_dim
        self.audio_dims = {"prejoint": audio_width, "joint": joint}
        self.text_dims = {"prejoint": text_width, "joint": joint}
        self.max_tokens = min(CONTEXT_LENGTH, model.config.text_config.max_position_embeddings - 2)
        self._checkpoint = checkpoint_info or {}
        self._tokenizer_source = tokenizer_source
        check_tokenizer_fits(tokenizer, model.config.text_config.vocab_size)

    def forward_audio(self, windows: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, window_samples) float32 on the device -> float32 vectors on the device."""
        with torch.inference_mode(), autocast(self.device, self.precision):
            features = self.front_end(windows)  # float32 whatever the precision (LogMel)
            is_longer = torch.zeros(len(windows), 1, dtype=torch.bool, device=self.device)
            pooled = self.model.audio_model(input_features=features, is_longer=is_longer).pooler_output
            return project_tensors(pooled, self.model.audio_projection)

    def embed_audio(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        windows = self.checked_windows(windows)
        if len(windows) == 0:
            return self.empty(self.audio_dims)
        waveforms = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        return to_numpy(self.forward_audio(waveforms.to(self.device)))

    def embed_text(self, texts: list[str]) -> dict[str, np.ndarray]:
        texts = self.checked_texts(texts)
        if len(texts) == 0:
            return self.empty(self.text_dims)
        tokens = self.tokenizer(texts, padding="max_length", truncation=True,
                                max_length=self.max_tokens, return_tensors="pt")
        with torch.inference_mode(), autocast(self.device, self.precision):
            pooled = self.model.text_model(input_ids=tokens["input_ids"].to(self.device),
                                           attention_mask=tokens["attention_mask"].to(self.device)
                                           ).pooler_output
            return to_numpy(project_tensors(pooled, self.model.text_projection))

    def provenance(self) -> dict:
        import transformers

        audio = self.model.config.audio_config
        text = self.model.config.text_config
        return {
            "model": self.name,
            "family": "laion-clap",
            "architecture": {
                "audio": {"type": "HTSAT", "patch_embeds_hidden_size": audio.patch_embeds_hidden_size,
                          "depths": list(audio.depths), "num_attention_heads": list(audio.num_attention_heads),
                          "window_size": audio.window_size, "spec_size": audio.spec_size,
                          "hidden_size": audio.hidden_size},
                "text": {"type": "RoBERTa", "vocab_size": text.vocab_size, "hidden_size": text.hidden_size,
                         "num_hidden_layers": text.num_hidden_layers,
                         "num_attention_heads": text.num_attention_heads,
                         "intermediate_size": text.intermediate_size,
                         "max_tokens": self.max_tokens},
                "projection_dim": self.model.config.projection_dim,
            },
            "checkpoint": dict(self._checkpoint),
            "tokenizer": self._tokenizer_source,
            "front_end": {**dataclasses.asdict(self.mel), "window": "hann", "center": True,
                          "pad_mode": "reflect", "power": 2.0, "mel_scale": "slaney",
                          "log": "10*log10(max(mel, 1e-10))", "int16_roundtrip": True},
            "precision": self.precision,
            "precision_policy": PRECISION_POLICY,
            "device": str(self.device),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "numpy": np.__version__, "python": platform.python_version()},
        }


class FusionClapEncoder(ClapEncoder):
    """A LAION-CLAP fusion model (HTSAT with ``aff_2d`` feature fusion).

    Its audio input is one item per whole clip, made by :attr:`clip_front_end` (a
    :class:`~embedstore.models.clap_fusion.FusionFrontEnd`: the fused ``(4, 1001, 64)``
    log-mel stack and the ``longer`` flag); :meth:`embed_audio` and :meth:`forward_audio`
    take ``(B, item_size)`` batches of items, :meth:`embed_waveforms` whole clips.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.clip_front_end = FusionFrontEnd(self.mel)

    def forward_audio(self, items: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, item_size) float32 items on the device -> float32 vectors on the device."""
        features, longer = split_items(items, self.clip_front_end.frames, self.mel.n_mels)
        with torch.inference_mode(), autocast(self.device, self.precision):
            pooled = self.model.audio_model(input_features=features.float(), is_longer=longer).pooler_output
            return project_tensors(pooled, self.model.audio_projection)

    def embed_waveforms(self, clips) -> dict[str, np.ndarray]:
        """Embed whole clips: mono float32 arrays at :attr:`sample_rate`, any lengths, each
        already given the int16 round trip (as the pipeline's decoding does)."""
        items = [self.clip_front_end(np.asarray(clip, dtype=np.float32)) for clip in clips]
        return self.embed_audio(np.stack(items) if items else np.zeros((0, self.item_size), np.float32))

    def provenance(self) -> dict:
        record = super().provenance()
        audio = self.model.config.audio_config
        record["architecture"]["audio"]["fusion"] = {"type": "aff_2d", "aff_block_r": audio.aff_block_r}
        record["front_end"] = {**self.clip_front_end.describe(), "sample_rate": self.mel.sample_rate,
                               "int16_roundtrip": True}
        return record


def encoder_class(model) -> type[ClapEncoder]:
    """:class:`FusionClapEncoder` for a ``ClapModel`` with feature fusion, else :class:`ClapEncoder`."""
    return FusionClapEncoder if model.config.audio_config.enable_fusion else ClapEncoder


# --------------------------------------------------------------------------- loaders

FUSION_NAMES = tuple(name for name, entry in PUBLISHED.items() if entry.fusion)
PLAIN_NAMES = tuple(name for name, entry in PUBLISHED.items() if not entry.fusion)


def check_fusion(state: dict[str, torch.Tensor], fusion: bool | None, source: str) -> None:
    """Refuse a fusion checkpoint under a non-fusion name and the other way round
    (``fusion`` None: either)."""
    if fusion is None or fusion_settings(state)["enable_fusion"] == fusion:
        return
    if fusion:
        raise InputError(f"{source} is not a fusion checkpoint; load it as "
                         f"{' or '.join(PLAIN_NAMES)}")
    raise InputError(f"{source} is a fusion checkpoint; load it as {' or '.join(FUSION_NAMES)}")


def load_checkpoint_file(name: str, path, device="cpu", precision="fp32", tokenizer=None,
                         expected_sha256: str | None = None, source: str = "user",
                         hub_record: dict | None = None, fusion: bool | None = None) -> ClapEncoder:
    """A :class:`ClapEncoder` (or :class:`FusionClapEncoder`) from a laion_clap ``.pt`` file.

    A user-given file whose digest differs from ``expected_sha256`` loads with a warning;
    its digest is always recorded in the provenance. ``fusion`` True or False refuses a
    checkpoint of the other kind (:func:`check_fusion`).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    tok, tok_source = load_tokenizer(tokenizer)  # before the slow part, so it fails fast
    digest = hub.sha256_file(path)
    state = read_checkpoint(path)
    check_fusion(state, fusion, str(path))
    mel = MelConfig()
    _check_front_end(state, mel, str(path))
    model = build_clap_model(state, str(path))
    del state
    verified = None if expected_sha256 is None else digest == expected_sha256
    if verified is False:
        warnings.warn(f"{path.name} has SHA-256 {digest}, not the published {expected_sha256} "
                      f"of {name}; using it anyway", stacklevel=2)
    info = {"file": path.name, "sha256": digest, "expected_sha256": expected_sha256,
            "verified": verified, "source": source, **(hub_record or {})}
    return encoder_class(model)(name, model, tok, mel, device, precision, info, tok_source)


def load_published(name: str, checkpoint=None, device="cpu", precision="fp32", cache_dir=None,
                   tokenizer=None) -> ClapEncoder:
    """Registry loader for the published checkpoints in :data:`PUBLISHED`.

    ``checkpoint`` (a user's file) wins; otherwise the file comes from the Hugging Face
    cache, or is downloaded into it when allowed (see :func:`embedstore.models.hub.download`),
    and must have the published digest.
    """
    entry = PUBLISHED[name]
    if checkpoint is not None:
        return load_checkpoint_file(name, checkpoint, device, precision, tokenizer, entry.sha256,
                                    fusion=entry.fusion)
    fetched = hub.download(HUB_REPO, entry.file, entry.sha256, cache_dir=cache_dir)
    return load_checkpoint_file(name, fetched.path, device, precision, tokenizer, entry.sha256,
                                fetched.source, fetched.record(), fusion=entry.fusion)


#: What ``hf:<hub id>`` fetches of a repository: configs, tokenizer files, safetensors weights.
HF_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors"]


def load_hf(spec: str, device="cpu", precision="fp32", cache_dir=None, tokenizer=None) -> ClapEncoder:
    """A transformers ``ClapModel`` from a local directory or a hub id (``hf:<spec>``).

    A hub id is fetched as a snapshot through ``huggingface_hub`` (cache first; see
    :func:`embedstore.models.hub.snapshot`); its commit hash and the SHA-256 of every
    ``.safetensors`` file are recorded. The model is fed laion_clap's own front end (see
    :class:`LogMel`, or for a fusion model :mod:`embedstore.models.clap_fusion`), with its
    rate, FFT, hop, band and clip settings read from ``preprocessor_config.json`` when present.
    """
    from transformers import ClapModel

    folder = Path(spec)
    record = {"source": "local"}
    if not folder.is_dir():
        if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
            raise InputError(f"hf:{spec}: no such directory (a hub id is owner/name)")
        folder, revision, source = hub.snapshot(
            spec, HF_PATTERNS, cache_dir=cache_dir,
            hint="download the repository and use hf:<directory>")
        record = {"source": source, "hub_repo": spec, "hub_revision": revision,
                  "hub_endpoint": hub.hub_endpoint()}
    weights = hub.digests(folder)
    if not weights:
        raise InputError(f"hf:{spec} holds no .safetensors weights (other formats are not loaded)")
    try:
        model = ClapModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
    except (OSError, ValueError) as err:
        raise InputError(f"{spec} does not hold a ClapModel: {str(err).splitlines()[0]}") from None
    model.eval()
    mel = _mel_config_from(folder)
    tok, tok_source = load_tokenizer(tokenizer if tokenizer is not None else folder)
    info = {"file": f"hf:{spec}", "sha256": next(iter(weights.values())) if len(weights) == 1 else None,
            "files_sha256": weights, "expected_sha256": None, "verified": None, **record}
    return encoder_class(model)(f"hf:{spec}", model, tok, mel, device, precision, info, tok_source)


def _mel_config_from(folder: Path) -> MelConfig:
    import json

    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():  # no processor config: laion_clap's defaults
        return MelConfig()
    cfg = json.loads(path.read_text())
    rate = cfg.get("sampling_rate", 48000)
    return MelConfig(sample_rate=rate, n_fft=cfg.get("fft_window_size", 1024),
                     hop_length=cfg.get("hop_length", 480), n_mels=cfg.get("feature_size", 64),
                     fmin=cfg.get("frequency_min", 50.0), fmax=cfg.get("frequency_max", 14000.0),
                     clip_samples=int(cfg.get("max_length_s", 10) * rate))


def save_hf(encoder: ClapEncoder, directory) -> Path:
    """Write an encoder's model and tokenizer as a transformers directory (``hf:<dir>``)."""
    directory = Path(directory)
    encoder.model.save_pretrained(str(directory))  # weights are float32 in every precision
    encoder.tokenizer.save_pretrained(str(directory))
    return directory
