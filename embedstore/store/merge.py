"""Shards of one sharded extraction, merged into the store one process would have written.

``embedstore extract --shard K/N`` writes ``OUT.shard-K-of-N.h5``: a normal store of the
contiguous items ``start..stop-1`` of the dataset, whose provenance records

- ``shard``: ``{"index": K, "count": N, "start": ..., "stop": ..., "items_total": ...}``
  (``start``/``stop`` are positions in the dataset's item order, failed items included);
- ``settings_fingerprint``: the run's identity, the same for every shard of one run.

:func:`merge_shards` checks that the shards belong to one run (equal fingerprints, which
this wing compares as opaque recorded values; one model, dataset, class list, spaces and
prompt sets) and cover the dataset exactly (ranges disjoint and contiguous from 0 to
``items_total``; a missing shard is named by its file name). It then writes one store,
copying the shards in order, block by block, and verifies the result. Items, vectors,
labels, metadata, failed items and prompt sets equal an unsharded run's; the provenance is
the run's, with ``merged_from`` listing each shard.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from embedstore.errors import InputError, StoreDamaged
from embedstore.store.core import Store, create_store, open_store
from embedstore.store.lock import writer_lock
from embedstore.store.outputs import check_outputs

#: Provenance key a shard records its range under.
SHARD_KEY = "shard"
#: Provenance key of the run's identity (written by extraction, compared here as-is).
FINGERPRINT_KEY = "settings_fingerprint"
#: Rows copied per block: memory is one block of one space, whatever the store's size.
BLOCK_ROWS = 65536

_SHARD_NAME = re.compile(r"\.shard-(\d+)-of-(\d+)(?=\.[^.]*$|$)")


def shard_path(out: str | os.PathLike, index: int, count: int) -> Path:
    """Where shard ``index`` of ``count`` of a run writing ``out`` goes: ``OUT.shard-K-of-N.h5``.

    >>> shard_path("runs/tinysol.h5", 0, 3).as_posix()
    'runs/tinysol.shard-0-of-3.h5'
    """
    out = Path(out)
    return out.with_name(f"{out.stem}.shard-{index}-of-{count}{out.suffix}")


@dataclass
class ShardInfo:
    """One shard as its store records it."""

    path: Path
    index: int
    count: int
    start: int
    stop: int
    items_total: int
    fingerprint: dict


@dataclass
class MergeSummary:
    """What :func:`merge_shards` wrote."""

    path: Path
    shards: int
    items: int
    failed: int
    arrays_checked: int


def read_shard(path: str | os.PathLike) -> ShardInfo:
    """The range and run identity a shard store records, or InputError saying what is missing."""
    path = Path(path)
    with open_store(path) as st:
        prov = st.provenance or {}
    record, fingerprint = prov.get(SHARD_KEY), prov.get(FINGERPRINT_KEY)
    if not isinstance(record, dict):
        raise InputError(f"{path} is not a shard (its provenance records no shard range); "
                         "shards are written by `embedstore extract --shard K/N`")
    if not isinstance(fingerprint, dict):
        raise InputError(f"{path} records no settings fingerprint, so it cannot be matched to a run")
    try:
        values = [int(record[key]) for key in ("index", "count", "start", "stop", "items_total")]
    except (KeyError, TypeError, ValueError):
        raise StoreDamaged(f"{path}: its shard record is incomplete ({record!r})") from None
    return ShardInfo(path, *values, fingerprint=fingerprint)


def check_shards(shards: Sequence[ShardInfo]) -> list[ShardInfo]:
    """Refuse shards that are not exactly one run's; return them in range order.

    Raises
    ------
    InputError
        Different runs (fingerprints differ; the settings that differ are named), a shard
        given twice, a missing shard (named by the file it would be), or ranges that do
        not tile ``0..items_total``.
    """
    if not shards:
        raise InputError("give the shard stores to merge")
    first = shards[0]
    for shard in shards[1:]:
        if shard.fingerprint != first.fingerprint:
            differ = sorted(k for k in set(shard.fingerprint) | set(first.fingerprint)
                            if shard.fingerprint.get(k) != first.fingerprint.get(k))
            raise InputError(f"{shard.path} and {first.path} are shards of different runs "
                             f"(settings differ: {', '.join(differ)})")
        if (shard.count, shard.items_total) != (first.count, first.items_total):
            raise InputError(f"{shard.path} is shard {shard.index} of {shard.count} over {shard.items_total} "
                             f"items, {first.path} one of {first.count} over {first.items_total}")
    by_index: dict[int, ShardInfo] = {}
    for shard in shards:
        if shard.index in by_index:
            raise InputError(f"shard {shard.index} of {shard.count} is given twice: "
                             f"{by_index[shard.index].path} and {shard.path}")
        by_index[shard.index] = shard
    missing = [k for k in range(first.count) if k not in by_index]
    if missing:
        names = ", ".join(_expected_name(first, k) for k in missing)
        raise InputError(f"missing {len(missing)} of {first.count} shards: {names}")
    ordered = sorted(shards, key=lambda s: s.start)
    row = 0
    for shard in ordered:
        if shard.start != row or shard.stop < shard.start:
            raise InputError(f"{shard.path} covers items {shard.start}..{shard.stop - 1}, but the shards "
                             f"before it end at item {row - 1}: ranges must be disjoint and contiguous")
        row = shard.stop
    if row != first.items_total:
        raise InputError(f"the shards cover items 0..{row - 1} of {first.items_total}")
    return ordered


def _expected_name(shard: ShardInfo, index: int) -> str:
    name = shard.path.name
    expected = _SHARD_NAME.sub(f".shard-{index}-of-{shard.count}", name, count=1)
    return expected if expected != name else f"shard {index} of {shard.count}"


def merge_shards(shard_paths: Sequence[str | os.PathLike], out: str | os.PathLike, *,
                 overwrite: bool = False, command: list[str] | None = None) -> MergeSummary:
    """Merge the shard stores of one run into ``out`` and verify it.

    Parameters
    ----------
    shard_paths : paths
        Every shard of the run, in any order.
    out : path-like
        The merged store (output policy: an existing file only with ``overwrite``).
    overwrite : bool
        Replace an existing store at ``out``.
    command : list of str, optional
        The merge command line, recorded in the provenance.

    Returns
    -------
    MergeSummary
    """
    from embedstore.store.verify import verify_store

    out = Path(out)
    paths = [Path(p) for p in shard_paths]
    check_outputs([out], inputs=paths, overwrite=overwrite, command="merge")
    ordered = check_shards([read_shard(p) for p in paths])
    with writer_lock(out):
        stores = [open_store(s.path) for s in ordered]
        try:
            _check_same_content(stores)
            _write_merged(stores, ordered, out, command)
        finally:
            for st in stores:
                st.close()
        report = verify_store(out)
        if not report.ok:
            raise StoreDamaged(f"the merged store {out} failed verification: {report.problems[0]}")
    with open_store(out) as st:
        return MergeSummary(out, len(ordered), st.n_items, len(st.failed), report.arrays_checked)


def _check_same_content(stores: list[Store]) -> None:
    """The shards' classes, label kind, columns, spaces and prompt sets agree (belt and braces:
    equal fingerprints already say the settings were one run's)."""
    first = stores[0]

    def layout(st: Store) -> tuple:
        spaces = {s: (st.audio(s, lazy=True).shape[1], st.audio(s, lazy=True).dtype.str) for s in st.audio_spaces}
        return (st.model, st.dataset, list(st.classes), st.multilabel, st.metadata_columns, spaces, st.prompt_sets)

    expected = layout(first)
    for st in stores[1:]:
        if layout(st) != expected:
            raise InputError(f"{st.path} and {first.path} differ in model, classes, columns, spaces or prompt sets")


def _write_merged(stores: list[Store], shards: list[ShardInfo], out: Path, command) -> None:
    first = stores[0]
    with create_store(out, model=first.model, dataset=first.dataset, classes=first.classes,
                      provenance=_merged_provenance(stores, shards, command), overwrite=True) as writer:
        _write_items(writer, stores)
        for space in first.audio_spaces:
            ds = first.audio(space, lazy=True)
            _write_space(writer, space, ds.shape[1], ds.dtype.name,
                         (block for st in stores for block in _blocks(st.audio(space, lazy=True))))
        for name in first.prompt_sets:
            if first.prompt_set(name).is_caption_set:
                _write_captions(writer, stores, name)
                continue
            ps = first.prompt_set(name)
            vectors = {s: first.text(name, s, lazy=True) for s in ps.spaces}
            writer.add_prompt_set(name, ps.prompts, ps.classes, {s: v[()] for s, v in vectors.items()},
                                  terms=ps.terms, source=ps.source,
                                  dtype=next(iter(vectors.values())).dtype.name if vectors else "float32")
        for st in stores:
            for path, reason in st.failed:
                writer.add_failed(path, reason)


def _write_captions(writer, stores: list[Store], name: str) -> None:
    """A caption set: each shard holds the captions of its own items, tied to its own rows;
    merged, they follow one another with the rows moved by the items of the shards before."""
    parts = [(st, st.prompt_set(name)) for st in stores]
    offsets = np.cumsum([0] + [st.n_items for st in stores[:-1]])
    spaces = max((ps.spaces for _, ps in parts), key=len)
    for _, ps in parts:  # a shard with no caption may lack vectors; the others agree
        if not ps.is_caption_set or (ps.prompts and ps.spaces != spaces) or \
                (ps.prompts and (ps.terms is None) != (parts[0][1].terms is None)):
            raise InputError(f"the shards' caption sets {name!r} differ in kind, spaces or terms")
    vectors = {s: _concat([st.text(name, s) for st, ps in parts if s in ps.spaces]) for s in spaces}
    dtypes = {st.text(name, s, lazy=True).dtype.name for st, ps in parts for s in ps.spaces} or {"float32"}
    if len(dtypes) > 1:
        raise InputError(f"the shards' caption sets {name!r} differ in dtype")
    has_terms = any(ps.terms is not None for _, ps in parts)
    writer.add_prompt_set(
        name, [p for _, ps in parts for p in ps.prompts], _concat([ps.classes for _, ps in parts]), vectors,
        items=_concat([ps.items + offset for (_, ps), offset in zip(parts, offsets)]),
        terms=[t for _, ps in parts for t in (ps.terms or [])] if has_terms else None,
        source=parts[0][1].source, dtype=dtypes.pop())


def _write_items(writer, stores: list[Store]) -> None:
    """Ids, paths, labels, label mask and metadata: the shards' tables one after another."""
    first = stores[0]
    masks = [st.label_mask for st in stores]
    if any(m is None for m in masks) and any(m is not None for m in masks):
        raise InputError("some shards hold a label mask and others none: they are not one run's")
    labels = {"label_matrix": _concat([st.label_matrix for st in stores]).astype(np.uint8)} if first.multilabel \
        else {"labels": _concat([st.labels for st in stores])}
    if masks[0] is not None:
        labels["label_mask"] = _concat(masks).astype(np.uint8)
    metadata = {col: _concat([st.metadata[col] for st in stores]) for col in first.metadata_columns}
    writer.set_items(_concat([st.item_ids for st in stores]).tolist(),
                     _concat([st.item_paths for st in stores]).tolist(), metadata=metadata, **labels)


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    # A shard whose clips all failed holds empty columns of a default dtype: leave them out.
    kept = [p for p in parts if len(p)] or parts[:1]
    return np.concatenate(kept)


def _blocks(ds, rows: int = BLOCK_ROWS):
    for start in range(0, ds.shape[0], rows):
        yield ds[start:start + rows]


def _write_space(writer, space: str, dim: int, dtype: str, blocks) -> None:
    """Stream one audio space into the merged store block by block."""
    sink = getattr(writer, "audio_sink", None)
    if sink is None:  # a writer that takes whole arrays only (before streaming writes)
        parts = list(blocks)
        writer.add_audio(space, np.concatenate(parts) if parts else np.zeros((0, dim), np.float32), dtype=dtype)
        return
    with sink(space, dim, dtype=dtype) as rows:
        for block in blocks:
            rows.append(block)


def _merged_provenance(stores: list[Store], shards: list[ShardInfo], command) -> dict:
    """The run's provenance (shard 0's, without its range) and where each shard came from."""
    provenance = {k: v for k, v in (stores[0].provenance or {}).items()
                  if k not in (SHARD_KEY, "run_id", "resumed", "created", "versions", "host", "user")}
    provenance["merged_from"] = [
        {"file": s.path.name, "index": s.index, "start": s.start, "stop": s.stop,
         "run_id": (st.provenance or {}).get("run_id"), "resumed": (st.provenance or {}).get("resumed"),
         "command": (st.provenance or {}).get("command")}
        for s, st in zip(shards, stores)
    ]
    if command is not None:
        provenance["merge_command"] = list(command)
    return provenance
