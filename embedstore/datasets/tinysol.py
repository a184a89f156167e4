"""TinySOL (Cella et al., 2020): 2,913 single notes of 14 instruments.

Read from its folder layout ``TinySOL/<Family>/<Instrument>/ordinario/<file>`` with
``TinySOL_metadata.csv`` when it is found, file names otherwise.

Class order is fixed so that a class index means the same thing in every store of the
dataset: its 14 instruments in the order of the TinySOL paper's table (brass, keyboards,
strings, winds), named in lower case as the study's prompts name them
(:data:`TINYSOL_CLASSES`).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from embedstore.datasets.base import AUDIO_SUFFIXES, Dataset, Item, audio_files, reading_csv
from embedstore.datasets.mirdata_support import (
    check_present,
    index_filename,
    mirdata_available,
    mirdata_tracks,
    open_mirdata,
    source,
)
from embedstore.datasets.pitch import midi_pitch
from embedstore.errors import InputError

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
    files = audio_files(audio_root)
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


def read_tinysol(root: str | Path) -> Dataset:
    """TinySOL through mirdata when it is installed and ``root`` holds mirdata's index
    (``tinysol_index_6.0.json``, mirdata's layout), else through :func:`load_tinysol`.

    Both give the same items, classes and metadata columns; ``Dataset.source`` says
    which read it.
    """
    if mirdata_available():
        local = Path(root).expanduser().resolve()
        if (local / index_filename("tinysol")).is_file():
            return load_tinysol_mirdata(local)
    return load_tinysol(root)


def load_tinysol_mirdata(root: str | Path) -> Dataset:
    """Read TinySOL through mirdata's index and metadata parser.

    ``root`` is mirdata's data home: ``audio/...`` as the index lists it,
    ``annotation/TinySOL_metadata.csv`` and the index. Items follow the index's order
    sorted by path, so they match :func:`load_tinysol` on the same files.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise InputError(f"TinySOL folder {root} does not exist")
    mir = open_mirdata("tinysol", root)
    items = sorted((_mirdata_item(track) for track in mirdata_tracks(mir)), key=lambda item: item.path)
    check_present(items, "TinySOL", root)
    dataset = Dataset("tinysol", root, list(TINYSOL_CLASSES), items, multilabel=False)
    dataset.source = source("tinysol", mir)
    return dataset


def _mirdata_item(track) -> Item:
    """One mirdata TinySOL track as our item: file-name facts, then mirdata's CSV facts."""
    stem = Path(track.audio_path).stem
    metadata = _metadata_from_name(stem)
    try:
        fold = track.split  # mirdata's name for the CSV's Fold
    except AttributeError:  # mirdata: "This Track does not have metadata"
        facts = {}
    else:
        facts = {"fold": fold, "family": track.family, "instrument_code": track.instrument_abbr,
                 "technique": track.technique_abbr, "pitch": track.pitch, "midi_pitch": track.pitch_id,
                 "dynamics": track.dynamics, "dynamics_id": track.dynamics_id,
                 "instance_id": track.instance_id, "string_id": track.string_id,
                 "retuned": None if track.is_resampled is None else int(track.is_resampled)}
    metadata.update({key: value for key, value in facts.items() if value is not None})
    code = metadata.get("instrument_code")
    if code not in _TINYSOL:
        raise InputError(f"cannot tell the TinySOL instrument of {track.audio_path}")
    name, family, _ = _TINYSOL[code]
    metadata.setdefault("family", family)
    metadata["instrument"] = name
    return Item(stem, Path(track.audio_path), (name,), _tinysol_columns(metadata))


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
    with reading_csv(csv_path), open(csv_path, newline="", encoding="utf-8-sig") as f:
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
