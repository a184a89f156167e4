"""Microsoft CLAP (the ``msclap`` package): its published 2022 and 2023 weights.

``CLAP_weights_2022.pth`` / ``CLAP_weights_2023.pth`` (hub repo ``microsoft/msclap``) hold
``{"model": state_dict}`` of msclap's ``CLAP`` module, built from the package's configs:

* 2022: CNN14 audio tower (2048-d embedding) + ``bert-base-uncased`` text tower (the
  ``[CLS]`` hidden state), 5 s at 44.1 kHz, texts padded to 100 tokens;
* 2023: HTSAT-tiny audio tower (768-d latent) + ``gpt2`` text tower (the hidden state of the
  ``<|endoftext|>`` appended to each text), 7 s at 44.1 kHz, texts padded to 77 tokens.

Both project each tower with msclap's ``Projection`` (linear, GELU, linear, residual,
LayerNorm) to 1024-d. Spaces, from one forward pass per batch: ``prejoint`` is the tower's
embedding before that projection, ``joint`` the projection, L2-normalised.

The front end is msclap's own: torchlibrosa's log-mel (1024-point Hann STFT, hop 320, 64
Slaney bands, 50 Hz to 14 kHz). The 2022 CNN14 builds its filterbank for 44.1 kHz; msclap's
HTSAT ignores the yml and takes its front end from its ``config.py``, a filterbank for
32 kHz, applied to the 44.1 kHz audio. Because msclap loads the checkpoint over its
modules, the filterbank stored in the checkpoint is the one it uses; so do we.

The audio towers and the text towers are rebuilt from the checkpoint's tensors (CNN14 here,
HTSAT as transformers' ``ClapAudioModel`` through :mod:`embedstore.models.clap`'s mapping,
BERT and GPT-2 from transformers), and every tensor must match: msclap loads with
``strict=False`` on top of the hub's pretrained text model, which cannot be reproduced
offline, so a checkpoint missing text weights is refused rather than silently different.
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
from torch import nn

from embedstore.errors import InputError
from embedstore.models import clap, hub
from embedstore.models.base import PRECISIONS, Encoder
from embedstore.models.device import autocast, resolve_device

HUB_REPO = "microsoft/msclap"


@dataclasses.dataclass(frozen=True)
class MsclapVersion:
    """One published msclap model and its config (``msclap/configs/config_<year>.yml``)."""

    file: str
    audio: str              # "Cnn14" or "HTSAT"
    text_hub_id: str        # the tokenizer (and pretrained text model) msclap loads
    duration: int           # seconds per window
    text_len: int           # tokens every text is padded to
    mel: clap.MelConfig     # the front end; its sample_rate is the filterbank's rate
    sha256: str | None = None  # no published digest known: the file's own is recorded

    @property
    def tokenizer_files(self) -> str:
        if self.text_hub_id.startswith("gpt"):
            return "vocab.json, merges.txt, tokenizer_config.json"
        return "vocab.txt, tokenizer_config.json"


SAMPLE_RATE = 44100  # both configs' sampling_rate: msclap resamples every file to it

VERSIONS = {
    "msclap-2022": MsclapVersion(
        "CLAP_weights_2022.pth", "Cnn14", "bert-base-uncased", 5, 100,
        clap.MelConfig(sample_rate=44100, n_fft=1024, hop_length=320, n_mels=64, fmin=50.0,
                       fmax=14000.0, clip_samples=5 * SAMPLE_RATE)),
    "msclap-2023": MsclapVersion(
        "CLAP_weights_2023.pth", "HTSAT", "gpt2", 7, 77,
        clap.MelConfig(sample_rate=32000, n_fft=1024, hop_length=320, n_mels=64, fmin=50.0,
                       fmax=14000.0, clip_samples=7 * SAMPLE_RATE)),
}

AUDIO_BASE = "audio_encoder.base."
TEXT_BASE = "caption_encoder.base."


# --------------------------------------------------------------------------- modules

class Projection(nn.Module):
    """msclap's projection head: ``LayerNorm(l1(x) + l2(gelu(l1(x))))`` (dropout is off in eval)."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.linear1 = nn.Linear(d_in, d_out, bias=False)
        self.linear2 = nn.Linear(d_out, d_out, bias=False)
        self.layer_norm = nn.LayerNorm(d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        embed1 = self.linear1(x)
        return self.layer_norm(embed1 + self.linear2(F.gelu(embed1)))


class ConvBlock(nn.Module):
    """PANNs' two 3x3 convolutions with batch norm and ReLU, then average pooling."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, pool: int) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=pool)


class Cnn14(nn.Module):
    """msclap's CNN14 after the log-mel: ``(B, 1, frames, mels)`` -> ``(B, out_emb)``.

    Batch norm over mel bands, six conv blocks (2x2 pooling but the last), mean over
    frequency, max + mean over time, ``relu(fc1(.))``: msclap's ``embedding``.
    """

    def __init__(self, widths: list[int], n_mels: int, out_emb: int):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(n_mels)
        channels = [1] + list(widths)
        for i in range(len(widths)):
            self.add_module(f"conv_block{i + 1}", ConvBlock(channels[i], channels[i + 1]))
        self.n_blocks = len(widths)
        self.fc1 = nn.Linear(widths[-1], out_emb)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        x = self.bn0(logmel.transpose(1, 3)).transpose(1, 3)
        for i in range(self.n_blocks):
            x = getattr(self, f"conv_block{i + 1}")(x, 1 if i == self.n_blocks - 1 else 2)
        x = x.mean(dim=3)
        x = x.max(dim=2).values + x.mean(dim=2)
        return F.relu(self.fc1(x))


# --------------------------------------------------------------------------- checkpoint

def read_checkpoint(path) -> dict[str, torch.Tensor]:
    """The ``model`` state dict of an msclap ``.pth`` (``weights_only=True``)."""
    loaded = clap.safe_torch_load(path)
    state = loaded.get("model") if isinstance(loaded, dict) else None
    return clap.tensor_state(state, path, "an msclap checkpoint (no 'model' state dict of tensors)")


# Tensors the embedding path never reads: the temperature, the AudioSet heads, torchlibrosa's
# STFT/mel weights (the filterbank is taken separately), cached masks and index tables, and
# the text models' position/causal-mask buffers and BERT's unused pooler.
_UNUSED = re.compile(r"^logit_scale$|^audio_encoder\.base\.(fc_audioset|htsat\.(tscam_conv|head))\."
                     r"|\.(spectrogram_extractor|logmel_extractor)\.|\.attn_mask$"
                     r"|\.relative_position_index$|^caption_encoder\.base\.(embeddings\.position_ids"
                     r"|embeddings\.token_type_ids|pooler\..+|h\.\d+\.attn\.(bias|masked_bias))$")


def _subset(state: dict, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and not _UNUSED.search(k)}


def build_audio_tower(version: MsclapVersion, state: dict, source: str) -> nn.Module:
    """CNN14 or HTSAT holding exactly the checkpoint's audio weights."""
    if version.audio == "Cnn14":
        weights = _subset(state, AUDIO_BASE)
        n_blocks = clap.count_indexed(weights, r"conv_block(\d+)\.") - 1  # numbered from 1
        if n_blocks < 1 or "fc1.weight" not in weights or "bn0.weight" not in weights:
            raise InputError(f"{source} is not an msclap CNN14 checkpoint (no {AUDIO_BASE}conv_block1)")
        widths = [weights[f"conv_block{i + 1}.conv1.weight"].shape[0] for i in range(n_blocks)]
        tower = Cnn14(widths, weights["bn0.weight"].shape[0], weights["fc1.weight"].shape[0])
        clap.load_exactly(tower, weights, "msclap's CNN14 audio tower", source)
        return tower.eval()
    from transformers import ClapAudioConfig, ClapAudioModel

    laion = {"audio_branch." + k[len(AUDIO_BASE + "htsat."):]: v for k, v in state.items()
             if k.startswith(AUDIO_BASE + "htsat.")}
    if "audio_branch.patch_embed.proj.weight" not in laion:
        raise InputError(f"{source} is not an msclap HTSAT checkpoint (no {AUDIO_BASE}htsat.patch_embed)")
    tower = ClapAudioModel(ClapAudioConfig(**clap.infer_audio_config(laion)))
    weights = {k.removeprefix("audio_model."): v for k, v in clap.convert_state_dict(laion).items()}
    clap.load_exactly(tower, weights, "msclap's HTSAT audio tower", source)
    return tower.eval()


def build_text_tower(version: MsclapVersion, state: dict, source: str) -> nn.Module:
    """BERT (2022) or GPT-2 (2023) with the checkpoint's shapes and weights.

    Heads are width/64 and norm epsilons those of bert-base-uncased (1e-12) and gpt2 (1e-5),
    the models msclap builds its towers from; everything else is read from the tensors.
    """
    weights = _subset(state, TEXT_BASE)
    if version.text_hub_id.startswith("gpt"):
        from transformers import GPT2Config, GPT2Model

        if "wte.weight" not in weights:
            raise InputError(f"{source} is not an msclap GPT-2 checkpoint (no {TEXT_BASE}wte.weight)")
        width = weights["wte.weight"].shape[1]
        config = GPT2Config(vocab_size=weights["wte.weight"].shape[0], n_embd=width,
                            n_positions=weights["wpe.weight"].shape[0],
                            n_layer=clap.count_indexed(weights, r"h\.(\d+)\."), n_head=width // 64,
                            n_inner=weights["h.0.mlp.c_fc.weight"].shape[1], layer_norm_epsilon=1e-5)
        tower = GPT2Model(config)
        what = "msclap's GPT-2 text tower"
    else:
        from transformers import BertConfig, BertModel

        key = "embeddings.word_embeddings.weight"
        if key not in weights:
            raise InputError(f"{source} is not an msclap BERT checkpoint (no {TEXT_BASE}{key})")
        width = weights[key].shape[1]
        config = BertConfig(vocab_size=weights[key].shape[0], hidden_size=width,
                            num_hidden_layers=clap.count_indexed(weights, r"encoder\.layer\.(\d+)\."),
                            num_attention_heads=width // 64,
                            intermediate_size=weights["encoder.layer.0.intermediate.dense.weight"].shape[0],
                            max_position_embeddings=weights["embeddings.position_embeddings.weight"].shape[0],
                            type_vocab_size=weights["embeddings.token_type_embeddings.weight"].shape[0],
                            layer_norm_eps=1e-12)
        tower = BertModel(config, add_pooling_layer=False)
        what = "msclap's BERT text tower"
    clap.load_exactly(tower, weights, what, source)
    return tower.eval()


def build_projection(state: dict, prefix: str, source: str) -> Projection:
    weights = _subset(state, prefix)
    if "linear1.weight" not in weights:
        raise InputError(f"{source} is not an msclap checkpoint (no {prefix}linear1.weight)")
    d_out, d_in = weights["linear1.weight"].shape
    projection = Projection(d_in, d_out)
    clap.load_exactly(projection, weights, f"msclap's {prefix.rstrip('.')}", source)
    return projection.eval()


def stored_mel_filters(state: dict, version: MsclapVersion, source: str) -> tuple[np.ndarray | None, bool]:
    """The checkpoint's mel filterbank (what msclap computes with) and whether it equals the
    one the config describes. ``(None, True)`` when the checkpoint holds none."""
    keys = [k for k in state if k.endswith("logmel_extractor.melW")]
    if not keys:
        return None, True
    stored = state[keys[0]].float().numpy()
    computed = clap.slaney_mel_filters(version.mel)
    if stored.shape != computed.shape:
        raise InputError(f"{source}: its mel filterbank has shape {stored.shape}, msclap's front end "
                         f"({version.mel.n_fft}-point STFT, {version.mel.n_mels} bands) needs {computed.shape}")
    return stored, bool(np.allclose(stored, computed, rtol=1e-4, atol=1e-7))


def check_all_used(state: dict, source: str) -> None:
    """Refuse a checkpoint holding tensors no part of msclap's CLAP reads."""
    known = (AUDIO_BASE, TEXT_BASE, "audio_encoder.projection.", "caption_encoder.projection.")
    stray = sorted(k for k in state if not k.startswith(known) and not _UNUSED.search(k))
    if stray:
        raise InputError(f"{source} does not match msclap's CLAP: {len(stray)} unexpected keys "
                         f"(first: {stray[0]})")


# --------------------------------------------------------------------------- encoder

class MsclapEncoder(Encoder):
    """A Microsoft CLAP model behind the :class:`~embedstore.models.base.Encoder` contract."""

    int16_roundtrip = False   # msclap feeds torchaudio's float samples as they are
    padding = "repeat"        # msclap repeats short clips whole, then trims

    def __init__(self, name: str, version: MsclapVersion, towers: dict[str, nn.Module], tokenizer,
                 mel_filters: np.ndarray | None, filters_match_config: bool, device="cpu",
                 precision="fp32", checkpoint_info: dict | None = None, tokenizer_source: str = ""):
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        # fp32 weights in every precision: fp16/bf16 come from autocast (embedstore.models.device)
        try:
            self.device = resolve_device(device)
            self.towers = nn.ModuleDict(towers).to(device=self.device, dtype=torch.float32).eval()
        except (RuntimeError, ValueError) as err:
            raise InputError(f"cannot use device {device!r}: {str(err).splitlines()[0]}") from None
        self.name = name
        self.version = version
        self.precision = precision
        self.tokenizer = tokenizer
        self.front_end = clap.LogMel(version.mel, mel_filters).to(self.device)
        self._filters = "checkpoint" if mel_filters is not None else "computed"
        self._filters_match_config = filters_match_config
        self.sample_rate = SAMPLE_RATE
        self.window_seconds = float(version.duration)
        self.gpt = version.text_hub_id.startswith("gpt")
        text_width = (towers["text"].config.n_embd if self.gpt else towers["text"].config.hidden_size)
        self.audio_dims = {"prejoint": towers["audio_projection"].linear1.in_features,
                           "joint": towers["audio_projection"].linear1.out_features}
        self.text_dims = {"prejoint": text_width, "joint": towers["text_projection"].linear1.out_features}
        config = towers["text"].config
        self.max_tokens = config.n_positions if self.gpt else config.max_position_embeddings
        self._checkpoint = checkpoint_info or {}
        self._tokenizer_source = tokenizer_source
        clap.check_tokenizer_fits(tokenizer, config.vocab_size)

    def embed_audio(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        windows = self.checked_windows(windows)
        if len(windows) == 0:
            return self.empty(self.audio_dims)
        with torch.inference_mode(), autocast(self.device, self.precision):
            features = self.front_end(torch.from_numpy(windows).to(self.device))  # float32 (LogMel)
            tower = self.towers["audio"]
            if self.version.audio == "Cnn14":
                pooled = tower(features)
            else:
                is_longer = torch.zeros(len(windows), 1, dtype=torch.bool, device=self.device)
                pooled = tower(input_features=features, is_longer=is_longer).pooler_output
            return clap.project(pooled, self.towers["audio_projection"])

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """msclap's ``preprocess_text``: GPT-2 texts get ``" <|endoftext|>"`` appended; every
        text is padded to ``text_len`` tokens and never truncated (a longer text keeps its
        length: the batch is padded to the longest, which leaves each text's vector as
        msclap computes it alone)."""
        if self.gpt:
            texts = [text + " <|endoftext|>" for text in texts]
        longest = max(len(ids) for ids in self.tokenizer(texts)["input_ids"])
        if longest > self.max_tokens:
            raise InputError(f"a text has {longest} tokens; {self.name}'s text tower takes at most "
                             f"{self.max_tokens}")
        tokens = self.tokenizer(texts, padding="max_length", max_length=max(self.version.text_len, longest),
                                return_tensors="pt")
        keys = ("input_ids", "attention_mask") if self.gpt else ("input_ids", "token_type_ids", "attention_mask")
        return {k: tokens[k].to(self.device) for k in keys}

    def embed_text(self, texts: list[str]) -> dict[str, np.ndarray]:
        texts = self.checked_texts(texts)
        if len(texts) == 0:
            return self.empty(self.text_dims)
        tokens = self.tokenize(texts)
        with torch.inference_mode(), autocast(self.device, self.precision):
            hidden = self.towers["text"](**tokens).last_hidden_state
            if self.gpt:
                # msclap's rule: the last position whose id is not 0 (GPT-2's '!', its pad)
                last = torch.ne(tokens["input_ids"], 0).sum(-1) - 1
                pooled = hidden[torch.arange(len(texts), device=hidden.device), last]
            else:
                pooled = hidden[:, 0, :]
            return clap.project(pooled, self.towers["text_projection"])

    def provenance(self) -> dict:
        import transformers

        text = self.towers["text"].config
        audio = self.towers["audio"]
        if self.version.audio == "Cnn14":
            audio_arch = {"type": "CNN14", "widths": [getattr(audio, f"conv_block{i + 1}").conv1.out_channels
                                                     for i in range(audio.n_blocks)],
                          "embedding": audio.fc1.out_features}
        else:
            cfg = audio.config
            audio_arch = {"type": "HTSAT", "patch_embeds_hidden_size": cfg.patch_embeds_hidden_size,
                          "depths": list(cfg.depths), "num_attention_heads": list(cfg.num_attention_heads),
                          "window_size": cfg.window_size, "spec_size": cfg.spec_size,
                          "hidden_size": cfg.hidden_size}
        text_arch = {"type": "GPT-2" if self.gpt else "BERT", "vocab_size": text.vocab_size,
                     "hidden_size": self.text_dims["prejoint"],
                     "num_hidden_layers": text.n_layer if self.gpt else text.num_hidden_layers,
                     "text_len": self.version.text_len,
                     "pooling": "hidden state at the last non-zero token id (<|endoftext|>)" if self.gpt
                     else "[CLS] hidden state"}
        return {
            "model": self.name,
            "family": "msclap",
            "architecture": {"audio": audio_arch, "text": text_arch,
                             "projection": "msclap Projection (linear, gelu, linear, residual, layernorm)",
                             "projection_dim": self.audio_dims["joint"]},
            "checkpoint": dict(self._checkpoint),
            "tokenizer": self._tokenizer_source,
            "front_end": {**dataclasses.asdict(self.version.mel), "input_sample_rate": SAMPLE_RATE,
                          "filterbank_sample_rate": self.version.mel.sample_rate,
                          "mel_filters": self._filters,
                          "mel_filters_match_config": self._filters_match_config,
                          "window": "hann", "center": True, "pad_mode": "reflect", "power": 2.0,
                          "mel_scale": "slaney", "log": "10*log10(max(mel, 1e-10))",
                          "int16_roundtrip": False, "padding": self.padding},
            "precision": self.precision,
            "device": str(self.device),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "numpy": np.__version__, "python": platform.python_version()},
        }


# --------------------------------------------------------------------------- loaders

def load_checkpoint_file(name: str, path, device="cpu", precision="fp32", tokenizer=None,
                         source: str = "user", hub_record: dict | None = None) -> MsclapEncoder:
    """An :class:`MsclapEncoder` from an msclap ``.pth`` file."""
    version = VERSIONS[name]
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    tok, tok_source = clap.load_tokenizer(tokenizer, hub_id=version.text_hub_id,
                                          files=version.tokenizer_files)
    if version.text_hub_id.startswith("gpt"):
        tok.add_special_tokens({"pad_token": "!"})  # as msclap does: '!' is GPT-2's token 0
    digest = hub.sha256_file(path)
    state = read_checkpoint(path)
    check_all_used(state, str(path))
    filters, filters_match = stored_mel_filters(state, version, str(path))
    towers = {"audio": build_audio_tower(version, state, str(path)),
              "audio_projection": build_projection(state, "audio_encoder.projection.", str(path)),
              "text": build_text_tower(version, state, str(path)),
              "text_projection": build_projection(state, "caption_encoder.projection.", str(path))}
    del state
    verified = None if version.sha256 is None else digest == version.sha256
    if verified is False:
        warnings.warn(f"{path.name} has SHA-256 {digest}, not the published {version.sha256} "
                      f"of {name}; using it anyway", stacklevel=2)
    info = {"file": path.name, "sha256": digest, "expected_sha256": version.sha256,
            "verified": verified, "source": source, **(hub_record or {})}
    return MsclapEncoder(name, version, towers, tok, filters, filters_match, device, precision,
                         info, tok_source)


def load_msclap(name: str, checkpoint=None, device="cpu", precision="fp32", cache_dir=None,
                tokenizer=None) -> MsclapEncoder:
    """Registry loader: ``checkpoint`` (a user's file) wins; otherwise the published file
    from the Hugging Face cache, or downloaded into it when the hub is allowed and answers."""
    version = VERSIONS[name]
    if checkpoint is not None:
        return load_checkpoint_file(name, checkpoint, device, precision, tokenizer)
    fetched = hub.download(HUB_REPO, version.file, version.sha256, cache_dir=cache_dir)
    return load_checkpoint_file(name, fetched.path, device, precision, tokenizer, fetched.source,
                                fetched.record())
