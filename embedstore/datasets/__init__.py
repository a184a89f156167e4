"""Dataset readers: a dataset is a list of plain items (id, audio path, labels, metadata).

One module per dataset, each a function of a root folder that returns a
:class:`~embedstore.datasets.base.Dataset`; :data:`DATASETS` names them with what is known
about each (:class:`~embedstore.datasets.catalog.DatasetInfo`: labels, size, licence, how
to get it, the prompt sets that fit):

- ``tinysol``: TinySOL, through mirdata when its index is in the root, else our reader
  (:mod:`embedstore.datasets.tinysol`);
- ``notes``: the TinySOL-like notes bundled in ``data/notes`` (:mod:`embedstore.datasets.notes`);
- ``medley-solos``, ``irmas``, ``irmas-test``, ``openmic``: through mirdata
  (:mod:`~embedstore.datasets.medley_solos`, :mod:`~embedstore.datasets.irmas`,
  :mod:`~embedstore.datasets.openmic`);
- ``nsynth``, ``nsynth-source``, ``esc50``: our readers of their published layouts
  (:mod:`~embedstore.datasets.nsynth`, :mod:`~embedstore.datasets.esc50`);
- ``captions``: clips with captions for retrieval (:mod:`embedstore.datasets.captions`);
- ``folder``: any folder of audio files with a CSV of ``path,label`` rows
  (:mod:`embedstore.datasets.folder`).

Adding a dataset is one module and one entry in :data:`DATASETS`.

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
from embedstore.datasets.captions import load_captions
from embedstore.datasets.catalog import DatasetInfo, esc50_remotes, mirdata_remotes
from embedstore.datasets.esc50 import ESC50_CLASSES, load_esc50
from embedstore.datasets.folder import load_folder
from embedstore.datasets.irmas import IRMAS_CLASSES, load_irmas, load_irmas_test
from embedstore.datasets.medley_solos import MEDLEY_SOLOS_CLASSES, load_medley_solos
from embedstore.datasets.notes import default_notes_root, load_notes
from embedstore.datasets.nsynth import NSYNTH_FAMILIES, NSYNTH_SOURCES, load_nsynth
from embedstore.datasets.openmic import load_openmic
from embedstore.datasets.pitch import midi_pitch, pitch_name
from embedstore.datasets.tinysol import TINYSOL_CLASSES, load_tinysol, read_tinysol
from embedstore.errors import InputError

__all__ = ["AUDIO_SUFFIXES", "DATASETS", "Dataset", "DatasetInfo", "ESC50_CLASSES", "IRMAS_CLASSES",
           "Item", "MEDLEY_SOLOS_CLASSES", "NSYNTH_FAMILIES", "NSYNTH_SOURCES", "TINYSOL_CLASSES",
           "default_notes_root", "load_captions", "load_dataset", "load_esc50", "load_folder",
           "load_irmas", "load_irmas_test", "load_medley_solos", "load_notes", "load_nsynth",
           "load_openmic", "load_tinysol", "midi_pitch", "pitch_name", "read_tinysol"]

_STUDY = ("track", "definition", "definition-nolabel", "lorem", "recording", "solo", "negative",
          "family", "ontology")
_INSTRUMENTS = ("track", "recording", "solo", "negative", "sound", "sound-clap")
_SOUNDS = ("sound", "sound-clap", "recording")


def _folder(root, labels):
    return load_folder(root, Path(root) / "labels.csv" if labels is None else labels)


#: name -> what is known about the dataset, and its reader
DATASETS = {info.name: info for info in (
    DatasetInfo("tinysol", lambda root, labels: read_tinysol(root), True,
                "TinySOL (Cella et al., 2020)", "single", 14, "2,913", "2,913 notes, 1-20 s",
                "CC BY 4.0", "download (Zenodo 3685367, through mirdata)", _STUDY,
                mirdata_remotes("tinysol")),
    DatasetInfo("notes", lambda root, labels: load_notes(root), False,
                "bundled notes (FluidSynth, data/notes)", "single", 14, "252", "252 notes, 1.5-1.8 s",
                "MIT (FluidR3_GM)", "bundled", _STUDY),
    DatasetInfo("medley-solos", lambda root, labels: load_medley_solos(root), True,
                "Medley-solos-DB (Lostanlen & Cella, 2016)", "single", 8, "21,571",
                "21,571 clips x 3 s", "CC BY 4.0", "download (Zenodo 3464194, through mirdata)",
                _INSTRUMENTS, mirdata_remotes("medley_solos_db")),
    DatasetInfo("irmas", lambda root, labels: load_irmas(root), True,
                "IRMAS training clips (Bosch et al., 2012)", "single", 11, "6,705", "6,705 clips x 3 s",
                "CC BY-NC-SA 3.0", "download (Zenodo 1290750, through mirdata)", _INSTRUMENTS,
                mirdata_remotes("irmas")),
    DatasetInfo("irmas-test", lambda root, labels: load_irmas_test(root), True,
                "IRMAS test set (Bosch et al., 2012)", "multi", 11, "2,874", "2,874 clips x 5-20 s",
                "CC BY-NC-SA 3.0", "download (Zenodo 1290750, through mirdata)", _INSTRUMENTS,
                mirdata_remotes("irmas")),
    DatasetInfo("openmic", lambda root, labels: load_openmic(root), True,
                "OpenMIC-2018 (Humphrey et al., 2018)", "multi (partial)", 20, "20,000",
                "20,000 clips x 10 s", "CC BY 4.0 (audio: CC / public domain)",
                "download (Zenodo 1432913, through mirdata)", _INSTRUMENTS,
                mirdata_remotes("openmic2018")),
    DatasetInfo("nsynth", lambda root, labels: load_nsynth(root), True,
                "NSynth, instrument family (Engel et al., 2017)", "single", 11, "305,979",
                "305,979 notes x 4 s", "CC BY 4.0",
                "by hand (no published checksum): nsynth-{train,valid,test}.jsonwav.tar.gz from "
                "magenta.tensorflow.org/datasets/nsynth, unpacked into one folder",
                _INSTRUMENTS),
    DatasetInfo("nsynth-source", lambda root, labels: load_nsynth(root, label="source"), True,
                "NSynth, instrument source (Engel et al., 2017)", "single", 3, "305,979",
                "305,979 notes x 4 s", "CC BY 4.0", "by hand, as nsynth", ("track", "recording", "sound")),
    DatasetInfo("esc50", lambda root, labels: load_esc50(root), True,
                "ESC-50 (Piczak, 2015)", "single", 50, "2,000", "2,000 clips x 5 s", "CC BY-NC 3.0",
                "download (GitHub karolpiczak/ESC-50)", _SOUNDS, esc50_remotes),
    DatasetInfo("captions", lambda root, labels: load_captions(root, labels), True,
                "clips + captions CSV (Clotho, MusicCaps, Song Describer exports)", "captions", None,
                "-", "-", "the dataset's", "your own export: --root clips --labels captions.csv",
                ("track",)),
    DatasetInfo("folder", _folder, True, "a folder + path,label CSV", "single or multi", None, "-",
                "-", "yours", "your own files", ("track", "recording", "sound")),
)}


def load_dataset(name: str, root: str | Path | None = None,
                 labels: str | Path | None = None) -> Dataset:
    """Load a dataset by name.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`.
    root : path, optional
        The dataset's folder; ``notes`` defaults to the bundled notes.
    labels : path, optional
        ``folder``: the labels CSV (default ``<root>/labels.csv``); ``captions``: the
        captions CSV (default ``<root>/captions.csv``).

    Returns
    -------
    Dataset
    """
    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    info = DATASETS[name]
    if info.needs_root and root is None:
        raise InputError(f"dataset {name!r} needs a root folder")
    return info.reader(root, labels)
