"""The metric kernels against scikit-learn and numpy on the same score matrices.

Scores are rounded to one decimal and rows duplicated so that ties are everywhere.
"""

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    roc_auc_score,
    top_k_accuracy_score,
)

from analyses import embeddings, kernels, metrics
from embedstore.errors import InputError

N, C = 500, 7
NAMES = [f"class{c}" for c in range(C)]


def tied_scores(seed=0, n=N, c=C):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.uniform(-1, 1, size=(n, c)), 1).astype(np.float32)
    scores[n // 2 :] = scores[: n - n // 2]  # duplicated rows
    return scores, rng


def sklearn_predictions(scores):
    # top_k_accuracy_score's order: stable ascending sort, reversed.
    return np.argsort(scores, axis=1, kind="mergesort")[:, ::-1][:, 0]


@pytest.fixture
def single():
    scores, rng = tied_scores()
    labels = rng.integers(0, C, N)
    labels[N // 2 :] = labels[: N - N // 2]
    return scores, labels


def test_single_label_metrics_match_sklearn(single):
    scores, labels = single
    result = metrics.classification_metrics(metrics.ArrayScorer(scores), metrics.Targets.single(labels, C), NAMES)
    onehot = np.eye(C, dtype=bool)[labels]
    for k in range(1, 6):
        assert result[f"top{k}"] == pytest.approx(top_k_accuracy_score(labels, scores, k=k, labels=range(C)), abs=1e-9)
    predictions = sklearn_predictions(scores)
    assert result["f1_weighted"] == pytest.approx(f1_score(labels, predictions, average="weighted"), abs=1e-9)
    assert result["roc_auc_macro"] == pytest.approx(roc_auc_score(onehot, scores, average="macro"), abs=1e-9)
    assert result["pr_auc_macro"] == pytest.approx(average_precision_score(onehot, scores, average="macro"), abs=1e-9)
    f1 = f1_score(labels, predictions, average=None, labels=range(C))
    auc = roc_auc_score(onehot, scores, average=None)
    ap = average_precision_score(onehot, scores, average=None)
    for c, name in enumerate(NAMES):
        got = result["per_class"][name]
        assert got["f1"] == pytest.approx(f1[c], abs=1e-9)
        assert got["roc_auc"] == pytest.approx(auc[c], abs=1e-9)
        assert got["pr_auc"] == pytest.approx(ap[c], abs=1e-9)
        assert got["support"] == int(np.sum(labels == c))
    assert result["n_items"] == N and result["n_classes"] == C


def test_multilabel_metrics_match_sklearn():
    scores, rng = tied_scores(seed=1)
    label_matrix = rng.random((N, C)) < 0.3
    label_matrix[N // 2 :] = label_matrix[: N - N // 2]
    result = metrics.classification_metrics(metrics.ArrayScorer(scores), metrics.Targets.multi(label_matrix), NAMES)
    assert "top1" not in result and "f1_weighted" not in result
    assert result["roc_auc_macro"] == pytest.approx(roc_auc_score(label_matrix, scores, average="macro"), abs=1e-9)
    assert result["pr_auc_macro"] == pytest.approx(average_precision_score(label_matrix, scores, average="macro"), abs=1e-9)
    auc = roc_auc_score(label_matrix, scores, average=None)
    for c, name in enumerate(NAMES):
        assert result["per_class"][name]["roc_auc"] == pytest.approx(auc[c], abs=1e-9)


def test_blocking_does_not_change_results(single, monkeypatch):
    scores, labels = single
    targets = metrics.Targets.single(labels, C)
    whole = metrics.classification_metrics(metrics.ArrayScorer(scores), targets, NAMES, bootstrap=20)
    whole_hist = metrics.similarity_histograms(metrics.ArrayScorer(scores), targets)
    # 3 classes per column block, 64 items per row block
    monkeypatch.setattr(metrics, "COLUMN_BLOCK_BYTES", 3 * 4 * N)
    monkeypatch.setattr(metrics, "BLOCK_BYTES", 64 * 4 * C)
    assert metrics.classification_metrics(metrics.ArrayScorer(scores), targets, NAMES, bootstrap=20) == whole
    blocked_hist = metrics.similarity_histograms(metrics.ArrayScorer(scores), targets)
    for key in ("positive_mean", "positive_std", "negative_mean", "negative_std"):  # float sums: order differs
        assert blocked_hist.pop(key) == pytest.approx(whole_hist.pop(key), abs=1e-12)
    assert blocked_hist == whole_hist


def test_ranks_follow_sklearn_tie_rule():
    scores = np.array([[0.5, 0.5, 0.1], [0.2, 0.9, 0.9], [0.3, 0.3, 0.3]], np.float32)
    labels = np.array([0, 1, 2], np.int32)
    ranks = np.empty(3, np.int32)
    kernels.true_class_ranks(scores, labels, ranks)
    # the higher class index wins a tie
    assert ranks.tolist() == [1, 1, 0]
    predictions = np.empty(3, np.int32)
    margins = np.empty(3, np.float32)
    kernels.top2(scores, predictions, margins)
    assert predictions.tolist() == sklearn_predictions(scores).tolist() == [1, 2, 2]
    assert margins.tolist() == [0.0, 0.0, 0.0]


def test_margins_match_numpy_sort(single):
    scores, labels = single
    ranked = metrics.rank_pass(metrics.ArrayScorer(scores), metrics.Targets.single(labels, C))
    ordered = np.sort(scores, axis=1)
    np.testing.assert_array_equal(ranked["margins"], ordered[:, -1] - ordered[:, -2])
    np.testing.assert_array_equal(ranked["predictions"], sklearn_predictions(scores))
    summary = metrics.margin_summary(ranked["margins"], ranked["correct"])
    margins = (ordered[:, -1] - ordered[:, -2]).astype(np.float64)
    correct = sklearn_predictions(scores) == labels
    assert summary["median"] == pytest.approx(np.median(margins), abs=1e-12)
    assert [summary["q1"], summary["q3"]] == pytest.approx(np.percentile(margins, [25, 75]).tolist(), abs=1e-12)
    assert summary["correct"]["n"] == correct.sum() and summary["wrong"]["n"] == (~correct).sum()
    assert summary["wrong"]["median"] == pytest.approx(np.median(margins[~correct]), abs=1e-12)


@pytest.mark.parametrize("multilabel", [False, True])
def test_histograms_match_numpy(single, multilabel):
    scores, labels = single
    scores = scores * np.float32(1.2)  # some scores beyond [-1, 1]: clipped into the end bins
    if multilabel:
        positive = np.random.default_rng(2).random((N, C)) < 0.25
        targets = metrics.Targets.multi(positive)
    else:
        positive = np.eye(C, dtype=bool)[labels]
        targets = metrics.Targets.single(labels, C)
    result = metrics.similarity_histograms(metrics.ArrayScorer(scores), targets, bins=40)
    pos = scores[positive].astype(np.float64)
    neg = scores[~positive].astype(np.float64)
    pos_hist, edges = np.histogram(np.clip(pos, -1, 1), bins=40, range=(-1, 1))
    neg_hist, _ = np.histogram(np.clip(neg, -1, 1), bins=40, range=(-1, 1))
    np.testing.assert_array_equal(result["positive_counts"], pos_hist)
    np.testing.assert_array_equal(result["negative_counts"], neg_hist)
    np.testing.assert_allclose(result["bin_edges"], edges)
    assert result["positive_mean"] == pytest.approx(np.clip(pos, -1, 1).mean(), abs=1e-9)
    assert result["negative_std"] == pytest.approx(np.clip(neg, -1, 1).std(), abs=1e-9)
    both = np.r_[pos, neg]
    assert result["auc"] == pytest.approx(roc_auc_score(np.r_[np.ones(pos.size), np.zeros(neg.size)], both), abs=1e-9)
    p, q = pos_hist / pos.size, neg_hist / neg.size
    assert result["bhattacharyya"] == pytest.approx(np.sum(np.sqrt(p * q)), abs=1e-12)


def test_bootstrap_weights_equal_resampled_sklearn(single):
    scores, labels = single
    targets = metrics.Targets.single(labels, C)
    weights = metrics.bootstrap_weights(N, 3, seed=5)
    auc, ap = metrics.class_auc_ap(metrics.ArrayScorer(scores), targets, weights)
    ranked = metrics.rank_pass(metrics.ArrayScorer(scores), targets)
    topk = np.empty((3, 5))
    f1w = np.empty(3)
    kernels.weighted_rank_metrics(ranked["ranks"], targets.labels, ranked["predictions"], C, weights, 5, topk, f1w)
    for r in range(3):
        drawn = np.repeat(np.arange(N), weights[r].astype(int))
        s, y = scores[drawn], labels[drawn]
        onehot = np.eye(C, dtype=bool)[y]
        np.testing.assert_allclose(auc[r], roc_auc_score(onehot, s, average=None), atol=1e-9)
        np.testing.assert_allclose(ap[r], average_precision_score(onehot, s, average=None), atol=1e-9)
        assert topk[r, 2] == pytest.approx(top_k_accuracy_score(y, s, k=3, labels=range(C)), abs=1e-9)
        assert f1w[r] == pytest.approx(f1_score(y, sklearn_predictions(s), average="weighted"), abs=1e-9)


def test_bootstrap_intervals_bracket_the_estimate(single):
    scores, labels = single
    result = metrics.classification_metrics(
        metrics.ArrayScorer(scores), metrics.Targets.single(labels, C), NAMES, bootstrap=200, seed=1
    )
    assert result["bootstrap"] == 200
    for key in ("top1", "top5", "f1_weighted", "roc_auc_macro", "pr_auc_macro"):
        lo, hi = result["ci95"][key]
        assert lo < hi and lo - 0.02 <= result[key] <= hi + 0.02


def test_class_without_positives_is_left_out_of_macro(single):
    scores, labels = single
    labels = np.where(labels == 3, 2, labels)
    result = metrics.classification_metrics(metrics.ArrayScorer(scores), metrics.Targets.single(labels, C), NAMES)
    assert result["per_class"]["class3"]["roc_auc"] is None
    kept = [c for c in range(C) if c != 3]
    onehot = np.eye(C, dtype=bool)[labels][:, kept]
    assert result["roc_auc_macro"] == pytest.approx(roc_auc_score(onehot, scores[:, kept], average="macro"), abs=1e-9)


@pytest.mark.parametrize("raw_members", [False, True])
@pytest.mark.parametrize("multilabel", [False, True])
@pytest.mark.parametrize("leave_one_out", [False, True])
def test_centroid_scores_match_numpy(multilabel, leave_one_out, raw_members):
    rng = np.random.default_rng(3)
    raw = rng.normal(size=(80, 6)) * rng.uniform(0.1, 10, size=(80, 1))
    audio = embeddings.l2_normalize(raw)
    if multilabel:
        member = rng.random((80, 4)) < 0.4
        member[:8] = np.eye(4, dtype=bool)[np.arange(8) % 4]  # at least two items per class
        targets = metrics.Targets.multi(member)
    else:
        labels = np.arange(80) % 4
        member = np.eye(4, dtype=bool)[labels]
        targets = metrics.Targets.single(labels, 4)
    got = metrics.CentroidScorer(audio, targets, leave_one_out, raw_audio=raw if raw_members else None).block(0, 80)
    a = audio.astype(np.float64)
    member_vectors = raw if raw_members else a
    expected = np.empty((80, 4))
    for i in range(80):
        for c in range(4):
            rows = member[:, c].copy()
            if leave_one_out and rows[i]:
                rows[i] = False
            centroid = member_vectors[rows].mean(axis=0)
            expected[i, c] = a[i] @ centroid / np.linalg.norm(centroid)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_leave_one_out_needs_two_items_per_class():
    audio = embeddings.l2_normalize(np.eye(3))
    with pytest.raises(InputError, match="two items"):
        metrics.CentroidScorer(audio, metrics.Targets.single([0, 0, 1], 2), leave_one_out=True)


def test_l2_normalize_keeps_zero_rows():
    out = embeddings.l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]])
    assert out.dtype == np.float32


def test_prompt_ensemble_averages_unit_vectors():
    text = np.array([[2.0, 0.0], [0.0, 10.0], [0.0, 1.0], [5.0, 5.0]])
    vectors = embeddings.prompt_ensemble(np.array([0, 0, 1, -1]), text, ["a", "b"])
    np.testing.assert_allclose(vectors, [[np.sqrt(0.5), np.sqrt(0.5)], [0.0, 1.0]], atol=1e-7)
    with pytest.raises(InputError, match="no prompt for class b"):
        embeddings.prompt_ensemble(np.array([0, 0]), text[:2], ["a", "b"], "set")


def test_targets_reject_labels_out_of_range():
    with pytest.raises(InputError):
        metrics.Targets.single([0, 5], 3)


@pytest.mark.parametrize("multilabel", [False, True])
def test_counting_and_sorting_give_the_same_auc_ap(single, multilabel, monkeypatch):
    scores, labels = single
    if multilabel:
        targets = metrics.Targets.multi(np.random.default_rng(4).random((N, C)) < 0.3)
    else:
        targets = metrics.Targets.single(labels, C)
    counted = metrics.classification_metrics(metrics.ArrayScorer(scores), targets, NAMES)
    monkeypatch.setattr(metrics, "MAX_COUNTED_POSITIVES", 0)
    sorted_ = metrics.classification_metrics(metrics.ArrayScorer(scores), targets, NAMES)
    for key in ("roc_auc_macro", "pr_auc_macro"):
        assert sorted_[key] == pytest.approx(counted[key], abs=1e-12)
    for name in NAMES:
        assert sorted_["per_class"][name] == pytest.approx(counted["per_class"][name], abs=1e-12)


def test_numba_cache_falls_back_to_user_dir_when_package_is_read_only(tmp_path, monkeypatch):
    import numba

    monkeypatch.setenv("NUMBA_CACHE_DIR", "")  # records the variable, so teardown restores it
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(kernels.os, "access", lambda path, mode: False)
    monkeypatch.setattr(numba.config, "CACHE_DIR", numba.config.CACHE_DIR)
    kernels._set_numba_cache_dir()
    expected = tmp_path / "embedstore" / "numba"
    assert expected.is_dir()
    assert kernels.os.environ["NUMBA_CACHE_DIR"] == str(expected) == numba.config.CACHE_DIR


@pytest.mark.parametrize("kind", ["spread", "clustered", "constant", "one"])
def test_bucketed_count_below_matches_searchsorted(kind):
    rng = np.random.default_rng(6)
    values = {
        "spread": rng.normal(size=300),
        "clustered": np.r_[np.zeros(100), rng.normal(size=50) * 1e-6, np.ones(40), 5.0],
        "constant": np.full(20, 0.25),
        "one": np.array([0.5]),
    }[kind]
    values = np.sort(values.astype(np.float32))
    table, low, per_unit = metrics.bucket_table(values)
    queries = np.r_[values, rng.normal(size=500), values.min() - 1, values.max() + 1, np.nextafter(values, np.inf)]
    for v in queries.astype(np.float32):
        assert kernels._count_below(values, v, table, low, per_unit) == np.searchsorted(values, v, side="left")
