"""Tiny random Microsoft CLAP checkpoints, tokenizers and the `msclap` reference, for tests.

No weights can be downloaded, so the tests build msclap's own ``CLAP`` module from the
package's configs (the real CNN14 and HTSAT) with text towers of the right width (768, as
both configs set) but few layers and tiny vocabularies, randomise every tensor, and save
it in the published layout (``{"model": state_dict}``).

msclap loads ``bert-base-uncased`` / ``gpt2`` from the hub and imports torchaudio (only for
reading files, which the tests never ask it to do): :func:`msclap_patches` hands it the
tiny local ones and a stand-in for torchaudio.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import sys
from pathlib import Path

import yaml
from clap_fixtures import SENTENCES, _stub_module, randomize

TEXT_LAYERS = 2
TEXT_INTERMEDIATE = 96


def import_msclap():
    """Skip the calling test when the `msclap` reference (or what its model code imports)
    is not installed (``pip install --no-deps msclap``: it pins numpy<2 and transformers<5)."""
    import importlib.util

    import pytest

    for package in ("msclap", "torchlibrosa", "yaml"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"the msclap reference needs {package}, which is not installed")


def write_bert_tokenizer(directory) -> Path:
    """A WordPiece ``bert-base-uncased``-style tokenizer over a tiny vocabulary."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    words = sorted({w.strip(",.") for s in SENTENCES for w in s.split()})
    vocab = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", "!", "'"] + list(letters)
             + [f"##{c}" for c in letters] + words)
    ids = {token: i for i, token in enumerate(dict.fromkeys(vocab))}
    wordpiece = Tokenizer(models.WordPiece(vocab=ids, unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    wordpiece.decoder = decoders.WordPiece()
    BertTokenizerFast(tokenizer_object=wordpiece, do_lower_case=True, unk_token="[UNK]", sep_token="[SEP]",
                      pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]").save_pretrained(str(directory))
    return directory


def _gpt2_bytes_to_unicode() -> list[str]:
    """GPT-2's byte-to-character table in its own order: ``'!'`` first (token 0)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    chars = [chr(b) for b in printable]
    extra = 0
    for b in range(256):
        if b not in printable:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_gpt2_tokenizer(directory) -> Path:
    """A byte-level GPT-2 tokenizer: the 256 byte tokens in GPT-2's order (so ``'!'`` is id 0,
    as in gpt2), a few merges, and ``<|endoftext|>`` last."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2TokenizerFast

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokens = _gpt2_bytes_to_unicode()
    merges = [("t", "h"), ("Ġ", "a"), ("th", "e"), ("Ġ", "s"), ("o", "f")]
    tokens += ["".join(m) for m in merges] + ["<|endoftext|>"]
    bpe = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    GPT2TokenizerFast(tokenizer_object=bpe, unk_token="<|endoftext|>", bos_token="<|endoftext|>",
                      eos_token="<|endoftext|>").save_pretrained(str(directory))
    return directory


def write_tokenizer(version: str, directory) -> Path:
    return (write_gpt2_tokenizer if version == "2023" else write_bert_tokenizer)(directory)


def tiny_text_model(version: str, vocab_size: int, seed: int = 0):
    """A random BERT (2022) or GPT-2 (2023) 768 wide, as msclap's configs need, with 2 layers."""
    import torch
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    torch.manual_seed(seed)
    if version == "2023":
        return GPT2Model(GPT2Config(vocab_size=vocab_size, n_positions=80, n_embd=768, n_layer=TEXT_LAYERS,
                                    n_head=12, n_inner=TEXT_INTERMEDIATE)).eval()
    return BertModel(BertConfig(vocab_size=vocab_size, hidden_size=768, num_hidden_layers=TEXT_LAYERS,
                                num_attention_heads=12, intermediate_size=TEXT_INTERMEDIATE,
                                max_position_embeddings=128)).eval()


def _local_tokenizer(from_pretrained, tokenizer_dir):
    """The tiny tokenizer; transformers 5 dropped ``encode_plus``, which msclap (written for
    transformers 4, where it is ``__call__`` on one text) calls: give it back as that."""
    from transformers import AutoTokenizer

    tokenizer = from_pretrained.__get__(None, AutoTokenizer)(str(tokenizer_dir))
    if not hasattr(tokenizer, "encode_plus"):
        object.__setattr__(tokenizer, "encode_plus", tokenizer.__call__)
    return tokenizer


@contextlib.contextmanager
def msclap_patches(tokenizer_dir, text_model):
    """While active, msclap's ``AutoModel``/``AutoTokenizer.from_pretrained`` give (copies of)
    the tiny local ones, and torchaudio, if missing, is a stand-in (msclap imports it only
    to read files)."""
    from transformers import AutoModel, AutoTokenizer

    saved = {cls: cls.__dict__.get("from_pretrained") for cls in (AutoModel, AutoTokenizer)}
    AutoModel.from_pretrained = classmethod(lambda c, *a, **k: copy.deepcopy(text_model))
    AutoTokenizer.from_pretrained = classmethod(lambda c, *a, **k: _local_tokenizer(saved[AutoTokenizer],
                                                                                     tokenizer_dir))
    stubs = {}
    if importlib.util.find_spec("torchaudio") is None and "torchaudio" not in sys.modules:
        transforms = _stub_module("torchaudio.transforms", Resample=type("Resample", (), {}))
        stubs = {"torchaudio": _stub_module("torchaudio", transforms=transforms),
                 "torchaudio.transforms": transforms}
        sys.modules.update(stubs)
    try:
        yield
    finally:
        for cls, original in saved.items():
            cls.from_pretrained = original
        for name in stubs:
            sys.modules.pop(name, None)


def msclap_config(version: str) -> argparse.Namespace:
    import msclap

    text = (Path(msclap.__file__).parent / "configs" / f"config_{version}.yml").read_text()
    return argparse.Namespace(**yaml.safe_load(text))


def build_msclap(version: str, tokenizer_dir, seed: int = 0):
    """msclap's own ``CLAP`` (its config, the tiny text tower), every tensor randomised."""
    import torch
    from transformers import AutoTokenizer

    text_model = tiny_text_model(version, len(AutoTokenizer.from_pretrained(str(tokenizer_dir))), seed)
    with msclap_patches(tokenizer_dir, text_model):
        from msclap.models.clap import CLAP

        args = msclap_config(version)
        torch.manual_seed(seed)
        model = CLAP(audioenc_name=args.audioenc_name, sample_rate=args.sampling_rate,
                     window_size=args.window_size, hop_size=args.hop_size, mel_bins=args.mel_bins,
                     fmin=args.fmin, fmax=args.fmax, classes_num=args.num_classes, out_emb=args.out_emb,
                     text_model=args.text_model, transformer_embed_dim=args.transformer_embed_dim,
                     d_proj=args.d_proj)
    randomize(model, seed + 1)
    return model.eval(), text_model


def write_msclap_checkpoint(model, path) -> Path:
    """Save msclap's CLAP in the published layout: ``{"model": state_dict}``."""
    import torch

    path = Path(path)
    torch.save({"model": model.state_dict()}, path)
    return path


def msclap_reference(version: str, checkpoint, tokenizer_dir, text_model):
    """msclap's ``CLAPWrapper`` on ``checkpoint``, built by the package's own loader."""
    with msclap_patches(tokenizer_dir, text_model):
        from msclap import CLAP as CLAPWrapper

        return CLAPWrapper(model_fp=str(checkpoint), version=version, use_cuda=False)
