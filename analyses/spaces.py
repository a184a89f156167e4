"""Pre-joint against joint: the study's fifth experiment, centroids and triplets in every space.

The projection heads map each tower into the shared (joint) space. Running the audio-only
centroid labels and the text triplets on the vectors before the heads ("prejoint") as well
shows how much of the audio and text structure the heads keep.
"""

from __future__ import annotations


from analyses.embeddings import class_prompt_sets, opened
from analyses.triplets import run_triplets
from embedstore.errors import InputError

SPACE_ORDER = ("prejoint", "joint")
CENTROID_KEYS = ("top1", "top2", "top3", "top4", "top5", "f1_weighted", "roc_auc_macro", "pr_auc_macro")


def ordered_spaces(spaces) -> list[str]:
    """``prejoint`` then ``joint``, then any other space by name."""
    spaces = list(spaces)
    return [s for s in SPACE_ORDER if s in spaces] + sorted(s for s in spaces if s not in SPACE_ORDER)


def run_spaces(store, prompt_set: str | list[str] | None = None, ontology="hdio", ontology_map=None,
               protocol: str = "paper", holdout: str = "none", centroid: str = "raw") -> dict:
    """Centroid labels and triplet accuracy in each space of a store, side by side.

    A store without audio vectors (a text-only store) gets the triplets alone.

    Parameters
    ----------
    store : path or open store
    prompt_set : str or list of str, optional
        Prompt set(s) for the triplets; by default every set whose prompts all stand for a
        class.
    ontology, ontology_map, protocol
        As for :func:`analyses.triplets.run_triplets` (scope ``classes``).
    holdout, centroid
        As for :func:`analyses.centroids.run_centroids`.

    Returns
    -------
    dict
        ``spaces`` (every space with audio or prompt vectors, pre-joint first),
        ``audio_spaces`` (those with audio vectors), ``centroids`` (audio space -> the
        centroid metrics: ``top1``.. ``pr_auc_macro`` where the store has them,
        ``n_items``), ``triplets`` (prompt set -> space -> {accuracy, n_triplets,
        n_correct}), ``prompt_sets``, ``protocol``, ``holdout``, ``centroid``, ``ontology``.
    """
    from analyses.centroids import check_centroid, run_centroids

    check_centroid(centroid)
    with opened(store) as st:
        audio_spaces = ordered_spaces(st.audio_spaces)
        if prompt_set is None:
            sets = class_prompt_sets(st)
        else:
            sets = [prompt_set] if isinstance(prompt_set, str) else list(prompt_set)
            unknown = [s for s in sets if s not in st.prompt_sets]
            if unknown:
                raise InputError(f"store has no prompt set {unknown[0]!r} (has: {', '.join(st.prompt_sets) or 'none'})")
        if not audio_spaces and not sets:
            raise InputError("store has neither audio vectors nor a class prompt set: nothing to compare")
        centroids = {}
        for space in audio_spaces:
            full = run_centroids(st, space=space, holdout=holdout, centroid=centroid)
            centroids[space] = {k: full[k] for k in (*CENTROID_KEYS, "n_items") if k in full}
        triplets = {}
        onto_name = None
        for name in sets:
            triplets[name] = {}
            for space in ordered_spaces(st.prompt_set(name).spaces):
                result = run_triplets(st, name, space=space, ontology=ontology, ontology_map=ontology_map,
                                      protocol=protocol, scope="classes")
                onto_name = result["ontology"]
                triplets[name][space] = {k: result[k] for k in ("accuracy", "n_triplets", "n_correct")}
    text_spaces = {space for by_space in triplets.values() for space in by_space}
    return {
        "spaces": ordered_spaces(set(audio_spaces) | text_spaces),
        "audio_spaces": audio_spaces,
        "centroids": centroids,
        "triplets": triplets,
        "prompt_sets": sets,
        "protocol": protocol,
        "holdout": holdout,
        "centroid": centroid,
        "ontology": onto_name,
    }


def plot_spaces(result: dict, path) -> None:
    """Centroid metrics per audio space, and triplet accuracy per prompt set and space.

    A panel with nothing to show (no audio vectors; no prompt set with triplets, as on a
    store whose classes the ontology cannot place) is left out rather than drawn empty.
    """
    from analyses import plots

    spaces = result["spaces"]
    audio_spaces = [s for s in spaces if s in result["centroids"]]
    sets = [ps for ps in result["prompt_sets"]
            if any(v.get("accuracy") is not None for v in result["triplets"].get(ps, {}).values())]
    panels = [draw for draw, wanted in ((_centroid_panel, audio_spaces), (_triplet_panel, sets)) if wanted]
    panels = panels or [_centroid_panel]
    ratios = {_centroid_panel: 1, _triplet_panel: 1.6}
    fig, axes = plots.plt.subplots(1, len(panels), figsize=(plots.PAGE_WIDTH_IN, 3.8), squeeze=False,
                                   gridspec_kw={"width_ratios": [ratios[p] for p in panels]},
                                   constrained_layout=True)
    for ax, draw in zip(axes[0], panels):
        draw(ax, result, audio_spaces if draw is _centroid_panel else sets)
    plots.legend_beside(axes[0][-1], "space")
    plots._save(fig, path)


def _centroid_panel(ax, result: dict, audio_spaces: list[str]) -> None:
    from analyses import plots

    keys = [k for k in ("top1", "f1_weighted", "roc_auc_macro", "pr_auc_macro")
            if audio_spaces and all(k in result["centroids"][s] for s in audio_spaces)]
    labels = {"top1": "top-1", "f1_weighted": "F1", "roc_auc_macro": "ROC-AUC", "pr_auc_macro": "PR-AUC"}
    plots.grouped_bars(ax, [labels[k] for k in keys],
                       {s: [result["centroids"][s][k] for k in keys] for s in audio_spaces})
    ax.set_ylim(0, 1)
    ax.tick_params(axis="x", labelsize="small")
    ax.set_title(f"audio-only centroid labels ({result.get('centroid', 'raw')} means, holdout {result['holdout']})"
                 if audio_spaces else "no audio vectors", fontsize="medium")


def _triplet_panel(ax, result: dict, sets: list[str]) -> None:
    from analyses import plots

    plots.grouped_bars(ax, sets, {s: [result["triplets"][ps].get(s, {}).get("accuracy") for ps in sets]
                                  for s in result["spaces"]})
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_title(f"ontology triplet accuracy ({result['protocol']} protocol)", fontsize="medium")
