"""The store: one HDF5 file for one dataset embedded by one model (``docs/store-format.md``).

This wing is the only thing extraction and the analyses share; it imports nothing from
them. One module per job:

- :mod:`~embedstore.store.elements`: typed elements (``encoding-type``/``-version``), digests;
- :mod:`~embedstore.store.core`: :func:`open_store`, :func:`create_store`, :func:`edit_store`;
- :mod:`~embedstore.store.journal`: resumable, kill-safe appends that end in one store;
- :mod:`~embedstore.store.partial`: the names of an unfinished run's folder;
- :mod:`~embedstore.store.verify`: :func:`verify_store`;
- :mod:`~embedstore.store.interchange`: ``.npy`` + CSV in (:func:`import_store`) and out
  (:func:`export_space`);
- :mod:`~embedstore.store.parquet`: the store as Parquet (:func:`export_parquet`);
- :mod:`~embedstore.store.merge`: the shards of one run into one store (:func:`merge_shards`);
- :mod:`~embedstore.store.fileio`: atomic file writes.
"""

import importlib

# Names resolved on first use, so that importing one light module of the wing (fileio,
# names, outputs) does not import h5py: the CLI's start-up pays only for what it runs.
_EXPORTS = {
    "FORMAT_VERSION": "core", "PromptSet": "core", "Store": "core", "StoreWriter": "core",
    "check_unique_ids": "core", "create_store": "core", "edit_store": "core", "open_store": "core",
    "JOURNAL_SUFFIX": "partial", "journal_dir": "partial",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"embedstore.store.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'embedstore.store' has no attribute {name!r}")
