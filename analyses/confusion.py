"""Per-class results and the confusion matrix of zero-shot or audio-centroid labels.

Which classes a model names well, which it confuses with which: the rows are the true
classes, the columns the predicted ones, counts of items in each cell.
"""

from __future__ import annotations

import numpy as np

from analyses import embeddings, metrics
from analyses.centroids import HOLDOUTS, centroid_scorer
from embedstore.errors import InputError


def label_source(prompt_set: str | None, centroids: bool, holdout: str = "none") -> str:
    """The name of the labels: the prompt set, or ``centroids`` (``centroids-loo``)."""
    if (prompt_set is None) == (not centroids):
        raise InputError("give exactly one of a prompt set and centroids")
    if holdout not in HOLDOUTS:
        raise InputError(f"holdout must be one of {', '.join(HOLDOUTS)}, got {holdout!r}")
    if prompt_set is not None:
        return prompt_set
    return "centroids" if holdout == "none" else f"centroids-{holdout}"


def top1_predictions(st, prompt_set: str | None = None, centroids: bool = False, space: str = "joint",
                     holdout: str = "none", centroid: str = "raw") -> tuple[np.ndarray, np.ndarray]:
    """(true labels, top-1 predictions) of one open single-label store, both (n,) int64.

    Labels are a prompt set's class ensembles or the audio class centroids (``holdout`` and
    ``centroid`` as in :func:`analyses.centroids.run_centroids`; the defaults are the study's),
    exactly as :mod:`analyses.zeroshot` and :mod:`analyses.centroids` score them; ties go to
    the higher class index.
    """
    label_source(prompt_set, centroids, holdout)
    if st.multilabel:
        raise InputError("top-1 predictions need single labels; this store is multi-label")
    targets = metrics.Targets.from_store(st)
    if centroids:
        scorer = centroid_scorer(st, space, targets, holdout, centroid)
    else:
        scorer = metrics.CosineScorer(embeddings.unit_audio(st, space), embeddings.class_vectors(st, prompt_set, space))
    ranked = metrics.rank_pass(scorer, targets)
    return targets.labels.astype(np.int64), ranked["predictions"].astype(np.int64)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """(C, C) int64 counts: row = true class, column = predicted class."""
    return np.bincount(labels * n_classes + predictions, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def per_class_table(matrix: np.ndarray, classes: list[str]) -> dict:
    """Support, hits, recall, precision, F1 and the most frequent wrong class, per class."""
    hits = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    out = {}
    for c, name in enumerate(classes):
        wrong = matrix[c].copy()
        wrong[c] = 0
        recall = float(hits[c] / support[c]) if support[c] else None
        precision = float(hits[c] / predicted[c]) if predicted[c] else None
        denominator = support[c] + predicted[c]
        out[name] = {
            "support": int(support[c]),
            "correct": int(hits[c]),
            "recall": recall,
            "precision": precision,
            "f1": float(2 * hits[c] / denominator) if denominator else 0.0,
            "most_confused_with": classes[int(np.argmax(wrong))] if wrong.any() else None,
            "n_confused": int(wrong.max()),
        }
    return out


def run_confusion(store, prompt_set: str | None = None, centroids: bool = False, space: str = "joint",
                  holdout: str = "none", centroid: str = "raw") -> dict:
    """Confusion matrix and per-class results of zero-shot (a prompt set) or centroid labels.

    Returns
    -------
    dict
        ``labels`` (the prompt set or ``centroids``), ``space``, ``classes``, ``matrix``
        (rows true, columns predicted: item counts), ``per_class`` (class -> support,
        correct, recall (its top-1), precision, f1, most_confused_with, n_confused),
        ``top1``, ``n_items`` and, for centroids, ``centroid``.
    """
    name = label_source(prompt_set, centroids, holdout)
    with embeddings.opened(store) as st:
        labels, predictions = top1_predictions(st, prompt_set, centroids, space, holdout, centroid)
        classes = list(st.classes)
    matrix = confusion_matrix(labels, predictions, len(classes))
    return {
        "labels": name,
        "space": space,
        **({"centroid": centroid} if centroids else {}),
        "classes": classes,
        "matrix": matrix.tolist(),
        "per_class": per_class_table(matrix, classes),
        "top1": float(np.trace(matrix) / labels.size),
        "n_items": int(labels.size),
    }
