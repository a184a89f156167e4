"""Ontology triplets on the text tower: does the model's text space respect an instrument tree?

A triplet (a, p, n) holds three terms whose tree distances say that ``a`` belongs nearer ``p``
than ``n``; it is answered correctly when ``cos(a, p) > cos(a, n)`` between the terms' text
vectors. Two protocols choose the triplets:

``paper``
    The study's text: ordered triplets of distinct terms with ``a`` and ``p`` related and
    ``a`` strictly closer to ``p`` than to ``n``; an unrelated ``n`` (only the root in common)
    counts as farther than any related term.
``reference``
    The released code, to reproduce its figures: for anchor index ``i``, ``p`` and ``n`` range
    over indices greater than ``i`` (so the term order matters), ``p != n``, ``a`` and ``p``
    related, kept when ``dist(a, p) > dist(a, n)`` with unrelated pairs at distance -1 (the
    distance is used as if it were a similarity). On the 14 TinySOL classes in their dataset
    order this gives 237 triplets.
"""

from __future__ import annotations

import os

import numpy as np

from analyses.embeddings import class_vectors, opened, prompt_ensemble
from embedstore.errors import InputError
from embedstore.ontology import (
    Node,
    Ontology,
    load_ontology,
    map_classes,
    read_ontology_map,
)

PROTOCOLS = ("paper", "reference")
SCOPES = ("classes", "ontology")


def tree_distances(ontology: Ontology, nodes: list[Node]) -> tuple[np.ndarray, np.ndarray]:
    """Pairwise tree distances and relatedness of ``nodes``.

    Returns
    -------
    distance : (m, m) int64 ndarray
        Edges between node i and node j.
    related : (m, m) bool ndarray
        True where the lowest common ancestor of i and j is not the root.
    """
    m = len(nodes)
    distance = np.zeros((m, m), dtype=np.int64)
    related = np.zeros((m, m), dtype=bool)
    for i, a in enumerate(nodes):
        for j in range(i, m):
            distance[i, j] = distance[j, i] = ontology.distance(a, nodes[j])
            related[i, j] = related[j, i] = ontology.related(a, nodes[j])
    return distance, related


def anchor_mask(distance: np.ndarray, related: np.ndarray, anchor: int, protocol: str = "paper") -> np.ndarray:
    """Which (p, n) pairs form a triplet with ``anchor`` under ``protocol``.

    Returns
    -------
    (m, m) bool ndarray
        ``mask[p, n]`` is True when ``(anchor, p, n)`` is a triplet.
    """
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown triplet protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")
    m = distance.shape[0]
    d, rel = distance[anchor], related[anchor]
    idx = np.arange(m)
    if protocol == "paper":
        others = idx != anchor
        farther = ~rel[None, :] | (d[None, :] > d[:, None])
        mask = (others & rel)[:, None] & others[None, :] & farther
    else:
        as_similarity = np.where(rel, d, -1)
        later = idx > anchor
        mask = (later & rel)[:, None] & later[None, :] & (as_similarity[:, None] > as_similarity[None, :])
    mask[idx, idx] = False
    return mask


def enumerate_triplets(distance: np.ndarray, related: np.ndarray, protocol: str = "paper") -> np.ndarray:
    """Every triplet as a (k, 3) int64 array of (anchor, positive, negative) indices."""
    rows = []
    for anchor in range(distance.shape[0]):
        p, n = np.nonzero(anchor_mask(distance, related, anchor, protocol))
        rows.append(np.column_stack([np.full(p.size, anchor), p, n]))
    return np.concatenate(rows).astype(np.int64) if rows else np.zeros((0, 3), np.int64)


def score_triplets(similarity: np.ndarray, distance: np.ndarray, related: np.ndarray,
                   protocol: str = "paper") -> tuple[np.ndarray, np.ndarray]:
    """Count triplets and correct answers per anchor without listing the triplets.

    Parameters
    ----------
    similarity : (m, m) ndarray
        Cosine similarity between term vectors.
    distance, related : (m, m) ndarray
        From :func:`tree_distances`.
    protocol : {"paper", "reference"}

    Returns
    -------
    n_triplets, n_correct : (m,) int64 ndarrays
        Per anchor; a tie ``cos(a, p) == cos(a, n)`` counts as wrong.
    """
    m = distance.shape[0]
    n_triplets = np.zeros(m, dtype=np.int64)
    n_correct = np.zeros(m, dtype=np.int64)
    for anchor in range(m):
        mask = anchor_mask(distance, related, anchor, protocol)
        s = similarity[anchor]
        n_triplets[anchor] = mask.sum()
        n_correct[anchor] = (mask & (s[:, None] > s[None, :])).sum()
    return n_triplets, n_correct


def _class_terms(st, ps, space: str, ontology: Ontology, mapping: dict | None):
    classes = list(st.classes)
    vectors = class_vectors(st, ps.name, space)
    return classes, map_classes(ontology, classes, mapping), vectors


def _ontology_terms(st, ps, space: str, ontology: Ontology):
    if not ps.terms:
        raise InputError(f"prompt set {ps.name!r} carries no ontology terms; scope 'ontology' needs "
                         "the ontology prompt set that extraction writes")
    unknown = sorted({t for t in ps.terms if t} - {n.path for n in ontology.nodes})
    if unknown:
        raise InputError(f"prompt set {ps.name!r} has terms outside ontology {ontology.name!r}: "
                         f"{', '.join(unknown[:3])}{' ...' if len(unknown) > 3 else ''}")
    # Tree order (pre-order, as the released code flattens it); the root only joins families.
    present = set(ps.terms)
    nodes = [n for n in ontology.nodes if n.path in present and n is not ontology.root]
    index = {n.path: i for i, n in enumerate(nodes)}
    groups = np.array([index.get(t, -1) for t in ps.terms], dtype=np.int64)
    text = st.text(ps.name, space)
    if not np.all(np.isfinite(text)):
        raise InputError(f"prompt set {ps.name!r} holds NaN or infinite values in space {space!r}")
    paths = [n.path for n in nodes]
    return paths, nodes, prompt_ensemble(groups, text, paths, ps.name)


def default_text_space(spaces) -> str:
    """``joint`` when a prompt set has it, else its first space by name (a text-only store's ``sentence``)."""
    spaces = sorted(spaces)
    return "joint" if "joint" in spaces or not spaces else spaces[0]


def run_triplets(store, prompt_set: str, space: str | None = None, ontology: str | Ontology = "hdio",
                 ontology_map: str | dict | None = None, protocol: str = "paper",
                 scope: str = "classes") -> dict:
    """Triplet accuracy of a prompt set's text vectors against an ontology.

    Parameters
    ----------
    store : path or open store
    prompt_set : str
        Prompt set whose vectors give the terms; several prompts for one term are averaged
        as unit vectors (a prompt ensemble).
    space : str, optional
        Embedding space of the prompt vectors (``"joint"``, ``"prejoint"``, a text-only
        store's ``"sentence"``); default ``joint``, or the set's only space.
    ontology : str or Ontology
        A built-in name (``"hdio"``), a JSON path, or a loaded ontology.
    ontology_map : path or dict, optional
        Class -> node (name or path) overrides; scope ``classes`` only.
    protocol : {"paper", "reference"}
    scope : {"classes", "ontology"}
        ``classes``: the store's classes mapped to nodes; ``ontology``: every node the prompt
        set's ``terms`` name (the root excepted).

    Returns
    -------
    dict
        ``accuracy``, ``n_triplets``, ``n_correct``, ``protocol``, ``scope``, ``space``,
        ``prompt_set``, ``ontology``, ``terms`` (term labels in order, with their nodes in
        ``nodes``) and ``per_term`` (anchor -> {n_triplets, n_correct, accuracy or None}).
    """
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown triplet protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")
    if scope not in SCOPES:
        raise InputError(f"unknown triplet scope {scope!r} (choose from {', '.join(SCOPES)})")
    onto = ontology if isinstance(ontology, Ontology) else load_ontology(ontology)
    if isinstance(ontology_map, (str, os.PathLike)):
        ontology_map = read_ontology_map(ontology_map)
    if ontology_map and scope == "ontology":
        raise InputError("an ontology map applies to scope 'classes' only")
    with opened(store) as st:
        if prompt_set not in st.prompt_sets:
            raise InputError(f"store has no prompt set {prompt_set!r} (has: {', '.join(st.prompt_sets) or 'none'})")
        ps = st.prompt_set(prompt_set)
        space = space or default_text_space(ps.spaces)
        if space not in ps.spaces:
            raise InputError(f"prompt set {prompt_set!r} has no {space!r} vectors (has: {', '.join(ps.spaces)})")
        if scope == "classes":
            terms, nodes, vectors = _class_terms(st, ps, space, onto, ontology_map)
        else:
            terms, nodes, vectors = _ontology_terms(st, ps, space, onto)
    distance, related = tree_distances(onto, nodes)
    vectors = vectors.astype(np.float64)
    n_triplets, n_correct = score_triplets(vectors @ vectors.T, distance, related, protocol)
    total, correct = int(n_triplets.sum()), int(n_correct.sum())
    if total == 0:
        raise InputError(f"no {protocol} triplets among the {len(terms)} terms: no two of them are related "
                         f"in ontology {onto.name!r}")
    return {
        "accuracy": correct / total,
        "n_triplets": total,
        "n_correct": correct,
        "protocol": protocol,
        "scope": scope,
        "space": space,
        "prompt_set": prompt_set,
        "ontology": onto.name,
        "terms": terms,
        "nodes": [n.path for n in nodes],
        "per_term": {
            term: {"n_triplets": int(k), "n_correct": int(c), "accuracy": (c / k) if k else None}
            for term, k, c in zip(terms, n_triplets, n_correct)
        },
    }
