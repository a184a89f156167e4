"""Audio-only labels: each class's mean audio vector stands in for its prompt.

This shows how well the audio space separates the classes on its own, with no text.
"""

from __future__ import annotations

from analyses import embeddings, metrics
from embedstore.errors import InputError

HOLDOUTS = ("none", "loo")
#: How a class centroid is made: ``raw`` (the study's) or ``unit``; see :func:`run_centroids`.
CENTROIDS = metrics.CENTROIDS


def check_centroid(centroid: str) -> None:
    """Refuse an unknown centroid definition."""
    if centroid not in CENTROIDS:
        raise InputError(f"centroid must be one of {', '.join(CENTROIDS)}, got {centroid!r}")


def centroid_scorer(st, space: str, targets, holdout: str = "none", centroid: str = "raw") -> metrics.CentroidScorer:
    """The scorer of the store's unit audio vectors against its class centroids in ``space``."""
    check_centroid(centroid)
    raw = st.audio(space, lazy=True) if centroid == "raw" else None
    return metrics.CentroidScorer(embeddings.unit_audio(st, space), targets,
                                  leave_one_out=holdout == "loo", raw_audio=raw)


def run_centroids(store, space: str = "joint", holdout: str = "none", bootstrap: int = 0, seed: int = 0,
                  centroid: str = "raw") -> dict:
    """Zero-shot style metrics with class centroids of the audio vectors as labels.

    Parameters
    ----------
    store : Store or path
        The store to read.
    space : str
        Audio space ("joint" or "prejoint").
    holdout : {"none", "loo"}
        ``none`` (the study's choice) lets every clip count in its own class mean;
        ``loo`` scores each clip against its own class mean computed without it.
    bootstrap : int
        Resamples of the clips for 95% confidence intervals (0: none).
    seed : int
        Seed of the resampling.
    centroid : {"raw", "unit"}
        ``raw`` (the study's evaluation code): a centroid is the mean of the class's
        stored vectors, then L2-normalised; ``unit``: the mean of their L2-normalised
        vectors, renormalised. The two differ where vectors are not unit length (every
        pre-joint space). Clips are compared by cosine in both.

    Returns
    -------
    dict
        The keys of :func:`analyses.metrics.classification_metrics` plus ``space``,
        ``holdout`` and ``centroid``.
    """
    if holdout not in HOLDOUTS:
        raise InputError(f"holdout must be one of {', '.join(HOLDOUTS)}, got {holdout!r}")
    check_centroid(centroid)
    with embeddings.opened(store) as st:
        targets = metrics.Targets.from_store(st)
        scorer = centroid_scorer(st, space, targets, holdout, centroid)
        result = metrics.classification_metrics(scorer, targets, list(st.classes), bootstrap=bootstrap, seed=seed)
    return {"space": space, "holdout": holdout, "centroid": centroid, **result}
