"""Audio-only labels: each class's mean audio vector stands in for its prompt.

This shows how well the audio space separates the classes on its own, with no text.
"""

from __future__ import annotations

from analyses import embeddings, metrics
from embedstore.errors import InputError

HOLDOUTS = ("none", "loo")


def run_centroids(store, space: str = "joint", holdout: str = "none", bootstrap: int = 0, seed: int = 0) -> dict:
    """Zero-shot style metrics with class centroids of the audio vectors as labels.

    A centroid is the mean of a class's L2-normalised audio vectors, renormalised.

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

    Returns
    -------
    dict
        The keys of :func:`analyses.metrics.classification_metrics` plus ``space`` and
        ``holdout``.
    """
    if holdout not in HOLDOUTS:
        raise InputError(f"holdout must be one of {', '.join(HOLDOUTS)}, got {holdout!r}")
    with embeddings.opened(store) as st:
        targets = metrics.Targets.from_store(st)
        scorer = metrics.CentroidScorer(embeddings.unit_audio(st, space), targets, leave_one_out=holdout == "loo")
        result = metrics.classification_metrics(scorer, targets, list(st.classes), bootstrap=bootstrap, seed=seed)
    return {"space": space, "holdout": holdout, **result}
