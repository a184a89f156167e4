"""Positive vs negative audio-label similarities: how far apart do they sit?"""

from __future__ import annotations

from analyses import embeddings, metrics
from embedstore.errors import InputError


def run_histograms(store, prompt_set: str | None = None, centroids: bool = False, space: str = "joint", bins: int = 100) -> dict:
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

    Returns
    -------
    dict
        The keys of :func:`analyses.metrics.similarity_histograms` plus ``labels``
        (the prompt set name or "centroids") and ``space``.
    """
    if (prompt_set is None) == (not centroids):
        raise InputError("give either a prompt set or centroids, not both or neither")
    with embeddings.opened(store) as st:
        targets = metrics.Targets.from_store(st)
        audio = embeddings.unit_audio(st, space)
        if centroids:
            scorer = metrics.CentroidScorer(audio, targets)
        else:
            scorer = metrics.CosineScorer(audio, embeddings.class_vectors(st, prompt_set, space))
        result = metrics.similarity_histograms(scorer, targets, bins=bins)
    return {"labels": "centroids" if centroids else prompt_set, "space": space, **result}
