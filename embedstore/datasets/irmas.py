"""IRMAS (Bosch et al., 2012): predominant instruments in music, 11 classes, read
through mirdata (``irmas``).

Two datasets: the training clips (6,705 three-second excerpts, one predominant
instrument each, named by folder and file) and the test set (2,874 excerpts of 5-20 s,
one or more predominant instruments each, listed in a ``.txt`` beside the audio).

Layout (the zips unpacked side by side, with mirdata's index)::

    IRMAS-TrainingData/cel/[cel][cla]0001__1.wav        [instrument][drums?][genre]
    IRMAS-TestingData-Part1/Part1/<name>.wav + <name>.txt
    irmas_index_1.0.json
"""

from __future__ import annotations

from pathlib import Path

from embedstore.datasets.base import Dataset, Item
from embedstore.datasets.mirdata_support import check_present, mirdata_tracks, open_mirdata, source
from embedstore.errors import InputError

# IRMAS code -> class name, in mirdata's INST_DICT order
_IRMAS = {"cel": "cello", "cla": "clarinet", "flu": "flute", "gac": "acoustic guitar",
          "gel": "electric guitar", "org": "organ", "pia": "piano", "sax": "saxophone",
          "tru": "trumpet", "vio": "violin", "voi": "voice"}
#: IRMAS's 11 classes.
IRMAS_CLASSES = list(_IRMAS.values())


def load_irmas(root: str | Path) -> Dataset:
    """IRMAS's training clips: single-label, one predominant instrument each.

    Returns
    -------
    Dataset
        Items in index order, id = mirdata's track id; metadata ``genre`` (IRMAS code,
        ``cou_fol``, ``cla``, ...) and ``drums`` (1 with drums, 0 without, -1 not
        annotated).
    """
    return _read(root, "train", _train_item, "irmas")


def load_irmas_test(root: str | Path) -> Dataset:
    """IRMAS's test set: multi-label, every predominant instrument of each excerpt.

    Returns
    -------
    Dataset
        Items in index order, id = mirdata's track id; metadata ``file`` (the audio's
        name, which tells the excerpt's source song).
    """
    return _read(root, "test", _test_item, "irmas-test")


def _read(root, split: str, make_item, name: str) -> Dataset:
    """The tracks of one IRMAS split (mirdata tells them by id) as a dataset."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise InputError(f"IRMAS folder {root} does not exist")
    mir = open_mirdata("irmas", root)
    items = [make_item(track) for track in mirdata_tracks(mir) if track.split == split]
    check_present(items, f"IRMAS {split}", root)
    dataset = Dataset(name, root, list(IRMAS_CLASSES), items, multilabel=split == "test")
    dataset.source = source("irmas", mir)
    return dataset


def _class(code: str, track_id: str) -> str:
    if code not in _IRMAS:
        raise InputError(f"IRMAS track {track_id}: unknown instrument code {code!r}")
    return _IRMAS[code]


def _train_item(track) -> Item:
    label = _class(track.predominant_instrument, track.track_id)
    drums = -1 if track.drum is None else int(track.drum)
    return Item(track.track_id, Path(track.audio_path), (label,),
                {"genre": track.genre or "", "drums": drums})


def _test_item(track) -> Item:
    try:
        codes = track.instrument
    except (OSError, AssertionError) as exc:
        raise InputError(f"IRMAS test track {track.track_id}: cannot read its labels ({exc})") from None
    labels = tuple(dict.fromkeys(_class(code, track.track_id) for code in codes))
    if not labels:
        raise InputError(f"IRMAS test track {track.track_id} has no label in {track.annotation_path}")
    return Item(track.track_id, Path(track.audio_path), labels, {"file": Path(track.audio_path).name})
