"""Model registry: names -> loaders that return :class:`~embedstore.models.base.Encoder` s.

Importing this package does not import torch; each loader imports its model code when
called. See :mod:`embedstore.models.base` for the loader signature.
"""

from __future__ import annotations

from embedstore.errors import InputError
from embedstore.models.base import PRECISIONS, Encoder

HF_PREFIX = "hf:"


def _published_clap(name):
    def loader(checkpoint, device, precision, cache_dir, tokenizer=None):
        from embedstore.models.clap import load_published

        return load_published(name, checkpoint, device, precision, cache_dir, tokenizer)

    loader.__doc__ = f"LAION-CLAP checkpoint {name!r} (see embedstore.models.clap.PUBLISHED)."
    return loader


def _msclap(name):
    def loader(checkpoint, device, precision, cache_dir, tokenizer=None):
        from embedstore.models.msclap import load_msclap

        return load_msclap(name, checkpoint, device, precision, cache_dir, tokenizer)

    loader.__doc__ = f"Microsoft CLAP {name!r} (see embedstore.models.msclap.VERSIONS)."
    return loader


def _muscall(checkpoint, device, precision, cache_dir, tokenizer=None):
    """MusCALL: the authors' checkpoint + config.yaml, or a folder from `embedstore train`."""
    from embedstore.models.muscall import load_muscall

    return load_muscall(checkpoint, device, precision, cache_dir, tokenizer)


def _notes_toy(checkpoint, device, precision, cache_dir):
    """The small toy model bundled in data/models/notes-toy (not a research model)."""
    from embedstore.models.muscall import load_notes_toy

    return load_notes_toy(checkpoint, device, precision, cache_dir)


#: name -> loader(checkpoint, device, precision, cache_dir[, tokenizer=...]) -> Encoder
MODELS = {
    "clap-music": _published_clap("clap-music"),
    "clap-music-speech": _published_clap("clap-music-speech"),
    "clap-general": _published_clap("clap-general"),
    "clap-general-fusion": _published_clap("clap-general-fusion"),
    "clap-630k-fusion": _published_clap("clap-630k-fusion"),
    "msclap-2022": _msclap("msclap-2022"),
    "msclap-2023": _msclap("msclap-2023"),
    "muscall": _muscall,
    "notes-toy": _notes_toy,
}


def list_models() -> list[str]:
    """Registered model names, plus the ``hf:<hub id or directory>`` form."""
    return sorted(MODELS) + [HF_PREFIX + "<hub id or directory>"]


def load_model(name: str, checkpoint=None, device: str = "auto", precision: str = "fp32",
               cache_dir=None, tokenizer=None) -> Encoder:
    """Load a registered model, or a transformers ``ClapModel`` given as ``hf:<id or dir>``.

    Parameters
    ----------
    name : str
        A key of :data:`MODELS`, or ``"hf:"`` followed by a hub id or a local directory.
    checkpoint : path-like, optional
        A local weights file to use instead of the published one.
    device : str
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``;
        checked against this machine before any weights are read.
    precision : {"fp32", "fp16", "bf16"}
    cache_dir : path-like, optional
        Hugging Face cache to read and download into instead of the standard one
        (``$HF_HUB_CACHE``, ``$HF_HOME/hub``, ``~/.cache/huggingface/hub``).
    tokenizer : path-like, optional
        A local tokenizer directory, for models whose text tower needs one.

    Raises
    ------
    InputError
        Unknown name, bad precision, a device this machine does not have, unreadable or
        mismatched checkpoint.
    ModelUnavailable
        Needed files are neither local nor fetchable.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    from embedstore.models.device import resolve_device

    device = str(resolve_device(device))
    extra = {} if tokenizer is None else {"tokenizer": tokenizer}
    if name.startswith(HF_PREFIX):
        if checkpoint is not None:
            raise InputError("hf: models take their weights from the hub id or directory, "
                             "not --checkpoint")
        from embedstore.models.clap import load_hf

        return load_hf(name[len(HF_PREFIX):], device, precision, cache_dir, **extra)
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    try:
        return MODELS[name](checkpoint, device, precision, cache_dir, **extra)
    except TypeError as err:
        if extra and "tokenizer" in str(err):
            raise InputError(f"model {name!r} does not take a --tokenizer") from None
        raise
