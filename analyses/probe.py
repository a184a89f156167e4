"""What the audio vectors support once labels are given: a linear probe and nearest neighbours.

Zero-shot asks the text tower to name the classes; audio centroids ask whether classes form
clusters. A probe trained with labels, and leave-one-out nearest neighbours, give the
ceiling: how well the audio space separates the classes when nothing has to be read.
"""

from __future__ import annotations

import numpy as np

from analyses import embeddings, kernels
from embedstore.errors import InputError

KNN_KS = (1, 5)
#: Bytes of float32 similarities one block of kNN rows may hold.
KNN_BLOCK_BYTES = 64 * 2**20


def knn_loo_predictions(unit_vectors: np.ndarray, labels: np.ndarray, n_classes: int, ks=KNN_KS) -> np.ndarray:
    """Leave-one-out k-nearest-neighbour predictions by cosine, for each k.

    Parameters
    ----------
    unit_vectors : (n, d) float32, rows L2-normalised
    labels : (n,) int class indices
    n_classes : int
    ks : sequence of int
        Neighbourhood sizes (each at least 1).

    Returns
    -------
    (n, len(ks)) int64
        Column q: each item's majority class among its ``ks[q]`` most similar other items
        (similarity ties to the lower item index, vote ties to the lower class index).
    """
    ks_sorted = np.array(sorted(set(int(k) for k in ks)), np.int64)
    if ks_sorted.size == 0 or ks_sorted[0] < 1:
        raise InputError("kNN needs k >= 1")
    n = unit_vectors.shape[0]
    if n < 2:
        raise InputError("leave-one-out kNN needs at least two items")
    labels = np.ascontiguousarray(labels, np.int64)
    predictions = np.empty((n, ks_sorted.size), np.int64)
    rows = int(np.clip(KNN_BLOCK_BYTES // (4 * n), 1, n))
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        similarities = unit_vectors[start:stop] @ unit_vectors.T  # BLAS
        kernels.knn_vote(similarities, start, labels, ks_sorted, n_classes, predictions[start:stop])
    order = {k: q for q, k in enumerate(ks_sorted)}
    return predictions[:, [order[int(k)] for k in ks]]


def probe_folds(unit_vectors: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0) -> dict:
    """Stratified k-fold logistic-regression probe: top-1 and weighted F1 per fold.

    ``StratifiedKFold(folds, shuffle=True, random_state=seed)`` and scikit-learn's
    ``LogisticRegression(max_iter=1000)`` with its defaults (L2, C=1, lbfgs).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold

    counts = np.bincount(labels)
    present = counts[counts > 0]
    if folds < 2:
        raise InputError(f"--folds must be 2 or more, got {folds}")
    if present.size < 2:
        raise InputError("a probe needs items of at least two classes")
    if present.min() < folds:
        raise InputError(f"{folds}-fold stratified cross-validation needs {folds} items in every class; "
                         f"the smallest class has {int(present.min())}")
    top1, f1 = [], []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(unit_vectors, labels):
        model = LogisticRegression(max_iter=1000).fit(unit_vectors[train], labels[train])
        predicted = model.predict(unit_vectors[test])
        top1.append(accuracy_score(labels[test], predicted))
        f1.append(f1_score(labels[test], predicted, average="weighted"))
    return {"top1": top1, "f1_weighted": f1}


def run_probe(store, space: str = "joint", folds: int = 5, seed: int = 0) -> dict:
    """Linear-probe ceiling and leave-one-out kNN top-1 of one audio space.

    Parameters
    ----------
    store : Store, StoreView or path
        A single-label store.
    space : str
        Audio space.
    folds, seed : int
        Stratified k-fold cross-validation of the probe.

    Returns
    -------
    dict
        ``top1``, ``top1_sd``, ``f1_weighted``, ``f1_weighted_sd`` (mean and population
        standard deviation over folds), ``folds_top1`` and ``folds_f1_weighted`` (per fold),
        ``knn1_top1``, ``knn5_top1``, ``space``, ``folds``, ``seed``, ``n_items``, ``n_classes``.
    """
    with embeddings.opened(store) as st:
        if st.multilabel:
            raise InputError("the probe and kNN classify single labels; this store is multi-label")
        vectors = embeddings.unit_audio(st, space)
        labels = np.asarray(st.labels, np.int64)
        n_classes = len(st.classes)
    per_fold = probe_folds(vectors, labels, folds, seed)
    knn = knn_loo_predictions(vectors, labels, n_classes, KNN_KS)
    return {
        "space": space,
        "top1": float(np.mean(per_fold["top1"])),
        "top1_sd": float(np.std(per_fold["top1"])),
        "f1_weighted": float(np.mean(per_fold["f1_weighted"])),
        "f1_weighted_sd": float(np.std(per_fold["f1_weighted"])),
        "folds_top1": [float(x) for x in per_fold["top1"]],
        "folds_f1_weighted": [float(x) for x in per_fold["f1_weighted"]],
        **{f"knn{k}_top1": float(np.mean(knn[:, q] == labels)) for q, k in enumerate(KNN_KS)},
        "folds": int(folds),
        "seed": int(seed),
        "n_items": int(labels.size),
        "n_classes": int(n_classes),
    }
