"""Stores from arrays computed elsewhere (``embedstore import``), and back (``export``).

A paper's release is typically a few ``.npy`` files plus a CSV of items; these functions
turn such files into a store, checking every count, class and value on the way, and
write any space of a store back out as ``PREFIX.npy`` + ``PREFIX.csv``.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from embedstore.errors import InputError, StoreExists
from embedstore.store.core import check_unique_ids, create_store, open_store
from embedstore.store.fileio import write_atomic_many


def read_csv(path: str | os.PathLike) -> tuple[list[str], list[dict[str, str]]]:
    """Read a CSV with a header row: ``(columns, rows)``."""
    path = _existing(path, "items CSV")
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            columns = list(reader.fieldnames or [])
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from None
    if not columns:
        raise InputError(f"{path}: empty CSV (no header row)")
    return columns, rows


def read_lines(path: str | os.PathLike, what: str) -> list[str]:
    """Non-empty lines of a UTF-8 text file, stripped of their line ends."""
    path = _existing(path, what)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path}: {what} is not UTF-8 text") from None
    lines = [line.strip() for line in lines if line.strip()]
    if not lines:
        raise InputError(f"{path}: {what} is empty")
    return lines


def load_matrix(path: str | os.PathLike, what: str) -> np.ndarray:
    """Load a 2-D finite numeric ``.npy`` array, without ever unpickling."""
    path = _existing(path, what)
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except ValueError as exc:
        raise InputError(f"{path}: {what} is not a plain numeric .npy array ({exc})") from None
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: {what} is not a readable .npy file ({exc})") from None
    if arr.ndim != 2:
        raise InputError(f"{path}: {what} must be 2-D (rows x dims), got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{path}: {what} must be numeric, got dtype {arr.dtype}")
    arr = np.asarray(arr)
    if not np.isfinite(arr).all():
        raise InputError(f"{path}: {what} holds NaN or inf values")
    return arr


def _existing(path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    return path


def parse_assignment(text: str, sep: str, what: str) -> tuple[str, str]:
    """Split ``KEY<sep>VALUE`` (e.g. ``joint=audio.npy``) or raise a clear error."""
    key, found, value = text.partition(sep)
    if not found or not key or not value:
        raise InputError(f"{what} must look like NAME{sep}VALUE, got {text!r}")
    return key, value


def import_store(
    out: str | os.PathLike,
    *,
    items_csv: str | os.PathLike,
    id_column: str,
    label_column: str | None = None,
    onehot: bool = False,
    classes_file: str | os.PathLike | None = None,
    audio: Sequence[str] = (),
    prompts: Sequence[str] = (),
    prompt_classes: Sequence[str] = (),
    text: Sequence[str] = (),
    captions: Sequence[str] = (),
    model: str = "unknown",
    dataset: str = "unknown",
    dtype: str = "float32",
    overwrite: bool = False,
) -> Path:
    """Build a store from an items CSV and ``.npy`` arrays (see ``embedstore import --help``).

    ``audio`` entries are ``SPACE=FILE.npy``; ``prompts`` are ``SET=FILE.txt``;
    ``prompt_classes`` are ``SET=FILE.txt`` naming each prompt line's class; ``captions``
    are ``SET=FILE.csv`` caption sets (columns ``id,caption``, several rows per id
    allowed, each row one caption of that item); ``text`` entries are
    ``SET:SPACE=FILE.npy``, row i the vector of prompt (or caption row) i.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise StoreExists(f"{out} exists; pass --overwrite to replace it")
    columns, rows = read_csv(items_csv)
    if id_column not in columns:
        raise InputError(f"{items_csv}: no id column {id_column!r} (columns: {', '.join(columns)})")
    if onehot == (label_column is not None):
        raise InputError("give exactly one of --label-column or --onehot")
    ids = [r[id_column] for r in rows]
    if not ids:
        raise InputError(f"{items_csv}: no items")
    check_unique_ids(ids, str(items_csv))
    path_column = "path" if "path" in columns and id_column != "path" else None
    paths = [r[path_column] for r in rows] if path_column else None

    if onehot:
        classes = [c for c in columns if c != id_column and c != path_column]
        matrix = np.zeros((len(rows), len(classes)), dtype=np.uint8)
        for i, r in enumerate(rows):
            for j, c in enumerate(classes):
                value = (r[c] or "").strip()
                if value not in ("0", "1", "0.0", "1.0"):
                    raise InputError(f"{items_csv}: row {i + 2}, column {c!r}: one-hot value must be 0 or 1, got {value!r}")
                matrix[i, j] = value.startswith("1")
        label_kw = {"label_matrix": matrix}
        meta_columns = []
    else:
        if label_column not in columns:
            raise InputError(f"{items_csv}: no label column {label_column!r} (columns: {', '.join(columns)})")
        names = [r[label_column] for r in rows]
        classes = read_lines(classes_file, "classes file") if classes_file else sorted(set(names))
        if len(set(classes)) != len(classes):
            raise InputError(f"{classes_file}: classes file lists a class twice")
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(names) - set(index))
        if unknown:
            raise InputError(f"{items_csv}: label {unknown[0]!r} is not in the classes file ({len(unknown)} unknown)")
        label_kw = {"labels": np.array([index[n] for n in names], dtype=np.int32)}
        meta_columns = [c for c in columns if c not in (id_column, label_column, path_column)]
    metadata = {c: [r[c] for r in rows] for c in meta_columns}

    audio_arrays = {}
    for spec in audio:
        space, file = parse_assignment(spec, "=", "--audio")
        arr = load_matrix(file, f"audio space {space!r}")
        if arr.shape[0] != len(ids):
            raise InputError(f"{file}: {arr.shape[0]} rows for {len(ids)} items")
        audio_arrays[space] = arr

    class_of_line = {}
    for spec in prompt_classes:
        name, file = parse_assignment(spec, "=", "--prompt-classes")
        class_of_line[name] = read_lines(file, "prompt classes file")
    prompt_sets = {}
    for spec in prompts:
        name, file = parse_assignment(spec, "=", "--prompts")
        lines = read_lines(file, "prompts file")
        if name in class_of_line:
            labels = class_of_line.pop(name)
            if len(labels) != len(lines):
                raise InputError(f"prompt set {name!r}: {len(labels)} class lines for {len(lines)} prompts")
            unknown = [c for c in labels if c not in classes]
            if unknown:
                raise InputError(f"prompt set {name!r}: unknown class {unknown[0]!r}")
            cls = [classes.index(c) for c in labels]
        else:
            if len(lines) != len(classes):
                raise InputError(
                    f"prompt set {name!r}: {len(lines)} prompts for {len(classes)} classes; "
                    f"give --prompt-classes {name}=FILE to name each line's class"
                )
            cls = list(range(len(classes)))
        prompt_sets[name] = {"prompts": lines, "classes": cls, "embeddings": {}, "source": f"imported from {Path(file).name}"}
    if class_of_line:
        raise InputError(f"--prompt-classes names prompt set {next(iter(class_of_line))!r} that no --prompts gives")
    for spec in captions:
        name, file = parse_assignment(spec, "=", "--captions")
        if name in prompt_sets:
            raise InputError(f"--captions {name}: a prompt set of that name is given twice")
        prompt_sets[name] = read_caption_csv(file, ids)
    for spec in text:
        target, file = parse_assignment(spec, "=", "--text")
        name, space = parse_assignment(target, ":", "--text target")
        if name not in prompt_sets:
            raise InputError(f"--text {target}: no prompt set {name!r} (give --prompts {name}=FILE.txt)")
        arr = load_matrix(file, f"text {name}:{space}")
        if arr.shape[0] != len(prompt_sets[name]["prompts"]):
            raise InputError(f"{file}: {arr.shape[0]} rows for {len(prompt_sets[name]['prompts'])} prompts")
        prompt_sets[name]["embeddings"][space] = arr

    provenance = {"source": "embedstore import", "items_csv": str(items_csv),
                  "files": list(audio) + list(text) + list(captions)}
    with create_store(out, model=model, dataset=dataset, classes=classes, provenance=provenance, overwrite=overwrite) as w:
        w.set_items(ids, paths, metadata=metadata, **label_kw)
        for space, arr in audio_arrays.items():
            w.add_audio(space, arr, dtype=dtype)
        for name, ps in prompt_sets.items():
            w.add_prompt_set(name, ps["prompts"], ps["classes"], ps["embeddings"], items=ps.get("items"),
                             source=ps.get("source"), dtype=dtype)
    return out


def read_caption_csv(path, ids: list[str]) -> dict:
    """A caption set from a CSV with columns ``id,caption``: one caption per row, tied to its item.

    Returns the prompt-set dict of :func:`import_store` (``prompts``, ``classes`` all -1,
    ``items`` the item row of each caption, empty ``embeddings``).
    """
    columns, rows = read_csv(path)
    missing = [c for c in ("id", "caption") if c not in columns]
    if missing:
        raise InputError(f"{path}: a caption CSV needs the columns id,caption (missing {', '.join(missing)})")
    row_of = {item_id: row for row, item_id in enumerate(ids)}
    unknown = sorted({r["id"] for r in rows} - set(row_of))
    if unknown:
        raise InputError(f"{path}: caption for unknown item id {unknown[0]!r} ({len(unknown)} unknown ids)")
    empty = [i + 2 for i, r in enumerate(rows) if not (r["caption"] or "").strip()]
    if empty:
        raise InputError(f"{path}: row {empty[0]} has an empty caption")
    if not rows:
        raise InputError(f"{path}: no captions")
    return {"prompts": [r["caption"] for r in rows], "classes": [-1] * len(rows),
            "items": np.array([row_of[r["id"]] for r in rows], dtype=np.int64), "embeddings": {},
            "source": f"captions imported from {Path(path).name}"}


def export_space(
    store_path: str | os.PathLike,
    out_prefix: str | os.PathLike,
    *,
    audio: str | None = None,
    text: str | None = None,
) -> tuple[Path, Path]:
    """Write one space of a store as ``PREFIX.npy`` and ``PREFIX.csv``.

    ``audio`` names an audio space (CSV rows: item id, path); ``text`` is
    ``SET:SPACE`` (CSV rows: prompt, class). Both files appear only when both are complete.
    """
    if (audio is None) == (text is None):
        raise InputError("give exactly one of --audio SPACE or --text SET:SPACE")
    prefix = Path(out_prefix)
    npy, csv_path = Path(f"{prefix}.npy"), Path(f"{prefix}.csv")
    with open_store(store_path) as st:
        if audio is not None:
            vectors = st.audio(audio)
            header, rows = ("id", "path"), zip(st.item_ids, st.item_paths)
        else:
            name, space = parse_assignment(text, ":", "--text")
            ps = st.prompt_set(name)
            vectors = st.text(name, space)
            names = [st.classes[c] if c >= 0 else "" for c in ps.classes]
            header, rows = ("prompt", "class"), zip(ps.prompts, names)
        rows = list(rows)
    def write_csv(fh):
        import io

        text_fh = io.TextIOWrapper(fh, encoding="utf-8", newline="")
        writer = csv.writer(text_fh)
        writer.writerow(header)
        writer.writerows(rows)
        text_fh.flush()
        text_fh.detach()

    if not prefix.parent.exists():
        raise InputError(f"{prefix.parent}: no such directory")
    # Both files or neither: a failed .csv must not leave a new .npy beside an old .csv.
    write_atomic_many({npy: lambda fh: np.save(fh, vectors, allow_pickle=False), csv_path: write_csv})
    return npy, csv_path
