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
- :mod:`~embedstore.store.fileio`: atomic file writes.
"""

from embedstore.store.core import (
    FORMAT_VERSION,
    PromptSet,
    Store,
    StoreWriter,
    check_unique_ids,
    create_store,
    edit_store,
    open_store,
)
from embedstore.store.partial import JOURNAL_SUFFIX, journal_dir

__all__ = ["FORMAT_VERSION", "JOURNAL_SUFFIX", "PromptSet", "Store", "StoreWriter", "check_unique_ids",
           "create_store", "edit_store", "journal_dir", "open_store"]
