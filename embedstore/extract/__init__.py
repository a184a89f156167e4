"""Extraction: audio and prompt sets through an encoder into a store.

- :mod:`~embedstore.extract.pipeline`: batches, the journal, resume (:func:`run_extract`,
  :func:`add_prompt_sets`, :func:`make_text_store` for text-only stores);
- :mod:`~embedstore.extract.audio`: the audio front end (decode, resample, windows);
- :mod:`~embedstore.extract.prompts`: the prompt sets (the study's styles, ontology terms);
- :mod:`~embedstore.extract.captions`: note captions for training;
- :mod:`~embedstore.extract.shards`: which contiguous items a sharded process embeds;
- :mod:`~embedstore.extract.ray_engine`: extraction on Ray Data (``--engine ray``).

Importing this package does not import torch.
"""

from embedstore.extract.pipeline import (
    EXTRA_HINT,
    LONG_MODES,
    STORAGE_DTYPES,
    ExtractSummary,
    add_prompt_sets,
    check_settings,
    embed_clips,
    make_text_store,
    pool_windows,
    require_torch,
    run_extract,
)

__all__ = ["EXTRA_HINT", "LONG_MODES", "STORAGE_DTYPES", "ExtractSummary", "add_prompt_sets",
           "check_settings", "embed_clips", "make_text_store", "pool_windows", "require_torch", "run_extract"]
