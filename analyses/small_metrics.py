"""The zero-shot metric suite on a small score matrix, in numpy alone.

:func:`classification_metrics` is :func:`analyses.metrics.classification_metrics` for a
score matrix of at most ``SMALL_MAX_SCORES`` (items x classes) entries without bootstrap:
it holds the whole matrix and sorts each class's scores with numpy. Anything larger, or
with bootstrap resamples, goes to the blocked numba path in :mod:`analyses.metrics`.

Why: a process that needs no numba kernel never imports numba. Importing it and the first
dispatch of a cached kernel (its code generator, scipy.linalg among what that loads) cost
about 0.5 s of CPU on the benchmark machine, while the whole suite on the study's 2,913 x 14
matrix costs a few milliseconds in numpy. Up to the threshold, one million scores, the numpy
path was as fast as the warm numba kernels or faster on every shape measured (1,000 x 1,000
to 100,000 x 10; beyond it the two were even), and it holds about 10 bytes per score (10 MB
at the threshold), so a process that has loaded numba for something else loses nothing by it.

Definitions and tie rules are those of :mod:`analyses.kernels` (scikit-learn's);
``tests/test_small_metrics.py`` checks both paths against scikit-learn and each other.
"""

from __future__ import annotations

import numpy as np

from analyses import metrics

SMALL_MAX_SCORES = 1_000_000


def takes(scorer, bootstrap: int = 0) -> bool:
    """Whether this path computes the suite for ``scorer`` (small, no bootstrap)."""
    return bootstrap == 0 and scorer.n_items * scorer.n_classes <= SMALL_MAX_SCORES


def classification_metrics(scorer, targets: metrics.Targets, class_names: list[str], bootstrap: int = 0,
                           seed: int = 0) -> dict:
    """:func:`analyses.metrics.classification_metrics`, in numpy when :func:`takes` says so.

    Same parameters and result. Anything this path does not take goes to the numba path,
    as do scores that are not all finite; that path also raises the errors about shapes
    and class counts.
    """
    n, n_classes = scorer.n_items, scorer.n_classes
    usable = takes(scorer, bootstrap) and n > 0 and n_classes >= 2 and (targets.n_items, targets.n_classes) == (n, n_classes)
    scores = scorer.block(0, n) if usable else None
    if scores is None or not np.isfinite(scores).all():
        return metrics.classification_metrics(scorer, targets, class_names, bootstrap=bootstrap, seed=seed)
    auc, ap = class_auc_ap(scores, targets)
    result, f1 = {}, None
    if not targets.multilabel:
        ranks = true_class_ranks(scores, targets.labels)
        for k in range(1, metrics.TOP_K + 1):
            result[f"top{k}"] = float(np.mean(ranks < k))
        f1 = metrics.per_class_f1(targets.labels, top_classes(scores), n_classes)
        result["f1_weighted"] = float(f1 @ targets.support() / n)
    per_class = metrics.per_class_table(targets, class_names, auc, ap, f1)
    result["roc_auc_macro"] = metrics._number_or_none(metrics._macro(auc[None])[0])
    result["pr_auc_macro"] = metrics._number_or_none(metrics._macro(ap[None])[0])
    result.update(per_class=per_class, n_items=int(n), n_classes=int(n_classes))
    return result


def top_classes(scores: np.ndarray) -> np.ndarray:
    """(n,) int32 top class of each row; among equal scores the higher class index wins."""
    return (scores.shape[1] - 1 - np.argmax(scores[:, ::-1], axis=1)).astype(np.int32)


def true_class_ranks(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(n,) rank of each row's true class (0 = top): higher scores, and equal ones of a higher index, come first."""
    n, c = scores.shape
    own = scores[np.arange(n), labels][:, None]
    after = np.arange(c) > labels[:, None]
    return (scores > own).sum(axis=1) + ((scores == own) & after).sum(axis=1)


def class_auc_ap(scores: np.ndarray, targets: metrics.Targets) -> tuple[np.ndarray, np.ndarray]:
    """(C,) ROC-AUC and average precision of each class; NaN without a positive or a negative.

    A class's labelled scores and its positives' scores are sorted once; binary search then
    gives each positive the negatives below it and those tied with it (ROC-AUC counts a tie
    as half, midranks), and the precision at its threshold, every score at least its own
    (average precision over distinct thresholds). Unlabelled pairs of a label mask count as
    neither.
    """
    n, c = scores.shape
    positive = targets.label_matrix if targets.multilabel else targets.labels[:, None] == np.arange(c)
    columns, positive = np.ascontiguousarray(scores.T), np.ascontiguousarray(positive.T)
    observed = np.ascontiguousarray(targets.mask.T) if targets.masked else None
    auc, ap = np.full(c, np.nan), np.full(c, np.nan)
    for j in range(c):
        labelled = np.sort(columns[j] if observed is None else columns[j][observed[j]])
        positives = np.sort(columns[j][positive[j]])
        n_pos, n_neg = positives.size, labelled.size - positives.size
        if n_pos == 0 or n_neg == 0:
            continue
        below, up_to = (np.searchsorted(labelled, positives, side) for side in ("left", "right"))
        pos_below, pos_up_to = (np.searchsorted(positives, positives, side) for side in ("left", "right"))
        neg_below, neg_tied = below - pos_below, (up_to - below) - (pos_up_to - pos_below)
        auc[j] = np.sum(2 * neg_below + neg_tied) / (2.0 * n_pos * n_neg)
        ap[j] = np.mean((n_pos - pos_below) / (labelled.size - below))
    return auc, ap
