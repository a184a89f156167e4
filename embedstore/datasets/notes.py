"""The TinySOL-like notes bundled in ``data/notes``: 14 instruments, FLAC files.

Same layout as TinySOL (see ``data/notes/make_notes.py``), so the TinySOL reader reads them.
"""

from __future__ import annotations

from pathlib import Path

from embedstore.datasets.base import Dataset
from embedstore.datasets.tinysol import load_tinysol
from embedstore.resources import DATA_DIR


def default_notes_root() -> Path:
    """The bundled notes, ``data/notes`` at the top of the repository."""
    return DATA_DIR / "notes"


def load_notes(root: str | Path | None = None) -> Dataset:
    """Read the bundled notes (or a copy of them at ``root``)."""
    dataset = load_tinysol(default_notes_root() if root is None else root)
    dataset.name = "notes"
    return dataset
