"""The modality gap (Liang et al., "Mind the Gap", NeurIPS 2022) and the gap-shift experiment.

Audio and text vectors of a two-tower model sit in two separate cones of the unit sphere.
The gap is the vector between the two centres; shifting both modalities along it towards
each other (and renormalising) shows how much zero-shot accuracy depends on where the
cones sit rather than on what they encode.
"""

from __future__ import annotations

import numpy as np

from analyses import embeddings, metrics
from embedstore.errors import InputError

#: The default grid of shift factors: -1 to 1.5 by 0.25 (1 brings the centres together).
DEFAULT_LAMBDAS = tuple(float(x) for x in np.arange(-1.0, 1.5 + 1e-9, 0.25))


def gap_centres(unit_audio: np.ndarray, unit_text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means of the unit audio rows and of the unit prompt rows, in float64."""
    return unit_audio.mean(axis=0, dtype=np.float64), unit_text.mean(axis=0, dtype=np.float64)


def shifted_top1(unit_audio: np.ndarray, unit_text: np.ndarray, prompt_classes: np.ndarray,
                 targets: metrics.Targets, classes: list[str], gap: np.ndarray, lam: float,
                 set_name: str = "") -> float:
    """Zero-shot top-1 after audio' = normalise(a - lam g/2), text' = normalise(t + lam g/2).

    The shifted prompts form their class ensembles exactly as in :mod:`analyses.zeroshot`.
    """
    half = 0.5 * lam * gap
    audio = embeddings.l2_normalize(unit_audio.astype(np.float64) - half)
    text = embeddings.l2_normalize(unit_text.astype(np.float64) + half)
    scorer = metrics.CosineScorer(audio, embeddings.prompt_ensemble(prompt_classes, text, classes, set_name))
    return float(np.mean(metrics.rank_pass(scorer, targets)["correct"]))


def run_modality_gap(store, prompt_set: str, space: str = "joint", lambdas=DEFAULT_LAMBDAS) -> dict:
    """Gap distance between the audio and text centres, and top-1 along the gap shift.

    Parameters
    ----------
    store : Store, StoreView or path
        The store to read (single-label for the top-1 curve).
    prompt_set : str
        The prompt set giving the text side: its centre is the mean of all its unit prompt
        vectors; its class ensembles are the zero-shot labels.
    space : str
        A space both towers share (``joint``).
    lambdas : sequence of float
        Shift factors; ``0`` is plain zero-shot, ``1`` moves both centres onto their midpoint.

    Returns
    -------
    dict
        ``gap_distance`` (Euclidean distance between the centres), ``audio_centre_norm``,
        ``text_centre_norm``, ``centre_cosine`` (cosine between the centres), ``shift``
        (a list of ``{"lambda", "top1"}``), ``prompt_set``, ``space``, ``n_items``,
        ``n_prompts``.
    """
    lambdas = [float(x) for x in lambdas]
    if not lambdas or not np.all(np.isfinite(lambdas)):
        raise InputError("the lambda grid must hold at least one finite value")
    with embeddings.opened(store) as st:
        if st.multilabel:
            raise InputError("the gap-shift experiment scores top-1; this store is multi-label")
        audio = embeddings.unit_audio(st, space)
        prompt_classes = st.prompt_set(prompt_set).classes
        text = st.text(prompt_set, space)
        if not np.all(np.isfinite(text)):
            raise InputError(f"prompt set {prompt_set!r} holds NaN or infinite values in space {space!r}")
        if text.shape[1] != audio.shape[1]:
            raise InputError(f"space {space!r}: audio has {audio.shape[1]} dimensions but prompt set "
                             f"{prompt_set!r} has {text.shape[1]}; the gap needs one shared space")
        targets = metrics.Targets.from_store(st)
        classes = list(st.classes)
    embeddings.check_every_class_prompted(prompt_classes, classes, prompt_set)  # before any mean
    unit_text = embeddings.l2_normalize(text)
    audio_centre, text_centre = gap_centres(audio, unit_text)
    gap = audio_centre - text_centre
    norms = np.linalg.norm(audio_centre) * np.linalg.norm(text_centre)
    shift = [{"lambda": lam, "top1": shifted_top1(audio, unit_text, prompt_classes, targets, classes, gap, lam,
                                                  prompt_set)}
             for lam in lambdas]
    return {
        "prompt_set": prompt_set,
        "space": space,
        "gap_distance": float(np.linalg.norm(gap)),
        "audio_centre_norm": float(np.linalg.norm(audio_centre)),
        "text_centre_norm": float(np.linalg.norm(text_centre)),
        "centre_cosine": float(audio_centre @ text_centre / norms) if norms > 0 else None,
        "shift": shift,
        "n_items": int(audio.shape[0]),
        "n_prompts": int(unit_text.shape[0]),
    }
