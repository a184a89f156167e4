"""The embedding store: one HDF5 file for one dataset embedded by one model.

Read with :func:`open_store`; write with :func:`create_store` (a new store) or
:func:`edit_store` (add to an existing one). Both writers stream the file to disk under a
temporary name and rename it into place only when it is complete and consistent, so a
failed or killed write never leaves a half-written store, and writing never needs the
store's size in memory. Extraction, which appends batch by batch, uses
:mod:`embedstore.store.journal` and ends in :func:`create_store`.

The layout is specified in ``docs/store-format.md``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import json
import os
import platform
import re
import shutil
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
from embedstore.store.fileio import GuardedFile, fsync_dir, temp_path
from embedstore.store.lock import writer_lock
from embedstore.store.names import check_name, check_names
from embedstore.store.partial import describe_unfinished, journal_dir

FORMAT_TYPE = "embedstore"
FORMAT_VERSION = "1.1.0"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# HDF5's chunk cache per dataset while writing: a few embedding chunks (about 1 MiB each),
# so row blocks that end inside a chunk complete it in memory instead of re-reading it.
WRITE_CHUNK_CACHE = 4 << 20


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
        _check_objects(f, self.path)
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
        # read and checked here once; every later prompt_set() is this object (arrays read-only)
        self._prompt_sets = {name: self._read_prompt_set(name) for name in f["text"]}
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
            if "label_mask" in items:
                self._check_label_mask(items, ds)
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
            if "label_mask" in items:
                raise StoreDamaged(f"{items.name}/label_mask belongs to multi-label stores only")

    @staticmethod
    def _check_label_mask(items: h5py.Group, matrix: h5py.Dataset) -> None:
        """A label mask: (n, C) uint8 0/1, 1 wherever the label matrix is, in a 2.x items table."""
        ds = items["label_mask"]
        el.expect(ds, "label-mask")
        if int(el.read_tag(items)[1].split(".")[0]) < 2:
            raise StoreDamaged(f"{items.name} holds a label_mask but is tagged version 1; "
                               f"a 1.x reader would read unlabelled pairs as negatives")
        if ds.shape != matrix.shape:
            raise StoreDamaged(f"{ds.name} has shape {ds.shape}, expected {matrix.shape}")
        mask = ds[()]
        if ds.dtype != np.uint8 or (mask.size and mask.max(initial=0) > 1):
            raise StoreDamaged(f"{ds.name} must be uint8 holding 0 and 1")
        if np.any(matrix[()] > mask):
            raise StoreDamaged(f"{ds.name} marks as unlabelled a pair that {matrix.name} labels present")

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
        for array in (classes, items):
            if array is not None:
                array.flags.writeable = False
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
    def label_mask(self) -> np.ndarray | None:
        """(n, C) bool, True where item i's label for class j is known (present or
        absent); ``None`` when every pair is labelled (every store but partially
        labelled multi-label ones, such as OpenMIC-2018)."""
        items = self._file["items"]
        if "label_mask" not in items:
            return None
        return np.asarray(items["label_mask"][()], dtype=bool)

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
        return sorted(self._prompt_sets)

    def prompt_set(self, name: str) -> PromptSet:
        if name not in self._prompt_sets:
            raise InputError(f"{self.path} has no prompt set {name!r} (has: {', '.join(self.prompt_sets) or 'none'})")
        return self._prompt_sets[name]

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


def _check_objects(f: h5py.File, path: Path) -> None:
    """Refuse what the spec forbids before anything is read (section 6).

    Every link is a hard link and every object has one name: a soft or external link, or a
    second name, would let an analysis read an array that ``verify`` checks elsewhere or
    not at all. No dataset is virtual or keeps its data in external files (other files).
    No dataset declares more than the file stores (compressed or unwritten chunks), so a
    small file cannot make a reader allocate what its header claims.
    """
    kinds = {h5py.h5l.TYPE_SOFT: "soft", h5py.h5l.TYPE_EXTERNAL: "external"}
    for name in link_names(f):
        kind = f.id.links.get_info(name).type
        label = name.decode("utf-8", "replace")
        if kind != h5py.h5l.TYPE_HARD:
            raise StoreDamaged(f"{path}: /{label} is a {kinds.get(kind, 'user-defined')} link; "
                               f"a store holds only its own objects (hard links)")
        obj = f[name]
        if h5py.h5o.get_info(obj.id).rc > 1:
            raise StoreDamaged(f"{path}: {obj.name} is reachable under several names (hard links)")
        if isinstance(obj, h5py.Dataset):
            _check_dataset_storage(obj, path)


def link_names(f: h5py.File) -> list[bytes]:
    """Every link name in the file, as HDF5 paths relative to the root.

    The visit callback only collects: an exception raised inside an HDF5 iteration on a
    damaged file can escape h5py as a SystemError, so every check runs after it.
    """
    names: list[bytes] = []
    f.id.links.visit(names.append)
    return names


def _check_dataset_storage(ds: h5py.Dataset, path: Path) -> None:
    if ds.is_virtual:
        raise StoreDamaged(f"{path}: {ds.name} is a virtual dataset; a store holds its own data")
    if ds.external:
        raise StoreDamaged(f"{path}: {ds.name} keeps its data in external files; a store holds its own data")
    # Bytes in memory per element; at least that much is on disk (a string: its 16-byte heap reference).
    declared = 0 if ds.shape is None else int(np.prod(ds.shape, dtype=np.int64)) * ds.id.get_type().get_size()
    stored = ds.id.get_storage_size()
    if stored < declared:
        raise StoreDamaged(
            f"{path}: {ds.name} declares {ds.shape} ({declared} bytes) but the file holds {stored} bytes of it; "
            f"datasets are stored uncompressed with every chunk written"
        )


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
        if "already open for write" in first:  # the superblock's write mark (HDF5 1.10 files)
            raise InputError(f"{path} is marked open for writing by another program, or by one that stopped "
                             f"while writing it; once none is, HDF5's `h5clear -s {path}` clears the mark") from None
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
    bytes, and a size within the file: vector data cannot pass for one by chance. The file
    is read in blocks (memory: a few MiB whatever its size).
    """
    signature = b"GCOL\x01\x00\x00\x00"
    block = 4 << 20
    with open(path, "rb") as fh:
        file_size = os.fstat(fh.fileno()).st_size
        offset = 0
        while offset < file_size:
            fh.seek(offset)
            data = fh.read(block + len(signature) - 1)
            start = data.find(signature)
            while 0 <= start < block:
                _walk_heap(fh, offset + start, file_size, path)
                start = data.find(signature, start + 4)
            offset += block


def _walk_heap(fh, start: int, file_size: int, path: Path) -> None:
    """Step through the objects of the global heap collection at byte ``start``."""
    fh.seek(start + 8)
    size = int.from_bytes(fh.read(8), "little")
    end = start + size
    if not (4096 <= size and end <= file_size):
        return
    window, window_start = b"", start  # the collection, read a window at a time
    pos = start + 16
    while pos + 16 <= end:
        if not (window_start <= pos and pos + 16 <= window_start + len(window)):
            fh.seek(pos)
            window, window_start = fh.read(min(end - pos, 1 << 20)), pos
        at = pos - window_start
        index = int.from_bytes(window[at : at + 2], "little")
        length = int.from_bytes(window[at + 8 : at + 16], "little")
        step = 16 + (length + 7) // 8 * 8 if index else length
        if step == 0 or step >= 1 << 62:
            raise StoreDamaged(f"{path}: damaged HDF5 global heap (variable-length strings) at byte {start}")
        pos += step


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

    def __init__(self, f: h5py.File, events: list[dict], guard: GuardedFile | None = None):
        self._f = f
        self._events = events
        self._guard = guard

    def _check_io(self) -> None:
        """Stop at the first refused disk write (the file under construction is abandoned)."""
        if self._guard is not None and self._guard.error is not None:
            raise self._guard.error

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
        label_mask: np.ndarray | None = None,
        metadata: dict[str, Sequence] | None = None,
    ) -> None:
        """Write the items table: ids, paths, labels (or a multi-label matrix) and metadata.

        ``label_mask`` (multi-label only, same shape as ``label_matrix``) is 1 where a
        pair is labelled, present or absent, and 0 where it is unknown (partial labels);
        analyses leave unknown pairs out.
        """
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
        if labels is not None and label_mask is not None:
            raise InputError("a label mask needs a multi-label label_matrix")
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
            if label_mask is not None:
                self._write_label_mask(items, mat, label_mask)
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
        self._check_io()
        event = {"action": "set_items", "items": n, "multilabel": label_matrix is not None}
        if label_mask is not None:
            event["label_mask"] = True
        self._events.append(event)

    @staticmethod
    def _write_label_mask(items: h5py.Group, matrix: np.ndarray, label_mask) -> None:
        mask = np.asarray(label_mask)
        if mask.shape != matrix.shape:
            raise InputError(f"label_mask must have shape {matrix.shape}, got {mask.shape}")
        if not np.isin(mask, (0, 1)).all():
            raise InputError("label_mask must hold only 0 and 1")
        if np.any((matrix != 0) & (mask == 0)):
            raise InputError("label_mask leaves out a pair that the label matrix marks present")
        el.write_numeric(items, "label_mask", mask.astype(np.uint8), "label-mask")
        el.tag(items, "items", el.MASKED_ITEMS_VERSION)

    def add_audio(self, space: str, values: np.ndarray, *, dtype: str = "float32", replace: bool = False) -> None:
        """Add the audio vectors of ``space``: one row per item, in item order.

        ``values`` may be a memory map; it is written one row block at a time.
        """
        arr = el.check_matrix(values, f"audio space {space!r}")
        n = self.n_items
        if n is not None and arr.shape[0] != n:
            raise InputError(f"audio space {space!r} has {arr.shape[0]} rows for {n} items")
        blocks = list(el.row_blocks(arr.shape[0], arr.shape[1] * arr.dtype.itemsize))
        # Checked before anything is written, block by block (a memory map is never read whole).
        bad = sum(int((~np.isfinite(arr[a:b])).any(axis=1).sum()) for a, b in blocks)
        if bad:
            raise InputError(f"audio space {space!r} holds non-finite values (NaN or inf) in {bad} rows")
        with self.audio_sink(space, arr.shape[1], dtype=dtype, replace=replace) as sink:
            for start, stop in blocks:
                sink.append(arr[start:stop])

    @contextlib.contextmanager
    def audio_sink(self, space: str, dim: int, *, dtype: str = "float32",
                   replace: bool = False) -> Iterator[el.EmbeddingSink]:
        """Stream the audio vectors of ``space``: ``sink.append(rows)`` in item order.

        Memory is one block of rows, whatever the number of items; the space is complete
        (tagged, digested) when the ``with`` block ends with every row written, and is
        removed again if the block fails.

        Examples
        --------
        >>> with writer.audio_sink("joint", 512) as sink:   # doctest: +SKIP
        ...     for batch in batches:
        ...         sink.append(batch)
        """
        space = check_name(space, "space name", object_name=True)
        n = self.n_items
        if n is None:
            raise InputError("write the items before their audio vectors")
        group = self._f["audio"]
        replaced = self._replace(group, space, replace, f"audio space {space!r}")
        sink = el.EmbeddingSink(group, space, n, dim, dtype)
        try:
            yield _CheckedSink(sink, self._check_io)
            sink.close()
            self._check_io()
        except BaseException:
            with contextlib.suppress(Exception):
                del group[space]
            raise
        self._events.append(
            {"action": "add_audio", "space": space, "shape": [n, int(dim)], "dtype": dtype, "replaced": replaced}
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
            if not np.isfinite(arr).all():
                raise InputError(f"prompt set {name!r} space {space!r} holds non-finite values (NaN or inf)")
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
        self._check_io()
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
        self._check_io()
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
            el.set_digest(ds, el.digest(el.read_element(ds)))
        history = f["history"]
        stamp = {"time": now(), "embedstore": __version__}
        lines = [json.dumps({**stamp, **e}, sort_keys=True, default=el._json_default) for e in self._events]
        if lines:
            history.resize((history.shape[0] + len(lines),))
            history[-len(lines):] = np.array(lines, dtype=object)
        self._check_io()


class _CheckedSink:
    """An :class:`~embedstore.store.elements.EmbeddingSink` that stops at a refused disk write."""

    def __init__(self, sink: el.EmbeddingSink, check_io):
        self._sink = sink
        self._check_io = check_io

    @property
    def done(self) -> int:
        """Rows written so far."""
        return self._sink.done

    def append(self, rows) -> None:
        """Write the next rows, in order."""
        self._sink.append(rows)
        self._check_io()


def check_unique_ids(ids: Sequence[str], where: str = "") -> None:
    """Raise InputError naming the first item id the name policy refuses or that occurs twice."""
    try:
        check_names(ids, "item id")
    except InputError as exc:
        raise InputError(f"{where}: {exc}" if where else str(exc)) from None


@contextlib.contextmanager
def _atomic_file(path: Path, source: Path | None = None) -> Iterator[tuple[h5py.File, GuardedFile]]:
    """Yield an HDF5 file written under a temporary name beside ``path``; on success fsync
    it and rename it onto ``path``.

    ``source``: an existing store to start from, copied on disk (editing); otherwise a new
    empty file. HDF5 writes through a :class:`GuardedFile`, so it never meets a disk error
    (after one, HDF5 could crash the process on its next flush): a refused write (disk
    full, file size limit, I/O error) ends the ``with`` block as :class:`WriteFailed` and
    the temporary file is removed. Memory stays bounded by what the caller holds.
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise InputError(f"{path.parent}: no such directory")
    tmp = temp_path(path)
    fd, f = None, None
    try:
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            if source is not None:
                _copy_into(source, fd)
            guard = GuardedFile(fd)
            if source is None:
                f = h5py.File(guard, "w", libver=("v110", "v110"), rdcc_nbytes=WRITE_CHUNK_CACHE)
            else:
                f = h5py.File(guard, "r+", rdcc_nbytes=WRITE_CHUNK_CACHE)
            if guard.error is not None:
                raise guard.error
            yield f, guard
            f.close()
            if guard.error is not None:
                raise guard.error
            os.fsync(fd)
            os.close(fd)
            fd = None
            os.replace(tmp, path)
        except OSError as exc:
            raise WriteFailed(f"cannot write {path}: {exc.strerror or _first_line(exc)}; nothing was replaced") from None
    finally:
        if f is not None:
            with contextlib.suppress(Exception):
                f.close()
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        # On a read-only file system even unlinking a missing file fails (EROFS).
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _copy_into(source: Path, fd: int) -> None:
    """Copy ``source`` into the open descriptor ``fd`` on disk, 1 MiB at a time."""
    with open(source, "rb") as src, os.fdopen(os.dup(fd), "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


@contextlib.contextmanager
def create_store(
    path: str | os.PathLike,
    *,
    model: str,
    dataset: str,
    classes: Sequence[str],
    provenance: dict | None = None,
    overwrite: bool = False,
    record_host: bool = False,
) -> Iterator[StoreWriter]:
    """Create a store atomically, streaming it to disk.

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
    record_host : bool
        Record the host and user names in the provenance (off by default: stores are
        shared, and these are private).

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
        with _create(path, str(model), str(dataset), classes, provenance, replaced, record_host) as writer:
            yield writer


@contextlib.contextmanager
def _create(path: Path, model: str, dataset: str, classes: list[str], provenance: dict | None,
            replaced: bool, record_host: bool) -> Iterator[StoreWriter]:
    events = [{"action": "create", "model": str(model), "dataset": str(dataset), "overwrote": replaced}]
    with _atomic_file(path) as (f, guard):
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
        record.update(host_record() if record_host else {})
        record.update(provenance or {})
        el.write_json(f, "provenance", record)
        el.write_json_lines(f, "history", [])
        writer = StoreWriter(f, events, guard)
        writer._check_io()
        yield writer
        writer._finish()


def host_record() -> dict:
    """Host and user names, recorded only when asked (``--record-host``), saying so."""
    record = {"host": socket.gethostname(), "record_host": True}
    with contextlib.suppress(Exception):
        record["user"] = getpass.getuser()
    return record


@contextlib.contextmanager
def edit_store(path: str | os.PathLike) -> Iterator[StoreWriter]:
    """Change an existing store atomically: work on a copy on disk, then rename it into place.

    A store of format 1.0 is upgraded to the current format on the way: its recorded
    digests are bound to their paths (section 4.3 of the spec), as its names stand now.
    """
    path = Path(path)
    # The lock spans read, change and rename: two editors never lose each other's work.
    with writer_lock(path):
        with open_store(path) as st:  # refuse to edit something that is not a sound store
            version = st.format_version
        with _atomic_file(path, source=path) as (f, guard):
            events = [{"action": "edit"}]
            if not binds_paths(version):
                _bind_paths(f)
                el.tag(f, FORMAT_TYPE, FORMAT_VERSION)
                events.append({"action": "upgrade", "from": version, "to": FORMAT_VERSION})
            writer = StoreWriter(f, events, guard)
            yield writer
            writer._finish()


def binds_paths(version: str) -> bool:
    """Whether a store of format ``version`` binds its digests to paths (1.1 and later)."""
    parts = (str(version).split(".") + ["0"])[:2]
    try:
        return (int(parts[0]), int(parts[1])) >= (1, 1)
    except ValueError:
        return True  # an unreadable minor: hold the store to the stricter rules


def _bind_paths(f: h5py.File) -> None:
    """Add the path binding to every recorded digest of a 1.0 store (no data is read)."""
    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and el.DIGEST_ATTR in obj.attrs:
            el.set_digest(obj, el._as_str(obj.attrs[el.DIGEST_ATTR]))

    f.visititems(visit)
