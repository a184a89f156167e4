"""Audio-text retrieval with a caption set: each caption describes one item.

Audio to text (a2t): every captioned item queries all captions; text to audio (t2a): every
caption queries all captioned items. Ranks are 0-based positions in the descending cosine
ranking, ties broken by row order (a stable sort), as laion_clap's evaluation
(``training/train.py``, ``evaluate_clotho_audiocaps``) and CLIP_benchmark compute them:

- ``t2a_r{k}``: share of captions whose item ranks below k; ``t2a_median_rank``:
  ``floor(median(rank)) + 1``; ``t2a_map10``: mean of ``1 / (rank + 1)`` over captions, 0
  when rank >= 10 (one relevant item per caption).
- ``a2t_r{k}``: share of items whose best-ranked caption ranks below k (several captions
  per item: the best one counts); ``a2t_median_rank`` on those best ranks;
  ``a2t_map10``: per item, the ranks ``r_1 < r_2 < ...`` of its captions below 10 give
  ``sum_j j / (r_j + 1)``, divided by the item's number of captions (Mei et al.'s
  audio-text retrieval code, which laion_clap's docstring follows).

Items without a caption are left out of both galleries.
"""

from __future__ import annotations

import numpy as np

from analyses.embeddings import opened, unit_audio, unit_rows
from embedstore.errors import InputError

RECALL_AT = (1, 5, 10)
MAP_CUTOFF = 10
BLOCK = 1024


def stable_ranks(scores: np.ndarray, true_index: np.ndarray) -> np.ndarray:
    """0-based rank of ``scores[i, true_index[i]]`` in row i, descending, ties by column order.

    Equals the position of ``true_index[i]`` in ``np.argsort(-scores[i], kind="stable")``.
    """
    rows = np.arange(scores.shape[0])
    true = scores[rows, true_index][:, None]
    earlier = np.arange(scores.shape[1])[None, :] < true_index[:, None]
    return ((scores > true) | ((scores == true) & earlier)).sum(axis=1)


def retrieval_ranks(audio: np.ndarray, text: np.ndarray, caption_item: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of the true pairs in both directions.

    Parameters
    ----------
    audio : (n, d) unit vectors of the captioned items (the gallery of t2a).
    text : (p, d) unit caption vectors (the gallery of a2t).
    caption_item : (p,) row of ``audio`` each caption describes.

    Returns
    -------
    t2a : (p,) int64
        Per caption, the rank of its item among the n items.
    a2t : (p,) int64
        Per caption, its rank among the p captions when its item is the query.
    """
    p = text.shape[0]
    t2a = np.empty(p, np.int64)
    a2t = np.empty(p, np.int64)
    for start in range(0, p, BLOCK):
        stop = min(p, start + BLOCK)
        block = text[start:stop] @ audio.T  # (b, n): captions query items
        t2a[start:stop] = stable_ranks(block, caption_item[start:stop])
    order = np.argsort(caption_item, kind="stable")
    bounds = np.searchsorted(caption_item[order], np.arange(audio.shape[0] + 1))
    for start in range(0, audio.shape[0], BLOCK):
        stop = min(audio.shape[0], start + BLOCK)
        scores = audio[start:stop] @ text.T  # (b, p): items query captions
        captions = order[bounds[start]:bounds[stop]]
        query = caption_item[captions] - start
        a2t[captions] = stable_ranks(scores[query], captions)
    return t2a, a2t


def retrieval_metrics(t2a: np.ndarray, a2t: np.ndarray, caption_item: np.ndarray, n_items: int) -> dict:
    """Recall at 1/5/10, median and mean rank and mAP@10 from the ranks of :func:`retrieval_ranks`."""
    best = np.full(n_items, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(best, caption_item, a2t)
    counts = np.bincount(caption_item, minlength=n_items)
    # Per item: the j-th best rank below the cutoff adds j / (rank + 1).
    order = np.lexsort((a2t, caption_item))
    item_sorted, rank_sorted = caption_item[order], a2t[order]
    first = np.searchsorted(item_sorted, item_sorted, side="left")
    position = np.arange(len(order)) - first + 1
    gain = np.where(rank_sorted < MAP_CUTOFF, position / (rank_sorted + 1.0), 0.0)
    ap = np.bincount(item_sorted, weights=gain, minlength=n_items) / counts
    out = {}
    for k in RECALL_AT:
        out[f"a2t_r{k}"] = float(np.mean(best < k))
    for k in RECALL_AT:
        out[f"t2a_r{k}"] = float(np.mean(t2a < k))
    out["a2t_median_rank"] = float(np.floor(np.median(best)) + 1)
    out["t2a_median_rank"] = float(np.floor(np.median(t2a)) + 1)
    out["a2t_mean_rank"] = float(best.mean() + 1)
    out["t2a_mean_rank"] = float(t2a.mean() + 1)
    out["a2t_map10"] = float(ap.mean())
    out["t2a_map10"] = float(np.mean(np.where(t2a < MAP_CUTOFF, 1.0 / (t2a + 1.0), 0.0)))
    return out


def caption_sets(store) -> list[str]:
    """The store's caption sets (prompt sets that tie each prompt to an item)."""
    return [name for name in store.prompt_sets if store.prompt_set(name).items is not None]


def run_retrieval(store, caption_set: str | None = None, space: str = "joint") -> dict:
    """Audio-to-text and text-to-audio retrieval of a store's caption set.

    Parameters
    ----------
    store : path or open store
    caption_set : str, optional
        A caption set of the store; by default its only one.
    space : str
        Space shared by audio and captions.

    Returns
    -------
    dict
        ``a2t_r1``, ``a2t_r5``, ``a2t_r10``, ``t2a_r1``, ``t2a_r5``, ``t2a_r10``,
        ``a2t_median_rank``, ``t2a_median_rank``, ``a2t_mean_rank``, ``t2a_mean_rank``,
        ``a2t_map10``, ``t2a_map10``, ``n_items`` (captioned items), ``n_captions``,
        ``caption_set``, ``space``.
    """
    with opened(store) as st:
        sets = caption_sets(st)
        if caption_set is None:
            if len(sets) != 1:
                raise InputError(f"store has {len(sets) or 'no'} caption sets ({', '.join(sets) or 'none'}); "
                                 "name one with --captions" if sets else
                                 "store has no caption set (captions tied to items); add one with "
                                 "`embedstore import --captions` or extract a caption dataset")
            caption_set = sets[0]
        if caption_set not in st.prompt_sets:
            raise InputError(f"store has no caption set {caption_set!r} (has: {', '.join(sets) or 'none'})")
        ps = st.prompt_set(caption_set)
        if ps.items is None:
            raise InputError(f"prompt set {caption_set!r} ties its prompts to classes, not items; "
                             f"retrieval needs a caption set (has: {', '.join(sets) or 'none'})")
        if not len(ps.items):
            raise InputError(f"caption set {caption_set!r} is empty")
        audio = unit_audio(st, space)
        text = unit_rows(st.text(caption_set, space, lazy=True))
        if not np.all(np.isfinite(text)):
            raise InputError(f"caption set {caption_set!r} holds NaN or infinite values in space {space!r}")
        if audio.shape[1] != text.shape[1]:
            raise InputError(f"space {space!r}: audio vectors are {audio.shape[1]}-d, captions {text.shape[1]}-d")
    captioned, caption_item = np.unique(ps.items, return_inverse=True)
    t2a, a2t = retrieval_ranks(audio[captioned], text, caption_item.astype(np.int64))
    result = retrieval_metrics(t2a, a2t, caption_item.astype(np.int64), len(captioned))
    return {**result, "n_items": int(len(captioned)), "n_captions": int(len(caption_item)),
            "caption_set": caption_set, "space": space}
