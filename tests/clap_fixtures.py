"""Tiny random LAION-CLAP checkpoints, tokenizers and the `laion_clap` reference, for tests.

No weights can be downloaded here, so the tests build the real architectures with random
weights: a RoBERTa-shaped text tower (RoBERTa's 768-wide hidden state, which laion_clap's
projection hard-codes, but few layers and a tiny vocabulary), a byte-level BPE tokenizer
trained on a few sentences, and laion_clap's own HTSAT. The checkpoint is saved in the
published layout (``{"state_dict": {"module.<key>": tensor}}`` with the stale
``text_branch.embeddings.position_ids`` buffer), so loaders read it through the real code.

The pipeline tests may reuse :func:`write_tokenizer` and :func:`write_clap_checkpoint`
(the latter needs the `laion_clap` reference package: see :func:`import_laion_clap`).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import sys
import types
from pathlib import Path

import numpy as np

SENTENCES = [
    "the sound of a violin", "a recording of a flute playing a note", "this is a cello",
    "trumpet, horn, trombone and tuba", "accordion clarinet bassoon oboe saxophone",
    "contrabass guitar harp viola", "a musical instrument plays one note",
    "the sound of a bassoon", "this is the sound of a trombone", "brass woodwind string keyboard",
]

# RoBERTa's width (laion_clap's text projection hard-codes 768) with few layers.
TEXT_LAYERS = 2
TEXT_INTERMEDIATE = 96
TEXT_MAX_POSITIONS = 80  # 77 tokens + RoBERTa's padding offset


def write_tokenizer(directory) -> Path:
    """Train a tiny byte-level BPE and save it as a RoBERTa tokenizer directory."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(SENTENCES * 4, vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(directory))
    tokenizer = RobertaTokenizerFast(vocab=str(directory / "vocab.json"),
                                     merges=str(directory / "merges.txt"))
    tokenizer.save_pretrained(str(directory))
    return directory


def tiny_roberta(vocab_size: int, seed: int = 0):
    """A randomly initialised RoBERTa with the tiny shape above."""
    import torch
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(seed)
    config = RobertaConfig(vocab_size=vocab_size, hidden_size=768, num_hidden_layers=TEXT_LAYERS,
                           num_attention_heads=12, intermediate_size=TEXT_INTERMEDIATE,
                           max_position_embeddings=TEXT_MAX_POSITIONS, type_vocab_size=1,
                           layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2)
    return RobertaModel(config).eval()


def _stub_module(name, **attrs):
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attrs)
    return module


@contextlib.contextmanager
def _offline_laion_imports(tokenizer_dir, text_model):
    """Patch what laion_clap fetches or imports but never uses for inference.

    laion_clap loads bert/roberta/bart tokenizers at import and roberta-base in its
    constructor; every ``from_pretrained`` it calls returns the local tiny ones instead.
    It also imports torchvision (image transforms for its training code), which has no
    CPU build matching our torch here: a stub stands in while it is imported.
    """
    import transformers
    from transformers import (  # noqa: F401
        AutoTokenizer,
        BartModel,
        BartTokenizer,
        BertModel,
        BertTokenizer,
        RobertaModel,
        RobertaTokenizer,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    patched = {}
    for cls in (BertTokenizer, RobertaTokenizer, BartTokenizer):
        patched[cls] = cls.__dict__.get("from_pretrained")
        cls.from_pretrained = classmethod(lambda c, *a, **k: tokenizer)
    for cls in (RobertaModel, BertModel, BartModel):
        patched[cls] = cls.__dict__.get("from_pretrained")
        cls.from_pretrained = classmethod(lambda c, *a, **k: text_model)
    stubs = {}
    if "torchvision" not in sys.modules:
        names = ["Normalize", "Compose", "RandomResizedCrop", "InterpolationMode", "ToTensor",
                 "Resize", "CenterCrop"]
        stubs = {
            "torchvision": _stub_module("torchvision"),
            "torchvision.ops": _stub_module("torchvision.ops"),
            "torchvision.ops.misc": _stub_module("torchvision.ops.misc",
                                                 FrozenBatchNorm2d=type("FrozenBatchNorm2d", (), {})),
            "torchvision.transforms": _stub_module("torchvision.transforms",
                                                   **{n: type(n, (), {}) for n in names}),
            "torchvision.datasets": _stub_module("torchvision.datasets"),
        }
        sys.modules.update(stubs)
    argv, sys.argv = sys.argv, sys.argv[:1]  # laion_clap parses sys.argv at import
    try:
        yield tokenizer
    finally:
        sys.argv = argv
        for name in stubs:
            sys.modules.pop(name, None)
        for cls, original in patched.items():
            if original is None:
                del cls.from_pretrained
            else:
                cls.from_pretrained = original
        del transformers


def import_laion_clap():
    """Skip the calling test when the `laion_clap` reference package (and what its model
    code imports) is not installed; importing it for real needs :func:`build_laion_clap`'s
    patches."""
    import importlib.util

    import pytest

    for package in ("laion_clap", "torchlibrosa", "librosa", "ftfy", "braceexpand", "webdataset",
                    "wget", "PIL", "pandas"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"the laion_clap reference needs {package}, which is not installed")


def build_laion_clap(amodel: str, tokenizer_dir, seed: int = 0, enable_fusion: bool = False):
    """laion_clap's own ``CLAP_Module`` with random weights and the tiny text tower
    (``enable_fusion``: its fusion model, ``aff_2d`` as ``CLAP_Module`` builds it).

    Batch-norm statistics and every parameter are randomised so that no layer is an
    identity, which would hide a mapping error.
    """
    import torch
    from transformers import AutoTokenizer

    vocab_size = len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    text_model = tiny_roberta(vocab_size, seed)
    with _offline_laion_imports(tokenizer_dir, text_model):
        import laion_clap

        torch.manual_seed(seed)
        clap = laion_clap.CLAP_Module(enable_fusion=enable_fusion, amodel=amodel, device="cpu")
    randomize(clap.model, seed + 1)
    return clap.eval()


def randomize(module, seed: int) -> None:
    """Move every learned tensor and batch-norm statistic off its initial value, in place.

    Fixed tensors stay: torchlibrosa's STFT and mel filterbank, the shifted-window masks,
    GPT-2's causal-mask buffers.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if "extractor" in name or "attn_mask" in name or name.endswith(".attn.bias") \
                    or not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif name.endswith("running_mean"):
                tensor.copy_(torch.randn(tensor.shape, generator=generator))
            else:
                tensor.add_(0.02 * torch.randn(tensor.shape, generator=generator))


def write_clap_checkpoint(clap, path, stale_position_ids: bool = True) -> Path:
    """Save a laion_clap model in the published ``.pt`` layout."""
    import torch

    state = {f"module.{k}": v for k, v in clap.model.state_dict().items()}
    if stale_position_ids:
        positions = clap.model.text_branch.config.max_position_embeddings
        state["module.text_branch.embeddings.position_ids"] = torch.arange(positions)[None]
    path = Path(path)
    torch.save({"epoch": 15, "name": "tiny-random", "state_dict": state}, path)
    return path


def random_windows(n: int, n_samples: int, seed: int = 0, rate: int = 48000,
                   int16: bool = True) -> np.ndarray:
    """Distinct test signals at ``rate``: a few decaying partials plus noise, int16-representable
    unless ``int16`` is False."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / rate
    rows = []
    for _ in range(n):
        f0 = rng.uniform(80, 1500)
        tone = sum(rng.uniform(0.1, 0.5) * np.sin(2 * np.pi * f0 * k * t) for k in range(1, 5))
        signal = tone * np.exp(-t * rng.uniform(0.2, 3)) + 0.05 * rng.standard_normal(n_samples)
        rows.append(signal / np.abs(signal).max() * 0.8)
    windows = np.asarray(rows, dtype=np.float32)
    return (np.round(windows * 32767) / 32767).astype(np.float32) if int16 else windows
