"""NSynth (Engel et al., 2017): 305,979 four-second notes of 1,006 instruments.

Read from its published "json/wav" layout, one folder per split::

    nsynth-test/examples.json         {note_str: {instrument_family_str, instrument_source_str, ...}}
    nsynth-test/audio/<note_str>.wav  16 kHz mono

``root`` may hold any of ``nsynth-train``, ``nsynth-valid`` and ``nsynth-test``, or be one
of them. Classes are the 11 instrument families in NSynth's id order
(:data:`NSYNTH_FAMILIES`); ``load_nsynth(root, label="source")`` labels by the 3
instrument sources instead (:data:`NSYNTH_SOURCES`).
"""

from __future__ import annotations

import json
from pathlib import Path

from embedstore.datasets.base import Dataset, Item
from embedstore.errors import InputError

#: NSynth's instrument families, in the order of ``instrument_family``.
NSYNTH_FAMILIES = ["bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed",
                   "string", "synth_lead", "vocal"]
#: NSynth's instrument sources, in the order of ``instrument_source``.
NSYNTH_SOURCES = ["acoustic", "electronic", "synthetic"]

NSYNTH_SPLITS = ("train", "valid", "test")
_LABELS = {"family": ("instrument_family", NSYNTH_FAMILIES),
           "source": ("instrument_source", NSYNTH_SOURCES)}
_NUMBERS = ("pitch", "velocity", "sample_rate")


def nsynth_split_folders(root: Path) -> list[tuple[str, Path]]:
    """``(split, folder)`` of every split folder under ``root`` (or ``root`` itself)."""
    if (root / "examples.json").is_file():
        split = root.name.removeprefix("nsynth-")
        return [(split if split in NSYNTH_SPLITS else root.name, root)]
    found = [(split, root / f"nsynth-{split}") for split in NSYNTH_SPLITS
             if (root / f"nsynth-{split}" / "examples.json").is_file()]
    if not found:
        raise InputError(f"no NSynth split under {root} (nsynth-train/valid/test with examples.json)")
    return found


def load_nsynth(root: str | Path, label: str = "family") -> Dataset:
    """Read NSynth's json/wav release.

    Parameters
    ----------
    root : path
        A folder holding ``nsynth-<split>/`` folders, or one of them.
    label : {"family", "source"}
        Class of each note: its instrument family (11 classes) or source (3 classes).

    Returns
    -------
    Dataset
        Items split by split (train, valid, test), in ``examples.json`` order; id = the
        ``note_str``. Metadata: ``split``, ``instrument`` (``instrument_str``),
        ``family``, ``source``, ``pitch``, ``velocity``, ``sample_rate`` and
        ``qualities`` (the ``qualities_str`` joined by ``;``).

    Raises
    ------
    InputError
        No split folder; ``examples.json`` unreadable or malformed; a family or source
        id that disagrees with its name; notes whose audio is missing.
    """
    if label not in _LABELS:
        raise InputError(f"NSynth labels are 'family' or 'source', not {label!r}")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise InputError(f"NSynth folder {root} does not exist")
    items = []
    for split, folder in nsynth_split_folders(root):
        items += [_item(folder, split, note, entry, label) for note, entry in _examples(folder).items()]
    missing = [item.path for item in items if not item.path.exists()]
    if missing:
        raise InputError(f"{len(missing)} NSynth note(s) have no audio, first: {missing[0]}")
    name = "nsynth" if label == "family" else "nsynth-source"
    return Dataset(name, root, list(_LABELS[label][1]), items, multilabel=False)


def _examples(folder: Path) -> dict:
    path = folder / "examples.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if not isinstance(doc, dict) or not all(isinstance(v, dict) for v in doc.values()):
        raise InputError(f"{path} must map each note_str to its attributes")
    return doc


def _named(entry: dict, key: str, names: list[str], where: str) -> str:
    """The name of ``entry[key + '_str']``, checked against its id ``entry[key]``."""
    name, index = entry.get(f"{key}_str"), entry.get(key)
    if name not in names or (index is not None and index != names.index(name)):
        raise InputError(f"{where}: {key} {index!r} / {name!r} is not one of NSynth's ({', '.join(names)})")
    return name


def _item(folder: Path, split: str, note: str, entry: dict, label: str) -> Item:
    where = f"{folder / 'examples.json'} note {note!r}"
    family = _named(entry, "instrument_family", NSYNTH_FAMILIES, where)
    source = _named(entry, "instrument_source", NSYNTH_SOURCES, where)
    try:
        numbers = {key: int(entry[key]) for key in _NUMBERS}
    except (KeyError, TypeError, ValueError):
        raise InputError(f"{where}: {', '.join(_NUMBERS)} must be integers") from None
    metadata = {"split": split, "instrument": str(entry.get("instrument_str", "")),
                "family": family, "source": source, **numbers,
                "qualities": ";".join(entry.get("qualities_str") or [])}
    return Item(note, folder / "audio" / f"{note}.wav", (family if label == "family" else source,), metadata)
