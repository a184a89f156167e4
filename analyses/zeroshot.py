"""Zero-shot classification: each clip takes the class whose prompts it is closest to."""

from __future__ import annotations

from analyses import embeddings, metrics, small_metrics


def run_zeroshot(store, prompt_set: str, space: str = "joint", bootstrap: int = 0, seed: int = 0) -> dict:
    """Zero-shot metrics of one prompt set in one embedding space.

    Several prompts for one class form a prompt ensemble (the mean of their unit
    vectors, renormalised); each clip is scored by cosine similarity to every class.

    Parameters
    ----------
    store : Store or path
        The store to read.
    prompt_set : str
        Name of a prompt set whose prompts cover every class.
    space : str
        Embedding space shared by audio and text ("joint" or "prejoint").
    bootstrap : int
        Resamples of the clips for 95% confidence intervals (0: none).
    seed : int
        Seed of the resampling.

    Returns
    -------
    dict
        The keys of :func:`analyses.metrics.classification_metrics` plus ``prompt_set``,
        ``space`` and ``tied_classes`` (groups of classes whose prompt vectors are
        identical, :func:`analyses.embeddings.tied_classes`: among them top-1 is the
        tie-break's choice).
    """
    with embeddings.opened(store) as st:
        audio = embeddings.unit_audio(st, space)
        labels = embeddings.class_vectors(st, prompt_set, space)
        scorer = metrics.CosineScorer(audio, labels)
        result = small_metrics.classification_metrics(
            scorer, metrics.Targets.from_store(st), list(st.classes), bootstrap=bootstrap, seed=seed
        )
        tied = embeddings.tied_classes(labels, list(st.classes))
    return {"prompt_set": prompt_set, "space": space, "tied_classes": tied, **result}
