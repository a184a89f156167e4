"""What every dataset reader returns: plain items (id, audio path, labels, metadata).

A reader is a function of a root folder that returns a :class:`Dataset`; the store writer
never knows which dataset it is writing.
"""

from __future__ import annotations

import contextlib
import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedstore.errors import InputError
from embedstore.store.names import check_names

#: File suffixes read as audio when a dataset's folder is scanned.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")


@dataclass(frozen=True)
class Item:
    """One audio file of a dataset.

    Attributes
    ----------
    id : str
        Unique within the dataset (TinySOL: the file stem; folder datasets: the CSV path).
    path : Path
        Absolute path of the audio file.
    labels : tuple[str, ...]
        Class names; exactly one for single-label datasets.
    metadata : dict[str, str | int | float]
        Per-item columns; every item of a dataset has the same keys with the same types.
    captions : tuple[str, ...]
        Free-text descriptions of this item (a caption dataset's); empty for class-only
        datasets. ``embedstore extract`` embeds them as the caption set ``captions``, each
        caption tied to its item, for ``embedstore analyze retrieval``.
    observed : tuple[str, ...] or None
        Partially labelled datasets (OpenMIC-2018): the classes whose presence or
        absence is known for this item; ``labels`` are those of them present. ``None``
        (every other dataset): every class is known, absent unless in ``labels``.
    """

    id: str
    path: Path
    labels: tuple[str, ...]
    metadata: dict[str, str | int | float]
    captions: tuple[str, ...] = ()
    observed: tuple[str, ...] | None = None


@dataclass
class Dataset:
    """A named list of items with a fixed class order.

    Attributes
    ----------
    name : str
        The registry name (``"tinysol"``, ``"esc50"``, ...; see ``DATASETS``).
    root : Path
        The folder the items were read from.
    classes : list[str]
        Class names in their fixed order; a class index is a position here.
    items : list[Item]
    multilabel : bool
        Whether an item may carry several labels.
    source : str
        What read it: ``"embedstore"`` (our readers) or mirdata with its version and
        index file; recorded in a store's provenance.
    subset : str
        The selection :meth:`where` made (``"fold=1"``), ``""`` for the whole dataset.
    """

    name: str
    root: Path
    classes: list[str]
    items: list[Item]
    multilabel: bool
    source: str = "embedstore"
    subset: str = ""

    @property
    def ids(self) -> np.ndarray:
        """Item ids as a str array, in item order."""
        return np.array([item.id for item in self.items], dtype=str)

    @property
    def paths(self) -> np.ndarray:
        """Audio paths as a str array, in item order."""
        return np.array([str(item.path) for item in self.items], dtype=str)

    def label_matrix(self) -> np.ndarray:
        """``(n_items, n_classes)`` bool matrix, True where an item carries a class."""
        index = {cls: i for i, cls in enumerate(self.classes)}
        matrix = np.zeros((len(self.items), len(self.classes)), dtype=bool)
        for row, item in enumerate(self.items):
            matrix[row, [index[label] for label in item.labels]] = True
        return matrix

    def label_mask(self) -> np.ndarray | None:
        """``(n_items, n_classes)`` bool, True where a pair is labelled (present or
        absent); ``None`` when every pair is (every dataset without partial labels)."""
        if all(item.observed is None for item in self.items):
            return None
        index = {cls: i for i, cls in enumerate(self.classes)}
        mask = np.ones((len(self.items), len(self.classes)), dtype=bool)
        for row, item in enumerate(self.items):
            if item.observed is not None:
                mask[row] = False
                mask[row, [index[label] for label in item.observed]] = True
        return mask

    def where(self, column: str, value: str) -> "Dataset":
        """The items whose metadata ``column`` equals ``value`` (compared as text:
        ``where("fold", "1")``), as a new dataset with the same classes."""
        if self.items and column not in self.items[0].metadata:
            raise InputError(f"dataset {self.name!r} has no metadata column {column!r} "
                             f"(has: {', '.join(self.items[0].metadata) or 'none'})")
        kept = [item for item in self.items if str(item.metadata[column]) == value]
        if not kept:
            raise InputError(f"no item of dataset {self.name!r} has {column} = {value!r}")
        subset = f"{self.subset}, {column}={value}" if self.subset else f"{column}={value}"
        return Dataset(self.name, self.root, list(self.classes), kept, self.multilabel, self.source, subset)

    def labels(self) -> np.ndarray:
        """``(n_items,)`` int32 class indices; single-label datasets only."""
        if self.multilabel:
            raise InputError(f"dataset {self.name!r} is multi-label; use its label matrix")
        return np.argmax(self.label_matrix(), axis=1).astype(np.int32)

    def check_names(self) -> None:
        """Refuse names and values a store cannot hold, before any audio is decoded.

        Classes, item ids and metadata column names go through the store's name policy
        (:mod:`embedstore.store.names`); labels (and observed classes) must be classes, and
        a single-label item needs one (a multi-label item may carry none); text metadata values may
        be empty but hold no NUL.

        Raises
        ------
        InputError
            Naming the first offending name and what it is.
        """
        check_names(self.classes, "class")
        check_names([item.id for item in self.items], "item id")
        known = set(self.classes)
        columns = list(self.items[0].metadata) if self.items else []
        check_names(columns, "metadata column", object_name=True)
        for item in self.items:
            unknown = next((label for label in (*item.labels, *(item.observed or ())) if label not in known), None)
            # a multi-label clip may carry none of the classes (OpenMIC: every labelled one absent)
            if unknown is not None or (not item.labels and not self.multilabel):
                raise InputError(f"item {item.id!r} has {'label ' + repr(unknown) if unknown else 'no label'}, "
                                 f"not one of the dataset's classes")
            if list(item.metadata) != columns:
                raise InputError(f"item {item.id!r} has metadata columns {list(item.metadata)}, not {columns}")
            bad = next((k for k, v in item.metadata.items() if isinstance(v, str) and "\x00" in v), None)
            if bad is not None:
                raise InputError(f"item {item.id!r}: metadata column {bad!r} holds a NUL character")

    def metadata_columns(self) -> dict[str, np.ndarray]:
        """Metadata as one array per column (int64, float64 or str), in item order."""
        if not self.items:
            return {}
        return {key: np.array([item.metadata[key] for item in self.items])
                for key in self.items[0].metadata}


@contextlib.contextmanager
def reading_csv(path):
    """Decode and CSV errors met while reading ``path`` as one InputError naming the file."""
    try:
        yield
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"cannot read {path}: {exc} (save it as UTF-8 text)") from None


def path_in_root(root: Path, rel: str, where: str) -> str:
    """A path a CSV gives for an item, as the item's path relative to the dataset folder.

    A relative path is kept as written; an absolute one inside ``root`` becomes relative to
    it. A path leading out of the folder (``../x``, ``/elsewhere/x``) is refused: a store
    keeps item paths relative to its root and never records where the audio sat.
    """
    inside = os.path.relpath(os.path.normpath(os.path.join(root, rel)), root)
    if inside == os.pardir or inside.startswith(os.pardir + os.sep):
        raise InputError(f"{where}: {rel!r} is not inside the dataset folder {root}; "
                         f"give paths relative to --root")
    return Path(inside).as_posix() if os.path.isabs(rel) else rel


def folder_and_csv(root: str | Path, csv_path: str | Path, what: str) -> tuple[Path, Path]:
    """``root`` resolved and ``csv_path`` expanded, or InputError naming the one missing."""
    root = Path(root).expanduser().resolve()
    csv_path = Path(csv_path).expanduser()
    if not root.is_dir():
        raise InputError(f"dataset folder {root} does not exist")
    if not csv_path.is_file():
        raise InputError(f"{what} {csv_path} does not exist")
    return root, csv_path


def audio_files(folder: Path) -> list[Path]:
    """Audio files under ``folder``, sorted; hidden files (``._x.wav`` from macOS) skipped."""
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".")
                  and p.is_file())
