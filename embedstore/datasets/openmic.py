"""OpenMIC-2018 (Humphrey et al., 2018): 20,000 ten-second excerpts, 20 instruments,
partially labelled; read through mirdata (``openmic2018``).

Each excerpt carries crowd-sourced relevance scores for only some instruments: the others
are unknown, neither present nor absent. The reader keeps that: an item's ``observed``
classes are those with a score, its ``labels`` those scoring 0.5 or more (the dataset's
threshold); a store records the rest in its label mask and every metric leaves those
pairs out.

Layout (the release's tarball unpacked, with mirdata's index)::

    audio/000/000046_3840.ogg
    openmic-2018-aggregated-labels.csv       sample_key,instrument,relevance,num_responses
    openmic-2018-metadata.csv, class-map.json, partitions/split01_{train,test}.csv
    openmic2018_index_1.0.json
"""

from __future__ import annotations

import math
from pathlib import Path

from embedstore.datasets.base import Dataset, Item
from embedstore.datasets.mirdata_support import check_present, mirdata_tracks, open_mirdata, source
from embedstore.errors import InputError

#: Relevance from which an instrument counts as present.
PRESENT_FROM = 0.5
METADATA_CSV = "openmic-2018-metadata.csv"
RELEASE_FOLDER = "openmic-2018"


def openmic_classes() -> list[str]:
    """OpenMIC's 20 instruments in class-map order (mirdata's ``INSTRUMENTS``)."""
    from embedstore.datasets.mirdata_support import mirdata_module

    instruments = mirdata_module("openmic2018").INSTRUMENTS
    return sorted(instruments, key=instruments.get)


def load_openmic(root: str | Path) -> Dataset:
    """Read OpenMIC-2018 through mirdata.

    Parameters
    ----------
    root : path
        The folder holding ``openmic-2018-metadata.csv`` and the rest, or the one holding
        the ``openmic-2018/`` the release's tarball unpacks to (the index beside it).

    Returns
    -------
    Dataset
        Multi-label with partial labels (``Item.observed``); items in index order,
        id = the sample key; metadata ``split`` (``split01_train`` / ``split01_test``,
        empty when in neither), ``start_time`` (s into the FMA track), ``artist``,
        ``title``.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise InputError(f"OpenMIC-2018 folder {root} does not exist")
    # The release's tarball unpacks to openmic-2018/ beside the index the download put in root.
    home = root / RELEASE_FOLDER
    if (root / METADATA_CSV).is_file() or not (home / METADATA_CSV).is_file():
        home = root
    mir = open_mirdata("openmic2018", home, index_folders=(root,))
    classes = openmic_classes()
    items = [_item(track, set(classes)) for track in mirdata_tracks(mir)]
    check_present(items, "OpenMIC-2018", home)
    dataset = Dataset("openmic", home, classes, items, multilabel=True)
    dataset.source = source("openmic2018", mir)
    return dataset


def _text(value) -> str:
    """A metadata value as text; pandas' NaN (an empty cell) as ""."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _item(track, classes: set[str]) -> Item:
    try:
        scores = track.instruments
        metadata = {"split": _text(track.split), "start_time": float(track.start_time or 0.0),
                    "artist": _text(track.artist), "title": _text(track.title)}
    except (AttributeError, TypeError, ValueError) as exc:
        raise InputError(f"OpenMIC-2018 track {track.track_id}: unreadable metadata ({exc})") from None
    unknown = set(scores) - classes
    if unknown:
        raise InputError(f"OpenMIC-2018 track {track.track_id}: unknown instrument(s) {sorted(unknown)}")
    labels = tuple(name for name, score in scores.items() if score >= PRESENT_FROM)
    return Item(track.track_id, Path(track.audio_path), labels, metadata, observed=tuple(scores))
