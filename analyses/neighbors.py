"""Nearest items by cosine similarity: exact, in BLAS blocks, or from an approximate index.

Exact search reads the store's audio vectors of one space in row blocks, scales each row
to unit length (float64 norms), scores every query with one BLAS product per block and
keeps the ``k`` best per query, so memory is one block whatever the store's size. Rows
are ranked by cosine, highest first; equal cosines by row, lowest first. A zero vector
has no cosine and is never returned.

The approximate index (usearch, HNSW, cosine metric) is for stores too large to scan per
query (a million items and more). :func:`build_index` builds it once, beside the store
(``STORE.<space>.usearch`` and a ``.json`` record that binds it to the space's SHA-256),
and measures recall@k against exact search on a sample of items; :func:`search_index`
refuses an index whose record no longer matches the store.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedstore.errors import InputError
from embedstore.store import open_store
from embedstore.store.outputs import check_outputs

BLOCK_ROWS = 65536
INDEX_HINT = "the approximate index needs usearch: pip install 'embedstore[ann]'"


@dataclass
class NeighborResult:
    """The ``k`` nearest items of one query."""

    query: str
    space: str
    rows: np.ndarray
    ids: list[str]
    scores: np.ndarray
    method: str = "exact"
    labels: list[list[str]] = field(default_factory=list)


def resolve_query(st, space: str, *, item: str | None = None, prompt: str | None = None):
    """The query vector (float32) and the row to leave out (the item itself, or -1).

    ``item`` is an item id (its audio vector in ``space``); ``prompt`` is ``SET:INDEX``
    (the prompt's text vector in ``space``, index counted from 0).
    """
    if (item is None) == (prompt is None):
        raise InputError("give exactly one of --item ID or --prompt SET:INDEX")
    if item is not None:
        rows = np.flatnonzero(st.item_ids == item)
        if not len(rows):
            raise InputError(f"{st.path} has no item {item!r}")
        return np.asarray(st.audio(space, lazy=True)[int(rows[0])], dtype=np.float32), int(rows[0])
    name, _, index = prompt.rpartition(":")
    if not name or not index.strip().lstrip("-").isdigit():
        raise InputError(f"--prompt takes SET:INDEX (index from 0), got {prompt!r}")
    vectors = st.text(name, space, lazy=True)
    index = int(index)
    if vectors.shape[0] == 0:
        raise InputError(f"prompt set {name!r} holds no prompts")
    if not 0 <= index < vectors.shape[0]:
        raise InputError(f"prompt set {name!r} has prompts 0..{vectors.shape[0] - 1}, not {index}")
    return np.asarray(vectors[index], dtype=np.float32), -1


def exact_neighbors(vectors, queries: np.ndarray, k: int, exclude=None,
                    block_rows: int = BLOCK_ROWS) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The ``k`` rows of ``vectors`` of highest cosine with each query.

    Parameters
    ----------
    vectors : array or h5py dataset, (n, d)
        Read ``block_rows`` rows at a time.
    queries : (q, d) array
    k : int
    exclude : (q,) ints, optional
        A row to leave out per query (-1: none).

    Returns
    -------
    rows, scores : list of arrays
        Per query, up to ``k`` rows (int64) and their cosines (float64), best first; fewer
        where fewer rows are usable (zero vectors and the left-out row are not).
    """
    if k < 1:
        raise InputError(f"-k must be at least 1, got {k}")
    queries = _unit(np.atleast_2d(np.asarray(queries, dtype=np.float64)))
    if not np.isfinite(queries).all():
        raise InputError("a query vector is zero or not finite: it has no cosine")
    q = len(queries)
    exclude = np.full(q, -1) if exclude is None else np.asarray(exclude)
    best_rows = np.zeros((q, 0), dtype=np.int64)
    best_scores = np.zeros((q, 0))
    for start in range(0, vectors.shape[0], block_rows):
        block = np.asarray(vectors[start:start + block_rows], dtype=np.float64)
        scores = _unit(block) @ queries.T                       # (b, q), one BLAS product
        scores[~np.isfinite(scores)] = -np.inf                  # zero vectors: no cosine
        rows = np.arange(start, start + len(block))
        hit = (exclude >= start) & (exclude < start + len(block))
        scores[exclude[hit] - start, np.flatnonzero(hit)] = -np.inf
        best_rows, best_scores = _keep_best(np.hstack([best_rows, np.broadcast_to(rows, (q, len(rows)))]),
                                            np.hstack([best_scores, scores.T]), k)
    usable = np.isfinite(best_scores)  # fewer usable rows than k: that query's list is shorter
    return [r[u] for r, u in zip(best_rows, usable)], [s[u] for s, u in zip(best_scores, usable)]


def _unit(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return np.where(norms > 0, x / norms, np.nan)


def _keep_best(rows: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the k best (score descending, row ascending)."""
    order = np.lexsort((rows, -scores), axis=-1)[:, :k]
    return np.take_along_axis(rows, order, 1), np.take_along_axis(scores, order, 1)


def neighbors(store: str | os.PathLike, space: str, *, item: str | None = None, prompt: str | None = None,
              k: int = 10, approximate: bool = False) -> NeighborResult:
    """The ``k`` items nearest to an item (itself left out) or a prompt, in audio ``space``."""
    with open_store(store) as st:
        vector, own_row = resolve_query(st, space, item=item, prompt=prompt)
        if approximate:
            rows, scores = search_index(store, space, vector[None], k, exclude=[own_row])
            method = "approximate (usearch)"
        else:
            rows, scores = exact_neighbors(st.audio(space, lazy=True), vector[None], k, exclude=[own_row])
            method = "exact"
        rows, scores = np.asarray(rows[0], dtype=np.int64), np.asarray(scores[0])
        return NeighborResult(item if item is not None else prompt, space, rows, st.item_ids[rows].tolist(),
                              scores, method, _labels_of(st, rows))


def _labels_of(st, rows: np.ndarray) -> list[list[str]]:
    """Class names of ``rows``, reading only those rows of a multi-label matrix."""
    if not st.multilabel:
        return [[st.classes[c]] for c in st.labels[rows]]
    wanted = np.unique(rows)
    matrix = st._file["items"]["label_matrix"][wanted] if len(wanted) else np.zeros((0, len(st.classes)))
    by_row = {int(r): [c for c, on in zip(st.classes, m) if on] for r, m in zip(wanted, matrix)}
    return [by_row[int(r)] for r in rows]


# -- the approximate index ---------------------------------------------------------------


def index_paths(store: str | os.PathLike, space: str) -> tuple[Path, Path]:
    """The index file and its record beside ``store``: ``STORE.<space>.usearch`` (+ ``.json``)."""
    store = Path(store)
    index = store.with_name(f"{store.name}.{space}.usearch")
    return index, index.with_name(index.name + ".json")


def _usearch():
    try:
        from usearch.index import Index
    except ImportError:
        raise InputError(INDEX_HINT) from None
    return Index


def _space_digest(st, space: str) -> str | None:
    st.audio(space, lazy=True)  # a missing space fails here, naming the spaces there are
    return st.digests().get(f"/audio/{space}")


def build_index(store: str | os.PathLike, space: str, *, k: int = 10, sample: int = 200, seed: int = 0,
                overwrite: bool = False, block_rows: int = BLOCK_ROWS) -> dict:
    """Build the approximate index of ``space`` beside ``store`` and measure its recall@k.

    Recall@k: for ``sample`` items drawn with ``seed``, the share of each item's exact
    ``k`` nearest neighbours (itself left out) that the index also returns, averaged.

    Returns
    -------
    dict
        The record written beside the index: store id, space digest, rows, dim, recall.
    """
    Index = _usearch()
    index_file, record_file = index_paths(store, space)
    check_outputs([index_file, record_file], inputs=[store], overwrite=overwrite, command="neighbors")
    with open_store(store) as st:
        vectors = st.audio(space, lazy=True)
        n, dim = vectors.shape
        index = Index(ndim=dim, metric="cos", dtype="f32")
        for start in range(0, n, block_rows):
            block = np.asarray(vectors[start:start + block_rows], dtype=np.float32)
            index.add(np.arange(start, start + len(block), dtype=np.uint64), block)
        picks = np.random.default_rng(seed).choice(n, size=min(sample, n), replace=False)
        picks.sort()
        queries = np.asarray(vectors[picks], dtype=np.float32)
        exact, _ = exact_neighbors(vectors, queries, k, exclude=picks, block_rows=block_rows)
        approx, _ = _search(index, queries, k, picks)
        record = {"store_id": str(st._file.attrs.get("store-id", "")), "space": space,
                  "space_sha256": _space_digest(st, space), "rows": int(n), "dim": int(dim),
                  "metric": "cos", "k": k, "recall_sample": int(len(picks)), "seed": seed,
                  f"recall_at_{k}": recall_at_k(exact, approx)}
    temp = index_file.with_name(f".{index_file.name}.tmp")
    index.save(str(temp))
    os.replace(temp, index_file)
    record_file.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


def recall_at_k(exact: np.ndarray, approx: np.ndarray) -> float:
    """Mean over queries of |exact ∩ approx| / |exact| (rows per query in each)."""
    shares = [len(set(e.tolist()) & set(a.tolist())) / len(e) for e, a in zip(exact, approx) if len(e)]
    return float(np.mean(shares)) if shares else float("nan")


def _search(index, queries: np.ndarray, k: int, exclude) -> tuple[list[np.ndarray], list[np.ndarray]]:
    found = index.search(queries, k + 1)
    keys = np.atleast_2d(np.asarray(found.keys, dtype=np.int64))
    distances = np.atleast_2d(np.asarray(found.distances, dtype=np.float64))
    rows, scores = [], []
    for query_keys, query_dist, own in zip(keys, distances, exclude):
        keep = (query_keys != own) & (query_keys >= 0) & np.isfinite(query_dist)  # fewer hits than asked
        rows.append(query_keys[keep][:k])
        scores.append(1.0 - query_dist[keep][:k])  # usearch's cos distance is 1 - cosine
    return rows, scores


def search_index(store: str | os.PathLike, space: str, queries: np.ndarray, k: int,
                 exclude) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per query, the rows and cosines the index built beside ``store`` returns (best first);
    a missing or stale index is refused."""
    Index = _usearch()
    index_file, record_file = index_paths(store, space)
    if not index_file.is_file() or not record_file.is_file():
        raise InputError(f"no index of space {space!r} beside {store}; build it with "
                         f"`embedstore neighbors {store} --space {space} --build-index`")
    record = json.loads(record_file.read_text(encoding="utf-8"))
    with open_store(store) as st:
        if record.get("space_sha256") != _space_digest(st, space):
            raise InputError(f"{index_file} was built from other vectors than {store}'s {space!r}; "
                             "rebuild it with --build-index --overwrite")
    index = Index.restore(str(index_file), view=True)
    return _search(index, np.asarray(queries, dtype=np.float32), k, exclude)
