"""Item selection: run any analysis on the items of a store that match metadata or an id list.

A :class:`Selection` (``--where COLUMN=VALUE``, repeatable, and ``--items FILE``) turns an
open store into a :class:`StoreView`: the same interface, restricted to the chosen items in
store order. Every analysis reads stores through :func:`analyses.embeddings.opened`, so every
analysis and the report accept a selection without knowing about it.

Rules: values given for one column are alternatives (``--where split=test --where split=val``
keeps both); different columns must all match; ``--items`` keeps the ids listed, and with
``--where`` an item must satisfy both. A selection that keeps no item is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedstore.errors import InputError
from embedstore.store.names import check_name

READ_BLOCK = 8192


@dataclass
class Selection:
    """Which items an analysis reads.

    Attributes
    ----------
    where : dict
        Metadata column -> accepted values (as text; numeric columns compare as numbers).
    items_file : str or None
        A file of item ids, one per line (blank lines and lines starting with ``#`` skipped).
    """

    where: dict[str, list[str]] = field(default_factory=dict)
    items_file: str | None = None
    flag: str = "--where"
    fit: Selection | None = None

    @classmethod
    def parse(cls, where: list[str] | None = None, items_file=None, flag: str = "--where",
              fit_where: list[str] | None = None) -> Selection | None:
        """From ``COLUMN=VALUE`` strings and an ids file; None when neither is given.

        ``flag`` is the option the conditions came from, for messages. ``fit_where``
        (``--fit-where``): the items whose class means are the audio centroids, others
        than the selected ones (which they then need).
        """
        fit = cls.parse(fit_where, flag="--fit-where") if fit_where else None
        selection = cls._parse(where, items_file, flag)
        if fit is None:
            return selection
        if selection is None:
            raise InputError("--fit-where fits the centroids on other items than those scored: give --where "
                             "or --items for the items to score")
        selection.fit = fit
        return selection

    @classmethod
    def _parse(cls, where, items_file, flag: str) -> Selection | None:
        conditions: dict[str, list[str]] = {}
        for text in where or []:
            column, sep, value = text.partition("=")
            if not sep:
                raise InputError(f"{flag} takes COLUMN=VALUE, got {text!r}")
            column = check_name(column, "metadata column", object_name=True)
            conditions.setdefault(column, [])
            if value.strip() not in conditions[column]:
                conditions[column].append(value.strip())
        if not conditions and items_file is None:
            return None
        return cls(conditions, None if items_file is None else str(items_file), flag)

    def read_ids(self) -> list[str]:
        """The ids in :attr:`items_file`, checked by the name policy."""
        try:
            lines = Path(self.items_file).read_text(encoding="utf-8-sig").splitlines()
        except FileNotFoundError:
            raise InputError(f"items file not found: {self.items_file}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read items file {self.items_file}: {exc}") from None
        ids = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not ids:
            raise InputError(f"items file {self.items_file} lists no item id")
        return [check_name(i, "item id") for i in ids]

    def mask(self, store) -> np.ndarray:
        """(n_items,) bool: the store's items this selection keeps."""
        keep = np.ones(store.n_items, dtype=bool)
        metadata = store.metadata if self.where else {}
        for column, values in self.where.items():
            if column not in metadata:
                known = ", ".join(store.metadata_columns) or "none"
                raise InputError(f"{self.flag} {column}=...: the store has no item column {column!r} (has: {known})")
            keep &= _matches(metadata[column], values, column, self.flag)
        if self.items_file is not None:
            wanted = self.read_ids()
            ids = store.item_ids
            unknown = sorted(set(wanted) - set(ids.tolist()))
            if unknown:
                shown = ", ".join(repr(u) for u in unknown[:3]) + (" ..." if len(unknown) > 3 else "")
                raise InputError(f"items file {self.items_file} names {len(unknown)} id(s) the store does not "
                                 f"have: {shown}")
            keep &= np.isin(ids, wanted)
        if not keep.any():
            raise InputError(f"the selection ({self.describe()}) keeps none of the {store.n_items} items")
        return keep

    def describe(self) -> str:
        """One line for messages and titles."""
        parts = [f"{c}={'|'.join(v)}" for c, v in self.where.items()]
        if self.items_file is not None:
            parts.append(f"ids in {self.items_file}")
        fitted = f"; centroids fitted on {self.fit.describe()}" if self.fit is not None else ""
        return ", ".join(parts) + fitted

    def record(self, n_selected: int, n_store_items: int) -> dict:
        """What the JSON outputs carry about the selection."""
        out = {"where": {c: list(v) for c, v in self.where.items()}, "items_file": self.items_file,
               "n_items": int(n_selected), "n_store_items": int(n_store_items)}
        if self.items_file is not None:
            out["items_file_sha256"] = hashlib.sha256(Path(self.items_file).read_bytes()).hexdigest()
        return out


def _matches(column: np.ndarray, values: list[str], name: str, flag: str = "--where") -> np.ndarray:
    """Which entries of one metadata column equal one of ``values``."""
    if column.dtype.kind in "iufb":
        try:
            numbers = np.array([float(v) for v in values])
        except ValueError:
            raise InputError(f"{flag} {name}=...: column {name!r} is numeric; {values} is not a number") from None
        return np.isin(column.astype(np.float64), numbers)
    return np.isin(column.astype(str), values)


class SelectedRows:
    """Rows ``index`` of an (h5py or numpy) 2-D array, read a block at a time.

    Supports what :func:`analyses.embeddings.unit_rows` needs: ``shape``, ``dtype`` and
    slicing by row ranges of the selection; memory stays bounded by the block.
    """

    def __init__(self, rows, index: np.ndarray):
        self.rows = rows
        self.index = index
        self.shape = (index.size, rows.shape[1])
        self.dtype = rows.dtype

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("SelectedRows takes row slices only")
        wanted = self.index[key]
        out = np.empty((wanted.size, self.shape[1]), self.dtype)
        done = 0
        while done < wanted.size:
            first = wanted[done]
            # the selected rows that fall in one block of stored rows
            stop = done + int(np.searchsorted(wanted[done:], first + READ_BLOCK))
            block = self.rows[first:wanted[stop - 1] + 1]
            out[done:stop] = block[wanted[done:stop] - first]
            done = stop
        return out

    def __array__(self, dtype=None, copy=None):
        values = self[:]
        return values if dtype is None else values.astype(dtype)


class StoreView:
    """An open store seen through a selection: item-indexed attributes keep only chosen items.

    Everything that does not depend on items (classes, prompt sets, text vectors, model,
    provenance) is the store's own.
    """

    def __init__(self, store, selection: Selection):
        self._store = store
        self.selection = selection
        keep = selection.mask(store)
        self.index = np.flatnonzero(keep)
        self.n_items = int(self.index.size)
        self.item_ids = store.item_ids[self.index]
        self.item_paths = store.item_paths[self.index]
        self.record = selection.record(self.n_items, store.n_items)
        #: The items the audio centroids are fitted on (``--fit-where``); None: these items.
        self.fitted = None if selection.fit is None else self._fit_view(selection.fit)
        if self.fitted is not None:
            self.record["fit"] = self.fitted.record

    def _fit_view(self, fit: Selection) -> StoreView:
        """The items ``fit`` keeps; refused when it keeps none or shares an item with this view
        (centroids fitted on the items they score are what a run without ``--fit-where`` gives)."""
        view = StoreView(self._store, fit)
        shared = np.intersect1d(view.index, self.index, assume_unique=True)
        if shared.size:
            raise InputError(f"the fit selection ({fit.describe()}) and the items scored "
                             f"({Selection(self.selection.where, self.selection.items_file).describe()}) share "
                             f"{shared.size} items, such as {str(self._store.item_ids[shared[0]])!r}; "
                             "fit and score on disjoint items")
        return view

    def __getattr__(self, name):
        return getattr(self._store, name)

    @property
    def labels(self) -> np.ndarray:
        return self._store.labels[self.index]

    @property
    def label_matrix(self) -> np.ndarray:
        return self._store.label_matrix[self.index]

    @property
    def label_mask(self) -> np.ndarray | None:
        mask = self._store.label_mask
        return None if mask is None else mask[self.index]

    @property
    def metadata(self) -> dict[str, np.ndarray]:
        return {k: v[self.index] for k, v in self._store.metadata.items()}

    def audio(self, space: str, *, lazy: bool = False):
        rows = SelectedRows(self._store.audio(space, lazy=True), self.index)
        return rows if lazy else np.asarray(rows, dtype=np.float32)


def select(store, selection: Selection | None):
    """``store`` itself without a selection, else a :class:`StoreView` of it."""
    if selection is None:
        return store
    return StoreView(store, selection)


def refit(st, fit: Selection):
    """The items ``st`` shows (a store or a :class:`StoreView`), with audio centroids fitted on ``fit``."""
    if not isinstance(st, StoreView):
        raise InputError("--fit-where fits the centroids on other items than those scored: give --where "
                         "or --items for the items to score")
    return StoreView(st._store, dataclasses.replace(st.selection, fit=fit))


def selection_record(store) -> dict | None:
    """The JSON record of the selection behind ``store`` (None for a whole store)."""
    return getattr(store, "record", None) if isinstance(store, StoreView) else None
