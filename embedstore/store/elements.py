"""Typed HDF5 elements: every group and dataset carries ``encoding-type`` and
``encoding-version`` attributes, and reading dispatches on that pair.

This follows anndata's on-disk spec: one reader and one writer per element type, so a
new version adds a function instead of an ``if`` in every reader, and an unknown or
newer element fails with a clear message. ``docs/store-format.md`` describes each type.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Callable

import h5py
import numpy as np

from embedstore.errors import InputError, StoreDamaged, StoreTooNew

TYPE_ATTR = "encoding-type"
VERSION_ATTR = "encoding-version"
DIGEST_ATTR = "sha256"
# Since format 1.1: the content digest bound to the element's HDF5 path (section 4.3).
PATH_DIGEST_ATTR = "path-sha256"

STR_DTYPE = h5py.string_dtype("utf-8")

# Element types this reader understands, with the version it writes.
ELEMENT_VERSIONS = {
    "string-array": "1.0.0",
    "numeric-array": "1.0.0",
    "embedding": "1.0.0",
    "label-index": "1.0.0",
    "label-matrix": "1.0.0",
    "label-mask": "1.0.0",
    "item-index": "1.0.0",
    "json": "1.0.0",
    "json-lines": "1.0.0",
    # groups
    "items": "1.0.0",
    "dataframe": "1.0.0",
    "spaces": "1.0.0",
    "prompt-sets": "1.0.0",
    "prompt-set": "1.0.0",
    "failed-items": "1.0.0",
}

# An items table with a label mask is written at this version (a 1.x reader would read
# unlabelled pairs as negatives, so it must refuse); without one, at ELEMENT_VERSIONS's.
MASKED_ITEMS_VERSION = "2.0.0"

# The newest version read of each type, where it differs from the version written.
READ_VERSIONS = {**ELEMENT_VERSIONS, "items": MASKED_ITEMS_VERSION}

# Embedding chunks hold about this many bytes, so a streaming reader pulls whole rows.
CHUNK_BYTES = 1 << 20


def tag(obj: h5py.HLObject, encoding_type: str, version: str) -> None:
    """Write the type and version attributes of ``obj``."""
    obj.attrs[TYPE_ATTR] = encoding_type
    obj.attrs[VERSION_ATTR] = version


def read_tag(obj: h5py.HLObject) -> tuple[str, str]:
    """Return ``(encoding-type, encoding-version)`` of ``obj``, or raise StoreDamaged."""
    try:
        etype = obj.attrs[TYPE_ATTR]
        version = obj.attrs[VERSION_ATTR]
        return _as_str(etype), _as_str(version)
    except KeyError:
        raise StoreDamaged(f"{obj.name} has no {TYPE_ATTR}/{VERSION_ATTR} attributes") from None
    except (OSError, UnicodeDecodeError):
        raise StoreDamaged(f"{obj.name} has unreadable {TYPE_ATTR}/{VERSION_ATTR} attributes") from None


def check_version(name: str, version: str, supported: str) -> None:
    """Refuse a newer major version; accept any minor or patch of the same major."""
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise StoreDamaged(f"{name} has an unreadable version {version!r}") from None
    if major > int(supported.split(".")[0]):
        raise StoreTooNew(
            f"{name} uses format version {version}, newer than this embedstore reads "
            f"({supported}); upgrade embedstore"
        )
    if major < 1:
        raise StoreDamaged(f"{name} has an invalid version {version!r}")


# Element types stored as HDF5 groups; every other type is a dataset.
GROUP_TYPES = {"items", "dataframe", "spaces", "prompt-sets", "prompt-set", "failed-items"}


def expect(obj: h5py.HLObject, encoding_type: str) -> None:
    """Check that ``obj`` is tagged as ``encoding_type`` at a version we read."""
    is_group = encoding_type in GROUP_TYPES
    if isinstance(obj, h5py.Group) != is_group:
        raise StoreDamaged(f"{obj.name} should be a {'group' if is_group else 'dataset'}")
    etype, version = read_tag(obj)
    if etype != encoding_type:
        raise StoreDamaged(f"{obj.name} is tagged {etype!r}, expected {encoding_type!r}")
    check_version(obj.name, version, READ_VERSIONS[encoding_type])


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (HDF5's run over several)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _as_str(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


# -- digests -----------------------------------------------------------------------


def digest(values: np.ndarray | list[str]) -> str:
    """SHA-256 of an array's content, independent of chunking and compression.

    Numeric arrays hash their shape, their dtype in little-endian form and their bytes
    in C order; string arrays hash each UTF-8 string prefixed by its byte length.
    """
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        h = numeric_hasher(values.dtype, values.shape)
        h.update(_little_endian(values))
        return h.hexdigest()
    h = hashlib.sha256()
    strings = [_as_str(v) for v in np.asarray(values, dtype=object).ravel()]
    h.update(f"str({len(strings)})".encode())
    for s in strings:
        b = s.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def numeric_hasher(dtype: np.dtype, shape: tuple[int, ...]):
    """A SHA-256 fed the header of a numeric digest; feed it the C-order little-endian bytes."""
    dtype = np.dtype(dtype).newbyteorder("<")
    shape = tuple(int(s) for s in shape)
    return hashlib.sha256(f"{dtype.str}{shape}".encode())


def _little_endian(arr: np.ndarray) -> memoryview:
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    return memoryview(arr.reshape(-1).view(np.uint8))


def path_digest(path: str, content_digest: str) -> str:
    """Bind a content digest to the element's HDF5 path: SHA-256 of ``path NUL digest``."""
    # A damaged name decodes with surrogates; it still hashes (and no longer matches).
    name = path.encode("utf-8", "surrogateescape")
    return hashlib.sha256(name + b"\0" + content_digest.encode("ascii", "replace")).hexdigest()


def set_digest(ds: h5py.Dataset, content_digest: str) -> None:
    """Record a dataset's content digest and its binding to the dataset's path."""
    ds.attrs[DIGEST_ATTR] = content_digest
    ds.attrs[PATH_DIGEST_ATTR] = path_digest(ds.name, content_digest)


def row_blocks(rows: int, row_bytes: int, block_bytes: int = 4 * CHUNK_BYTES):
    """``(start, stop)`` row ranges of about ``block_bytes`` each (at least one row)."""
    step = max(1, block_bytes // max(1, row_bytes))
    for start in range(0, rows, step):
        yield start, min(rows, start + step)


def digest_dataset(ds: h5py.Dataset, check_block=None) -> str:
    """The content digest of a stored dataset, read in row blocks (memory: one block).

    ``check_block(block)`` is called on each numeric block as it is read.
    """
    if ds.dtype.kind == "O" or h5py.check_string_dtype(ds.dtype) is not None:
        return digest([_as_str(v) for v in ds[()]])
    if ds.ndim == 0 or ds.shape[0] == 0:  # read as a whole: HDF5 checks its layout even when empty
        value = np.asarray(ds[()])
        if check_block:
            check_block(value)
        return digest(value)
    h = numeric_hasher(ds.dtype, ds.shape)
    row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[1:], dtype=np.int64))
    for start, stop in row_blocks(ds.shape[0], row_bytes):
        block = ds[start:stop]
        if check_block:
            check_block(block)
        h.update(_little_endian(block))
    return h.hexdigest()


# -- writers -----------------------------------------------------------------------


def write_strings(group: h5py.Group, name: str, values) -> h5py.Dataset:
    strings = [str(v) for v in values]
    ds = group.create_dataset(name, data=np.array(strings, dtype=object), dtype=STR_DTYPE)
    tag(ds, "string-array", ELEMENT_VERSIONS["string-array"])
    set_digest(ds, digest(strings))
    return ds


def write_numeric(group: h5py.Group, name: str, values: np.ndarray, encoding_type="numeric-array"):
    arr = np.asarray(values)
    ds = group.create_dataset(name, data=arr)
    tag(ds, encoding_type, ELEMENT_VERSIONS[encoding_type])
    set_digest(ds, digest(arr))
    return ds


def write_embedding(group: h5py.Group, name: str, values: np.ndarray, dtype: str = "float32"):
    """Write a 2-D embedding array row-chunked, fletcher32-checksummed, with its digest.

    ``values`` may be a memory map: it is read and written one row block at a time.
    """
    arr = check_matrix(values, f"{group.name}/{name}")
    sink = EmbeddingSink(group, name, arr.shape[0], arr.shape[1], dtype)
    for start, stop in row_blocks(arr.shape[0], arr.shape[1] * arr.dtype.itemsize):
        sink.append(arr[start:stop])
    return sink.close()


class EmbeddingSink:
    """Write an ``embedding`` of ``rows`` x ``dim`` block by block, in row order.

    Each block is checked (finite, right width), cast to the storage dtype, written and
    fed to the digest, so memory is one block whatever the array's size. :meth:`close`
    checks that every row came and records the tag and digests.
    """

    def __init__(self, group: h5py.Group, name: str, rows: int, dim: int, dtype: str = "float32"):
        if dtype not in ("float32", "float16"):
            raise InputError(f"dtype must be float32 or float16, not {dtype!r}")
        if dim < 1:
            raise InputError(f"{group.name}/{name} has vectors of size 0")
        self.what = f"{group.name.rstrip('/')}/{name}"
        self.rows, self.dim, self.dtype = int(rows), int(dim), np.dtype(dtype)
        chunk_rows = max(1, min(self.rows, CHUNK_BYTES // (self.dim * self.dtype.itemsize)))
        self.ds = group.create_dataset(
            name, shape=(self.rows, self.dim), dtype=self.dtype,
            chunks=(chunk_rows, self.dim) if self.rows else None, fletcher32=bool(self.rows),
        )
        self._hash = numeric_hasher(self.dtype, (self.rows, self.dim))
        self.done = 0

    def append(self, block) -> None:
        """Write the next rows (a 2-D array of ``dim`` columns)."""
        arr = np.asarray(block)
        if arr.ndim != 2 or arr.shape[1] != self.dim or arr.dtype.kind not in "fiu":
            raise InputError(f"{self.what}: expected numeric rows of {self.dim} values, got {arr.dtype} {arr.shape}")
        if self.done + arr.shape[0] > self.rows:
            raise InputError(f"{self.what}: more than the {self.rows} rows it was declared with")
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).any(axis=1).sum())
            raise InputError(f"{self.what} holds non-finite values (NaN or inf) in {bad} rows")
        with np.errstate(over="ignore"):
            stored = arr.astype(self.dtype)
        if not np.isfinite(stored).all():
            raise InputError(f"{self.what} overflows {self.dtype.name}; store it as float32")
        stop = self.done + stored.shape[0]
        if stored.shape[0]:
            self.ds[self.done : stop] = stored
        self._hash.update(_little_endian(stored))
        self.done = stop

    def close(self) -> h5py.Dataset:
        """Tag the dataset and record its digests, once every row is written."""
        if self.done != self.rows:
            raise InputError(f"{self.what}: {self.done} rows written of the {self.rows} declared")
        tag(self.ds, "embedding", ELEMENT_VERSIONS["embedding"])
        set_digest(self.ds, self._hash.hexdigest())
        return self.ds


def write_json(group: h5py.Group, name: str, value: Any) -> h5py.Dataset:
    text = json.dumps(value, sort_keys=True, default=_json_default)
    ds = group.create_dataset(name, data=text, dtype=STR_DTYPE)
    tag(ds, "json", ELEMENT_VERSIONS["json"])
    return ds


def write_json_lines(group: h5py.Group, name: str, records: list[dict]) -> h5py.Dataset:
    lines = [json.dumps(r, sort_keys=True, default=_json_default) for r in records]
    ds = group.create_dataset(
        name, data=np.array(lines, dtype=object), dtype=STR_DTYPE, maxshape=(None,)
    )
    tag(ds, "json-lines", ELEMENT_VERSIONS["json-lines"])
    return ds


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def check_matrix(values, what: str) -> np.ndarray:
    """Return ``values`` as a 2-D numeric array, or raise InputError.

    Finiteness is checked where the rows are written (:class:`EmbeddingSink`), block by
    block, so a memory-mapped array is never read whole.
    """
    arr = values if isinstance(values, np.ndarray) else np.asarray(values)
    if arr.ndim != 2:
        raise InputError(f"{what} must be a 2-D array (rows x dims), got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{what} must be numeric, got dtype {arr.dtype}")
    if arr.shape[1] == 0:
        raise InputError(f"{what} has vectors of size 0")
    return arr


# -- readers -----------------------------------------------------------------------


def _read_strings(ds: h5py.Dataset) -> list[str]:
    return [_as_str(v) for v in ds[()]]


def _read_numeric(ds: h5py.Dataset) -> np.ndarray:
    return ds[()]


def _read_json(ds: h5py.Dataset) -> Any:
    try:
        return json.loads(_as_str(ds[()]))
    except (ValueError, TypeError) as exc:
        raise StoreDamaged(f"{ds.name} is not valid JSON ({exc})") from None


def _read_json_lines(ds: h5py.Dataset) -> list:
    try:
        return [json.loads(_as_str(v)) for v in ds[()]]
    except (ValueError, TypeError) as exc:
        raise StoreDamaged(f"{ds.name} holds a line that is not JSON ({exc})") from None


READERS: dict[str, Callable[[h5py.Dataset], Any]] = {
    "string-array": _read_strings,
    "numeric-array": _read_numeric,
    "embedding": _read_numeric,
    "label-index": _read_numeric,
    "label-matrix": _read_numeric,
    "label-mask": _read_numeric,
    "item-index": _read_numeric,
    "json": _read_json,
    "json-lines": _read_json_lines,
}


def read_element(ds: h5py.Dataset, expected: str | tuple[str, ...] | None = None) -> Any:
    """Read a tagged dataset through the reader registered for its type and version."""
    if not isinstance(ds, h5py.Dataset):
        raise StoreDamaged(f"{ds.name} should be a dataset")
    etype, version = read_tag(ds)
    if etype not in READERS:
        raise StoreDamaged(f"{ds.name} has unknown encoding-type {etype!r}")
    if expected is not None and etype not in np.atleast_1d(expected):
        raise StoreDamaged(f"{ds.name} is tagged {etype!r}, expected {expected!r}")
    check_version(ds.name, version, READ_VERSIONS[etype])
    try:
        return READERS[etype](ds)
    except OSError as exc:
        raise StoreDamaged(f"cannot read {ds.name}: {exc}") from None
    except UnicodeDecodeError:
        raise StoreDamaged(f"{ds.name} holds text that is not valid UTF-8") from None
