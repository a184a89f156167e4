"""Resumable extraction: append batches durably, survive kill -9, end in one store.

An extraction of ``OUT.h5`` keeps its progress in the folder ``OUT.h5.partial/``:

- ``header.json``: the run's identity (model, dataset, classes, provenance, spaces and
  their dims, a run id) and its items table;
- ``batch-<start>.npz``: one file per appended batch, holding the rows that succeeded,
  their vectors per space, and the rows that failed with their reasons.

Each file is written under a temporary name, fsynced and renamed, so after a kill every
file present is complete; a half-written batch is simply redone. :meth:`Journal.finalize`
assembles the batches into the final store with :func:`embedstore.store.create_store`
(itself atomic) and removes the folder. Readers that open ``OUT.h5`` meanwhile get a
clear :class:`~embedstore.errors.StoreIncomplete` error instead of partial data.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np

from embedstore.errors import InputError, StoreExists, StoreIncomplete, WriteFailed
from embedstore.store.core import create_store, open_store
from embedstore.store.fileio import write_atomic
from embedstore.store.partial import (
    HEADER,
    JOURNAL_SUFFIX,
    batch_name,
    journal_dir,
    scan_batches,
)


class Journal:
    """Durable, resumable row-by-row writer for one extraction run.

    Use :meth:`open`; then, in row order, :meth:`append` each batch; then :meth:`finalize`.
    """

    def __init__(self, out: Path, header: dict):
        self.out = out
        self.dir = journal_dir(out)
        self.header = header
        self.next_row, self._batches = scan_batches(self.dir)
        # Set when a killed run had already renamed the final store into place.
        self.already_done = False

    @property
    def n_items(self) -> int:
        return len(self.header["items"]["ids"])

    @property
    def complete(self) -> bool:
        """True when every row has been appended (only finalize is left)."""
        return self.next_row >= self.n_items

    @classmethod
    def open(
        cls,
        out: str | os.PathLike,
        *,
        header: dict,
        items: dict,
        spaces: dict[str, int],
        resume: bool = False,
        overwrite: bool = False,
    ) -> "Journal":
        """Start a run writing ``out``, or resume the unfinished one.

        Parameters
        ----------
        header : dict
            ``model``, ``dataset``, ``classes`` and ``provenance`` of the final store.
        items : dict
            ``ids``, ``paths``, ``labels`` or ``label_matrix`` (with an optional
            ``label_mask``), ``metadata`` (JSON-able).
        spaces : dict
            Audio space name -> vector size.
        resume : bool
            Continue a journal left by a killed run; it must describe the same run.
        overwrite : bool
            Allow replacing an existing store at ``out`` when the run finalizes.
        """
        out = Path(out)
        jdir = journal_dir(out)
        identity = {
            "model": header["model"],
            "dataset": header["dataset"],
            "classes": list(header["classes"]),
            "provenance": header.get("provenance", {}),
            "spaces": dict(spaces),
            "items": _jsonable(items),
        }
        _discard_leftovers(jdir)
        if jdir.is_dir() and (jdir / HEADER).exists():
            if not resume:
                raise StoreExists(
                    f"{out} has an unfinished extraction in {jdir}; pass --resume to continue it "
                    f"or delete that folder to start again"
                )
            saved = json.loads((jdir / HEADER).read_text())
            for key in ("model", "dataset", "classes", "spaces", "items"):
                if saved[key] != identity[key]:
                    raise InputError(
                        f"cannot resume {out}: the unfinished run used a different {key}; "
                        f"delete {jdir} to start again"
                    )
            _same_weights(saved["provenance"], identity["provenance"], out)
            journal = cls(out, saved)
            if out.exists() and journal._finalized():
                _remove_dir(jdir)
                journal.already_done = True
            return journal
        if out.exists() and resume and not overwrite:
            open_store(out).close()
            journal = cls(out, {**identity, "run_id": None})
            journal.already_done = True  # nothing left to resume: the store is complete
            return journal
        if out.exists() and not overwrite:
            raise StoreExists(f"{out} exists; pass --overwrite to replace it")
        try:
            jdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WriteFailed(f"cannot create {jdir}: {exc.strerror or exc}") from None
        identity["run_id"] = uuid.uuid4().hex
        write_atomic(jdir / HEADER, lambda fh: fh.write(json.dumps(identity).encode()))
        return cls(out, identity)

    def _finalized(self) -> bool:
        """Whether ``out`` is the store this run already finalized (kill after the rename)."""
        try:
            with open_store(self.out) as st:
                return st.provenance.get("run_id") == self.header["run_id"]
        except Exception:
            return False

    def update_provenance(self, changes: dict) -> None:
        """Merge ``changes`` into the run's provenance, durably (``header.json`` is rewritten
        atomically), e.g. a resumed run's new batch size."""
        self.header = {**self.header, "provenance": {**self.header.get("provenance", {}), **changes}}
        header = self.header
        write_atomic(self.dir / HEADER, lambda fh: fh.write(json.dumps(header).encode()))

    def append(
        self,
        start: int,
        rows_ok: Sequence[int],
        vectors: dict[str, np.ndarray],
        failed: Sequence[tuple[int, str]] = (),
        stop: int | None = None,
    ) -> None:
        """Durably record one batch covering rows ``start`` to ``stop`` (exclusive).

        ``rows_ok`` are the rows embedded, with ``vectors[space][i]`` for ``rows_ok[i]``;
        ``failed`` lists ``(row, reason)`` for the rest. ``stop`` defaults to one past
        the largest row mentioned.
        """
        if start != self.next_row:
            raise InputError(f"batch starts at row {start}, but the journal expects row {self.next_row}")
        rows_ok = np.asarray(rows_ok, dtype=np.int64)
        failed_rows = np.asarray([r for r, _ in failed], dtype=np.int64)
        mentioned = np.concatenate([rows_ok, failed_rows])
        if stop is None:
            stop = int(mentioned.max()) + 1 if mentioned.size else start
        if mentioned.size and (mentioned.min() < start or mentioned.max() >= stop):
            raise InputError(f"batch rows must lie in {start}..{stop - 1}")
        arrays = {"stop": np.int64(stop), "rows_ok": rows_ok, "failed_rows": failed_rows}
        arrays["failed_reasons"] = np.array([str(r) for _, r in failed], dtype=str)
        for space, dim in self.header["spaces"].items():
            vec = np.asarray(vectors[space], dtype=np.float32)
            if vec.shape != (len(rows_ok), dim):
                raise InputError(f"space {space!r}: got {vec.shape}, expected ({len(rows_ok)}, {dim})")
            arrays[f"space/{space}"] = vec
        write_atomic(self.dir / batch_name(start), lambda fh: np.savez(fh, **arrays))
        self._batches.append(self.dir / batch_name(start))
        self.next_row = stop

    def finalize(self, prompt_sets: Sequence[dict] = (), dtype: str = "float32", provenance: dict | None = None,
                 *, record_host: bool = False) -> Path:
        """Write the final store atomically from the batches, then remove the journal.

        Rows that failed are left out of the items table and recorded as failures. The
        vectors go from each batch file to the store one batch at a time, so memory holds
        one batch, not the store. ``record_host``: record host and user names (off by default).
        """
        if not self.complete:
            raise StoreIncomplete(f"{self.out}: only {self.next_row} of {self.n_items} items are done")
        h, items = self.header, self.header["items"]
        # Row numbers and failures are small; the vectors stay in the batch files and are
        # streamed into the store one batch at a time.
        ok, failed = [], []
        for path in self._batches:
            with np.load(path, allow_pickle=False) as z:
                ok.append(z["rows_ok"])
                failed += list(zip(z["failed_rows"].tolist(), z["failed_reasons"].tolist()))
        ok = np.concatenate(ok) if ok else np.zeros(0, dtype=np.int64)
        prov = {**h["provenance"], **(provenance or {}), "run_id": h["run_id"]}
        with create_store(
            self.out, model=h["model"], dataset=h["dataset"], classes=h["classes"], provenance=prov,
            overwrite=True, record_host=record_host,
        ) as w:
            labels = items.get("labels")
            matrix = items.get("label_matrix")
            mask = items.get("label_mask")
            w.set_items(
                [items["ids"][i] for i in ok],
                [items["paths"][i] for i in ok],
                labels=None if labels is None else np.asarray(labels, dtype=np.int64)[ok],
                label_matrix=None if matrix is None else np.asarray(matrix, dtype=np.uint8)[ok],
                label_mask=None if mask is None else np.asarray(mask, dtype=np.uint8)[ok],
                metadata={k: [v[i] for i in ok] for k, v in (items.get("metadata") or {}).items()},
            )
            for space, dim in h["spaces"].items():
                with w.audio_sink(space, dim, dtype=dtype) as sink:
                    for path in self._batches:
                        with np.load(path, allow_pickle=False) as z:
                            sink.append(z[f"space/{space}"])
            for ps in prompt_sets:
                ps = captions_of_rows(ps, ok, len(items["ids"]))
                w.add_prompt_set(
                    ps["name"], ps["prompts"], ps["classes"], ps.get("embeddings"), terms=ps.get("terms"),
                    items=ps.get("items"), source=ps.get("source"), dtype=dtype,
                )
            for row, reason in sorted(failed):
                w.add_failed(items["paths"][row], reason)
        _remove_dir(self.dir)
        return self.out


def captions_of_rows(ps: dict, ok: np.ndarray, n_rows: int) -> dict:
    """A caption set cut to the captions of items ``ok`` (of ``n_rows``), their rows renumbered
    to positions in ``ok``: the failed rows dropped, or one shard's rows kept. Other prompt
    sets are returned as they are."""
    if ps.get("items") is None:
        return ps
    new_row = np.full(n_rows, -1, dtype=np.int64)
    new_row[ok] = np.arange(len(ok))
    rows = new_row[np.asarray(ps["items"], dtype=np.int64)]
    keep = rows >= 0
    return {**ps, "prompts": [p for p, k in zip(ps["prompts"], keep) if k],
            "classes": np.asarray(ps["classes"])[keep], "items": rows[keep],
            "terms": None if ps.get("terms") is None else [t for t, k in zip(ps["terms"], keep) if k],
            "embeddings": {s: np.asarray(v)[keep] for s, v in (ps.get("embeddings") or {}).items()}}


def _same_weights(saved: dict, current: dict, out: Path) -> None:
    a, b = saved.get("checkpoint_sha256"), current.get("checkpoint_sha256")
    if a != b:
        raise InputError(f"cannot resume {out}: it was started with weights {a}, now {b}")


def _jsonable(items: dict) -> dict:
    """Items as plain JSON types, so a resumed run can compare them with the saved ones."""
    out = {}
    for key, value in items.items():
        if value is None:
            continue
        if key == "metadata":
            out[key] = {k: np.asarray(v).tolist() for k, v in value.items()}
        else:
            out[key] = np.asarray(value).tolist()
    out["paths"] = [str(p) for p in out.get("paths", [""] * len(out["ids"]))]
    out["ids"] = [str(i) for i in out["ids"]]
    return out


def _trash(jdir: Path) -> Path:
    """The name a journal takes while it is being deleted."""
    return jdir.with_name(jdir.name + ".remove")


def _remove_dir(jdir: Path) -> None:
    """Remove a journal so that a kill part-way never leaves a half-deleted one behind.

    The folder is first renamed (atomic) to a name that :func:`_discard_leftovers`
    deletes on sight, then deleted.
    """
    trash = _trash(jdir)
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(jdir, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _discard_leftovers(jdir: Path) -> None:
    """Delete what a killed run can leave: a journal being removed, one without its header,
    and the temporary file of a final store that was being written."""
    shutil.rmtree(_trash(jdir), ignore_errors=True)
    out_name = jdir.name[: -len(JOURNAL_SUFFIX)]
    for tmp in jdir.parent.glob(f".{glob.escape(out_name)}.*.tmp"):
        tmp.unlink(missing_ok=True)
    if jdir.is_dir() and not (jdir / HEADER).exists():
        shutil.rmtree(jdir, ignore_errors=True)
