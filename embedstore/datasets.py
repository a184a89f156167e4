"""Dataset readers: a dataset is a list of plain items (id, audio path, labels, metadata).

Three datasets are known to :func:`load_dataset`:

- ``tinysol``: TinySOL (Cella et al., 2020), read from its folder layout
  ``TinySOL/<Family>/<Instrument>/ordinario/<file>`` with ``TinySOL_metadata.csv`` when it is
  found, file names otherwise (:func:`load_tinysol`);
- ``notes``: the TinySOL-like notes bundled in ``data/notes`` (same layout, FLAC files; see
  ``data/notes/make_notes.py``), read by the same code;
- ``folder``: any folder of audio files with a CSV of ``path,label`` rows (:func:`load_folder`).

Class order is fixed so that a class index means the same thing in every store of a dataset.
TinySOL's classes are its 14 instruments in the order of the TinySOL paper's table (brass,
keyboards, strings, winds), named in lower case as the study's prompts name them
(:data:`TINYSOL_CLASSES`). Folder datasets have their labels sorted.

Examples
--------
>>> ds = load_dataset("notes")
>>> ds.classes[:3]
['bass tuba', 'french horn', 'trombone']
>>> ds.items[0].metadata["dynamics"]
'ff'
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedstore.errors import InputError
from embedstore.resources import DATA_DIR

#: File suffixes read as audio when a dataset's folder is scanned.
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")

# code -> (class name, family, TinySOL folder name), in the TinySOL paper's table order
_TINYSOL = {
    "BTb": ("bass tuba", "Brass", "Bass_Tuba"),
    "Hn": ("french horn", "Brass", "French_Horn"),
    "Tbn": ("trombone", "Brass", "Trombone"),
    "TpC": ("trumpet in c", "Brass", "Trumpet_C"),
    "Acc": ("accordion", "Keyboards", "Accordion"),
    "Cb": ("contrabass", "Strings", "Contrabass"),
    "Vn": ("violin", "Strings", "Violin"),
    "Va": ("viola", "Strings", "Viola"),
    "Vc": ("violoncello", "Strings", "Violoncello"),
    "Bn": ("bassoon", "Winds", "Bassoon"),
    "ClBb": ("clarinet in b-flat", "Winds", "Clarinet_Bb"),
    "Fl": ("flute", "Winds", "Flute"),
    "Ob": ("oboe", "Winds", "Oboe"),
    "ASax": ("alto saxophone", "Winds", "Sax_Alto"),
}

#: TinySOL's 14 classes; a class index is a position in this list.
TINYSOL_CLASSES = [name for name, _, _ in _TINYSOL.values()]

TINYSOL_METADATA = "TinySOL_metadata.csv"

#: TinySOL's dynamics ids (the convention of its metadata and of mirdata).
DYNAMICS_IDS = {"pp": 0, "p": 1, "mf": 2, "f": 3, "ff": 4}

_PITCH = re.compile(r"^([A-G]#?)(-?\d+)$")
_PITCH_CLASSES = {"C": 0, "C#": 1, "D": 2, "D#": 3, "E": 4, "F": 5, "F#": 6, "G": 7,
                  "G#": 8, "A": 9, "A#": 10, "B": 11}
_PITCH_NAMES = list(_PITCH_CLASSES)


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
    """

    id: str
    path: Path
    labels: tuple[str, ...]
    metadata: dict[str, str | int | float]


@dataclass
class Dataset:
    """A named list of items with a fixed class order.

    Attributes
    ----------
    name : str
        ``"tinysol"``, ``"notes"`` or ``"folder"``.
    root : Path
        The folder the items were read from.
    classes : list[str]
        Class names in their fixed order; a class index is a position here.
    items : list[Item]
    multilabel : bool
        Whether an item may carry several labels.
    """

    name: str
    root: Path
    classes: list[str]
    items: list[Item]
    multilabel: bool

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

    def labels(self) -> np.ndarray:
        """``(n_items,)`` int32 class indices; single-label datasets only."""
        if self.multilabel:
            raise InputError(f"dataset {self.name!r} is multi-label; use its label matrix")
        return np.argmax(self.label_matrix(), axis=1).astype(np.int32)

    def metadata_columns(self) -> dict[str, np.ndarray]:
        """Metadata as one array per column (int64, float64 or str), in item order."""
        if not self.items:
            return {}
        return {key: np.array([item.metadata[key] for item in self.items])
                for key in self.items[0].metadata}


def default_notes_root() -> Path:
    """The bundled notes, ``data/notes`` at the top of the repository."""
    return DATA_DIR / "notes"


def load_dataset(name: str, root: str | Path | None = None,
                 labels: str | Path | None = None) -> Dataset:
    """Load a dataset by name.

    Parameters
    ----------
    name : {"tinysol", "notes", "folder"}
    root : path, optional
        The dataset's folder; ``notes`` defaults to :func:`default_notes_root`.
    labels : path, optional
        ``folder`` only: the labels CSV (default ``<root>/labels.csv``).

    Returns
    -------
    Dataset
    """
    if name == "notes":
        dataset = load_tinysol(default_notes_root() if root is None else root)
        dataset.name = "notes"
        return dataset
    if name in ("tinysol", "folder") and root is None:
        raise InputError(f"dataset {name!r} needs a root folder")
    if name == "tinysol":
        return load_tinysol(root)
    if name == "folder":
        return load_folder(root, Path(root) / "labels.csv" if labels is None else labels)
    raise InputError(f"unknown dataset {name!r}; known: tinysol, notes, folder")


# ---------------------------------------------------------------------------- TinySOL


def load_tinysol(root: str | Path) -> Dataset:
    """Read TinySOL (or the bundled notes) from its folder layout.

    Parameters
    ----------
    root : path
        The ``TinySOL`` audio folder or the folder that holds it. ``TinySOL_metadata.csv`` is
        looked for in ``root``, beside the audio folder and in ``root/annotation``.

    Returns
    -------
    Dataset
        Items sorted by path; id = file stem; labels = the instrument's class name.
        Metadata columns: ``instrument``, ``instrument_code``, ``family``, ``technique``,
        ``pitch``, ``midi_pitch``, ``dynamics``, ``dynamics_id``, ``instance``,
        ``instance_id``, ``string_id`` (0 where no string applies, else 1 = I),
        ``retuning`` (file-name marker, ``N`` when none), ``retuned`` (0/1) and ``fold``
        (-1 when the metadata CSV is absent). CSV values win over file-name values.

    Raises
    ------
    InputError
        Missing root, no audio, a file whose instrument cannot be told, CSV rows whose files
        are missing, or a CSV without a ``Path`` column.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise InputError(f"TinySOL folder {root} does not exist")
    audio_root = root / "TinySOL" if (root / "TinySOL").is_dir() else root
    files = _audio_files(audio_root)
    if not files:
        raise InputError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {audio_root}")
    by_stem: dict[str, Path] = {}
    for path in files:
        if path.stem in by_stem:
            raise InputError(f"two TinySOL files share the id {path.stem!r}: "
                             f"{by_stem[path.stem]} and {path}")
        by_stem[path.stem] = path

    csv_path = next((p for p in (root / TINYSOL_METADATA, audio_root.parent / TINYSOL_METADATA,
                                 root / "annotation" / TINYSOL_METADATA) if p.is_file()), None)
    rows = _read_tinysol_csv(csv_path, by_stem) if csv_path else {}

    items = []
    unknown = []
    for stem, path in by_stem.items():
        metadata = _metadata_from_name(stem)
        metadata.update(rows.get(stem, {}))
        code = metadata.get("instrument_code")
        if code not in _TINYSOL:
            unknown.append(path)
            continue
        name, family, _ = _TINYSOL[code]
        metadata.setdefault("family", family)
        metadata["instrument"] = name
        items.append(Item(stem, path, (name,), _tinysol_columns(metadata)))
    if unknown:
        raise InputError(f"cannot tell the TinySOL instrument of {len(unknown)} file(s), "
                         f"first: {unknown[0]}")
    return Dataset("tinysol", audio_root, list(TINYSOL_CLASSES), items, multilabel=False)


def _audio_files(folder: Path) -> list[Path]:
    """Audio files under ``folder``, sorted; hidden files (``._x.wav`` from macOS) skipped."""
    return sorted(p for p in folder.rglob("*")
                  if p.suffix.lower() in AUDIO_SUFFIXES and not p.name.startswith(".")
                  and p.is_file())


def _metadata_from_name(stem: str) -> dict:
    """What a TinySOL file name ``<Instr>-<tech>-<pitch>-<dyn>-<instance>-<retune>`` says."""
    fields = stem.split("-")
    if len(fields) != 6:
        return {}
    code, technique, pitch, dynamics, instance, retuning = fields
    metadata = {"instrument_code": code, "technique": technique, "pitch": pitch,
                "dynamics": dynamics, "instance": instance, "retuning": retuning,
                "retuned": int(retuning != "N")}
    if (midi := midi_pitch(pitch)) is not None:
        metadata["midi_pitch"] = midi
    if dynamics in DYNAMICS_IDS:
        metadata["dynamics_id"] = DYNAMICS_IDS[dynamics]
    if re.fullmatch(r"[1-4]c", instance):
        metadata["string_id"] = int(instance[0])
    elif re.fullmatch(r"alt[1-9]", instance):
        metadata["instance_id"] = int(instance[3:])
    return metadata


def midi_pitch(pitch: str) -> int | None:
    """MIDI number of a scientific pitch name with sharps (``"C4"`` -> 60), None if malformed."""
    match = _PITCH.match(pitch)
    if match is None:
        return None
    return 12 * (int(match.group(2)) + 1) + _PITCH_CLASSES[match.group(1)]


def pitch_name(midi: int) -> str:
    """Scientific pitch name with sharps, the inverse of :func:`midi_pitch` (60 -> ``"C4"``)."""
    return f"{_PITCH_NAMES[midi % 12]}{midi // 12 - 1}"


def _flag(text: str) -> int:
    return int(text.strip().lower() in ("true", "1", "yes"))


def _int(text: str) -> int:
    return int(float(text))  # the release writes some ids as "1.0"


# CSV column (normalised by _csv_key) -> (metadata key, parser)
_TINYSOL_CSV_COLUMNS = {
    "fold": ("fold", _int),
    "family": ("family", str),
    "instrument": ("instrument_code", str),  # "Instrument (abbr.)"
    "instrument in full": ("instrument_full", str),
    "instrument name": ("instrument_full", str),  # older releases
    "technique": ("technique", str),  # "Technique (abbr.)"
    "pitch": ("pitch", str),
    "pitch id": ("midi_pitch", _int),
    "dynamics": ("dynamics", str),
    "dynamics id": ("dynamics_id", _int),
    "instance id": ("instance_id", _int),
    "string id": ("string_id", _int),
    "needed digital retuning": ("retuned", _flag),
    "resampled": ("retuned", _flag),
}


def _csv_key(column: str) -> str:
    """Normalised column name: ``"Instrument (abbr.)"`` -> ``"instrument"``,
    ``"Instrument (in full)"`` -> ``"instrument in full"``."""
    column = column.strip().lower()
    if "(in full)" in column:
        column = column.replace("(in full)", "in full")
    return " ".join(re.sub(r"\([^)]*\)", "", column).split())


def _read_tinysol_csv(csv_path: Path, by_stem: dict[str, Path]) -> dict[str, dict]:
    """``{file stem: metadata}`` from TinySOL_metadata.csv, by column name.

    Rows are joined to files by stem, so the CSV's ``.wav`` paths also describe ``.flac``
    renderings of the same notes.
    """
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = {_csv_key(c): c for c in reader.fieldnames or []}
        if "path" not in columns:
            raise InputError(f"{csv_path} has no 'Path' column; cannot match rows to files")
        wanted = [(columns[key], name, parse) for key, (name, parse)
                  in _TINYSOL_CSV_COLUMNS.items() if key in columns]
        rows = {}
        missing = []
        for line, row in enumerate(reader, start=2):
            stem = Path((row[columns["path"]] or "").strip().replace("\\", "/")).stem
            if stem not in by_stem:
                missing.append(row[columns["path"]])
                continue
            metadata = {}
            for column, name, parse in wanted:
                text = (row[column] or "").strip()
                if not text:
                    continue
                try:
                    metadata[name] = parse(text)
                except ValueError:
                    raise InputError(f"{csv_path} line {line}: bad {column!r} value {text!r}")
            rows[stem] = _code_from_full_name(metadata)
    if missing:
        raise InputError(f"{len(missing)} file(s) listed in {csv_path} are missing, first: "
                         f"{missing[0]} (move the CSV away to read the files alone)")
    return rows


def _code_from_full_name(metadata: dict) -> dict:
    """Fill ``instrument_code`` from the full name when the CSV has no abbreviation column."""
    full = metadata.pop("instrument_full", None)
    if "instrument_code" not in metadata and full is not None:
        code = _CODE_BY_NAME.get(_name_key(full))
        if code is not None:
            metadata["instrument_code"] = code
    return metadata


def _name_key(name: str) -> str:
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


# every spelling of an instrument seen in TinySOL's CSV, folders and the study's prompts
_CODE_BY_NAME = {_name_key(spelling): code for code, (name, _, folder) in _TINYSOL.items()
                 for spelling in (code, name, folder)}
_CODE_BY_NAME["clarinet in bb"] = "ClBb"


def _tinysol_columns(metadata: dict) -> dict[str, str | int | float]:
    """The fixed TinySOL metadata columns, with defaults where neither source said anything."""
    return {
        "instrument": metadata["instrument"],
        "instrument_code": metadata["instrument_code"],
        "family": metadata["family"],
        "technique": metadata.get("technique", "ord"),
        "pitch": metadata.get("pitch", ""),
        "midi_pitch": metadata.get("midi_pitch", -1),
        "dynamics": metadata.get("dynamics", ""),
        "dynamics_id": metadata.get("dynamics_id", -1),
        "instance": metadata.get("instance", "N"),
        "instance_id": metadata.get("instance_id", 0),
        "string_id": metadata.get("string_id", 0),
        "retuning": metadata.get("retuning", "N"),
        "retuned": metadata.get("retuned", 0),
        "fold": metadata.get("fold", -1),
    }


# ---------------------------------------------------------------------------- folders


def load_folder(root: str | Path, labels_csv: str | Path) -> Dataset:
    """Read a folder of audio files labelled by a CSV.

    Parameters
    ----------
    root : path
        The folder the CSV's paths are relative to.
    labels_csv : path
        CSV with columns ``path`` and ``label``; several labels in one cell separated by
        ``;`` make the dataset multi-label. Other columns become metadata (int or float when
        every value of the column parses as one, else str).

    Returns
    -------
    Dataset
        Items in CSV order, id = the CSV path; classes sorted.

    Raises
    ------
    InputError
        Missing root or CSV, a CSV without ``path``/``label`` columns, no rows, a row
        without a label, a repeated path, or paths that do not exist.
    """
    root = Path(root).expanduser().resolve()
    labels_csv = Path(labels_csv).expanduser()
    if not root.is_dir():
        raise InputError(f"dataset folder {root} does not exist")
    if not labels_csv.is_file():
        raise InputError(f"labels CSV {labels_csv} does not exist")
    with open(labels_csv, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        absent = [c for c in ("path", "label") if c not in columns]
        if absent:
            raise InputError(f"{labels_csv} lacks column(s) {', '.join(absent)} "
                             f"(needs path,label)")
        extra = [c for key, c in columns.items() if key not in ("path", "label")]
        rows = list(reader)
    if not rows:
        raise InputError(f"{labels_csv} lists no files")

    seen: set[str] = set()
    entries = []
    missing = []
    for line, row in enumerate(rows, start=2):
        rel = (row[columns["path"]] or "").strip()
        labels = tuple(dict.fromkeys(  # drop repeats, keep order
            s.strip() for s in (row[columns["label"]] or "").split(";") if s.strip()))
        if not rel or not labels:
            raise InputError(f"{labels_csv} line {line} has no {'path' if not rel else 'label'}")
        if rel in seen:
            raise InputError(f"{labels_csv} lists {rel!r} twice")
        seen.add(rel)
        path = root / rel
        if not path.exists():  # a directory or unreadable file is the run's to record as failed
            missing.append(rel)
        entries.append((rel, path, labels, {c.strip(): (row[c] or "").strip() for c in extra}))
    if missing:
        raise InputError(f"{len(missing)} path(s) in {labels_csv} do not exist under {root}, "
                         f"first: {missing[0]}")

    columns_typed = _typed_columns([meta for *_, meta in entries])
    items = [Item(rel, path, labels, {k: columns_typed[k][i] for k in columns_typed})
             for i, (rel, path, labels, _) in enumerate(entries)]
    classes = sorted({label for _, _, labels, _ in entries for label in labels})
    multilabel = any(len(labels) > 1 for _, _, labels, _ in entries)
    return Dataset("folder", root, classes, items, multilabel)


def _typed_columns(rows: list[dict[str, str]]) -> dict[str, list]:
    """Each column as ints if every value parses as one, else floats, else the strings."""
    typed = {}
    for key in rows[0] if rows else []:
        values = [row[key] for row in rows]
        for parse in (int, float):
            try:
                typed[key] = [parse(v) for v in values]
                break
            except ValueError:
                continue
        else:
            typed[key] = values
    return typed
