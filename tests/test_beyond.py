"""The analyses beyond the study, each against an independent numpy / scikit-learn / scipy reference."""

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
from metric_stores import CLASSES, make_store
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import confusion_matrix, f1_score, recall_score
from sklearn.model_selection import KFold, LeaveOneOut, StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier
from sklearn.preprocessing import normalize

from analyses.centroids import run_centroids
from analyses.compare import paired_bootstrap, run_compare
from analyses.confusion import run_confusion
from analyses.hierarchy import run_hierarchy
from analyses.modality_gap import DEFAULT_LAMBDAS, run_modality_gap
from analyses.probe import knn_loo_predictions, run_probe
from analyses.text_map import fit_procrustes, fit_ridge, run_text_map
from analyses.zeroshot import run_zeroshot
from embedstore.errors import InputError
from embedstore.store import create_store, open_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("beyond") / "toy.h5")


@pytest.fixture(scope="module")
def arrays(store):
    """The store's raw arrays, read with h5py-level accessors only."""
    with open_store(store) as st:
        return {
            "audio": st.audio("joint").astype(np.float64),
            "labels": st.labels.astype(np.int64),
            "pair": st.text("pair", "joint").astype(np.float64),
            "pair_classes": st.prompt_set("pair").classes,
            "prejoint": st.audio("prejoint").astype(np.float64),
        }


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def ensemble(text, classes, n_classes):
    return unit(np.stack([unit(text)[classes == c].mean(axis=0) for c in range(n_classes)]))


# -- modality gap ----------------------------------------------------------------------


def test_gap_distance_and_shift_equal_a_plain_numpy_reference(store, arrays):
    result = run_modality_gap(store, "pair")
    a, t = unit(arrays["audio"]), unit(arrays["pair"])
    g = a.mean(axis=0) - t.mean(axis=0)
    assert result["gap_distance"] == pytest.approx(np.linalg.norm(g), abs=1e-6)
    assert [p["lambda"] for p in result["shift"]] == list(DEFAULT_LAMBDAS)
    assert list(DEFAULT_LAMBDAS) == [-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]
    for point in result["shift"]:
        lam = point["lambda"]
        shifted_audio = unit(a - lam * g / 2)
        labels_vectors = ensemble(unit(t + lam * g / 2), arrays["pair_classes"], len(CLASSES))
        expected = np.mean(np.argmax(shifted_audio @ labels_vectors.T, axis=1) == arrays["labels"])
        assert point["top1"] == pytest.approx(expected, abs=1e-12)
    # lambda 0 is plain zero-shot; lambda 1 brings the centres together
    assert result["shift"][4]["top1"] == run_zeroshot(store, "pair")["top1"]
    centred_a = unit(a - g / 2).mean(axis=0)
    centred_t = unit(t + g / 2).mean(axis=0)
    assert np.linalg.norm(centred_a - centred_t) < 0.5 * np.linalg.norm(g)


def test_gap_refuses_spaces_of_different_widths(store, tmp_path):
    path = tmp_path / "wide.h5"
    with create_store(path, model="m", dataset="d", classes=["a", "b"]) as w:
        w.set_items(["x", "y"], labels=np.array([0, 1]))
        w.add_audio("joint", np.eye(2, 4))
        w.add_prompt_set("p", ["a", "b"], np.array([0, 1]), embeddings={"joint": np.eye(2, 3)})
    with pytest.raises(InputError, match="one shared space"):
        run_modality_gap(path, "p")


# -- probe and kNN -----------------------------------------------------------------------


def test_probe_equals_scikit_learn_cross_validation(store, arrays):
    result = run_probe(store, folds=5, seed=0)
    x, y = normalize(arrays["audio"]), arrays["labels"]
    top1, f1 = [], []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(x, y):
        predicted = LogisticRegression(max_iter=1000).fit(x[train], y[train]).predict(x[test])
        top1.append(np.mean(predicted == y[test]))
        f1.append(f1_score(y[test], predicted, average="weighted"))
    assert result["top1"] == pytest.approx(np.mean(top1), abs=1e-6)
    assert result["top1_sd"] == pytest.approx(np.std(top1), abs=1e-6)
    assert result["f1_weighted"] == pytest.approx(np.mean(f1), abs=1e-6)
    assert result["f1_weighted_sd"] == pytest.approx(np.std(f1), abs=1e-6)
    for k in (1, 5):
        knn = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
        expected = cross_val_predict(knn, arrays["audio"], y, cv=LeaveOneOut())
        assert result[f"knn{k}_top1"] == pytest.approx(np.mean(expected == y), abs=1e-12)


@pytest.mark.parametrize("k", [1, 2, 4, 5, 9])
def test_knn_votes_equal_scikit_learn_including_vote_ties(k):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(90, 6))
    y = rng.integers(0, 4, 90)
    ours = knn_loo_predictions(unit(x).astype(np.float32), y, 4, ks=[k])[:, 0]
    reference = cross_val_predict(KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute"),
                                  x, y, cv=LeaveOneOut())
    np.testing.assert_array_equal(ours, reference)


def test_probe_refuses_classes_smaller_than_the_folds(store):
    with pytest.raises(InputError, match="needs 60 items in every class"):
        run_probe(store, folds=60)


# -- text map ------------------------------------------------------------------------------


def test_procrustes_and_ridge_equal_scipy_and_scikit_learn():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(9, 6)), rng.normal(size=(9, 6))
    np.testing.assert_allclose(fit_procrustes(x, y), scipy.linalg.orthogonal_procrustes(x, y)[0], atol=1e-10)
    for n in (4, 20):  # fewer rows than columns (the dual solve) and more
        x, y = rng.normal(size=(n, 6)), rng.normal(size=(n, 5))
        reference = Ridge(alpha=0.7, fit_intercept=False).fit(x, y).coef_.T
        np.testing.assert_allclose(fit_ridge(x, y, 0.7), reference, atol=1e-8)


def test_procrustes_with_fewer_classes_than_dimensions_is_optimal_and_nearest_the_identity():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(3, 8)), rng.normal(size=(3, 8))
    w, reference = fit_procrustes(x, y), scipy.linalg.orthogonal_procrustes(x, y)[0]
    np.testing.assert_allclose(w.T @ w, np.eye(8), atol=1e-12)
    assert np.linalg.norm(x @ w - y) == pytest.approx(np.linalg.norm(x @ reference - y), rel=1e-12)
    # among the optimal rotations W = U_r V_r^T + U_rest Q V_rest^T, the trace is at most
    # trace(U_r V_r^T) + the nuclear norm of V_rest^T U_rest; ours reaches it
    u, _, vt = np.linalg.svd(x.T @ y)
    bound = np.trace(u[:, :3] @ vt[:3]) + np.linalg.svd(vt[3:] @ u[:, 3:], compute_uv=False).sum()
    assert np.trace(w) == pytest.approx(bound, abs=1e-9) and np.trace(w) >= np.trace(reference)
    np.testing.assert_allclose(fit_procrustes(x, x), np.eye(8), atol=1e-12)  # nothing to turn


def class_store(path, n_classes=12, d=4, noise=0.6, seed=0, rotation=None):
    """A store with ``n_classes`` clusters in ``d`` dimensions and one prompt per class."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n_classes, d)))
    labels = np.repeat(np.arange(n_classes), 10)
    audio = centres[labels] + noise * rng.normal(size=(labels.size, d))
    prompts = centres @ rotation.T if rotation is not None else centres + noise * rng.normal(size=centres.shape)
    with create_store(path, model="m", dataset="d", classes=[f"c{i}" for i in range(n_classes)]) as w:
        w.set_items([f"x{i}" for i in range(labels.size)], labels=labels)
        w.add_audio("joint", audio)
        w.add_prompt_set("p", [f"c{i}" for i in range(n_classes)], np.arange(n_classes), embeddings={"joint": prompts})
    return path, centres


@pytest.mark.parametrize("method, centroid", [("procrustes", "raw"), ("ridge", "raw"), ("procrustes", "unit")])
def test_text_map_equals_a_plain_reference_on_the_same_folds(tmp_path, method, centroid):
    # 12 classes in 4 dimensions: every fold fits on more classes than dimensions, so the
    # Procrustes map is unique and scipy's is the reference
    path, _ = class_store(tmp_path / "c.h5")
    result = run_text_map(path, "p", method=method, folds=3, seed=1, alpha=0.5, centroid=centroid)
    with open_store(path) as st:
        raw, y, text = st.audio("joint").astype(np.float64), st.labels, unit(st.text("p", "joint"))
    a = unit(raw)
    members = raw if centroid == "raw" else a  # the study's centroids average the stored vectors
    centroids = unit(np.stack([members[y == c].mean(axis=0) for c in range(12)]))
    mapped_hits = plain_hits = 0
    for train, held in KFold(3, shuffle=True, random_state=1).split(np.arange(12)):
        if method == "procrustes":
            w = scipy.linalg.orthogonal_procrustes(text[train], centroids[train])[0]
        else:
            w = Ridge(alpha=0.5, fit_intercept=False).fit(text[train], centroids[train]).coef_.T
        rows = np.isin(y, held)
        mapped_hits += np.sum(held[np.argmax(a[rows] @ unit(text[held] @ w).T, axis=1)] == y[rows])
        plain_hits += np.sum(held[np.argmax(a[rows] @ text[held].T, axis=1)] == y[rows])
    assert result["top1_mapped"] == pytest.approx(mapped_hits / len(y), abs=1e-12)
    assert result["top1_unmapped"] == pytest.approx(plain_hits / len(y), abs=1e-12)
    assert result["n_items"] == len(y) and len(result["per_fold"]) == 3
    assert result["top1_mapped"] != result["top1_unmapped"]  # the map changed something


def test_text_map_recovers_a_known_rotation(tmp_path):
    """Prompts that are the audio centroids rotated: the map undoes the rotation on unseen classes."""
    rotation = np.linalg.qr(np.random.default_rng(9).normal(size=(8, 8)))[0]
    path, _ = class_store(tmp_path / "rotated.h5", d=8, noise=0.05, rotation=rotation)
    result = run_text_map(path, "p")
    assert result["top1_mapped"] == 1.0 and result["top1_unmapped"] < 0.6
    per_item = [1 / len(f["classes"]) for f in result["per_fold"] for _ in range(f["n_items"])]
    assert result["chance"] == pytest.approx(np.mean(per_item), rel=1e-12)


# -- confusion and hierarchy -----------------------------------------------------------------------


@pytest.mark.parametrize("labels", ["pair", "raw", "unit"])
def test_confusion_equals_scikit_learn(store, arrays, labels):
    a, y = unit(arrays["audio"]), arrays["labels"]
    if labels == "pair":
        result = run_confusion(store, prompt_set="pair")
        vectors = ensemble(arrays["pair"], arrays["pair_classes"], len(CLASSES))
        assert result["top1"] == run_zeroshot(store, "pair")["top1"]
    else:  # the study's centroids average the stored vectors; "unit" averages unit vectors
        result = run_confusion(store, centroids=True, centroid=labels)
        members = arrays["audio"] if labels == "raw" else a
        vectors = unit(np.stack([members[y == c].mean(axis=0) for c in range(len(CLASSES))]))
        assert result["top1"] == pytest.approx(run_centroids(store, centroid=labels)["top1"], abs=1e-12)
        assert result["centroid"] == labels
    predicted = np.argmax(a @ vectors.T, axis=1)
    np.testing.assert_array_equal(result["matrix"], confusion_matrix(y, predicted, labels=range(len(CLASSES))))
    recall = recall_score(y, predicted, average=None)
    f1 = f1_score(y, predicted, average=None)
    for c, name in enumerate(CLASSES):
        assert result["per_class"][name]["recall"] == pytest.approx(recall[c], abs=1e-12)
        assert result["per_class"][name]["f1"] == pytest.approx(f1[c], abs=1e-12)


# hdio paths of the toy store's classes, written out by hand (an independent reference)
PATHS = {
    "flute": "instrument/wind/pipe_aerophones/edge/true_flutes/flute",
    "oboe": "instrument/wind/pipe_aerophones/reed_pipe/double_reeds/oboe",
    "violin": "instrument/stringed/bowed/violin",
    "cello": "instrument/stringed/bowed/violoncello",
    "tuba": "instrument/wind/pipe_aerophones/brass/with_valves/tuba",
}


def tree_distance(a, b):
    a, b = a.split("/"), b.split("/")
    shared = next((i for i, (x, z) in enumerate(zip(a, b)) if x != z), min(len(a), len(b)))
    return len(a) + len(b) - 2 * shared


@pytest.mark.parametrize("family_depth", [None, 2])
def test_hierarchy_scores_equal_a_hand_written_tree(store, arrays, family_depth):
    result = run_hierarchy(store, prompt_set="pair", family_depth=family_depth)
    a, y = unit(arrays["audio"]), arrays["labels"]
    predicted = np.argmax(a @ ensemble(arrays["pair"], arrays["pair_classes"], len(CLASSES)).T, axis=1)
    paths = [PATHS[c] for c in CLASSES]
    if family_depth is None:
        family = [p.rsplit("/", 1)[0] for p in paths]
    else:
        family = ["/".join(p.split("/")[:family_depth + 1]) for p in paths]
    assert result["nodes"] == PATHS and list(result["families"].values()) == family
    same_family = np.array([family[t] == family[p] for t, p in zip(y, predicted)])
    assert result["family_top1"] == pytest.approx(same_family.mean(), abs=1e-12)
    wrong = predicted != y
    distances = [tree_distance(paths[t], paths[p]) for t, p in zip(y[wrong], predicted[wrong])]
    assert result["n_errors"] == wrong.sum() > 0
    assert result["error_distance_mean"] == pytest.approx(np.mean(distances), abs=1e-12)
    assert sum(result["error_distance_counts"].values()) == wrong.sum()


def test_hierarchy_refuses_a_class_outside_the_ontology(tmp_path):
    path = tmp_path / "k.h5"
    with create_store(path, model="m", dataset="d", classes=["violin", "kazooka"]) as w:
        w.set_items(["x", "y"], labels=np.array([0, 1]))
        w.add_audio("joint", np.eye(2))
        w.add_prompt_set("p", ["violin", "kazooka"], np.array([0, 1]), embeddings={"joint": np.eye(2)})
    with pytest.raises(InputError, match="kazooka"):
        run_hierarchy(path, prompt_set="p")


# -- paired comparisons -----------------------------------------------------------------------


def plain_paired_bootstrap(labels, pred_a, pred_b, resamples, seed):
    """The textbook paired bootstrap: the same index draws for both sides."""
    rng = np.random.default_rng(seed)
    n = labels.size
    diffs = {"top1": [], "f1_weighted": []}
    for _ in range(resamples):
        idx = rng.integers(0, n, n)
        diffs["top1"].append(np.mean(pred_a[idx] == labels[idx]) - np.mean(pred_b[idx] == labels[idx]))
        diffs["f1_weighted"].append(f1_score(labels[idx], pred_a[idx], average="weighted")
                                    - f1_score(labels[idx], pred_b[idx], average="weighted"))
    out = {}
    for key, values in diffs.items():
        values = np.array(values)
        p = min(1.0, 2 * (min(np.sum(values <= 0), np.sum(values >= 0)) + 1) / (resamples + 1))
        out[key] = (np.percentile(values, [2.5, 97.5]), p)
    return out


def test_paired_bootstrap_equals_a_plain_numpy_implementation():
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, 150)
    pred_a = np.where(rng.random(150) < 0.7, labels, rng.integers(0, 4, 150))
    pred_b = np.where(rng.random(150) < 0.6, labels, rng.integers(0, 4, 150))
    ours = paired_bootstrap(labels, pred_a, pred_b, 4, resamples=300, seed=11)
    reference = plain_paired_bootstrap(labels, pred_a, pred_b, 300, 11)
    for key in ("top1", "f1_weighted"):
        np.testing.assert_allclose(ours[key]["ci95"], reference[key][0], atol=1e-9)
        assert ours[key]["p_value"] == pytest.approx(reference[key][1], abs=1e-12)
    assert ours["top1"]["diff"] == pytest.approx(np.mean(pred_a == labels) - np.mean(pred_b == labels), abs=1e-12)
    assert ours["f1_weighted"]["diff"] == pytest.approx(
        f1_score(labels, pred_a, average="weighted") - f1_score(labels, pred_b, average="weighted"), abs=1e-9)


def test_paired_bootstrap_known_answers():
    labels = np.zeros(40, np.int64)
    same = paired_bootstrap(labels, labels, labels.copy(), 2, resamples=200)
    assert same["top1"]["diff"] == 0 and same["top1"]["ci95"] == [0.0, 0.0] and same["top1"]["p_value"] == 1.0
    # A right on every item, B wrong on 4 of 40: a resampled difference is Binomial(40, 0.1) / 40.
    wrong_b = labels.copy()
    wrong_b[:4] = 1
    result = paired_bootstrap(labels, labels, wrong_b, 2, resamples=20000, seed=3)["top1"]
    assert result["diff"] == pytest.approx(0.1)
    binomial = scipy.stats.binom(40, 0.1)
    assert result["ci95"] == pytest.approx([binomial.ppf(0.025) / 40, binomial.ppf(0.975) / 40], abs=1e-12)
    assert result["p_value"] == pytest.approx(2 * binomial.pmf(0), abs=0.005)


def test_compare_two_prompt_sets_and_two_stores(store, tmp_path):
    result = run_compare(store, prompts_a="pair", prompts_b="single", resamples=100)
    assert result["top1"]["a"] == run_zeroshot(store, "pair")["top1"]
    assert result["top1"]["b"] == run_zeroshot(store, "single")["top1"]
    # the same store under another name, items in reverse order: no difference at all
    with open_store(store) as st:
        order = np.arange(st.n_items)[::-1]
        copy = tmp_path / "copy.h5"
        with create_store(copy, model="toy2", dataset="toyset", classes=list(st.classes)) as w:
            w.set_items(list(st.item_ids[order]), labels=st.labels[order])
            w.add_audio("joint", st.audio("joint")[order])
            w.add_prompt_set("pair", st.prompt_set("pair").prompts, st.prompt_set("pair").classes,
                             embeddings={"joint": st.text("pair", "joint")})
    two = run_compare(store, copy, prompts_a="pair", resamples=100)
    assert two["top1"]["diff"] == 0 and two["top1"]["p_value"] == 1.0 and two["b"]["model"] == "toy2"
    with pytest.raises(InputError, match="same labels on the same store"):
        run_compare(store, prompts_a="pair", prompts_b="pair")
