"""Dataset readers: a dataset is a list of plain items (id, audio path, labels, metadata).

One module per dataset, each a function of a root folder that returns a
:class:`~embedstore.datasets.base.Dataset`; :data:`DATASETS` names them:

- ``tinysol``: TinySOL (:mod:`embedstore.datasets.tinysol`);
- ``notes``: the TinySOL-like notes bundled in ``data/notes`` (:mod:`embedstore.datasets.notes`);
- ``folder``: any folder of audio files with a CSV of ``path,label`` rows
  (:mod:`embedstore.datasets.folder`).

Adding a dataset is one module and one line in :data:`DATASETS`.

Examples
--------
>>> ds = load_dataset("notes")
>>> ds.classes[:3]
['bass tuba', 'french horn', 'trombone']
>>> ds.items[0].metadata["dynamics"]
'ff'
"""

from __future__ import annotations

from pathlib import Path

from embedstore.datasets.base import AUDIO_SUFFIXES, Dataset, Item
from embedstore.datasets.folder import load_folder
from embedstore.datasets.notes import default_notes_root, load_notes
from embedstore.datasets.pitch import midi_pitch, pitch_name
from embedstore.datasets.tinysol import TINYSOL_CLASSES, load_tinysol
from embedstore.errors import InputError

__all__ = ["AUDIO_SUFFIXES", "DATASETS", "Dataset", "Item", "TINYSOL_CLASSES", "default_notes_root",
           "load_dataset", "load_folder", "load_notes", "load_tinysol", "midi_pitch", "pitch_name"]


def _folder(root, labels):
    return load_folder(root, Path(root) / "labels.csv" if labels is None else labels)


#: name -> (reader(root, labels), whether the reader needs a root)
DATASETS = {
    "tinysol": (lambda root, labels: load_tinysol(root), True),
    "notes": (lambda root, labels: load_notes(root), False),
    "folder": (_folder, True),
}


def load_dataset(name: str, root: str | Path | None = None,
                 labels: str | Path | None = None) -> Dataset:
    """Load a dataset by name.

    Parameters
    ----------
    name : {"tinysol", "notes", "folder"}
    root : path, optional
        The dataset's folder; ``notes`` defaults to the bundled notes.
    labels : path, optional
        ``folder`` only: the labels CSV (default ``<root>/labels.csv``).

    Returns
    -------
    Dataset
    """
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    reader, needs_root = DATASETS[name]
    if needs_root and root is None:
        raise InputError(f"dataset {name!r} needs a root folder")
    return reader(root, labels)
