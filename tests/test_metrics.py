"""run_zeroshot / run_centroids / run_histograms / run_confidence on real stores.

The kernels' exactness is tested in test_kernels.py on score matrices; here the
reference recomputes the cosines independently (scikit-learn's cosine_similarity in
float64) and the scores from the stored vectors, so store reading, prompt ensembles,
centroids and wiring are what is under test.
"""

import json

import numpy as np
import pytest
from metric_stores import CLASSES, N, make_store
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    roc_auc_score,
    top_k_accuracy_score,
)
from sklearn.metrics.pairwise import cosine_similarity

from analyses.centroids import run_centroids
from analyses.confidence import run_confidence
from analyses.histograms import run_histograms
from analyses.zeroshot import run_zeroshot
from embedstore.errors import InputError
from embedstore.store import open_store


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "toy.h5")


def reference_scores(path, set_name="pair"):
    with open_store(path) as st:
        audio = st.audio("joint").astype(np.float64)
        text = st.text(set_name, "joint").astype(np.float64)
        classes = st.prompt_set(set_name).classes
        labels = None if st.multilabel else st.labels
        matrix = st.label_matrix
    unit = text / np.linalg.norm(text, axis=1, keepdims=True)
    ensemble = np.array([unit[classes == c].mean(axis=0) for c in range(len(CLASSES))])
    return cosine_similarity(audio, ensemble), labels, matrix


def test_zeroshot_matches_sklearn(store):
    result = run_zeroshot(store, "pair")
    scores, labels, onehot = reference_scores(store)
    assert result["prompt_set"] == "pair" and result["space"] == "joint"
    assert result["n_items"] == N and result["n_classes"] == len(CLASSES)
    # cosines in float32 vs float64: compare at a tolerance one near-tie could not break
    assert result["top1"] == pytest.approx(top_k_accuracy_score(labels, scores, k=1), abs=2 / N)
    assert result["top3"] == pytest.approx(top_k_accuracy_score(labels, scores, k=3), abs=2 / N)
    assert result["f1_weighted"] == pytest.approx(f1_score(labels, scores.argmax(1), average="weighted"), abs=0.02)
    assert result["roc_auc_macro"] == pytest.approx(roc_auc_score(onehot, scores, average="macro"), abs=1e-3)
    assert result["pr_auc_macro"] == pytest.approx(average_precision_score(onehot, scores, average="macro"), abs=1e-3)
    assert set(result["per_class"]) == set(CLASSES)
    assert all(v["support"] == N // len(CLASSES) for v in result["per_class"].values())
    json.dumps(result, allow_nan=False)


def test_prompt_ensemble_differs_from_single_prompt(store):
    assert run_zeroshot(store, "pair")["roc_auc_macro"] != run_zeroshot(store, "single")["roc_auc_macro"]


def test_zeroshot_multilabel_store_gives_auc_and_ap_only(tmp_path):
    path = make_store(tmp_path / "multi.h5", multilabel=True)
    result = run_zeroshot(path, "pair")
    scores, _, matrix = reference_scores(path)
    assert "top1" not in result and "f1_weighted" not in result
    assert result["roc_auc_macro"] == pytest.approx(roc_auc_score(matrix, scores, average="macro"), abs=1e-3)
    assert result["pr_auc_macro"] == pytest.approx(average_precision_score(matrix, scores, average="macro"), abs=1e-3)


def test_zeroshot_bootstrap_is_seeded(store):
    first = run_zeroshot(store, "pair", bootstrap=50, seed=3)
    assert first == run_zeroshot(store, "pair", bootstrap=50, seed=3)
    assert first["ci95"] != run_zeroshot(store, "pair", bootstrap=50, seed=4)["ci95"]


def reference_centroid_scores(audio, labels, holdout, centroid):
    """numpy: the study's centroids average the raw vectors ("raw"); the other the unit ones."""
    n, n_classes = len(labels), labels.max() + 1
    unit = audio / np.linalg.norm(audio, axis=1, keepdims=True)
    members_of = audio if centroid == "raw" else unit
    scores = np.empty((n, n_classes))
    for i in range(n):
        for c in range(n_classes):
            members = (labels == c) & ((np.arange(n) != i) if holdout == "loo" else True)
            mean = members_of[members].mean(axis=0)
            scores[i, c] = unit[i] @ (mean / np.linalg.norm(mean))
    return scores


@pytest.mark.parametrize("centroid", ["raw", "unit"])
@pytest.mark.parametrize("holdout", ["none", "loo"])
def test_centroids_match_numpy(store, holdout, centroid):
    result = run_centroids(store, holdout=holdout, centroid=centroid)
    with open_store(store) as st:
        audio = st.audio("joint").astype(np.float64)
        labels = st.labels
    scores = reference_centroid_scores(audio, labels, holdout, centroid)
    onehot = np.eye(len(CLASSES), dtype=bool)[labels]
    assert result["holdout"] == holdout and result["centroid"] == centroid
    assert result["top1"] == pytest.approx(top_k_accuracy_score(labels, scores, k=1), abs=2 / N)
    assert result["roc_auc_macro"] == pytest.approx(roc_auc_score(onehot, scores, average="macro"), abs=1e-4)
    assert result["pr_auc_macro"] == pytest.approx(average_precision_score(onehot, scores, average="macro"), abs=1e-4)


def test_centroid_default_is_the_studys_raw_mean_and_differs_from_unit_on_prejoint_like_vectors(tmp_path):
    # Pre-joint vectors are not unit length: norms spread over two orders of magnitude here,
    # so averaging raw vectors (the study's code) and unit vectors give other centroids.
    from embedstore.store import create_store

    rng = np.random.default_rng(5)
    labels = np.arange(150) % 3
    audio = (rng.normal(size=(3, 8))[labels] + 1.5 * rng.normal(size=(150, 8))) * np.exp(rng.normal(size=(150, 1)) * 1.5)
    path = tmp_path / "prejoint-like.h5"
    with create_store(path, model="m", dataset="d", classes=["a", "b", "c"]) as w:
        w.set_items([f"i{k}" for k in range(150)], labels=labels)
        w.add_audio("prejoint", audio)
    default = run_centroids(path, space="prejoint")
    unit = run_centroids(path, space="prejoint", centroid="unit")
    assert default["centroid"] == "raw"
    onehot = np.eye(3, dtype=bool)[labels]
    for result, centroid in ((default, "raw"), (unit, "unit")):
        scores = reference_centroid_scores(audio, labels, "none", centroid)
        assert result["roc_auc_macro"] == pytest.approx(roc_auc_score(onehot, scores, average="macro"), abs=1e-6)
        assert result["top1"] == pytest.approx(top_k_accuracy_score(labels, scores, k=1), abs=1e-9)
    assert abs(default["roc_auc_macro"] - unit["roc_auc_macro"]) > 0.005


def test_leave_one_out_is_harder_than_the_study_centroids(store):
    assert run_centroids(store, holdout="loo")["roc_auc_macro"] < run_centroids(store)["roc_auc_macro"]


def test_histograms_split_positive_and_negative_pairs(store):
    result = run_histograms(store, "pair", bins=50)
    scores, _labels, onehot = reference_scores(store)
    assert result["n_positive"] == N and result["n_negative"] == N * (len(CLASSES) - 1)
    assert sum(result["positive_counts"]) == N and len(result["bin_edges"]) == 51
    assert result["positive_mean"] == pytest.approx(scores[onehot].mean(), abs=1e-5)
    assert result["negative_mean"] == pytest.approx(scores[~onehot].mean(), abs=1e-5)
    pairs = roc_auc_score(onehot.ravel(), scores.ravel())
    assert result["auc"] == pytest.approx(pairs, abs=1e-3)
    assert 0 < result["bhattacharyya"] < 1
    centroid = run_histograms(store, centroids=True)
    assert centroid["labels"] == "centroids" and centroid["n_positive"] == N


def test_confidence_margins_match_numpy(store):
    result = run_confidence(store, "pair")
    scores, labels, _ = reference_scores(store)
    ordered = np.sort(scores, axis=1)
    margins = ordered[:, -1] - ordered[:, -2]
    assert result["median"] == pytest.approx(np.median(margins), abs=1e-5)
    correct = scores.argmax(1) == labels
    assert abs(result["correct"]["n"] - correct.sum()) <= 1
    assert result["correct"]["n"] + result["wrong"]["n"] == N
    assert len(result["margins"]) == len(result["is_correct"]) == N


def test_errors_name_what_exists(store):
    with pytest.raises(InputError, match="has no prompt set 'nope'.*pair"):
        run_zeroshot(store, "nope")
    with pytest.raises(InputError, match="no audio space 'other'.*joint, prejoint"):
        run_zeroshot(store, "pair", space="other")
    with pytest.raises(InputError, match="prompt set 'pair' has no space 'prejoint'"):
        run_zeroshot(store, "pair", space="prejoint")
    with pytest.raises(InputError, match="either a prompt set or centroids"):
        run_histograms(store)
    with pytest.raises(InputError, match="holdout"):
        run_centroids(store, holdout="half")


def test_ontology_prompts_without_a_class_are_left_out(store):
    # the "instrument" prompt stands for no class; the five class prompts still cover every class
    assert run_zeroshot(store, "ontology")["n_classes"] == len(CLASSES)


def test_accepts_an_open_store(store):
    with open_store(store) as st:
        assert run_zeroshot(st, "pair") == run_zeroshot(store, "pair")
