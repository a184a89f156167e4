"""The embedding store: one HDF5 file for one dataset embedded by one model.

Read with :func:`open_store`; write with :func:`create_store` (a new store) or
:func:`edit_store` (add to an existing one). Both writers build the file under a
temporary name and rename it into place only when it is complete and consistent, so a
failed or killed write never leaves a half-written store. Extraction, which appends batch
by batch, uses :mod:`embedstore.store.journal` and ends in :func:`create_store`.

The layout is specified in ``docs/store-format.md``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import io
import json
import mmap
import os
import platform
import re
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np

from embedstore import __version__
from embedstore.errors import (
    EmbedstoreError,
    InputError,
    NotAStore,
    StoreDamaged,
    StoreExists,
    StoreIncomplete,
    StoreMissing,
    WriteFailed,
)
from embedstore.store import elements as el
from embedstore.store.fileio import write_atomic
from embedstore.store.lock import writer_lock
from embedstore.store.names import check_name, check_names
from embedstore.store.partial import describe_unfinished, journal_dir

FORMAT_TYPE = "embedstore"
FORMAT_VERSION = "1.1.0"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class PromptSet:
    """A named set of text prompts; ``classes[i]`` is the class prompt i stands for (-1: none).

    A *caption set* also has ``items``: ``items[i]`` is the row of the item that caption
    i describes (retrieval pairs captions with items, not classes).
    """

    name: str
    prompts: list[str]
    classes: np.ndarray
    spaces: list[str]
    terms: list[str] | None = None
    items: np.ndarray | None = None
    source: str = ""

    @property
    def is_caption_set(self) -> bool:
        return self.items is not None


# -- reading -----------------------------------------------------------------------


class Store:
    """A store opened for reading. Arrays are read on access; ``lazy=True`` gives h5py datasets."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._file = _open_h5(self.path)
        try:
            self._load()
        except EmbedstoreError:
            self._file.close()
            raise
        except (KeyError, ValueError, TypeError, OSError, RuntimeError) as exc:
            self._file.close()
            raise StoreDamaged(f"{self.path}: damaged store ({type(exc).__name__}: {exc})") from None

    # The header is small: read and check it once, leave the embeddings on disk.
    def _load(self) -> None:
        f = self._file
        if el.TYPE_ATTR not in f.attrs:
            raise NotAStore(f"{self.path} is an HDF5 file but not an embedstore store")
        etype, version = el.read_tag(f)
        if etype != FORMAT_TYPE:
            raise NotAStore(f"{self.path} is an HDF5 file but not an embedstore store")
        el.check_version(str(self.path), version, FORMAT_VERSION)
        self.format_version = version
        for name in ("classes", "items", "audio", "text", "provenance", "history", "failed"):
            if name not in f:
                raise StoreDamaged(f"{self.path}: missing /{name}")
        self.model = el._as_str(f.attrs.get("model", ""))
        self.dataset = el._as_str(f.attrs.get("dataset", ""))
        self.classes = el.read_element(f["classes"], "string-array")
        if len(set(self.classes)) != len(self.classes):
            raise StoreDamaged(f"{self.path}: /classes holds duplicate names")
        items = f["items"]
        el.expect(items, "items")
        self.item_ids = np.array(el.read_element(items["id"], "string-array"), dtype=str)
        self.item_paths = np.array(el.read_element(items["path"], "string-array"), dtype=str)
        self.n_items = len(self.item_ids)
        if len(self.item_paths) != self.n_items:
            raise StoreDamaged(f"{self.path}: /items/path has {len(self.item_paths)} rows, /items/id {self.n_items}")
        self.multilabel = "label_matrix" in items
        self._check_labels(items)
        self._metadata_names = self._read_column_order(items)
        for col in self._metadata_names:
            ds = items["metadata"][col]
            kind = el.read_tag(ds)[0]
            if kind not in ("string-array", "numeric-array"):
                raise StoreDamaged(f"{ds.name} is tagged {kind!r}, expected a string-array or numeric-array column")
            el.expect(ds, kind)
            if ds.shape != (self.n_items,):
                raise StoreDamaged(f"{ds.name} has shape {ds.shape}, expected ({self.n_items},)")
        el.expect(f["audio"], "spaces")
        for space, ds in f["audio"].items():
            self._check_embedding(ds, self.n_items, f"/audio/{space}")
        el.expect(f["text"], "prompt-sets")
        for name in f["text"]:
            self._read_prompt_set(name)
        self.provenance = el.read_element(f["provenance"], "json")
        if not isinstance(self.provenance, dict):
            raise StoreDamaged(f"{self.path}: /provenance is not a JSON object")
        self.history = el.read_element(f["history"], "json-lines")
        if not all(isinstance(event, dict) for event in self.history):
            raise StoreDamaged(f"{self.path}: /history holds a line that is not a JSON object")
        failed = f["failed"]
        el.expect(failed, "failed-items")
        paths = el.read_element(failed["path"], "string-array")
        reasons = el.read_element(failed["reason"], "string-array")
        if len(paths) != len(reasons):
            raise StoreDamaged(f"{failed.name}: {len(paths)} paths but {len(reasons)} reasons")
        self.failed = list(zip(paths, reasons))

    @staticmethod
    def _read_column_order(items: h5py.Group) -> list[str]:
        if "metadata" not in items:
            return []
        meta = items["metadata"]
        el.expect(meta, "dataframe")
        order = [el._as_str(c) for c in meta.attrs.get("column-order", [])]
        if sorted(order) != sorted(meta.keys()):
            raise StoreDamaged(f"{meta.name}: column-order does not list exactly its columns")
        return order

    def _check_labels(self, items: h5py.Group) -> None:
        n, c = self.n_items, len(self.classes)
        if len(set(self.item_ids.tolist())) != n:
            raise StoreDamaged(f"{items.name}/id holds duplicate item ids")
        kind = el._as_str(items.attrs.get("label-kind", ""))
        if ("label" in items) == ("label_matrix" in items) or kind != ("multi" if self.multilabel else "single"):
            raise StoreDamaged(f"{items.name} must hold exactly one of label or label_matrix, matching its label-kind")
        if self.multilabel:
            ds = items["label_matrix"]
            el.expect(ds, "label-matrix")
            if ds.shape != (n, c):
                raise StoreDamaged(f"{ds.name} has shape {ds.shape}, expected ({n}, {c})")
            if ds.dtype != np.uint8 or (n and ds[()].max(initial=0) > 1):
                raise StoreDamaged(f"{ds.name} must be uint8 holding 0 and 1")
        else:
            if "label" not in items:
                raise StoreDamaged(f"{items.name} has neither label nor label_matrix")
            ds = items["label"]
            el.expect(ds, "label-index")
            if ds.shape != (n,):
                raise StoreDamaged(f"{ds.name} has shape {ds.shape}, expected ({n},)")
            labels = ds[()]
            if ds.dtype.kind not in "iu":
                raise StoreDamaged(f"{ds.name} must hold integer class indices, not {ds.dtype}")
            if n and (labels.min() < 0 or labels.max() >= c):
                raise StoreDamaged(f"{ds.name} holds class indices outside 0..{c - 1}")

    def _check_embedding(self, ds, rows: int, where: str) -> None:
        # ``ds`` is None where a damaged link no longer resolves.
        if not isinstance(ds, h5py.Dataset):
            raise StoreDamaged(f"{where} should be a dataset")
        el.expect(ds, "embedding")
        if ds.ndim != 2 or ds.shape[0] != rows:
            raise StoreDamaged(f"{ds.name} has shape {ds.shape}, expected {rows} rows of vectors")
        if ds.dtype not in (np.float32, np.float16):
            raise StoreDamaged(f"{ds.name} has dtype {ds.dtype}, expected float32 or float16")

    def _read_prompt_set(self, name: str) -> PromptSet:
        g = self._file["text"][name]
        el.expect(g, "prompt-set")
        prompts = el.read_element(g["prompts"], "string-array")
        classes = np.asarray(el.read_element(g["class"], "label-index"), dtype=np.int32)
        if classes.shape != (len(prompts),):
            raise StoreDamaged(f"{g.name}/class has shape {classes.shape} for {len(prompts)} prompts")
        if len(classes) and (classes.min() < -1 or classes.max() >= len(self.classes)):
            raise StoreDamaged(f"{g.name}/class holds class indices outside -1..{len(self.classes) - 1}")
        terms = el.read_element(g["terms"], "string-array") if "terms" in g else None
        if terms is not None and len(terms) != len(prompts):
            raise StoreDamaged(f"{g.name}/terms has {len(terms)} rows for {len(prompts)} prompts")
        items = None
        if "item" in g:
            items = np.asarray(el.read_element(g["item"], "item-index"), dtype=np.int64)
            if items.shape != (len(prompts),):
                raise StoreDamaged(f"{g.name}/item has shape {items.shape} for {len(prompts)} prompts")
            if len(items) and (items.min() < 0 or items.max() >= self.n_items):
                raise StoreDamaged(f"{g.name}/item holds item rows outside 0..{self.n_items - 1}")
        el.expect(g["spaces"], "spaces")
        for space, ds in g["spaces"].items():
            self._check_embedding(ds, len(prompts), f"{g.name}/spaces/{space}")
        source = el._as_str(g.attrs.get("source", ""))
        return PromptSet(name, prompts, classes, sorted(g["spaces"].keys()), terms, items, source)

    # -- public accessors ------------------------------------------------------------

    @property
    def labels(self) -> np.ndarray:
        """(n,) int32 class indices; single-label stores only."""
        if self.multilabel:
            raise InputError(f"{self.path} is multi-label; use label_matrix")
        return np.asarray(self._file["items"]["label"][()], dtype=np.int32)

    @property
    def label_matrix(self) -> np.ndarray:
        """(n, C) bool: True where item i carries class j (single- and multi-label)."""
        if self.multilabel:
            return np.asarray(self._file["items"]["label_matrix"][()], dtype=bool)
        out = np.zeros((self.n_items, len(self.classes)), dtype=bool)
        out[np.arange(self.n_items), self.labels] = True
        return out

    @property
    def text_only(self) -> bool:
        """A store of prompt sets alone: no items and no audio (``embedstore extract-text --out``)."""
        return self.n_items == 0 and not self._file["audio"].keys()

    @property
    def metadata_columns(self) -> list[str]:
        """Names of the item columns, in their stored order."""
        return list(self._metadata_names)

    @property
    def metadata(self) -> dict[str, np.ndarray]:
        """Item columns (family, pitch, dynamics...), each an array of n values."""
        group = self._file["items"].get("metadata")
        out = {}
        for col in self._metadata_names:
            value = el.read_element(group[col], ("string-array", "numeric-array"))
            out[col] = np.array(value, dtype=str) if isinstance(value, list) else value
        return out

    @property
    def audio_spaces(self) -> list[str]:
        return sorted(self._file["audio"].keys())

    def audio(self, space: str, *, lazy: bool = False):
        """Audio vectors of ``space``: (n, d) float32, or the h5py dataset if ``lazy``."""
        if space not in self._file["audio"]:
            raise InputError(f"{self.path} has no audio space {space!r} (has: {', '.join(self.audio_spaces) or 'none'})")
        return self._embedding(self._file["audio"][space], lazy)

    @property
    def prompt_sets(self) -> list[str]:
        return sorted(self._file["text"].keys())

    def prompt_set(self, name: str) -> PromptSet:
        if name not in self._file["text"]:
            raise InputError(f"{self.path} has no prompt set {name!r} (has: {', '.join(self.prompt_sets) or 'none'})")
        return self._read_prompt_set(name)

    def text(self, set_name: str, space: str, *, lazy: bool = False):
        """Text vectors of prompt set ``set_name`` in ``space``: (p, d) float32."""
        spaces = self._file["text"][self.prompt_set(set_name).name]["spaces"]
        if space not in spaces:
            raise InputError(f"prompt set {set_name!r} has no space {space!r} (has: {', '.join(sorted(spaces))})")
        return self._embedding(spaces[space], lazy)

    def _embedding(self, ds: h5py.Dataset, lazy: bool):
        if lazy:
            return ds
        try:
            return ds.astype(np.float32)[()]
        except OSError as exc:
            raise StoreDamaged(f"{self.path}: cannot read {ds.name} ({exc})") from None

    def digests(self) -> dict[str, str]:
        """The recorded SHA-256 of every array, by HDF5 path."""
        out = {}

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and el.DIGEST_ATTR in obj.attrs:
                out["/" + name] = el._as_str(obj.attrs[el.DIGEST_ATTR])

        try:
            self._file.visititems(visit)
        except (OSError, RuntimeError, UnicodeDecodeError) as exc:
            raise StoreDamaged(f"{self.path}: unreadable HDF5 objects ({el.first_line(exc)})") from None
        return out

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_h5(path: Path) -> h5py.File:
    """Open ``path`` read-only, telling apart "missing", "not HDF5" and "damaged HDF5"."""
    if not path.exists():
        if journal_dir(path).is_dir():
            raise StoreIncomplete(describe_unfinished(path))
        raise StoreMissing(f"{path}: no such file, so not a store")
    if path.is_dir():
        raise NotAStore(f"{path} is a directory, not a store")
    if not path.is_file():  # a FIFO or device: opening it could block forever
        raise NotAStore(f"{path} is not a regular file (a FIFO, socket or device), so not a store")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if head != HDF5_SIGNATURE:
        raise NotAStore(f"{path} is not an HDF5 file, so not a store")
    _check_global_heaps(path)
    try:
        return h5py.File(path, "r", locking=False)
    except (OSError, RuntimeError) as exc:
        first = _first_line(exc).lower()
        # "\block": a lock, not the "superblock" of a damaged file.
        if "truncated" not in first and re.search(r"\block|already open", first):
            raise InputError(f"{path} is open elsewhere in a way that blocks reading ({_first_line(exc)})") from None
        raise StoreDamaged(f"{path}: damaged or truncated HDF5 file ({_first_line(exc)})") from None


def _check_global_heaps(path: Path) -> None:
    """Refuse a damaged global heap that would hang or crash the HDF5 library.

    HDF5 (2.0.0) decodes a global heap collection (where variable-length strings live)
    by stepping from object to object; a free-space entry of size 0 never advances and
    loops forever, and a huge size wraps the pointer. This walks every collection the
    same way first. A collection is found by its signature, version 1 and zero reserved
    bytes, and a size within the file: vector data cannot pass for one by chance.
    """
    with open(path, "rb") as fh:
        try:
            data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError):  # empty, or on a file system without mmap: HDF5 decides
            return
    with data:
        start = data.find(b"GCOL\x01\x00\x00\x00")
        while start >= 0:
            size = int.from_bytes(data[start + 8 : start + 16], "little")
            end = start + size
            if 4096 <= size and end <= len(data):
                pos = start + 16
                while pos + 16 <= end:
                    index = int.from_bytes(data[pos : pos + 2], "little")
                    length = int.from_bytes(data[pos + 8 : pos + 16], "little")
                    step = 16 + (length + 7) // 8 * 8 if index else length
                    if step == 0 or step >= 1 << 62:
                        raise StoreDamaged(f"{path}: damaged HDF5 global heap (variable-length strings) at byte {start}")
                    pos += step
            start = data.find(b"GCOL\x01\x00\x00\x00", start + 4)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def open_store(path: str | os.PathLike) -> Store:
    """Open a store for reading, checking its tags, versions and consistency.

    Raises
    ------
    NotAStore
        The file is not HDF5, or not tagged as an embedstore store.
    StoreTooNew
        The store's major format version is newer than this reader.
    StoreDamaged
        Counts, shapes, tags or label ranges are inconsistent, or the file is truncated.
    StoreIncomplete
        The store does not exist yet but an extraction is writing it (or was killed).
    """
    return Store(path)


# -- writing -----------------------------------------------------------------------


def _versions() -> dict[str, str]:
    import numba
    import sklearn

    return {
        "embedstore": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "hdf5": h5py.version.hdf5_version,
        "numba": numba.__version__,
        "scikit-learn": sklearn.__version__,
    }


class StoreWriter:
    """Adds items, audio spaces, prompt sets and failures to an open store file.

    Obtain one from :func:`create_store` or :func:`edit_store`; every call is recorded in
    the store's history when the writer commits.
    """

    def __init__(self, f: h5py.File, events: list[dict]):
        self._f = f
        self._events = events

    @property
    def n_items(self) -> int | None:
        items = self._f["items"]
        return len(items["id"]) if "id" in items else None

    @property
    def classes(self) -> list[str]:
        return el.read_element(self._f["classes"])

    def set_items(
        self,
        ids: Sequence[str],
        paths: Sequence[str] | None = None,
        *,
        labels: Sequence[int] | None = None,
        label_matrix: np.ndarray | None = None,
        metadata: dict[str, Sequence] | None = None,
    ) -> None:
        """Write the items table: ids, paths, labels (or a multi-label matrix) and metadata."""
        items = self._f["items"]
        if "id" in items:
            raise StoreExists("the store already has items; write a new store instead")
        ids = check_names([str(i) for i in ids], "item id")
        n = len(ids)
        paths = [""] * n if paths is None else [str(p) for p in paths]
        if len(paths) != n:
            raise InputError(f"{len(paths)} paths for {n} items")
        c = len(self.classes)
        if (labels is None) == (label_matrix is None):
            raise InputError("give exactly one of labels (single-label) or label_matrix (multi-label)")
        el.write_strings(items, "id", ids)
        el.write_strings(items, "path", paths)
        if labels is not None:
            lab = np.asarray(labels)
            if lab.shape != (n,) or (n and lab.dtype.kind not in "iu"):
                raise InputError(f"labels must be {n} class indices, got shape {lab.shape} dtype {lab.dtype}")
            if n and (lab.min() < 0 or lab.max() >= c):
                raise InputError(f"labels must lie in 0..{c - 1}")
            el.write_numeric(items, "label", lab.astype(np.int32), "label-index")
            items.attrs["label-kind"] = "single"
        else:
            mat = np.asarray(label_matrix)
            if mat.shape != (n, c):
                raise InputError(f"label_matrix must have shape ({n}, {c}), got {mat.shape}")
            if not np.isin(mat, (0, 1)).all():
                raise InputError("label_matrix must hold only 0 and 1")
            el.write_numeric(items, "label_matrix", mat.astype(np.uint8), "label-matrix")
            items.attrs["label-kind"] = "multi"
        metadata = dict(zip(check_names(metadata or {}, "metadata column", object_name=True),
                            (metadata or {}).values()))
        meta = items.create_group("metadata")
        el.tag(meta, "dataframe", el.ELEMENT_VERSIONS["dataframe"])
        for col, values in metadata.items():
            arr = np.asarray(values)
            if arr.shape != (n,):
                raise InputError(f"metadata column {col!r} has {arr.shape[0] if arr.ndim else 0} values for {n} items")
            if arr.dtype.kind in "biuf":
                el.write_numeric(meta, col, arr)
            else:
                el.write_strings(meta, col, arr)
        meta.attrs["column-order"] = list(metadata or {})
        self._events.append({"action": "set_items", "items": n, "multilabel": label_matrix is not None})

    def add_audio(self, space: str, values: np.ndarray, *, dtype: str = "float32", replace: bool = False) -> None:
        """Add the audio vectors of ``space``: one row per item, in item order."""
        space = check_name(space, "space name", object_name=True)
        n = self.n_items
        if n is None:
            raise InputError("write the items before their audio vectors")
        arr = el.check_matrix(values, f"audio space {space!r}")
        if arr.shape[0] != n:
            raise InputError(f"audio space {space!r} has {arr.shape[0]} rows for {n} items")
        group = self._f["audio"]
        replaced = self._replace(group, space, replace, f"audio space {space!r}")
        el.write_embedding(group, space, arr, dtype)
        self._events.append(
            {"action": "add_audio", "space": space, "shape": list(arr.shape), "dtype": dtype, "replaced": replaced}
        )

    def add_prompt_set(
        self,
        name: str,
        prompts: Sequence[str],
        classes: Sequence[int],
        embeddings: dict[str, np.ndarray] | None = None,
        *,
        terms: Sequence[str] | None = None,
        items: Sequence[int] | None = None,
        source: str | None = None,
        dtype: str = "float32",
        replace: bool = False,
    ) -> None:
        """Add a prompt set: prompt strings, the class each stands for (-1: none), vectors by space.

        ``items`` makes it a caption set: the item row each caption describes.
        ``source`` says in a phrase what the set is (its template or origin).
        """
        name = check_name(name, "prompt set name", object_name=True)
        prompts = [str(p) for p in prompts]
        p, c = len(prompts), len(self.classes)
        cls = np.asarray(classes)
        if cls.shape != (p,) or (p and cls.dtype.kind not in "iu"):
            raise InputError(f"prompt set {name!r}: need one class index per prompt ({p}), got shape {cls.shape}")
        if p and (cls.min() < -1 or cls.max() >= c):
            raise InputError(f"prompt set {name!r}: class indices must lie in -1..{c - 1}")
        if terms is not None and len(terms) != p:
            raise InputError(f"prompt set {name!r}: {len(terms)} terms for {p} prompts")
        if items is not None:
            items = np.asarray(items)
            n = self.n_items or 0
            if items.shape != (p,) or (p and items.dtype.kind not in "iu"):
                raise InputError(f"caption set {name!r}: need one item row per caption ({p}), got shape {items.shape}")
            if p and (items.min() < 0 or items.max() >= n):
                raise InputError(f"caption set {name!r}: item rows must lie in 0..{n - 1}")
        arrays = {}
        for space, values in (embeddings or {}).items():
            space = check_name(space, "space name", object_name=True)
            arr = el.check_matrix(values, f"prompt set {name!r} space {space!r}")
            if arr.shape[0] != p:
                raise InputError(f"prompt set {name!r} space {space!r} has {arr.shape[0]} rows for {p} prompts")
            arrays[space] = arr
        text = self._f["text"]
        replaced = self._replace(text, name, replace, f"prompt set {name!r}")
        g = text.create_group(name)
        el.tag(g, "prompt-set", el.ELEMENT_VERSIONS["prompt-set"])
        if source:
            g.attrs["source"] = str(source)
        el.write_strings(g, "prompts", prompts)
        el.write_numeric(g, "class", cls.astype(np.int32), "label-index")
        if terms is not None:
            el.write_strings(g, "terms", terms)
        if items is not None:
            el.write_numeric(g, "item", items.astype(np.int64), "item-index")
        spaces = g.create_group("spaces")
        el.tag(spaces, "spaces", el.ELEMENT_VERSIONS["spaces"])
        for space, arr in arrays.items():
            el.write_embedding(spaces, space, arr, dtype)
        self._events.append(
            {"action": "add_prompt_set", "name": name, "prompts": p, "spaces": sorted(arrays), "replaced": replaced,
             **({"captions": True} if items is not None else {})}
        )

    def add_failed(self, path: str, reason: str) -> None:
        """Record an item that could not be embedded, and why."""
        failed = self._f["failed"]
        for key, value in (("path", path), ("reason", reason)):
            ds = failed[key]
            ds.resize((ds.shape[0] + 1,))
            ds[-1] = str(value)
        self._events.append({"action": "add_failed", "path": str(path), "reason": str(reason)})

    def _replace(self, group: h5py.Group, name: str, replace: bool, what: str) -> bool:
        """Delete ``group[name]`` when replacing is allowed; return whether it existed."""
        if name not in group:
            return False
        if not replace:
            raise StoreExists(f"the store already has {what}; pass replace=True (--replace) to overwrite it")
        del group[name]
        return True

    def _finish(self) -> None:
        """Check completeness, refresh digests of mutable arrays, append the history."""
        f = self._f
        n = self.n_items
        if n is None:
            raise InputError("a store needs its items table")
        for space, ds in f["audio"].items():
            if ds.shape[0] != n:
                raise InputError(f"audio space {space!r} has {ds.shape[0]} rows for {n} items")
        for key in ("path", "reason"):
            ds = f["failed"][key]
            ds.attrs[el.DIGEST_ATTR] = el.digest(el.read_element(ds))
        history = f["history"]
        stamp = {"time": now(), "embedstore": __version__}
        lines = [json.dumps({**stamp, **e}, sort_keys=True, default=el._json_default) for e in self._events]
        if lines:
            history.resize((history.shape[0] + len(lines),))
            history[-len(lines):] = np.array(lines, dtype=object)


def check_unique_ids(ids: Sequence[str], where: str = "") -> None:
    """Raise InputError naming the first item id the name policy refuses or that occurs twice."""
    try:
        check_names(ids, "item id")
    except InputError as exc:
        raise InputError(f"{where}: {exc}" if where else str(exc)) from None


@contextlib.contextmanager
def _atomic_file(path: Path, prepare) -> Iterator[h5py.File]:
    """Yield an HDF5 file built in memory; on success write it under a temporary name
    and rename it onto ``path``.

    HDF5 never sees a disk error: after a failed write (disk full, file size limit) the
    library can crash the process on its next flush. Plain Python I/O puts the finished
    image on disk instead, where such errors are clean :class:`WriteFailed`.
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise InputError(f"{path.parent}: no such directory")
    image = io.BytesIO()
    try:
        prepare(image)
        f = h5py.File(image, "r+")
    except OSError as exc:
        raise WriteFailed(f"cannot write {path}: {_first_line(exc)}") from None
    try:
        yield f
        f.close()
    except BaseException as exc:
        with contextlib.suppress(Exception):
            f.close()
        if isinstance(exc, OSError):
            raise WriteFailed(
                f"writing {path} failed ({_first_line(exc)}); any earlier file there was left unchanged"
            ) from None
        raise
    write_atomic(path, lambda fh: fh.write(image.getbuffer()))


@contextlib.contextmanager
def create_store(
    path: str | os.PathLike,
    *,
    model: str,
    dataset: str,
    classes: Sequence[str],
    provenance: dict | None = None,
    overwrite: bool = False,
) -> Iterator[StoreWriter]:
    """Create a store atomically.

    Parameters
    ----------
    path : path-like
        Where the store goes. Nothing appears there unless the ``with`` block succeeds.
    model, dataset : str
        What made the vectors and what they embed.
    classes : sequence of str
        The class vocabulary in its fixed order; labels are indices into it.
    provenance : dict, optional
        JSON-able record: model config, checkpoint name and SHA-256, preprocessing...
    overwrite : bool
        Replace an existing file at ``path`` (recorded in the new store's history).

    Examples
    --------
    >>> with create_store("s.h5", model="m", dataset="d", classes=["a", "b"]) as w:
    ...     w.set_items(["x", "y"], labels=[0, 1])
    ...     w.add_audio("joint", np.eye(2))
    """
    path = Path(path)
    classes = check_names([str(c) for c in classes], "class")
    model, dataset = check_name(str(model), "model name"), check_name(str(dataset), "dataset name")
    if not classes:
        raise InputError("a store needs at least one class")
    with writer_lock(path):
        if path.exists() and not overwrite:
            raise StoreExists(f"{path} exists; pass --overwrite to replace it")
        replaced = path.exists()
        with _create(path, str(model), str(dataset), classes, provenance, replaced) as writer:
            yield writer


@contextlib.contextmanager
def _create(path: Path, model: str, dataset: str, classes: list[str], provenance: dict | None,
            replaced: bool) -> Iterator[StoreWriter]:

    def prepare(image: io.BytesIO) -> None:
        with h5py.File(image, "w", libver=("v110", "v110")) as f:
            el.tag(f, FORMAT_TYPE, FORMAT_VERSION)
            f.attrs["model"] = str(model)
            f.attrs["dataset"] = str(dataset)
            f.attrs["created"] = now()
            f.attrs["store-id"] = uuid.uuid4().hex
            el.write_strings(f, "classes", classes)
            for name, etype in (("items", "items"), ("audio", "spaces"), ("text", "prompt-sets"), ("failed", "failed-items")):
                el.tag(f.create_group(name), etype, el.ELEMENT_VERSIONS[etype])
            for key in ("path", "reason"):
                ds = f["failed"].create_dataset(key, shape=(0,), maxshape=(None,), dtype=el.STR_DTYPE)
                el.tag(ds, "string-array", el.ELEMENT_VERSIONS["string-array"])
            record = {"model": str(model), "dataset": str(dataset), "versions": _versions(), "created": now()}
            record["host"] = socket.gethostname()
            with contextlib.suppress(Exception):
                record["user"] = getpass.getuser()
            record.update(provenance or {})
            el.write_json(f, "provenance", record)
            el.write_json_lines(f, "history", [])

    events = [{"action": "create", "model": str(model), "dataset": str(dataset), "overwrote": replaced}]
    with _atomic_file(path, prepare) as f:
        writer = StoreWriter(f, events)
        yield writer
        writer._finish()


@contextlib.contextmanager
def edit_store(path: str | os.PathLike) -> Iterator[StoreWriter]:
    """Change an existing store atomically: work on a copy, then rename it into place."""
    path = Path(path)
    # The lock spans read, change and rename: two editors never lose each other's work.
    with writer_lock(path):
        open_store(path).close()  # refuse to edit something that is not a sound store
        with _atomic_file(path, lambda image: image.write(path.read_bytes())) as f:
            writer = StoreWriter(f, [{"action": "edit"}])
            yield writer
            writer._finish()
