"""A linear map from the text tower to the audio class centroids, tested on unseen classes.

If zero-shot fails because the text vectors sit in the wrong place, not because they lack
the information, a linear map fitted on some classes (prompt vector -> that class's audio
centroid) should carry over to classes it never saw. Classes are split into k folds; each
fold's classes are held out in turn: the map is fitted on the other classes, and the
held-out classes' items are classified among the held-out classes only, once with the
mapped prompt vectors and once with the plain ones (the same items and candidates).
"""

from __future__ import annotations

import numpy as np

from analyses import embeddings, metrics
from analyses.centroids import centroid_scorer
from embedstore.errors import InputError

METHODS = ("procrustes", "ridge")


def _procrustes_nearest_identity(m: np.ndarray) -> np.ndarray:
    """The orthogonal W maximising trace(W^T m), the largest trace(W) among ties (m square)."""
    u, s, vt = np.linalg.svd(m)
    rank = int(np.sum(s > s[0] * m.shape[0] * np.finfo(np.float64).eps)) if s.size and s[0] > 0 else 0
    w = u[:, :rank] @ vt[:rank]
    if rank < u.shape[0]:
        u_rest, v_rest = u[:, rank:], vt[rank:].T
        # maximise trace(u_rest q v_rest^T) = trace(q c) over orthogonal q: q = T P^T for c = P S T^T
        p, _, tt = np.linalg.svd(v_rest.T @ u_rest)
        w += u_rest @ (tt.T @ p.T) @ v_rest.T
    return w


def fit_procrustes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The orthogonal W minimising ||x W - y||_F, and the one nearest the identity among ties.

    With the SVD ``x^T y = U S V^T``, W = ``U V^T`` (Schönemann 1966; scipy's
    ``orthogonal_procrustes``). When ``x^T y`` has rank r below the width d (fewer classes
    than dimensions, the usual case) only ``U_r V_r^T`` is determined; on the rest W may be
    any rotation, and an SVD routine would pick one arbitrarily. Here it is the one that
    maximises trace(W), so directions the fitted classes say nothing about are left where
    they are rather than turned at random. That W is the identity outside the span S of the
    rows of x and y, so it is solved in S (at most 2n dimensions for n classes), not in d.
    """
    if x.shape[1] != y.shape[1]:
        raise InputError(f"an orthogonal map needs one width on both sides, got {x.shape[1]} and {y.shape[1]}")
    d = x.shape[1]
    basis, _ = np.linalg.qr(np.vstack([x, y]).T)  # (d, m): S, orthonormal
    if basis.shape[1] >= d:
        return _procrustes_nearest_identity(x.T @ y)
    inner = _procrustes_nearest_identity((x @ basis).T @ (y @ basis))
    return basis @ (inner - np.eye(basis.shape[1])) @ basis.T + np.eye(d)


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """W minimising ||x W - y||^2 + alpha ||W||^2 (no intercept), solved in the smaller dual."""
    n, d = x.shape
    if n < d:  # W = x^T (x x^T + alpha I)^-1 y, the same solution through the n x n system
        return x.T @ np.linalg.solve(x @ x.T + alpha * np.eye(n), y)
    return np.linalg.solve(x.T @ x + alpha * np.eye(d), x.T @ y)


def fit_map(x: np.ndarray, y: np.ndarray, method: str = "procrustes", alpha: float = 1.0) -> np.ndarray:
    """Fit a linear map of ``method`` from rows of ``x`` to rows of ``y``."""
    if method == "procrustes":
        return fit_procrustes(x, y)
    if method == "ridge":
        return fit_ridge(x, y, alpha)
    raise InputError(f"unknown map {method!r} (choose from {', '.join(METHODS)})")


def class_folds(present: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """The held-out classes of each fold: ``KFold(folds, shuffle=True, random_state=seed)`` over classes."""
    from sklearn.model_selection import KFold

    if folds < 2:
        raise InputError(f"--folds must be 2 or more, got {folds}")
    if present.size < folds:
        raise InputError(f"{folds} folds over classes need {folds} classes with items; there are {present.size}")
    if present.size // folds < 2:
        raise InputError(f"{present.size} classes in {folds} folds leave folds of one class, where top-1 "
                         f"is always 1; use fewer folds")
    return [present[test] for _, test in KFold(n_splits=folds, shuffle=True, random_state=seed).split(present)]


def _top1(audio: np.ndarray, labels: np.ndarray, candidates: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Per item: is its class the nearest of the candidate class vectors?

    Ties go to the later candidate, the rule of :func:`analyses.kernels.top2`.
    """
    scores = audio @ embeddings.l2_normalize(vectors).T
    nearest = scores.shape[1] - 1 - np.argmax(scores[:, ::-1], axis=1)
    return candidates[nearest] == labels


def run_text_map(store, prompt_set: str, space: str = "joint", method: str = "procrustes",
                 folds: int = 5, seed: int = 0, alpha: float = 1.0, centroid: str = "raw") -> dict:
    """Zero-shot on held-out classes with prompt vectors mapped onto audio centroids.

    Parameters
    ----------
    store : Store, StoreView or path
        A single-label store.
    prompt_set : str
        Prompt set whose class ensembles are mapped.
    space : str
        Space of both the prompt and the audio vectors (one shared width: the unmapped
        scores compare them directly).
    method : {"procrustes", "ridge"}
        Orthogonal Procrustes (a rotation: geometry kept) or ridge regression (any linear map).
    folds, seed : int
        ``KFold`` over the classes that have items.
    alpha : float
        Ridge penalty.
    centroid : {"raw", "unit"}
        How the audio class centroids are made, as in :func:`analyses.centroids.run_centroids`
        (``raw``, the study's: the mean of the stored vectors, normalised).

    Returns
    -------
    dict
        ``top1_mapped`` and ``top1_unmapped`` (pooled over every held-out item, each scored
        once), ``chance`` (mean of 1 / candidates over items), ``per_fold`` (classes, items,
        both top-1s), ``method``, ``alpha`` (ridge only), ``folds``, ``seed``, ``prompt_set``,
        ``space``, ``n_items``.
    """
    if method not in METHODS:
        raise InputError(f"unknown map {method!r} (choose from {', '.join(METHODS)})")
    if method == "ridge" and not alpha > 0:
        raise InputError(f"ridge alpha must be positive, got {alpha}")
    with embeddings.opened(store) as st:
        if st.multilabel:
            raise InputError("the text map scores single labels; this store is multi-label")
        audio = embeddings.unit_audio(st, space)
        text = embeddings.class_vectors(st, prompt_set, space).astype(np.float64)
        targets = metrics.Targets.from_store(st)
        classes = list(st.classes)
        # the class sums of the centroid definition the rest of the toolkit uses
        scorer = centroid_scorer(st, space, targets, "none", centroid)
    if text.shape[1] != audio.shape[1]:
        raise InputError(f"space {space!r}: prompt vectors have {text.shape[1]} dimensions and audio "
                         f"{audio.shape[1]}; unmapped zero-shot needs one shared space")
    labels = targets.labels.astype(np.int64)
    centroids = embeddings.l2_normalize(scorer.sums).astype(np.float64)
    present = np.flatnonzero(targets.support() > 0)
    per_fold, hits_mapped, hits_plain, chance = [], 0, 0, 0.0
    for held in class_folds(present, folds, seed):
        train = np.setdiff1d(present, held)
        w = fit_map(text[train], centroids[train], method, alpha)
        items = np.flatnonzero(np.isin(labels, held))
        mapped = _top1(audio[items], labels[items], held, text[held] @ w)
        plain = _top1(audio[items], labels[items], held, text[held])
        hits_mapped += int(mapped.sum())
        hits_plain += int(plain.sum())
        chance += items.size / held.size
        per_fold.append({"classes": [classes[c] for c in held], "n_items": int(items.size),
                         "top1_mapped": float(mapped.mean()), "top1_unmapped": float(plain.mean())})
    n = sum(f["n_items"] for f in per_fold)
    out = {
        "prompt_set": prompt_set,
        "space": space,
        "method": method,
        "centroid": centroid,
        "top1_mapped": hits_mapped / n,
        "top1_unmapped": hits_plain / n,
        "chance": chance / n,
        "per_fold": per_fold,
        "folds": int(folds),
        "seed": int(seed),
        "n_items": int(n),
    }
    if method == "ridge":
        out["alpha"] = float(alpha)
    return out
