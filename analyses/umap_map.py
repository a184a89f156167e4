"""A 2-D UMAP map of a store's audio vectors, optionally with its prompt vectors in the same map.

umap is imported inside :func:`run_umap` only: its first import costs seconds.
"""

from __future__ import annotations

import io

import numpy as np

from analyses.embeddings import opened, prompt_ensemble, unit_audio
from embedstore.errors import InputError
from embedstore.store.fileio import write_atomic


def item_colors(st, color: str) -> list[str]:
    """One colour key per item: its class name (``"label"``) or a metadata column's value.

    Multi-label items with several classes are keyed ``"(several)"``, with none ``"(none)"``.
    """
    if color == "label":
        classes = np.asarray(st.classes, dtype=object)
        if not st.multilabel:
            return [str(c) for c in classes[st.labels]]
        keys = []
        for row in st.label_matrix:
            on = np.flatnonzero(row)
            keys.append(str(classes[on[0]]) if on.size == 1 else "(several)" if on.size else "(none)")
        return keys
    metadata = st.metadata
    if color not in metadata:
        known = ", ".join(["label", *sorted(metadata)])
        raise InputError(f"cannot colour by {color!r}: no such item column (choose from {known})")
    return [str(v) for v in np.asarray(metadata[color])]


def run_umap(store, space: str = "joint", prompt_set: str | None = None, color: str = "label",
             seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1) -> dict:
    """Embed audio vectors (and a prompt set's class vectors) in 2-D with UMAP, cosine metric.

    Parameters
    ----------
    store : path or open store
    space : str
        Audio space to map; with ``prompt_set``, its text vectors in the same space join the
        map as one point per class (the prompt ensemble).
    prompt_set : str, optional
    color : str
        ``"label"`` or the name of an item metadata column (``family``, ``dynamics``...).
    seed : int
        UMAP's random state; a fixed seed gives the same map on every run.
    n_neighbors, min_dist
        UMAP's neighbourhood size and packing; ``n_neighbors`` is capped below the point count.

    Returns
    -------
    dict
        ``coords`` (n x 2 list), ``color`` and ``values`` (one key per item), ``categories``
        (distinct keys in first-seen order), ``prompt_coords`` and ``prompt_labels`` (empty
        without a prompt set), ``space``, ``prompt_set``, ``n_items``, ``seed``,
        ``n_neighbors``, ``min_dist``, ``metric``.
    """
    if n_neighbors < 2:
        raise InputError(f"UMAP needs at least 2 neighbours, got {n_neighbors}")
    with opened(store) as st:
        if space not in st.audio_spaces:
            raise InputError(f"store has no audio space {space!r} (has: {', '.join(st.audio_spaces)})")
        audio = unit_audio(st, space)
        values = item_colors(st, color)
        prompt_vectors, prompt_labels = np.zeros((0, audio.shape[1]), np.float32), []
        if prompt_set is not None:
            if prompt_set not in st.prompt_sets:
                raise InputError(f"store has no prompt set {prompt_set!r}")
            ps = st.prompt_set(prompt_set)
            if space not in ps.spaces:
                raise InputError(f"prompt set {prompt_set!r} has no {space!r} vectors")
            groups = np.asarray(ps.classes)
            present = np.unique(groups[groups >= 0])
            if present.size == 0:
                raise InputError(f"prompt set {prompt_set!r} has no class prompts to place on the map")
            remap = np.full(len(st.classes), -1)
            remap[present] = np.arange(present.size)
            prompt_labels = [str(st.classes[i]) for i in present]
            text = st.text(prompt_set, space)
            if text.shape[1] != audio.shape[1]:
                # Pre-joint towers need not share a width (or a meaning): no common map.
                raise InputError(f"prompt set {prompt_set!r} has {text.shape[1]}-dimensional {space!r} vectors and "
                                 f"the audio {audio.shape[1]}-dimensional ones: they cannot share a map; "
                                 f"use the joint space or leave out the prompts")
            prompt_vectors = prompt_ensemble(np.where(groups >= 0, remap[groups], -1), text,
                                             prompt_labels, prompt_set)
    points = np.concatenate([audio, prompt_vectors])
    if points.shape[0] < 4:
        raise InputError(f"UMAP needs at least 4 points, the store gives {points.shape[0]}")

    import umap  # seconds to import; only this command needs it

    reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, points.shape[0] - 1), min_dist=min_dist,
                        metric="cosine", random_state=seed, n_jobs=1)
    coords = reducer.fit_transform(points).astype(np.float64)
    n = audio.shape[0]
    return {
        "coords": coords[:n].tolist(),
        "color": color,
        "values": values,
        "categories": list(dict.fromkeys(values)),
        "prompt_coords": coords[n:].tolist(),
        "prompt_labels": prompt_labels,
        "space": space,
        "prompt_set": prompt_set,
        "n_items": n,
        "seed": seed,
        "n_neighbors": int(reducer.n_neighbors),
        "min_dist": min_dist,
        "metric": "cosine",
    }


def plot_umap(result: dict, path) -> None:
    """Scatter the map: items by ``result["values"]``, each class's prompt as a large outlined marker.

    Categories take the colour-blind-safe palette with a second marker shape beyond eight
    (:func:`analyses.plots.category_style`); a prompt wears its class's colour and shape,
    so the legend names it without text labels that could overlap.
    """
    from analyses.plots import DPI, PAGE_WIDTH_IN, category_style, plt

    coords = np.asarray(result["coords"]).reshape(-1, 2)
    values = np.asarray(result["values"], dtype=object)
    categories = result["categories"]
    prompts = np.asarray(result["prompt_coords"]).reshape(-1, 2)
    prompt_of = dict(zip(result["prompt_labels"], prompts)) if len(prompts) else {}
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN, 6.2))
    for k, category in enumerate(categories):
        style = category_style(k)
        pts = coords[values == category]
        ax.scatter(pts[:, 0], pts[:, 1], s=14, alpha=0.75, color=style["color"], marker=style["marker"],
                   label=category, linewidths=0)
        if category in prompt_of:
            x, y = prompt_of[category]
            ax.scatter([x], [y], s=200, color=style["color"], marker=style["marker"], edgecolors="black",
                       linewidths=1.6, zorder=3)
    others = [label for label in prompt_of if label not in set(categories)]
    for label in others:
        ax.scatter(*prompt_of[label], s=160, marker="*", color="black", zorder=3)
    if prompt_of:
        ax.scatter([], [], s=120, marker="o", facecolors="none", edgecolors="black", linewidths=1.6,
                   label=f"prompt ({result['prompt_set']})")
    ax.set_title(f"UMAP of {result['space']} audio vectors, coloured by {result['color']}", fontsize="medium")
    ax.set_xticks([])
    ax.set_yticks([])
    if len(categories) <= 32:
        legend = ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False,
                           ncol=1 if len(categories) <= 16 else 2)
        for handle in legend.legend_handles[:len(categories)]:  # one marker size in the legend
            handle.set_sizes([40])
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    write_atomic(path, lambda fh: fh.write(buffer.getvalue()))
