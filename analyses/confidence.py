"""Confidence margins: how decisively does a clip pick its top class over the runner-up?"""

from __future__ import annotations

from analyses import embeddings, metrics


def run_confidence(store, prompt_set: str, space: str = "joint") -> dict:
    """Top-2 similarity margins of zero-shot predictions, split by correct and wrong.

    The margin of a clip is its best class similarity minus its second best. A
    prediction is correct when the top class is one of the clip's labels.

    Parameters
    ----------
    store : Store or path
        The store to read.
    prompt_set : str
        Prompt set giving the class vectors (prompt ensembles).
    space : str
        Embedding space.

    Returns
    -------
    dict
        ``median``, ``q1``, ``q3`` and ``n_items`` over all clips, ``correct`` and
        ``wrong`` ({median, q1, q3, n}), ``margins`` and ``is_correct`` (per clip, for
        plots), ``prompt_set``, ``space`` and ``tied_classes`` (groups of classes with
        identical prompt vectors: a clip whose top class is one of them has margin 0).
    """
    with embeddings.opened(store) as st:
        targets = metrics.Targets.from_store(st)
        audio = embeddings.unit_audio(st, space)
        labels = embeddings.class_vectors(st, prompt_set, space)
        scorer = metrics.CosineScorer(audio, labels)
        metrics.require_two_classes(scorer.n_classes)  # no second class: no margin
        ranked = metrics.rank_pass(scorer, targets)
        tied = embeddings.tied_classes(labels, list(st.classes))
    return {"prompt_set": prompt_set, "space": space, "tied_classes": tied,
            **metrics.margin_summary(ranked["margins"], ranked["correct"], ranked.get("judged"))}
