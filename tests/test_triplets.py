"""Ontology triplets: hand-checked answers on a small tree, brute-force cross-checks, stores."""

import itertools

import numpy as np
import pytest

from analyses.triplets import (
    enumerate_triplets,
    run_triplets,
    score_triplets,
    tree_distances,
)
from embedstore.datasets import TINYSOL_CLASSES as DATASET_CLASSES
from embedstore.errors import InputError
from embedstore.ontology import Ontology, load_ontology, map_classes

TINYSOL_CLASSES = ["Bass Tuba", "French Horn", "Trombone", "Trumpet in C", "Accordion", "Contrabass",
                   "Violin", "Viola", "Violoncello", "Bassoon", "Clarinet in B-flat", "Flute", "Oboe",
                   "Alto Saxophone"]

# x and y share a parent, z is a cousin (4 edges from both), w hangs off another family.
SMALL_TREE = {"root": {"F": {"G": ["x", "y"], "H": ["z"]}, "W": ["w"]}}
X, Y, Z, W = range(4)
# Unit vectors at these angles: cos(x,y)=cos30, cos(x,z)=cos100, cos(x,w)=cos70, cos(y,z)=cos70,
# cos(y,w)=cos40, cos(z,w)=cos30.
ANGLES = np.deg2rad([0.0, 30.0, 100.0, 70.0])


def small_setup():
    onto = Ontology("small", SMALL_TREE)
    nodes = [onto.resolve(name) for name in "xyzw"]
    distance, related = tree_distances(onto, nodes)
    vectors = np.column_stack([np.cos(ANGLES), np.sin(ANGLES)])
    return onto, distance, related, vectors


def test_small_tree_paper_triplets_by_hand():
    _, distance, related, vectors = small_setup()
    triplets = {tuple(t) for t in enumerate_triplets(distance, related, "paper")}
    assert triplets == {(X, Y, Z), (X, Y, W), (X, Z, W), (Y, X, Z), (Y, X, W), (Y, Z, W), (Z, X, W), (Z, Y, W)}
    n, correct = score_triplets(vectors @ vectors.T, distance, related, "paper")
    # Right: (x,y,z) (x,y,w) (y,x,z) (y,x,w); wrong: (x,z,w) (y,z,w) (z,x,w) (z,y,w).
    assert n.tolist() == [3, 3, 2, 0]
    assert correct.tolist() == [2, 2, 0, 0]


def test_small_tree_reference_triplets_by_hand():
    _, distance, related, vectors = small_setup()
    triplets = {tuple(t) for t in enumerate_triplets(distance, related, "reference")}
    # (x,z,y) is kept because the released code compares distances as if they were similarities.
    assert triplets == {(X, Y, W), (X, Z, Y), (X, Z, W), (Y, Z, W)}
    n, correct = score_triplets(vectors @ vectors.T, distance, related, "reference")
    assert (n.sum(), correct.sum()) == (4, 1)  # only (x,y,w) is right


def test_ties_count_as_wrong():
    _, distance, related, _ = small_setup()
    similarity = np.ones((4, 4))
    n, correct = score_triplets(similarity, distance, related, "paper")
    assert n.sum() == 8 and correct.sum() == 0


def brute_force(distance, related, similarity, protocol):
    m = distance.shape[0]
    kept, right = [], 0
    for a, p, n in itertools.permutations(range(m), 3):
        if not related[a, p]:
            continue
        if protocol == "paper":
            keep = (not related[a, n]) or distance[a, n] > distance[a, p]
        else:
            as_similarity = np.where(related[a], distance[a], -1)
            keep = p > a and n > a and as_similarity[p] > as_similarity[n]
        if keep:
            kept.append((a, p, n))
            right += similarity[a, p] > similarity[a, n]
    return kept, right


@pytest.mark.parametrize("protocol", ["paper", "reference"])
def test_matches_brute_force_on_hdio_subsets(protocol):
    onto = load_ontology("hdio")
    rng = np.random.default_rng(7)
    for _ in range(3):
        picked = rng.choice(len(onto.nodes) - 1, size=12, replace=False) + 1
        nodes = [onto.nodes[i] for i in picked]
        distance, related = tree_distances(onto, nodes)
        vectors = rng.normal(size=(12, 8))
        similarity = vectors @ vectors.T
        similarity[0, 1:] = similarity[0, 1]  # ties on one anchor
        expected, right = brute_force(distance, related, similarity, protocol)
        assert sorted(map(tuple, enumerate_triplets(distance, related, protocol))) == sorted(expected)
        n, correct = score_triplets(similarity, distance, related, protocol)
        assert (n.sum(), correct.sum()) == (len(expected), right)


@pytest.mark.parametrize("classes", [TINYSOL_CLASSES, DATASET_CLASSES], ids=["table names", "dataset reader"])
def test_tinysol_reference_gives_237_triplets(classes):
    onto = load_ontology("hdio")
    distance, related = tree_distances(onto, map_classes(onto, classes))
    assert len(enumerate_triplets(distance, related, "reference")) == 237
    expected, _ = brute_force(distance, related, np.zeros((14, 14)), "paper")
    assert len(enumerate_triplets(distance, related, "paper")) == len(expected) == 686


# -- through a store -------------------------------------------------------------------


def tinysol_store(path, rng, terms=False):
    from embedstore.store import create_store

    n_classes = len(TINYSOL_CLASSES)
    labels = np.repeat(np.arange(n_classes), 3)
    # Two prompts per class in both spaces; the ensemble is the mean of their unit vectors.
    prompt_classes = np.tile(np.arange(n_classes), 2)
    with create_store(path, model="m", dataset="tinysol", classes=TINYSOL_CLASSES) as w:
        w.set_items([f"i{k}" for k in range(labels.size)], labels=labels)
        w.add_audio("joint", rng.normal(size=(labels.size, 16)))
        w.add_prompt_set("plain", [f"p{k}" for k in range(prompt_classes.size)], prompt_classes,
                         {"joint": rng.normal(size=(prompt_classes.size, 16)),
                          "prejoint": rng.normal(size=(prompt_classes.size, 24))})
        w.add_prompt_set("partial", ["a", "b"], [0, 1], {"joint": rng.normal(size=(2, 16))})
        if terms:
            onto = load_ontology("hdio")
            paths = [n.path for n in onto.nodes]
            w.add_prompt_set("ontology", [f"t{k}" for k in range(len(paths))], np.full(len(paths), -1),
                             {"joint": rng.normal(size=(len(paths), 16))}, terms=paths)
    return path


def test_run_triplets_on_a_store_matches_manual_ensemble(tmp_path):
    from embedstore.store import open_store

    path = tinysol_store(tmp_path / "s.h5", np.random.default_rng(0))
    result = run_triplets(path, "plain", space="prejoint", protocol="reference")
    with open_store(path) as st:
        text = st.text("plain", "prejoint").astype(np.float64)
    unit = text / np.linalg.norm(text, axis=1, keepdims=True)
    ensemble = unit[:14] + unit[14:]
    ensemble /= np.linalg.norm(ensemble, axis=1, keepdims=True)
    onto = load_ontology("hdio")
    distance, related = tree_distances(onto, map_classes(onto, TINYSOL_CLASSES))
    expected, right = brute_force(distance, related, ensemble @ ensemble.T, "reference")
    assert result["n_triplets"] == 237 == len(expected)
    assert result["n_correct"] == right
    assert result["accuracy"] == pytest.approx(right / 237, abs=1e-12)
    assert (result["protocol"], result["scope"], result["space"]) == ("reference", "classes", "prejoint")
    assert result["terms"] == TINYSOL_CLASSES
    assert sum(v["n_triplets"] for v in result["per_term"].values()) == 237


def test_run_triplets_ontology_scope_uses_every_node_but_the_root(tmp_path):
    path = tinysol_store(tmp_path / "s.h5", np.random.default_rng(1), terms=True)
    result = run_triplets(path, "ontology", scope="ontology", protocol="paper")
    onto = load_ontology("hdio")
    assert result["nodes"] == [n.path for n in onto.nodes[1:]]
    distance, related = tree_distances(onto, onto.nodes[1:])
    assert result["n_triplets"] == len(enumerate_triplets(distance, related, "paper"))
    assert 0.0 <= result["accuracy"] <= 1.0


def test_run_triplets_bad_input(tmp_path):
    path = tinysol_store(tmp_path / "s.h5", np.random.default_rng(2))
    with pytest.raises(InputError, match="no prompt set 'nope'"):
        run_triplets(path, "nope")
    with pytest.raises(InputError, match="no 'audio' vectors"):
        run_triplets(path, "plain", space="audio")
    with pytest.raises(InputError, match="unknown triplet protocol"):
        run_triplets(path, "plain", protocol="fast")
    with pytest.raises(InputError, match="no prompt for class Trombone, Trumpet in C"):
        run_triplets(path, "partial")
    with pytest.raises(InputError, match="carries no ontology terms"):
        run_triplets(path, "plain", scope="ontology")
    bad_map = tmp_path / "map.csv"
    bad_map.write_text("class,node\nViolin,struck\n")
    with pytest.raises(InputError, match="ambiguous"):
        run_triplets(path, "plain", ontology_map=bad_map)
