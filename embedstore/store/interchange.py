"""Stores from arrays computed elsewhere (``embedstore import``), and back (``export``).

A paper's release is typically a few ``.npy`` files plus a CSV of items; these functions
turn such files into a store, checking every count, class, name and value on the way.
Export is import's inverse: :func:`export_store` writes a folder (items CSV with labels,
label mask and metadata, classes, prompt sets as ``class,prompt[,term][,item]`` CSVs,
every space as ``.npy``, the provenance, and ``import.json``) that ``embedstore import OUT
--from FOLDER`` turns back into the same store, element for element; what the folder
cannot hold is refused before anything is written. Vectors stream in row blocks both
ways: memory stays bounded whatever the size.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from embedstore.errors import InputError, StoreExists
from embedstore.store.core import check_unique_ids, create_store, open_store
from embedstore.store.elements import row_blocks
from embedstore.store.fileio import write_atomic, write_atomic_many
from embedstore.store.names import check_name, check_names, check_space_name
from embedstore.store.outputs import claimed_outputs, mark_folder, replace_folder

MANIFEST = "import.json"
EXPLICIT_ORDER = "--classes FILE, --prompt-classes SET=FILE, a class,prompt CSV (--prompts SET=FILE.csv) or --onehot"


# -- reading the release's files ---------------------------------------------------------


def read_csv(path: str | os.PathLike) -> tuple[list[str], list[dict[str, str]]]:
    """Read a CSV with a header row: ``(columns, rows)``.

    Refused in one line: an empty or duplicate header cell, a row with more or fewer cells
    than the header (blank lines are skipped), text that is not UTF-8. A UTF-8 BOM is dropped.
    """
    path = _existing(path, "CSV file")
    limit = csv.field_size_limit()
    try:
        # A cell may be as long as the file (a long caption, a big metadata value): the
        # csv module's default cap (128 KiB) would refuse what export wrote.
        csv.field_size_limit(max(limit, path.stat().st_size + 1))
        with open(path, newline="", encoding="utf-8-sig") as fh:
            lines = [(n, row) for n, row in enumerate(csv.reader(fh), start=1) if row]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from None
    finally:
        csv.field_size_limit(limit)
    if not lines:
        raise InputError(f"{path}: empty CSV (no header row)")
    header = lines[0][1]
    for i, cell in enumerate(header):
        if not cell.strip():
            raise InputError(f"{path}: header cell {i + 1} is empty; name every column (a trailing comma?)")
    try:
        columns = check_names(header, "CSV column")
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    rows = []
    for n, row in lines[1:]:
        if len(row) != len(columns):
            raise InputError(f"{path}: line {n} has {len(row)} cells, the header {len(columns)}")
        rows.append(dict(zip(columns, row)))
    return columns, rows


def read_lines(path: str | os.PathLike, what: str) -> list[str]:
    """Non-empty lines of a UTF-8 text file, stripped of their line ends."""
    path = _existing(path, what)
    try:
        # Only \n, \r\n and \r end a line: str.splitlines would also split a name at
        # U+2028 (a line separator), which names may hold.
        lines = re.split(r"\r\n|\r|\n", path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise InputError(f"{path}: {what} is not UTF-8 text") from None
    lines = [line.strip() for line in lines if line.strip()]
    if not lines:
        raise InputError(f"{path}: {what} is empty")
    return lines


class NpyMatrix:
    """A 2-D numeric ``.npy`` file read in row blocks, never unpickled, never read whole.

    Only the header is read on opening; :meth:`blocks` reads rows with plain file reads
    (no memory map, whose pages would count against the process).
    """

    def __init__(self, path: str | os.PathLike, what: str):
        self.path = _existing(path, what)
        self.what = what
        try:
            with open(self.path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)  # 3.0 differs only in text encoding
                shape, fortran, dtype = read_header(fh)
                self.offset = fh.tell()
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{self.path}: {what} is not a readable .npy file ({exc})") from None
        if dtype.hasobject:
            raise InputError(f"{self.path}: {what} is not a plain numeric .npy array (it holds objects)")
        if len(shape) != 2:
            raise InputError(f"{self.path}: {what} must be 2-D (rows x dims), got shape {shape}")
        if dtype.kind not in "fiu":
            raise InputError(f"{self.path}: {what} must be numeric, got dtype {dtype}")
        self.shape, self.dtype, self.fortran = tuple(shape), dtype, fortran
        needed = self.offset + shape[0] * shape[1] * dtype.itemsize
        if self.path.stat().st_size < needed:
            raise InputError(f"{self.path}: {what} is truncated (the header promises {shape})")

    def blocks(self):
        """Yield the rows as arrays of about 4 MiB each, in order."""
        rows, dim = self.shape
        if self.fortran:  # column-major: read through a memory map (rare; np.save of a transposed array)
            data = np.load(self.path, mmap_mode="r", allow_pickle=False)
            for start, stop in row_blocks(rows, dim * self.dtype.itemsize):
                yield np.ascontiguousarray(data[start:stop])
            return
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            for start, stop in row_blocks(rows, dim * self.dtype.itemsize):
                buffer = bytearray((stop - start) * dim * self.dtype.itemsize)
                fh.readinto(buffer)
                yield np.frombuffer(buffer, dtype=self.dtype).reshape(stop - start, dim)

    def check_finite(self) -> None:
        """Refuse NaN or inf anywhere, reading block by block."""
        if any(not np.isfinite(block).all() for block in self.blocks()):
            raise InputError(f"{self.path}: {self.what} holds NaN or inf values")

    def read(self) -> np.ndarray:
        """The whole array (for small ones: prompt vectors)."""
        blocks = list(self.blocks())
        return np.concatenate(blocks) if blocks else np.zeros(self.shape, self.dtype)


def load_matrix(path: str | os.PathLike, what: str) -> np.ndarray:
    """Load a small 2-D finite numeric ``.npy`` array, without ever unpickling."""
    npy = NpyMatrix(path, what)
    npy.check_finite()
    return npy.read()


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


# -- import --------------------------------------------------------------------------------


@dataclass
class _PromptSet:
    prompts: list[str]
    classes: list[int]
    terms: list[str] | None = None
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)
    items: np.ndarray | None = None  # a caption set: the item row of each caption
    source: str | None = None


def import_store(
    out: str | os.PathLike,
    *,
    items_csv: str | os.PathLike,
    id_column: str,
    label_column: str | None = None,
    onehot: bool = False,
    multilabel: bool = False,
    classes_file: str | os.PathLike | None = None,
    audio: Sequence[str] = (),
    prompts: Sequence[str] = (),
    prompt_classes: Sequence[str] = (),
    text: Sequence[str] = (),
    extra_spaces: Sequence[str] = (),
    captions: Sequence[str] = (),
    model: str = "unknown",
    dataset: str = "unknown",
    dtype: str = "float32",
    column_types: dict[str, str] | None = None,
    failed_csv: str | os.PathLike | None = None,
    path_column: str | None = None,
    partial_labels: bool = False,
    sources: dict[str, str] | None = None,
    allow_empty: bool = False,
    provenance: dict | None = None,
    record_host: bool = False,
    overwrite: bool = False,
) -> Path:
    """Build a store from an items CSV and ``.npy`` arrays (see ``embedstore import --help``).

    ``audio`` entries are ``SPACE=FILE.npy``; ``prompts`` are ``SET=FILE.txt`` (one prompt
    per line) or ``SET=FILE.csv`` (columns ``class``, ``prompt``, optionally ``term``);
    ``prompt_classes`` are ``SET=FILE.txt`` naming each prompt line's class; ``captions``
    are ``SET=FILE.csv`` caption sets (columns ``id,caption``, several rows per id allowed,
    each row one caption of that item); ``text`` entries are ``SET:SPACE=FILE.npy``, row i
    the vector of prompt (or caption row) i. Spaces are those the spec names (``joint``,
    ``prejoint``) or listed in ``extra_spaces``.

    Labels: ``label_column`` names each item's class; ``onehot`` reads 0/1 class columns
    (every column but id and path, or those ``classes_file`` lists), giving a single-label
    store when every row has exactly one 1 and a multi-label one otherwise
    (``multilabel`` forces multi-label). A prompt text file maps its lines to classes only
    through an explicit order: ``classes_file``, ``prompt_classes`` or the one-hot columns.

    ``dtype``: ``float32``, ``float16``, or ``source`` (float16 arrays stay float16, the rest
    become float32). ``column_types`` maps metadata columns to numpy dtypes (default: text).
    ``failed_csv``: a ``path,reason`` CSV of items that could not be embedded.
    ``path_column`` names the column of item paths (default: ``path`` when there is one).
    ``partial_labels`` (with ``onehot``): an empty one-hot cell is a pair with no label;
    the store is multi-label and gets a label mask. A prompt CSV with an ``item`` column
    (each row an item id) is a caption set. ``sources`` gives prompt sets their
    ``source`` phrase. ``allow_empty`` accepts an items CSV and prompt CSVs without rows
    (a text-only store, as ``export`` writes it). ``provenance`` replaces the record of
    this import as the store's provenance (``import --from`` passes the exported one).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise StoreExists(f"{out} exists; pass --overwrite to replace it")
    if dtype not in ("float32", "float16", "source"):
        raise InputError(f"dtype must be float32, float16 or source, not {dtype!r}")
    columns, rows = read_csv(items_csv)
    if id_column not in columns:
        raise InputError(f"{items_csv}: no id column {id_column!r} (columns: {', '.join(columns)})")
    if onehot == (label_column is not None):
        raise InputError("give exactly one of --label-column or --onehot")
    if partial_labels and not onehot:
        raise InputError("partial labels are empty one-hot cells: give --onehot with --partial-labels")
    ids = [r[id_column] for r in rows]
    if not ids and not allow_empty:
        raise InputError(f"{items_csv}: no items")
    check_unique_ids(ids, str(items_csv))
    if path_column is None:
        path_column = "path" if "path" in columns and id_column != "path" else None
    elif path_column not in columns or path_column == id_column:
        raise InputError(f"{items_csv}: no path column {path_column!r} besides the id column")
    paths = [r[path_column] for r in rows] if path_column else None
    given_order = read_lines(classes_file, "classes file") if classes_file else None
    if given_order is not None:
        given_order = check_names(given_order, "class")
    if onehot:
        classes, label_kw = _onehot_labels(items_csv, columns, rows, given_order, (id_column, path_column),
                                           multilabel, partial_labels)
        used = {id_column, path_column, *classes}
    else:
        classes, label_kw = _column_labels(items_csv, columns, rows, label_column, given_order, multilabel)
        used = {id_column, path_column, label_column}
    metadata = _metadata(columns, rows, used, column_types or {})
    explicit_order = onehot or given_order is not None

    audio_files = {}
    for spec in audio:
        space, file = parse_assignment(spec, "=", "--audio")
        space = check_space_name(space, extra_spaces)
        if space in audio_files:
            raise InputError(f"--audio gives space {space!r} twice")
        npy = NpyMatrix(file, f"audio space {space!r}")
        if npy.shape[0] != len(ids):
            raise InputError(f"{file}: {npy.shape[0]} rows for {len(ids)} items")
        npy.check_finite()
        audio_files[space] = npy
    prompt_sets = _prompt_sets(prompts, prompt_classes, classes, explicit_order, ids, allow_empty)
    for name, source in (sources or {}).items():
        if name not in prompt_sets:
            raise InputError(f"a source is given for prompt set {name!r}, which no --prompts gives")
        prompt_sets[name].source = str(source)
    for spec in captions:
        name, file = parse_assignment(spec, "=", "--captions")
        name = check_name(name, "caption set name", object_name=True)
        if name in prompt_sets:
            raise InputError(f"--captions {name}: a prompt set of that name is given twice")
        prompt_sets[name] = read_caption_csv(file, ids)
    for spec in text:
        target, file = parse_assignment(spec, "=", "--text")
        name, space = parse_assignment(target, ":", "--text target")
        space = check_space_name(space, extra_spaces)
        if name not in prompt_sets:
            raise InputError(f"--text {target}: no prompt set {name!r} (give --prompts {name}=FILE)")
        arr = load_matrix(file, f"text {name}:{space}")
        if arr.shape[0] != len(prompt_sets[name].prompts):
            raise InputError(f"{file}: {arr.shape[0]} rows for {len(prompt_sets[name].prompts)} prompts")
        prompt_sets[name].embeddings[space] = arr
    failed = _failed_rows(failed_csv) if failed_csv else []

    # Only file names: a store is shared, the folders it was made from are private.
    if provenance is None:
        provenance = {"source": "embedstore import", "items_csv": Path(items_csv).name,
                      "files": [_file_name(spec) for spec in list(audio) + list(text) + list(captions)]}
    with create_store(out, model=model, dataset=dataset, classes=classes, provenance=provenance,
                      overwrite=overwrite, record_host=record_host) as w:
        w.set_items(ids, paths, metadata=metadata, **label_kw)
        for space, npy in audio_files.items():
            with w.audio_sink(space, npy.shape[1], dtype=_storage_dtype(dtype, npy.dtype)) as sink:
                for block in npy.blocks():
                    sink.append(block)
        for name, ps in prompt_sets.items():
            dtypes = {_storage_dtype(dtype, arr.dtype) for arr in ps.embeddings.values()} or {"float32"}
            if len(dtypes) > 1:
                raise InputError(f"prompt set {name!r}: its spaces must share one dtype")
            w.add_prompt_set(name, ps.prompts, ps.classes, ps.embeddings, terms=ps.terms, items=ps.items,
                             source=ps.source, dtype=dtypes.pop())
        for path, reason in failed:
            w.add_failed(path, reason)
    return out


def _file_name(spec: str) -> str:
    """``SPACE=/home/me/x.npy`` -> ``SPACE=x.npy``."""
    key, _, value = spec.partition("=")
    return f"{key}={Path(value).name}"


def _storage_dtype(dtype: str, source: np.dtype) -> str:
    if dtype == "source":
        return "float16" if source == np.float16 else "float32"
    return dtype


def _onehot_labels(items_csv, columns, rows, given_order, skip, multilabel, partial=False):
    """Classes and labels from 0/1 columns; single-label when every row has exactly one 1.

    With ``partial``, an empty cell is an unlabelled pair: the labels are multi-label with
    a label mask (0 at the empty cells)."""
    if given_order is not None:
        missing = [c for c in given_order if c not in columns]
        if missing:
            raise InputError(f"{items_csv}: no one-hot column for class {missing[0]!r} of the classes file")
        classes = given_order
    else:
        classes = [c for c in columns if c not in skip]
    if not classes:
        raise InputError(f"{items_csv}: no one-hot class columns")
    matrix = np.zeros((len(rows), len(classes)), dtype=np.uint8)
    mask = np.ones_like(matrix)
    accepted = ("0", "1", "0.0", "1.0", "") if partial else ("0", "1", "0.0", "1.0")
    for i, r in enumerate(rows):
        for j, c in enumerate(classes):
            value = r[c].strip()
            if value not in accepted:
                empty = " (an empty cell is an unlabelled pair only with --partial-labels)" if not value else ""
                raise InputError(f"{items_csv}: row {i + 2}, column {c!r}: one-hot value must be 0 or 1, "
                                 f"got {value!r}{empty}")
            matrix[i, j] = value.startswith("1")
            mask[i, j] = value != ""
    if partial:
        return classes, {"label_matrix": matrix, "label_mask": mask}
    if not multilabel and (matrix.sum(axis=1) == 1).all():
        return classes, {"labels": matrix.argmax(axis=1).astype(np.int32)}
    return classes, {"label_matrix": matrix}


def _column_labels(items_csv, columns, rows, label_column, given_order, multilabel):
    if label_column not in columns:
        raise InputError(f"{items_csv}: no label column {label_column!r} (columns: {', '.join(columns)})")
    try:  # an empty label cell is refused; " violin " is violin
        names = [check_name(r[label_column], "label") for r in rows]
    except InputError as exc:
        raise InputError(f"{items_csv}: {exc}") from None
    classes = given_order if given_order is not None else sorted(set(names))
    classes = check_names(classes, "class")
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise InputError(f"{items_csv}: label {unknown[0]!r} is not in the classes file ({len(unknown)} unknown)")
    labels = np.array([index[n] for n in names], dtype=np.int32)
    if multilabel:
        matrix = np.zeros((len(rows), len(classes)), dtype=np.uint8)
        matrix[np.arange(len(rows)), labels] = 1
        return classes, {"label_matrix": matrix}
    return classes, {"labels": labels}


def _metadata(columns, rows, used, column_types):
    """The remaining columns, as text or in the dtype ``column_types`` gives them."""
    metadata = {}
    for c in columns:
        if c in used:
            continue
        values = [r[c] for r in rows]
        kind = column_types.get(c)
        if kind is None:
            metadata[c] = np.array(values, dtype=str)  # text even with no rows (a [] would read as float)
        elif np.dtype(kind) == np.bool_:
            metadata[c] = np.array([v == "True" for v in values])
        else:
            try:
                metadata[c] = np.array(values).astype(kind)
            except ValueError as exc:
                raise InputError(f"metadata column {c!r} is not {kind}: {exc}") from None
    unknown = sorted(set(column_types) - set(metadata))
    if unknown:
        raise InputError(f"column types given for {unknown[0]!r}, which is not a metadata column")
    check_names(list(metadata), "metadata column", object_name=True)  # before any vector is read
    return metadata


def _prompt_sets(prompts, prompt_classes, classes, explicit_order: bool, ids: list[str],
                 allow_empty: bool = False) -> dict[str, _PromptSet]:
    class_of_line = {}
    for spec in prompt_classes:
        name, file = parse_assignment(spec, "=", "--prompt-classes")
        class_of_line[check_name(name, "prompt set name", object_name=True)] = read_lines(file, "prompt classes file")
    out = {}
    for spec in prompts:
        name, file = parse_assignment(spec, "=", "--prompts")
        name = check_name(name, "prompt set name", object_name=True)
        if name in out:
            raise InputError(f"--prompts gives prompt set {name!r} twice")
        if Path(file).suffix.lower() == ".csv":
            if name in class_of_line:
                raise InputError(f"prompt set {name!r}: a class,prompt CSV names its classes; drop --prompt-classes {name}")
            out[name] = _prompt_csv(file, classes, ids, allow_empty, name)
            continue
        lines = read_lines(file, "prompts file")
        if name in class_of_line:
            labels = class_of_line.pop(name)
            if len(labels) != len(lines):
                raise InputError(f"prompt set {name!r}: {len(labels)} class lines for {len(lines)} prompts")
            cls = [_class_index(c, classes, name) for c in labels]
        elif not explicit_order:
            raise InputError(f"prompt set {name!r}: the order of its lines names no classes (the classes were "
                             f"sorted from the labels); give {EXPLICIT_ORDER}")
        elif len(lines) != len(classes):
            raise InputError(f"prompt set {name!r}: {len(lines)} prompts for {len(classes)} classes; "
                             f"give --prompt-classes {name}=FILE to name each line's class")
        else:
            cls = list(range(len(classes)))
        out[name] = _PromptSet(lines, cls)
    if class_of_line:
        raise InputError(f"--prompt-classes names prompt set {next(iter(class_of_line))!r} that no --prompts gives")
    return out


def _prompt_csv(file, classes, ids: list[str], allow_empty: bool = False, name: str | None = None) -> _PromptSet:
    """A ``class,prompt[,term][,item]`` CSV: an empty class is a prompt that stands for no
    class; an ``item`` column (an item id in every row) makes the set a caption set."""
    columns, rows = read_csv(file)
    if "class" not in columns or "prompt" not in columns:
        raise InputError(f"{file}: a prompt CSV needs the columns class and prompt (has: {', '.join(columns)})")
    if not rows and not allow_empty:
        raise InputError(f"{file}: no prompts")
    name = name or Path(file).stem
    cls = [_class_index(r["class"], classes, name) if r["class"] else -1 for r in rows]
    terms = [r["term"] for r in rows] if "term" in columns else None
    items = _item_rows(file, [r["item"] for r in rows], ids) if "item" in columns else None
    return _PromptSet([r["prompt"] for r in rows], cls, terms, items=items)


def _item_rows(file, wanted: list[str], ids: list[str]) -> np.ndarray:
    """The item row of each id in ``wanted`` (a caption set's ``item`` column); unknown ids refused."""
    row_of = {item_id: row for row, item_id in enumerate(ids)}
    unknown = [(k, i) for k, i in enumerate(wanted) if i not in row_of]
    if unknown:
        line, item_id = unknown[0]
        raise InputError(f"{file}: row {line + 2} names unknown item id {item_id!r} ({len(unknown)} unknown)")
    return np.array([row_of[i] for i in wanted], dtype=np.int64)


def _class_index(label: str, classes: list[str], set_name: str) -> int:
    if label not in classes:
        raise InputError(f"prompt set {set_name!r}: unknown class {label!r}")
    return classes.index(label)


def _failed_rows(path) -> list[tuple[str, str]]:
    columns, rows = read_csv(path)
    if columns != ["path", "reason"]:
        raise InputError(f"{path}: a failed-items CSV has the columns path,reason")
    return [(r["path"], r["reason"]) for r in rows]


#: Version of the export folder's layout (``import.json``'s ``export_version``); 1 when absent.
EXPORT_VERSION = 2
#: A name used as a file name in an export folder as it is; others get a numbered file name.
_SAFE_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def import_folder(out: str | os.PathLike, folder: str | os.PathLike, *, overwrite: bool = False,
                  record_host: bool = False) -> Path:
    """Import what :func:`export_store` wrote into ``folder`` (its ``import.json`` says how).

    The store's provenance is the exported store's (``provenance.json``), with this import
    recorded under ``imported_from_export``.
    """
    folder = Path(folder)
    manifest = _read_json(folder / MANIFEST, f"{folder}: no {MANIFEST}; give the folder `embedstore export` wrote")
    version = manifest.get("export_version", 1)
    if not isinstance(version, int) or not 1 <= version <= EXPORT_VERSION:
        raise InputError(f"{folder / MANIFEST}: export version {version!r}; this embedstore reads versions "
                         f"1 to {EXPORT_VERSION} (a newer embedstore wrote it?)")

    def inside(name: str) -> Path:
        path = (folder / name).resolve()
        if folder.resolve() not in path.parents:
            raise InputError(f"{folder / MANIFEST} names {name!r}, outside the folder")
        return path

    try:
        provenance = None
        if manifest.get("provenance"):
            exported = _read_json(inside(manifest["provenance"]), f"{folder}: no {manifest['provenance']}")
            provenance = {**exported, "imported_from_export": {"source": "embedstore import --from",
                                                               "folder": folder.resolve().name}}
        return import_store(
            out,
            items_csv=inside(manifest["items"]),
            id_column=manifest["id_column"],
            label_column=manifest.get("label_column"),
            onehot=bool(manifest.get("onehot")),
            multilabel=bool(manifest.get("multilabel")),
            classes_file=inside(manifest["classes"]),
            audio=[f"{space}={inside(f)}" for space, f in manifest.get("audio", {}).items()],
            prompts=[f"{name}={inside(f)}" for name, f in manifest.get("prompts", {}).items()],
            text=[f"{name}:{space}={inside(f)}" for name, spaces in manifest.get("text", {}).items()
                  for space, f in spaces.items()],
            extra_spaces=manifest.get("extra_spaces", []),
            model=manifest.get("model", "unknown"),
            dataset=manifest.get("dataset", "unknown"),
            dtype="source",
            column_types=manifest.get("column_types", {}),
            failed_csv=inside(manifest["failed"]) if manifest.get("failed") else None,
            path_column=manifest.get("path_column"),
            partial_labels=bool(manifest.get("partial_labels")),
            sources=manifest.get("sources", {}),
            allow_empty=True,
            provenance=provenance,
            record_host=record_host,
            overwrite=overwrite,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{folder / MANIFEST}: not an export manifest ({type(exc).__name__}: {exc})") from None


def _read_json(path: Path, missing: str) -> dict:
    """A JSON object from ``path``; ``missing`` is the message when the file is not there."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise InputError(missing) from None
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"{path}: not a JSON object")
    return value


# -- export --------------------------------------------------------------------------------


def _csv_bytes(header: Sequence[str], rows) -> bytes:
    # CRLF line ends (RFC 4180): the csv module then quotes every cell holding \r or \n,
    # so a value with a bare carriage return cannot split its row.
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(header)
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def _write_npy(fh, dataset) -> None:
    """Write an h5py dataset as ``.npy`` (its stored dtype), one row block at a time."""
    dtype = dataset.dtype.newbyteorder("<")
    np.lib.format.write_array_header_1_0(fh, {"descr": np.lib.format.dtype_to_descr(dtype),
                                              "fortran_order": False, "shape": dataset.shape})
    rows, dim = dataset.shape
    for start, stop in row_blocks(rows, dim * dtype.itemsize):
        fh.write(np.ascontiguousarray(dataset[start:stop], dtype=dtype).tobytes())


def _unique(base: str, taken: set[str]) -> str:
    name = base
    while name in taken:
        name += "_"
    return name


class _FileNames:
    """File names for store names (sets, spaces): the name itself when it is a plain ASCII
    name of at most 100 characters, else ``_<k>``; never two equal, ignoring case (so the
    folder survives a case-insensitive file system)."""

    def __init__(self):
        self.used: set[str] = set()

    def __call__(self, name: str) -> str:
        # A plain name starts with a letter or digit, so no "_<k>" can equal one.
        plain = _SAFE_FILE_NAME.fullmatch(name) and name.lower() not in self.used
        stem = name if plain else f"_{len(self.used)}"
        self.used.add(stem.lower())
        return stem


def _items_table(st) -> tuple[list[str], list[list[str]], dict]:
    """The items CSV of an export: id, path, label column(s), metadata; and how to read it.

    A multi-label store's labels are one 0/1 column per class; with a label mask an
    unlabelled pair is an empty cell (``partial_labels``).
    """
    meta = st.metadata
    taken = set(meta) | (set(st.classes) if st.multilabel else set())
    id_column = _unique("id", taken)
    path_column = _unique("path", taken | {id_column})
    taken |= {id_column, path_column}
    columns = [id_column, path_column]
    cells = [list(st.item_ids), list(st.item_paths)]
    how = {"id_column": id_column, "path_column": path_column}
    if st.multilabel:
        clash = sorted(set(st.classes) & set(meta))
        if clash:
            raise InputError(f"class {clash[0]!r} shares its name with a metadata column; "
                             "the export's one-hot items CSV cannot hold both")
        columns += st.classes
        matrix, mask = st.label_matrix.astype(np.uint8), st.label_mask
        text = np.where(matrix == 1, "1", "0")
        if mask is not None:
            text[~mask] = ""
            how["partial_labels"] = True
        cells += [list(col) for col in text.T]
        how.update(onehot=True, multilabel=True)
    else:
        label_column = _unique("label", taken)
        columns.append(label_column)
        cells.append([st.classes[i] for i in st.labels])
        how["label_column"] = label_column
    types = {}
    for name, values in meta.items():
        columns.append(name)
        if values.dtype.kind in "biuf":
            types[name] = values.dtype.str
            cells.append([repr(v.item()) if values.dtype.kind == "f" else str(v.item()) for v in values])
        else:
            cells.append([str(v) for v in values])
    how["column_types"] = types
    return columns, [list(row) for row in zip(*cells)], how


def _prompt_table(st, ps) -> tuple[list[str], list[list[str]]]:
    """A prompt set as ``class,prompt[,term][,item]`` rows (``item``: a caption's item id)."""
    header = ["class", "prompt"] + (["term"] if ps.terms is not None else []) + (["item"] if ps.is_caption_set else [])
    rows = []
    for i, (c, prompt) in enumerate(zip(ps.classes.tolist(), ps.prompts)):
        row = [st.classes[c] if c >= 0 else "", prompt]
        if ps.terms is not None:
            row.append(ps.terms[i])
        if ps.is_caption_set:
            row.append(st.item_ids[ps.items[i]])
        rows.append(row)
    return header, rows


def _check_one_dtype(st, ps) -> None:
    """Import gives a prompt set one dtype: refuse a set whose spaces differ."""
    dtypes = {str(st.text(ps.name, space, lazy=True).dtype) for space in ps.spaces}
    if len(dtypes) > 1:
        raise InputError(f"prompt set {ps.name!r} holds spaces of {' and '.join(sorted(dtypes))}; "
                         "an export folder gives a prompt set one dtype")


def export_store(store_path: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write everything in a store as files ``embedstore import --from`` reads back.

    ``out_dir`` gets ``items.csv`` (id, path, a ``label`` column or one 0/1 column per
    class, empty where a label mask leaves a pair unlabelled; metadata), ``classes.txt``,
    ``prompts/SET.csv`` (``class,prompt[,term][,item]``; ``item``, a caption's item id,
    in caption sets), ``audio/SPACE.npy``, ``text/SET/SPACE.npy`` (vectors in their stored
    dtype), ``failed.csv``, ``provenance.json`` and ``import.json`` (how to read the rest,
    prompt sets' sources). A name that is not a plain ASCII file name gets a numbered file
    name (the manifest maps names to files). What the folder cannot hold is refused before
    anything is written. The folder follows the output policy: a new or empty folder, or
    one an earlier export wrote (with ``overwrite``).
    """
    out_dir = Path(out_dir)
    with open_store(store_path) as st:
        files = _export_plan(st, out_dir)  # refuses what the folder cannot hold, before the folder is made
        with claimed_outputs(folders=[out_dir], inputs=[store_path], overwrite=overwrite, command="export"):
            replace_folder(out_dir)
            for path, content in files.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, bytes):
                    write_atomic(path, lambda fh, data=content: fh.write(data))
                else:
                    dataset = (st.audio(content[1], lazy=True) if content[0] == "audio"
                               else st.text(*content[1:], lazy=True))
                    write_atomic(path, lambda fh, ds=dataset: _write_npy(fh, ds))
            mark_folder(out_dir, "export", [p.relative_to(out_dir).as_posix() for p in files])
    return out_dir


def _export_plan(st, out_dir: Path) -> dict[Path, object]:
    """Every file of the export folder: its bytes, or the (tower, names) of the vectors it holds."""
    files: dict[Path, object] = {}
    columns, rows, how = _items_table(st)
    manifest = {"export_version": EXPORT_VERSION, "model": st.model, "dataset": st.dataset,
                "items": "items.csv", "classes": "classes.txt", **how, "audio": {}, "prompts": {}, "text": {},
                "sources": {}, "failed": "failed.csv", "provenance": "provenance.json",
                "extra_spaces": sorted({*st.audio_spaces} - {"joint", "prejoint"})}
    files[out_dir / "items.csv"] = _csv_bytes(columns, rows)
    files[out_dir / "classes.txt"] = ("\n".join(st.classes) + "\n").encode("utf-8")
    files[out_dir / "failed.csv"] = _csv_bytes(["path", "reason"], st.failed)
    files[out_dir / "provenance.json"] = (json.dumps(st.provenance, indent=1, sort_keys=True) + "\n").encode("utf-8")
    audio_names = _FileNames()
    for space in st.audio_spaces:
        manifest["audio"][space] = f"audio/{audio_names(space)}.npy"
        files[out_dir / manifest["audio"][space]] = ("audio", space)
    set_names = _FileNames()
    for name in st.prompt_sets:
        ps = st.prompt_set(name)
        _check_one_dtype(st, ps)
        stem = set_names(name)
        manifest["prompts"][name] = f"prompts/{stem}.csv"
        files[out_dir / manifest["prompts"][name]] = _csv_bytes(*_prompt_table(st, ps))
        if ps.source:
            manifest["sources"][name] = ps.source
        manifest["text"][name] = {}
        space_names = _FileNames()
        for space in ps.spaces:
            manifest["text"][name][space] = f"text/{stem}/{space_names(space)}.npy"
            manifest["extra_spaces"] = sorted(set(manifest["extra_spaces"]) | ({space} - {"joint", "prejoint"}))
            files[out_dir / manifest["text"][name][space]] = ("text", name, space)
    files[out_dir / MANIFEST] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode("utf-8")
    return files


def read_caption_csv(path, ids: list[str]) -> dict:
    """A caption set from a CSV with columns ``id,caption``: one caption per row, tied to its
    item (``classes`` all -1, ``items`` the item row of each caption)."""
    columns, rows = read_csv(path)
    missing = [c for c in ("id", "caption") if c not in columns]
    if missing:
        raise InputError(f"{path}: a caption CSV needs the columns id,caption (missing {', '.join(missing)})")
    items = _item_rows(path, [r["id"] for r in rows], ids)
    empty = [i + 2 for i, r in enumerate(rows) if not (r["caption"] or "").strip()]
    if empty:
        raise InputError(f"{path}: row {empty[0]} has an empty caption")
    if not rows:
        raise InputError(f"{path}: no captions")
    return _PromptSet([r["caption"] for r in rows], [-1] * len(rows), items=items,
                      source=f"captions imported from {Path(path).name}")


def export_space(
    store_path: str | os.PathLike,
    out_prefix: str | os.PathLike,
    *,
    audio: str | None = None,
    text: str | None = None,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write one space of a store as ``PREFIX.npy`` and ``PREFIX.csv``.

    ``audio`` names an audio space (CSV rows: item id, path); ``text`` is ``SET:SPACE``
    (CSV rows: class, prompt, and term and item where the set has them: the import format
    of a prompt set, a caption set keeping its item ids). Both files appear only when both
    are complete. The vectors keep their stored dtype.
    """
    if (audio is None) == (text is None):
        raise InputError("give exactly one of --audio SPACE or --text SET:SPACE")
    prefix = Path(out_prefix)
    npy, csv_path = Path(f"{prefix}.npy"), Path(f"{prefix}.csv")
    if not prefix.parent.exists():
        raise InputError(f"{prefix.parent}: no such directory")
    with open_store(store_path) as st:
        if audio is not None:
            vectors = st.audio(audio, lazy=True)
            table = _csv_bytes(("id", "path"), zip(st.item_ids, st.item_paths))
        else:
            name, space = parse_assignment(text, ":", "--text")
            vectors = st.text(name, space, lazy=True)
            table = _csv_bytes(*_prompt_table(st, st.prompt_set(name)))
        # Both files or neither: a failed .csv must not leave a new .npy beside an old .csv.
        with claimed_outputs([npy, csv_path], inputs=[store_path], overwrite=overwrite):
            write_atomic_many({npy: lambda fh: _write_npy(fh, vectors), csv_path: lambda fh: fh.write(table)})
    return npy, csv_path
