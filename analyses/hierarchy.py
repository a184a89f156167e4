"""Hierarchy-aware scores: are the mistakes near misses in the instrument tree?

A viola taken for a violin is a better mistake than a viola taken for a tuba. With the
store's classes mapped to ontology nodes (as for the triplets), two scores say how far the
wrong predictions land:

- **family top-1**: the share of items whose predicted class lies in the true class's family
  (the family of a class is its ancestor at ``family_depth``, by default its parent node);
- **mean error distance**: the mean tree distance (edges) between predicted and true class
  over the wrong predictions only.
"""

from __future__ import annotations

import os

import numpy as np

from analyses import embeddings
from analyses.confusion import label_source, top1_predictions
from embedstore.errors import InputError
from embedstore.ontology import Node, Ontology, load_ontology, map_classes, read_ontology_map


def family_of(ontology: Ontology, node: Node, family_depth: int | None = None) -> str:
    """The path of ``node``'s family: its parent, or its ancestor at ``family_depth``.

    A node no deeper than ``family_depth`` is its own family.
    """
    if family_depth is None:
        return node.parent if node.parent is not None else node.path
    if family_depth < 1:
        raise InputError(f"family depth must be 1 or more (1: the root's children), got {family_depth}")
    return ontology.ancestors(node)[min(family_depth, node.depth)]


def hierarchy_scores(labels: np.ndarray, predictions: np.ndarray, families: list[str],
                     distance: np.ndarray) -> dict:
    """Family top-1 and error distances from true and predicted class indices."""
    family_ids = np.unique(np.asarray(families), return_inverse=True)[1]
    wrong = labels != predictions
    error_distance = distance[labels[wrong], predictions[wrong]]
    counts = np.bincount(error_distance) if error_distance.size else np.zeros(0, np.int64)
    return {
        "top1": float(np.mean(~wrong)),
        "family_top1": float(np.mean(family_ids[labels] == family_ids[predictions])),
        "n_errors": int(wrong.sum()),
        "error_distance_mean": float(error_distance.mean()) if error_distance.size else None,
        "error_distance_counts": {str(d): int(c) for d, c in enumerate(counts) if c},
        "family_errors": int(np.sum(wrong & (family_ids[labels] == family_ids[predictions]))),
    }


def run_hierarchy(store, prompt_set: str | None = None, centroids: bool = False, space: str = "joint",
                  holdout: str = "none", ontology: str | Ontology = "hdio",
                  ontology_map: str | dict | None = None, family_depth: int | None = None,
                  centroid: str = "raw") -> dict:
    """Family-level top-1 and the tree distance of the errors, for zero-shot or centroid labels.

    Parameters
    ----------
    store : Store, StoreView or path
    prompt_set, centroids, space, holdout, centroid
        The labels, as for :func:`analyses.confusion.run_confusion`.
    ontology, ontology_map
        The tree and the class -> node overrides, as for the triplets.
    family_depth : int, optional
        The depth of the ancestor that names a family (1: the root's children); None: each
        class's parent node.

    Returns
    -------
    dict
        ``top1``, ``family_top1``, ``n_errors``, ``family_errors`` (errors inside the true
        family), ``error_distance_mean`` (None without errors), ``error_distance_counts``
        (distance -> errors), ``families`` (class -> family node path), ``nodes`` (class ->
        node path), ``labels``, ``space``, ``ontology``, ``family_depth``, ``n_items``.
    """
    name = label_source(prompt_set, centroids, holdout)
    onto = ontology if isinstance(ontology, Ontology) else load_ontology(ontology)
    if isinstance(ontology_map, (str, os.PathLike)):
        ontology_map = read_ontology_map(ontology_map)
    with embeddings.opened(store) as st:
        classes = list(st.classes)
        nodes = map_classes(onto, classes, ontology_map)  # fails before any scoring
        families = [family_of(onto, node, family_depth) for node in nodes]
        labels, predictions = top1_predictions(st, prompt_set, centroids, space, holdout, centroid)
    distance = np.array([[onto.distance(a, b) for b in nodes] for a in nodes], dtype=np.int64)
    return {
        "labels": name,
        "space": space,
        "ontology": onto.name,
        "family_depth": family_depth,
        **({"centroid": centroid} if centroids else {}),
        **hierarchy_scores(labels, predictions, families, distance),
        "families": dict(zip(classes, families)),
        "nodes": {c: n.path for c, n in zip(classes, nodes)},
        "n_items": int(labels.size),
    }
