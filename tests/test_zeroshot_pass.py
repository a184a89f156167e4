"""The zero-shot suite's single pass (analyses.metrics.auc_ap_ranks) against scikit-learn.

Each class's negatives are placed among its positives' scores known before the pass:
exactly (in-memory scores) or to within rounding (BLAS cosines), the near ones settled
after the pass. These tests tie positives and negatives on purpose, leave classes
without positives or negatives, mask pairs, shrink the blocks, and give the pass
guesses that are off (a little: settled; a lot: a second pass), and compare every
number with scikit-learn on the same score matrix.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    roc_auc_score,
    top_k_accuracy_score,
)

from analyses import embeddings, kernels, metrics


def sklearn_per_class(scores, positive, mask=None):
    """Per-class ROC-AUC and AP over the labelled pairs; None where a class lacks either side."""
    auc, ap = [], []
    for c in range(scores.shape[1]):
        keep = np.ones(len(scores), bool) if mask is None else mask[:, c]
        y, s = positive[keep, c], scores[keep, c]
        if y.all() or not y.any():
            auc.append(None), ap.append(None)
        else:
            auc.append(roc_auc_score(y, s)), ap.append(average_precision_score(y, s))
    return auc, ap


def assert_matches_sklearn(result, scores, positive, mask=None, labels=None):
    auc, ap = sklearn_per_class(scores, positive, mask)
    for c in range(scores.shape[1]):
        got = result["per_class"][f"c{c}"]
        assert got["roc_auc"] == (None if auc[c] is None else pytest.approx(auc[c], abs=1e-12))
        assert got["pr_auc"] == (None if ap[c] is None else pytest.approx(ap[c], abs=1e-12))
    defined = [a for a in auc if a is not None]
    assert result["roc_auc_macro"] == (pytest.approx(np.mean(defined), abs=1e-12) if defined else None)
    if labels is not None:
        n_classes = scores.shape[1]
        predictions = np.argsort(scores, axis=1, kind="mergesort")[:, -1]  # ties: the higher class
        for k in range(1, 6):
            if k >= n_classes:
                expected = 1.0
            elif n_classes == 2:  # top_k_accuracy_score takes 1-D scores for two classes
                expected = accuracy_score(labels, predictions)
            else:
                expected = top_k_accuracy_score(labels, scores, k=k, labels=range(n_classes))
            assert result[f"top{k}"] == pytest.approx(expected, abs=1e-12)
        assert result["f1_weighted"] == pytest.approx(f1_score(labels, predictions, average="weighted"), abs=1e-12)


class GuessingScorer(metrics.ArrayScorer):
    """In-memory scores whose ``pair_scores`` are off by ``error`` (items ``start``.. only)
    and not claimed exact, as BLAS cosines are; counts the blocks handed out."""

    def __init__(self, scores, error=0.0, start=0):
        super().__init__(scores)
        self.error, self.start, self.blocks = error, start, 0

    def block_t(self, start, stop):
        self.blocks += 1
        return super().block_t(start, stop)

    def pair_scores(self, items, classes):
        values, _ = super().pair_scores(items, classes)
        sign = np.where(np.arange(items.size) % 2, 1.0, -1.0)
        return values + np.where(items >= self.start, sign * self.error, 0.0), False


def names(n_classes):
    return [f"c{c}" for c in range(n_classes)]


@st.composite
def problems(draw):
    """Score matrices on a coarse grid (ties within and across positives and negatives)."""
    n = draw(st.integers(2, 60))
    n_classes = draw(st.integers(2, 6))
    kind = draw(st.sampled_from(["single", "multi", "masked"]))
    levels = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    scores = (rng.integers(0, levels, (n, n_classes)) / 4 - 0.5).astype(np.float32)
    if kind == "single":
        labels = rng.integers(0, n_classes, n)
        return scores, np.eye(n_classes, dtype=bool)[labels], None, labels
    positive = rng.random((n, n_classes)) < draw(st.floats(0.0, 1.0))
    mask = None
    if kind == "masked":
        mask = (rng.random((n, n_classes)) < 0.7) | positive
    return scores, positive, mask, None


def targets_of(positive, mask, labels):
    if labels is not None:
        return metrics.Targets.single(labels, positive.shape[1])
    return metrics.Targets.multi(positive, mask)


@settings(max_examples=150, deadline=None)
@given(problem=problems(), rows_per_block=st.integers(1, 70), guess_error=st.sampled_from([None, 0.0, 0.1, 0.3]))
def test_one_pass_equals_sklearn_with_ties_and_missing_sides(problem, rows_per_block, guess_error):
    scores, positive, mask, labels = problem
    n_classes = scores.shape[1]
    # None: exact guesses; 0.0: right but not claimed exact; 0.1: every positive within a
    # grid step of its negatives' ties (settled after the pass); 0.3 on later rows: the
    # first block's calibration is wrong (a second pass)
    if guess_error is None:
        scorer = metrics.ArrayScorer(scores)
    else:
        scorer = GuessingScorer(scores, guess_error, start=0 if guess_error < 0.2 else rows_per_block)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics, "_item_blocks", lambda n_items, _c: ((s, min(n_items, s + rows_per_block))
                                                                 for s in range(0, n_items, rows_per_block)))
        result = metrics.classification_metrics(scorer, targets_of(positive, mask, labels), names(n_classes))
    assert_matches_sklearn(result, scores, positive, mask, labels)


def test_guesses_near_the_truth_cost_one_pass_and_settle_ties_exactly():
    rng = np.random.default_rng(1)
    n, n_classes = 400, 5
    scores = np.round(rng.normal(size=(n, n_classes)), 1).astype(np.float32)  # many ties
    scores[200:] = scores[:200]  # duplicated items: positive/negative ties of one value
    labels = rng.integers(0, n_classes, n)
    scorer = GuessingScorer(scores, error=1e-4)
    placed = []
    real = metrics._placement_pass
    spy = lambda *a, **k: placed.append(real(*a, **k)) or placed[-1]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics, "_placement_pass", spy)
        mp.setattr(metrics, "BLOCK_BYTES", 64 * 4 * n_classes)
        result = metrics.classification_metrics(scorer, metrics.Targets.single(labels, n_classes), names(n_classes))
    assert len(placed) == 1 and scorer.blocks == len(range(0, n, 64))  # one pass over the blocks
    assert placed[0].eps > 0 and placed[0].n_ambiguous > 0  # the ties were held aside and settled
    assert_matches_sklearn(result, scores, np.eye(n_classes, dtype=bool)[labels], labels=labels)


@pytest.mark.parametrize("why", ["guesses drift after the first block", "too many held aside"])
def test_a_second_pass_when_the_guesses_fail_still_equals_sklearn(why, monkeypatch):
    rng = np.random.default_rng(2)
    n, n_classes = 300, 4
    scores = np.round(rng.normal(size=(n, n_classes)), 1).astype(np.float32)
    positive = rng.random((n, n_classes)) < 0.3
    if why == "too many held aside":
        scorer = GuessingScorer(scores, error=1e-4)
        monkeypatch.setattr(metrics, "MAX_AMBIGUOUS", 0)
    else:
        scorer = GuessingScorer(scores, error=0.05, start=64)  # the first block's guesses are exact
    monkeypatch.setattr(metrics, "BLOCK_BYTES", 64 * 4 * n_classes)
    result = metrics.classification_metrics(scorer, metrics.Targets.multi(positive), names(n_classes))
    assert scorer.blocks == 2 * len(range(0, n, 64))
    assert_matches_sklearn(result, scores, positive)


def test_cosines_take_one_blas_pass_and_equal_sklearn_on_the_blocks(monkeypatch):
    """BLAS blocks and float64 guesses round differently: the result must still be exact
    for the blocks' own values, with duplicated clips and two classes sharing a vector."""
    rng = np.random.default_rng(3)
    n, n_classes, d = 3000, 9, 64
    audio = embeddings.l2_normalize(rng.normal(size=(n, d)))
    audio[1500:] = audio[:1500]
    text = embeddings.l2_normalize(rng.normal(size=(n_classes, d)))
    text[4] = text[3]
    labels = rng.integers(0, n_classes, n)

    calls = []

    class Counting(metrics.CosineScorer):
        def block_t(self, start, stop):
            out = super().block_t(start, stop)
            calls.append((start, out.T.copy()))
            return out

    monkeypatch.setattr(metrics, "BLOCK_BYTES", 512 * 4 * n_classes)  # six blocks
    scorer = Counting(audio, text)
    result = metrics.classification_metrics(scorer, metrics.Targets.single(labels, n_classes), names(n_classes))
    blocks = list(metrics._item_blocks(n, n_classes))
    assert len(blocks) == 6 and [start for start, _ in calls] == [start for start, _ in blocks]  # one pass
    seen = np.concatenate([block for _, block in calls])
    assert_matches_sklearn(result, seen, np.eye(n_classes, dtype=bool)[labels], labels=labels)


def test_crowded_cells_and_far_scores():
    """Many positives on one value (a crowded cell is bisected), negatives one float32
    step either side of it, and scores far outside every positive."""
    value = np.float32(0.3)
    column = np.r_[np.full(40, value), np.full(10, np.nextafter(value, np.float32(1))),
                   np.full(10, np.nextafter(value, np.float32(0))), [value] * 5, [-50.0, 50.0, 0.3001, 0.2999]]
    scores = np.stack([column, -column], axis=1).astype(np.float32)
    positive = np.zeros(scores.shape, bool)
    positive[:45, 0] = positive[50:55, 0] = True
    positive[60:, 1] = True
    for scorer in (metrics.ArrayScorer(scores), GuessingScorer(scores, error=1e-7)):
        result = metrics.classification_metrics(scorer, metrics.Targets.multi(positive), names(2))
        assert_matches_sklearn(result, scores, positive)


def test_grid_cells_say_where_a_score_goes():
    rng = np.random.default_rng(4)
    row = np.sort(np.r_[rng.normal(size=200), np.zeros(30), [1e-9, 5.0]])
    for eps in (0.0, 1e-6):
        cells, up_to, low, scale, size = metrics._grid(row, eps)
        queries = np.r_[rng.normal(size=2000) * 2, row, row + 1e-7, row - 1e-7, -1e9, 1e9]
        for x in queries:
            r = int(min(max((x - low) * scale + 1.0, 0.0), size + 1.0))
            if cells[r] >= 0:  # a clean cell: nothing within eps, and the count is exact
                assert cells[r] == np.searchsorted(row, x - eps) == np.searchsorted(row, x + eps, side="right")
            else:
                assert -cells[r] - 1 <= np.searchsorted(row, x - eps) <= np.searchsorted(row, x + eps, "right") <= up_to[r]


def test_ranks_from_class_major_blocks_follow_the_tie_rule():
    """Each thread ranks a run of classes; the runs' counts and tops are merged (ties to
    the higher class across runs too)."""
    rng = np.random.default_rng(5)
    scores = np.round(rng.normal(size=(700, 7)), 0).astype(np.float32)
    labels = rng.integers(0, 7, 700).astype(np.int32)
    targets = metrics.Targets.single(labels, 7)
    ptr, items = metrics._positive_pairs(targets)
    ranks, predictions = np.empty(700, np.int32), np.empty(700, np.int32)
    metrics._placement_pass(metrics.ArrayScorer(scores), targets, ptr, items, None, True, ranks, predictions)
    expected_ranks, expected_predictions = np.empty(700, np.int32), np.empty(700, np.int32)
    kernels.true_class_ranks(scores, labels, expected_ranks)
    kernels.top2(scores, expected_predictions, np.empty(700, np.float32))
    np.testing.assert_array_equal(ranks, expected_ranks)
    np.testing.assert_array_equal(predictions, expected_predictions)
