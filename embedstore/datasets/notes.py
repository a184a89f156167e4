"""The TinySOL-like notes bundled in ``data/notes``: 14 instruments, FLAC files.

Same layout as TinySOL (see ``data/notes/make_notes.py``), so the TinySOL reader reads them.
Each note also carries a ``split`` column: ``test`` for the notes that the bundled model
``notes-toy`` never saw (the 2nd and 5th of every instrument's six pitches, with all their
dynamics), ``train`` for the others; ``--where split=test`` scores the model on its
untouched notes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from embedstore.datasets.base import Dataset
from embedstore.datasets.tinysol import load_tinysol
from embedstore.resources import DATA_DIR

#: Which of each instrument's pitches (sorted low to high, 0 = lowest) are held out.
TEST_PITCH_POSITIONS = (1, 4)


def default_notes_root() -> Path:
    """The bundled notes, ``data/notes`` at the top of the repository."""
    return DATA_DIR / "notes"


def pitch_positions(items) -> np.ndarray:
    """(n,) int: the rank of each note's pitch among its instrument's pitches (0 = lowest)."""
    positions = np.zeros(len(items), dtype=int)
    for instrument in {item.labels[0] for item in items}:
        rows = [i for i, item in enumerate(items) if item.labels[0] == instrument]
        pitches = sorted({items[i].metadata["midi_pitch"] for i in rows})
        for i in rows:
            positions[i] = pitches.index(items[i].metadata["midi_pitch"])
    return positions


def load_notes(root: str | Path | None = None) -> Dataset:
    """Read the bundled notes (or a copy of them at ``root``), with their ``split`` column."""
    dataset = load_tinysol(default_notes_root() if root is None else root)
    dataset.name = "notes"
    test = np.isin(pitch_positions(dataset.items), TEST_PITCH_POSITIONS)
    dataset.items = [dataclasses.replace(item, metadata={**item.metadata, "split": "test" if held else "train"})
                     for item, held in zip(dataset.items, test)]
    return dataset
