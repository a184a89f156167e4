"""Medley-solos-DB (Lostanlen & Cella, 2016): 21,571 three-second solo clips of 8
instruments, read through mirdata (``medley_solos_db``).

Layout (mirdata's)::

    audio/Medley-solos-DB_<subset>-<instrument_id>_<uuid4>.wav
    annotation/Medley-solos-DB_metadata.csv     subset,instrument,instrument_id,song_id,uuid4
    medley_solos_db_index_1.2.json              mirdata's index
"""

from __future__ import annotations

from pathlib import Path

from embedstore.datasets.base import Dataset, Item
from embedstore.datasets.mirdata_support import check_present, mirdata_tracks, open_mirdata, source
from embedstore.errors import InputError

#: Medley-solos-DB's instruments, in the order of ``instrument_id``.
MEDLEY_SOLOS_CLASSES = ["clarinet", "distorted electric guitar", "female singer", "flute", "piano",
                        "tenor saxophone", "trumpet", "violin"]


def load_medley_solos(root: str | Path) -> Dataset:
    """Read Medley-solos-DB through mirdata.

    Returns
    -------
    Dataset
        Single-label, classes :data:`MEDLEY_SOLOS_CLASSES`; items in index order, id =
        the uuid4; metadata ``subset`` (training, validation, test), ``instrument_id``
        and ``song_id``.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise InputError(f"Medley-solos-DB folder {root} does not exist")
    mir = open_mirdata("medley_solos_db", root)
    items = [_item(track) for track in mirdata_tracks(mir)]
    check_present(items, "Medley-solos-DB", root)
    dataset = Dataset("medley-solos", root, list(MEDLEY_SOLOS_CLASSES), items, multilabel=False)
    dataset.source = source("medley_solos_db", mir)
    return dataset


def _item(track) -> Item:
    try:
        name, index = track.instrument, track.instrument_id
    except AttributeError:
        raise InputError(f"Medley-solos-DB track {track.track_id} has no metadata row") from None
    if index is None or not 0 <= index < len(MEDLEY_SOLOS_CLASSES) or MEDLEY_SOLOS_CLASSES[index] != name:
        raise InputError(f"Medley-solos-DB track {track.track_id}: instrument {index!r} / {name!r} "
                         f"is not one of {', '.join(MEDLEY_SOLOS_CLASSES)}")
    metadata = {"subset": track.subset, "instrument_id": int(index), "song_id": int(track.song_id)}
    return Item(track.track_id, Path(track.audio_path), (name,), metadata)
