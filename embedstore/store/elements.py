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

STR_DTYPE = h5py.string_dtype("utf-8")

# Element types this reader understands, with the version it writes.
ELEMENT_VERSIONS = {
    "string-array": "1.0.0",
    "numeric-array": "1.0.0",
    "embedding": "1.0.0",
    "label-index": "1.0.0",
    "label-matrix": "1.0.0",
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
    check_version(obj.name, version, ELEMENT_VERSIONS[encoding_type])


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
    h = hashlib.sha256()
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        arr = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    else:
        strings = [_as_str(v) for v in np.asarray(values, dtype=object).ravel()]
        h.update(f"str({len(strings)})".encode())
        for s in strings:
            b = s.encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
    return h.hexdigest()


# -- writers -----------------------------------------------------------------------


def write_strings(group: h5py.Group, name: str, values) -> h5py.Dataset:
    strings = [str(v) for v in values]
    ds = group.create_dataset(name, data=np.array(strings, dtype=object), dtype=STR_DTYPE)
    tag(ds, "string-array", ELEMENT_VERSIONS["string-array"])
    ds.attrs[DIGEST_ATTR] = digest(strings)
    return ds


def write_numeric(group: h5py.Group, name: str, values: np.ndarray, encoding_type="numeric-array"):
    arr = np.asarray(values)
    ds = group.create_dataset(name, data=arr)
    tag(ds, encoding_type, ELEMENT_VERSIONS[encoding_type])
    ds.attrs[DIGEST_ATTR] = digest(arr)
    return ds


def write_embedding(group: h5py.Group, name: str, values: np.ndarray, dtype: str = "float32"):
    """Write a 2-D embedding array row-chunked, fletcher32-checksummed, with its digest."""
    arr = check_matrix(values, f"{group.name}/{name}")
    if dtype not in ("float32", "float16"):
        raise InputError(f"dtype must be float32 or float16, not {dtype!r}")
    with np.errstate(over="ignore"):
        stored = arr.astype(dtype)
    if not np.isfinite(stored).all():
        raise InputError(f"{group.name}/{name} overflows {dtype}; store it as float32")
    n, d = stored.shape
    rows = max(1, min(n, CHUNK_BYTES // max(1, d * stored.itemsize)))
    ds = group.create_dataset(
        name, data=stored, chunks=(rows, d) if n else None, fletcher32=bool(n)
    )
    tag(ds, "embedding", ELEMENT_VERSIONS["embedding"])
    ds.attrs[DIGEST_ATTR] = digest(stored)
    return ds


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
    """Return ``values`` as a finite 2-D float array, or raise InputError."""
    arr = np.asarray(values)
    if arr.ndim != 2:
        raise InputError(f"{what} must be a 2-D array (rows x dims), got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{what} must be numeric, got dtype {arr.dtype}")
    if arr.shape[1] == 0:
        raise InputError(f"{what} has vectors of size 0")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise InputError(f"{what} holds non-finite values (NaN or inf) in {bad} rows")
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
    check_version(ds.name, version, ELEMENT_VERSIONS[etype])
    try:
        return READERS[etype](ds)
    except OSError as exc:
        raise StoreDamaged(f"cannot read {ds.name}: {exc}") from None
    except UnicodeDecodeError:
        raise StoreDamaged(f"{ds.name} holds text that is not valid UTF-8") from None
