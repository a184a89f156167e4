"""Positive vs negative audio-label similarities: how far apart do they sit?"""

from __future__ import annotations

from analyses import embeddings, metrics
from analyses.centroids import centroid_scorer
from embedstore.errors import InputError


def run_histograms(store, prompt_set: str | None = None, centroids: bool = False, space: str = "joint", bins: int = 100,
                   centroid: str = "raw") -> dict:
    """Histograms of cosine similarities between clips and labels, split by match.

    Labels are either a prompt set's class ensembles or (``centroids``) the audio
    class centroids of :mod:`analyses.centroids` (each clip counted in its own class).

    Parameters
    ----------
    store : Store or path
        The store to read.
    prompt_set : str, optional
        Prompt set giving the labels; exactly one of ``prompt_set`` and ``centroids``.
    centroids : bool
        Use audio class centroids as labels.
    space : str
        Embedding space.
    bins : int
        Equal-width bins over [-1, 1].
    centroid : {"raw", "unit"}
        With ``centroids``: how a centroid is made (:func:`analyses.centroids.run_centroids`).

    Returns
    -------
    dict
        The keys of :func:`analyses.metrics.similarity_histograms` plus ``labels``
        (the prompt set name or "centroids"), ``space`` and, with ``centroids``, ``centroid``;
        with a prompt set, ``tied_classes`` (:func:`analyses.embeddings.tied_classes`).
    """
    if (prompt_set is None) == (not centroids):
        raise InputError("give either a prompt set or centroids, not both or neither")
    with embeddings.opened(store) as st:
        targets = metrics.Targets.from_store(st)
        if centroids:
            scorer = centroid_scorer(st, space, targets, centroid=centroid)
            about = {"centroid": centroid}
        else:
            audio = embeddings.unit_audio(st, space)
            labels = embeddings.class_vectors(st, prompt_set, space)
            scorer = metrics.CosineScorer(audio, labels)
            about = {"tied_classes": embeddings.tied_classes(labels, list(st.classes))}
        result = metrics.similarity_histograms(scorer, targets, bins=bins)
    return {"labels": "centroids" if centroids else prompt_set, "space": space, **about, **result}
