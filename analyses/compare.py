"""Paired comparisons: is prompt set A (or store A) really better than B on the same items?

Both sides classify the same items, so their errors are correlated; a paired bootstrap
resamples the items once per draw and scores both sides on that same resample. The
difference A - B of top-1 and of weighted F1 gets a 95% percentile interval and a two-sided
p-value: twice the smaller share of resampled differences on either side of zero (counting
zero on both sides), with one added to count and total so it is never exactly 0.
"""

from __future__ import annotations

import numpy as np

from analyses import embeddings, kernels, metrics
from analyses.confusion import label_source, top1_predictions
from analyses.selection import selection_record
from embedstore.errors import InputError

METRICS = ("top1", "f1_weighted")


def weighted_scores(labels: np.ndarray, predictions: np.ndarray, n_classes: int, weights: np.ndarray) -> dict:
    """Top-1 and weighted F1 of one side under each row of item weights."""
    ranks = (predictions != labels).astype(np.int32)  # rank 0 exactly when the top class is right
    topk = np.empty((weights.shape[0], 1))
    f1 = np.empty(weights.shape[0])
    kernels.weighted_rank_metrics(ranks, labels.astype(np.int32), predictions.astype(np.int32), n_classes,
                                  weights, 1, topk, f1)
    return {"top1": topk[:, 0], "f1_weighted": f1}


def paired_p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a zero difference: 2 * (min side count + 1) / (draws + 1), at most 1."""
    below = int(np.sum(differences <= 0))
    above = int(np.sum(differences >= 0))
    return float(min(1.0, 2.0 * (min(below, above) + 1) / (differences.size + 1)))


def paired_bootstrap(labels: np.ndarray, predictions_a: np.ndarray, predictions_b: np.ndarray, n_classes: int,
                     resamples: int = 1000, seed: int = 0) -> dict:
    """Difference A - B of top-1 and weighted F1, with paired-bootstrap interval and p-value.

    Returns
    -------
    dict
        Per metric: ``a``, ``b``, ``diff`` (on the data), ``ci95`` ([2.5, 97.5] percentiles of
        the resampled differences) and ``p_value``.
    """
    if resamples < 1:
        raise InputError(f"--resamples must be 1 or more, got {resamples}")
    n = labels.size
    if n == 0:
        raise InputError("no items to compare")
    weights = np.concatenate([np.ones((1, n), np.float32), metrics.bootstrap_weights(n, resamples, seed)])
    a = weighted_scores(labels, predictions_a, n_classes, weights)
    b = weighted_scores(labels, predictions_b, n_classes, weights)
    out = {}
    for key in METRICS:
        diff = a[key] - b[key]
        draws = diff[1:]
        out[key] = {
            "a": float(a[key][0]),
            "b": float(b[key][0]),
            "diff": float(diff[0]),
            "ci95": [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))],
            "p_value": paired_p_value(draws),
        }
    return out


def _side(store, prompt_set, centroids, space, holdout, centroid, selection):
    """(ids, true labels by class name, predictions by class name, description) of one side."""
    with embeddings.opened(store, selection) as st:
        labels, predictions = top1_predictions(st, prompt_set, centroids, space, holdout, centroid)
        classes = np.array(st.classes, dtype=object)
        path = str(getattr(st, "path", store))
        return st.item_ids, classes[labels], classes[predictions], {
            "store": path, "model": st.model, "labels": label_source(prompt_set, centroids, holdout),
            "space": space, **({"centroid": centroid} if centroids else {}), "selection": selection_record(st)}


def run_compare(store_a, store_b=None, prompts_a: str | None = None, prompts_b: str | None = None,
                centroids_a: bool = False, centroids_b: bool = False, space: str = "joint",
                holdout: str = "none", centroid: str = "raw", resamples: int = 1000, seed: int = 0,
                selection=None) -> dict:
    """Compare two labelings of the same items with a paired bootstrap.

    Parameters
    ----------
    store_a, store_b : Store, StoreView or path
        ``store_b`` defaults to ``store_a`` (two prompt sets of one store). Two stores must
        hold the same item ids (after the selection) with the same true classes; items are
        matched by id.
    prompts_a, prompts_b : str, optional
        Prompt set of each side (``prompts_b`` defaults to ``prompts_a``).
    centroids_a, centroids_b : bool
        Audio-centroid labels on that side instead of a prompt set.
    space, holdout, centroid
        As for zero-shot and centroids.
    resamples, seed : int
        The paired bootstrap.
    selection : Selection, optional
        Items to compare, applied to both stores.

    Returns
    -------
    dict
        ``a`` and ``b`` (store, model, labels, space, selection), ``top1`` and ``f1_weighted`` (each
        ``{a, b, diff, ci95, p_value}``, diff = A - B), ``n_items``, ``resamples``, ``seed``.
    """
    store_b = store_a if store_b is None else store_b
    prompts_b = prompts_a if prompts_b is None and not centroids_b else prompts_b
    ids_a, true_a, pred_a, side_a = _side(store_a, prompts_a, centroids_a, space, holdout, centroid, selection)
    ids_b, true_b, pred_b, side_b = _side(store_b, prompts_b, centroids_b, space, holdout, centroid, selection)
    if side_a["store"] == side_b["store"] and side_a["labels"] == side_b["labels"]:
        raise InputError("both sides are the same labels on the same store; compare two prompt sets or two stores")
    if set(ids_a.tolist()) != set(ids_b.tolist()):
        only_a = len(set(ids_a.tolist()) - set(ids_b.tolist()))
        only_b = len(set(ids_b.tolist()) - set(ids_a.tolist()))
        raise InputError(f"the two stores hold different items ({only_a} only in A, {only_b} only in B); "
                         "compare them on shared items with --items FILE")
    order = np.argsort(ids_b)[np.searchsorted(ids_b[np.argsort(ids_b)], ids_a)]
    true_b, pred_b = true_b[order], pred_b[order]
    if not np.array_equal(true_a, true_b):
        raise InputError("the two stores give some items different true classes; they do not label the same data")
    classes = sorted(set(true_a.tolist()) | set(pred_a.tolist()) | set(pred_b.tolist()))
    index = {c: i for i, c in enumerate(classes)}
    encode = np.vectorize(index.__getitem__, otypes=[np.int64])
    result = paired_bootstrap(encode(true_a), encode(pred_a), encode(pred_b), len(classes), resamples, seed)
    return {"a": side_a, "b": side_b, **result, "n_items": int(ids_a.size), "resamples": int(resamples),
            "seed": int(seed)}


def run_prompt_set_comparisons(store, prompt_sets: list[str], space: str = "joint", resamples: int = 1000,
                               seed: int = 0) -> dict:
    """Every prompt set against the best one by top-1, each with a paired bootstrap on the same items.

    Returns
    -------
    dict
        ``best`` (the prompt set with the highest top-1, the first on ties), ``space``,
        ``comparisons`` (prompt set -> the ``top1`` and ``f1_weighted`` entries of
        :func:`paired_bootstrap`, A = the best set, B = that set), ``resamples``, ``seed``.
    """
    with embeddings.opened(store) as st:
        predicted = {name: top1_predictions(st, name, space=space) for name in prompt_sets}
        n_classes = len(st.classes)
    if len(predicted) < 2:
        raise InputError("comparing prompt sets needs at least two of them")
    top1 = {name: float(np.mean(labels == pred)) for name, (labels, pred) in predicted.items()}
    best = max(top1, key=top1.get)
    labels, best_pred = predicted[best]
    comparisons = {name: paired_bootstrap(labels, best_pred, pred, n_classes, resamples, seed)
                   for name, (_, pred) in predicted.items() if name != best}
    return {"best": best, "space": space, "comparisons": comparisons, "resamples": int(resamples), "seed": int(seed)}
