"""The numpy path for small score matrices (analyses/small_metrics.py) against scikit-learn
and against the numba path on the same data, its dispatch, and a zero-shot run that loads
no numba, scipy, scikit-learn or matplotlib.

Scores are rounded to one decimal and rows duplicated, so ties are everywhere.
"""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from metric_stores import make_store
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score, top_k_accuracy_score

from analyses import metrics, small_metrics
from embedstore.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
N, C = 400, 6
NAMES = [f"c{j}" for j in range(C)]


def tied_scores(seed, n=N, c=C):
    rng = np.random.default_rng(seed)
    scores = np.round(rng.uniform(-1, 1, size=(n, c)), 1).astype(np.float32)
    scores[n // 2:] = scores[: n - n // 2]
    return scores, rng


def targets_of(kind, rng, n=N, c=C):
    """Single-label (class 5 without items), multi-label (class 2 on every item) or masked
    (class 4 without a labelled negative) targets."""
    if kind == "single":
        labels = rng.integers(0, c - 1, n)
        return metrics.Targets.single(labels, c)
    matrix = rng.random((n, c)) < 0.3
    if kind == "multi":
        matrix[:, 2] = True  # no negative: undefined AUC and AP
        return metrics.Targets.multi(matrix)
    mask = (rng.random((n, c)) < 0.6) | matrix
    mask[0], matrix[0], mask[1], matrix[1] = True, True, True, False  # a positive and a negative per class
    mask[:, 4] = matrix[:, 4]  # but class 4's negatives are all unlabelled: undefined AUC and AP
    return metrics.Targets.multi(matrix, mask)


def sklearn_reference(scores, targets):
    """Per-class ROC-AUC and AP over each class's labelled items (NaN where undefined), and top-k/F1."""
    n, c = scores.shape
    truth = targets.label_matrix if targets.multilabel else np.eye(c, dtype=bool)[targets.labels]
    labelled = targets.mask if targets.masked else np.ones((n, c), bool)
    auc, ap = np.full(c, np.nan), np.full(c, np.nan)
    for j in range(c):
        y, s = truth[labelled[:, j], j], scores[labelled[:, j], j]
        if 0 < y.sum() < y.size:
            auc[j], ap[j] = roc_auc_score(y, s), average_precision_score(y, s)
    out = {"auc": auc, "ap": ap}
    if not targets.multilabel:
        out.update({f"top{k}": top_k_accuracy_score(targets.labels, scores, k=k, labels=range(c)) for k in range(1, 6)})
        predictions = np.argsort(scores, axis=1, kind="mergesort")[:, -1]  # sklearn's order: the last of a tie
        out["f1_weighted"] = f1_score(targets.labels, predictions, average="weighted")
        out["f1"] = f1_score(targets.labels, predictions, average=None, labels=range(c), zero_division=0)
    return out


def per_class(result, key):
    return np.array([np.nan if result["per_class"][name][key] is None else result["per_class"][name][key]
                     for name in NAMES])


@pytest.mark.parametrize("kind", ["single", "multi", "masked"])
@pytest.mark.parametrize("path", ["numpy", "numba"])
def test_both_paths_equal_scikit_learn(kind, path, seed=3):
    scores, rng = tied_scores(seed)
    targets = targets_of(kind, rng)
    scorer = metrics.ArrayScorer(scores)
    assert small_metrics.takes(scorer)
    compute = small_metrics.classification_metrics if path == "numpy" else metrics.classification_metrics
    result = compute(scorer, targets, NAMES)
    reference = sklearn_reference(scores, targets)
    np.testing.assert_allclose(per_class(result, "roc_auc"), reference["auc"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(per_class(result, "pr_auc"), reference["ap"], rtol=0, atol=1e-12)
    assert np.isnan(reference["auc"]).any()  # a class with an undefined AUC is in every case
    assert result["roc_auc_macro"] == pytest.approx(np.nanmean(reference["auc"]), abs=1e-12)
    assert result["pr_auc_macro"] == pytest.approx(np.nanmean(reference["ap"]), abs=1e-12)
    if kind == "single":
        for k in range(1, 6):
            assert result[f"top{k}"] == pytest.approx(reference[f"top{k}"], abs=1e-12)
        assert result["f1_weighted"] == pytest.approx(reference["f1_weighted"], abs=1e-12)
        np.testing.assert_allclose(per_class(result, "f1"), reference["f1"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["single", "multi", "masked"])
@pytest.mark.parametrize("seed", [0, 1])
def test_numpy_and_numba_paths_give_the_same_result(kind, seed):
    scores, rng = tied_scores(seed, n=301, c=9)
    names = [f"c{j}" for j in range(9)]
    targets = targets_of(kind, rng, n=301, c=9)
    ours = small_metrics.classification_metrics(metrics.ArrayScorer(scores), targets, names)
    kernels = metrics.classification_metrics(metrics.ArrayScorer(scores), targets, names)
    assert list(ours) == list(kernels)  # same keys, same order
    for key, value in kernels.items():
        if key == "per_class":
            for name in names:
                assert list(ours[key][name]) == list(value[name])
                assert ours[key][name] == pytest.approx(value[name], abs=1e-12)
        else:
            assert ours[key] == pytest.approx(value, abs=1e-12)


def test_ranks_and_predictions_follow_the_kernels_tie_rule():
    scores = np.array([[0.5, 0.5, 0.1], [0.2, 0.9, 0.9], [0.3, 0.3, 0.3]], np.float32)
    assert small_metrics.top_classes(scores).tolist() == [1, 2, 2]
    assert small_metrics.true_class_ranks(scores, np.array([0, 1, 2])).tolist() == [1, 1, 0]


def test_only_small_matrices_without_bootstrap_take_the_numpy_path(monkeypatch):
    scores, rng = tied_scores(4)
    targets = targets_of("single", rng)
    delegated = []

    def kernel_path(scorer, targets, class_names, bootstrap=0, seed=0):
        delegated.append(bootstrap)
        return {"path": "numba"}

    monkeypatch.setattr(metrics, "classification_metrics", kernel_path)
    run = lambda s, **kw: small_metrics.classification_metrics(metrics.ArrayScorer(s), targets, NAMES, **kw)
    assert "top1" in run(scores)
    assert run(scores, bootstrap=10) == {"path": "numba"}
    bad = scores.copy()
    bad[3, 2] = np.nan
    assert run(bad) == {"path": "numba"}
    monkeypatch.setattr(small_metrics, "SMALL_MAX_SCORES", N * C - 1)
    assert run(scores) == {"path": "numba"}
    assert delegated == [10, 0, 0]


def test_bad_shapes_get_the_numba_paths_errors():
    scores, rng = tied_scores(5)
    with pytest.raises(InputError, match="two classes"):
        small_metrics.classification_metrics(metrics.ArrayScorer(scores[:, :1]), metrics.Targets.single(np.zeros(N), 1), ["a"])
    with pytest.raises(InputError, match="targets"):
        small_metrics.classification_metrics(metrics.ArrayScorer(scores), targets_of("single", rng, n=N - 1), NAMES)


HEAVY = ("numba", "scipy", "sklearn", "matplotlib", "torch")
LOADED = ("import sys\nfrom cli.main import app\ntry:\n    app(sys.argv[1:])\nexcept SystemExit as exc:\n"
          "    assert not exc.code, exc.code\n"
          f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))\n")


def modules_loaded(*args) -> list[str]:
    out = subprocess.run([sys.executable, "-c", LOADED, *map(str, args)], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return ast.literal_eval(out.stdout.strip().splitlines()[-1])


def test_a_small_zeroshot_run_loads_no_numba_scipy_sklearn_or_matplotlib(tmp_path):
    store = make_store(tmp_path / "toy.h5")
    assert modules_loaded("analyze", "zeroshot", store) == []
    assert modules_loaded("analyze", "zeroshot", store, "--space", "joint", "--per-class", "--json", tmp_path / "z.json") == []
    # the same check sees numba where a kernel is needed: bootstrap resamples
    assert "numba" in modules_loaded("analyze", "zeroshot", store, "--bootstrap", 5)


def test_a_space_is_read_once_per_open_store_and_only_the_last_space_is_kept(tmp_path):
    from analyses import embeddings
    from embedstore.store import open_store

    with open_store(make_store(tmp_path / "toy.h5")) as st:
        joint = embeddings.unit_audio(st, "joint")
        assert embeddings.unit_audio(st, "joint") is joint and not joint.flags.writeable
        np.testing.assert_array_equal(joint, embeddings.l2_normalize(st.audio("joint")))
        prejoint = embeddings.unit_audio(st, "prejoint")
        assert embeddings.unit_audio(st, "joint") is not joint  # one space kept per store
        assert embeddings.unit_audio(st, "prejoint") is not prejoint
