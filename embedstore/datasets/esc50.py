"""ESC-50 (Piczak, 2015): 2,000 five-second environmental sounds in 50 classes.

Read from its published layout (the GitHub repository ``karolpiczak/ESC-50``)::

    ESC-50/audio/1-100032-A-0.wav     {fold}-{freesound clip}-{take}-{target}.wav
    ESC-50/meta/esc50.csv             filename,fold,target,category,esc10,src_file,take

Classes are the 50 categories ordered by ``target`` (:data:`ESC50_CLASSES`), all listed
even when a tree holds only some of them, so class indices agree between stores.
"""

from __future__ import annotations

import csv
from pathlib import Path

from embedstore.datasets.base import Dataset, Item, reading_csv
from embedstore.errors import InputError

#: ESC-50's categories; the class index is the CSV's ``target``.
ESC50_CLASSES = [
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow",
    "rain", "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops",
    "wind", "pouring_water", "toilet_flush", "thunderstorm", "crying_baby", "sneezing",
    "clapping", "breathing", "coughing", "footsteps", "laughing", "brushing_teeth", "snoring",
    "drinking_sipping", "door_wood_knock", "mouse_click", "keyboard_typing",
    "door_wood_creaks", "can_opening", "washing_machine", "vacuum_cleaner", "clock_alarm",
    "clock_tick", "glass_breaking", "helicopter", "chainsaw", "siren", "car_horn", "engine",
    "train", "church_bells", "airplane", "fireworks", "hand_saw",
]

ESC50_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")


def esc50_folder(root: Path) -> Path:
    """The folder holding ``meta/esc50.csv``: ``root`` or the ``ESC-50-master`` a
    GitHub archive unpacks to inside it."""
    for folder in (root, root / "ESC-50-master", root / "ESC-50"):
        if (folder / "meta" / "esc50.csv").is_file():
            return folder
    raise InputError(f"no meta/esc50.csv under {root} (ESC-50's layout: audio/*.wav and meta/esc50.csv)")


def load_esc50(root: str | Path) -> Dataset:
    """Read ESC-50 from its folder.

    Parameters
    ----------
    root : path
        The ESC-50 folder (holding ``audio/`` and ``meta/``), or the folder holding
        ``ESC-50-master/``.

    Returns
    -------
    Dataset
        Items in CSV order; id = the file name without ``.wav``; one label, the
        category. Metadata: ``fold`` (1-5, the official cross-validation folds),
        ``target`` (the class index), ``esc10`` (1 for the ESC-10 subset), ``src_file``
        (the Freesound clip) and ``take``.

    Raises
    ------
    InputError
        No ``meta/esc50.csv``; a column missing; a malformed number; a target outside
        0..49 or whose category is not ESC-50's; files listed but missing.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise InputError(f"ESC-50 folder {root} does not exist")
    folder = esc50_folder(root)
    csv_path = folder / "meta" / "esc50.csv"
    with reading_csv(csv_path), open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        absent = [c for c in ESC50_COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise InputError(f"{csv_path} lacks column(s) {', '.join(absent)}")
        items = [_item(folder, csv_path, line, row) for line, row in enumerate(reader, start=2)]
    if not items:
        raise InputError(f"{csv_path} lists no clips")
    missing = [item.path for item in items if not item.path.exists()]
    if missing:
        raise InputError(f"{len(missing)} clip(s) listed in {csv_path} are missing, first: {missing[0]}")
    return Dataset("esc50", folder, list(ESC50_CLASSES), items, multilabel=False)


def _item(folder: Path, csv_path: Path, line: int, row: dict) -> Item:
    try:
        fold, target = int(row["fold"]), int(row["target"])
    except ValueError:
        raise InputError(f"{csv_path} line {line}: fold and target must be integers") from None
    category = row["category"].strip()
    if not 0 <= target < len(ESC50_CLASSES) or ESC50_CLASSES[target] != category:
        raise InputError(f"{csv_path} line {line}: target {target} with category {category!r} "
                         f"is not an ESC-50 class")
    filename = row["filename"].strip()
    metadata = {"fold": fold, "target": target, "esc10": int(row["esc10"].strip() == "True"),
                "src_file": row["src_file"].strip(), "take": row["take"].strip()}
    return Item(Path(filename).stem, folder / "audio" / filename, (category,), metadata)
