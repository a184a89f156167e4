"""Partial labels: the store's label mask, and every multi-label metric leaving unlabelled
pairs out (checked against scikit-learn on the labelled pairs)."""

import h5py
import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from analyses import metrics
from analyses.confidence import run_confidence
from analyses.zeroshot import run_zeroshot
from embedstore.errors import InputError, StoreDamaged, StoreTooNew
from embedstore.store import create_store, open_store
from embedstore.store.verify import verify_store


def partial_labels(n=300, c=6, seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.random((n, c)) < 0.4
    matrix = (rng.random((n, c)) < 0.35) & mask
    matrix[0, :], mask[0, :] = True, True  # every class has a positive and a labelled negative
    matrix[1, :], mask[1, :] = False, True
    scores = rng.normal(size=(n, c)).astype(np.float32) + 0.8 * matrix
    scores[2:40, 1] = np.round(scores[2:40, 1])  # ties among labelled and unlabelled pairs
    return scores, matrix, mask


def test_masked_auc_and_ap_equal_sklearn_on_the_labelled_pairs():
    scores, matrix, mask = partial_labels()
    targets = metrics.Targets.multi(matrix, mask)
    result = metrics.classification_metrics(metrics.ArrayScorer(scores), targets, [f"c{j}" for j in range(6)])
    aucs, aps = [], []
    for j in range(6):
        labelled = mask[:, j]
        auc = roc_auc_score(matrix[labelled, j], scores[labelled, j])
        ap = average_precision_score(matrix[labelled, j], scores[labelled, j])
        cls = result["per_class"][f"c{j}"]
        assert cls["roc_auc"] == pytest.approx(auc, abs=1e-12)
        assert cls["pr_auc"] == pytest.approx(ap, abs=1e-12)
        assert cls["labelled"] == int(labelled.sum()) and cls["support"] == int(matrix[:, j].sum())
        aucs.append(auc), aps.append(ap)
    assert result["roc_auc_macro"] == pytest.approx(np.mean(aucs), abs=1e-12)
    assert result["pr_auc_macro"] == pytest.approx(np.mean(aps), abs=1e-12)
    # unmasked, the same data gives other numbers: the mask is what changed them
    plain = metrics.classification_metrics(metrics.ArrayScorer(scores), metrics.Targets.multi(matrix), list("abcdef"))
    assert plain["roc_auc_macro"] != pytest.approx(result["roc_auc_macro"], abs=1e-6)


def test_masked_bootstrap_resamples_only_labelled_pairs():
    scores, matrix, mask = partial_labels(n=120, c=3, seed=4)
    targets = metrics.Targets.multi(matrix, mask)
    weights = metrics.bootstrap_weights(120, 3, seed=1)
    auc, ap = metrics.class_auc_ap(metrics.ArrayScorer(scores), targets, weights)
    for r in range(3):
        for j in range(3):
            keep = mask[:, j] & (weights[r] > 0)
            w = weights[r][keep]
            assert auc[r, j] == pytest.approx(roc_auc_score(matrix[keep, j], scores[keep, j], sample_weight=w), abs=1e-9)
            assert ap[r, j] == pytest.approx(
                average_precision_score(matrix[keep, j], scores[keep, j], sample_weight=w), abs=1e-9)


def test_masked_histograms_count_labelled_pairs_only():
    scores, matrix, mask = partial_labels(n=200, c=4, seed=2)
    result = metrics.similarity_histograms(metrics.ArrayScorer(np.clip(scores / 4, -1, 1)),
                                           metrics.Targets.multi(matrix, mask), bins=20)
    labelled = np.clip(scores / 4, -1, 1)[mask]
    assert result["n_positive"] == int(matrix.sum())
    assert result["n_negative"] == int((mask & ~matrix).sum())
    assert result["auc"] == pytest.approx(roc_auc_score(matrix[mask], labelled), abs=1e-12)
    pos_hist, _ = np.histogram(np.clip(scores / 4, -1, 1)[matrix].astype(np.float64), bins=np.linspace(-1, 1, 21))
    assert result["positive_counts"] == pos_hist.tolist()


def test_a_mask_hiding_a_positive_is_refused():
    _, matrix, mask = partial_labels(n=10, c=2)
    mask[0, 0] = False
    with pytest.raises(InputError, match="leaves out pairs that carry a label"):
        metrics.Targets.multi(matrix, mask)


def masked_store(path, matrix, mask, scores=None):
    n, c = matrix.shape
    rng = np.random.default_rng(0)
    with create_store(path, model="m", dataset="openmic", classes=[f"c{j}" for j in range(c)]) as w:
        w.set_items([f"i{k}" for k in range(n)], label_matrix=matrix, label_mask=mask)
        w.add_audio("joint", rng.normal(size=(n, 8)))
        w.add_prompt_set("p", [f"c{j}" for j in range(c)], np.arange(c), {"joint": rng.normal(size=(c, 8))})
    return path


def test_store_keeps_the_mask_and_analyses_use_it(tmp_path):
    _, matrix, mask = partial_labels(n=60, c=4, seed=3)
    path = masked_store(tmp_path / "s.h5", matrix, mask)
    with open_store(path) as st:
        assert np.array_equal(st.label_mask, mask) and np.array_equal(st.label_matrix, matrix)
        audio, text = st.audio("joint"), st.text("p", "joint")
    assert verify_store(path).problems == []
    with h5py.File(path, "r") as f:
        assert f["items"].attrs["encoding-version"] == "2.0.0"
        assert f["items/label_mask"].attrs["encoding-type"] == "label-mask"
    scores = (audio / np.linalg.norm(audio, axis=1, keepdims=True)) @ (text / np.linalg.norm(text, axis=1, keepdims=True)).T
    result = run_zeroshot(path, "p")
    for j in range(4):
        labelled = mask[:, j]
        assert result["per_class"][f"c{j}"]["roc_auc"] == pytest.approx(
            roc_auc_score(matrix[labelled, j], scores[labelled, j]), abs=1e-6)
    margins = run_confidence(path, "p")
    judged = mask[np.arange(60), np.argmax(scores, axis=1)]
    assert sum(v is not None for v in margins["is_correct"]) == int(judged.sum())
    assert margins["correct"]["n"] + margins["wrong"]["n"] == int(judged.sum())


def test_stores_without_a_mask_stay_version_1(tmp_path):
    _, matrix, _ = partial_labels(n=10, c=2)
    with create_store(tmp_path / "s.h5", model="m", dataset="d", classes=["a", "b"]) as w:
        w.set_items([f"i{k}" for k in range(10)], label_matrix=matrix)
    with open_store(tmp_path / "s.h5") as st:
        assert st.label_mask is None
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f["items"].attrs["encoding-version"] == "1.0.0"


def test_a_version_1_reader_refuses_a_masked_store(tmp_path, monkeypatch):
    from embedstore.store import elements

    _, matrix, mask = partial_labels(n=10, c=2)
    path = masked_store(tmp_path / "s.h5", matrix, mask)
    monkeypatch.setitem(elements.READ_VERSIONS, "items", "1.0.0")  # what a 1.x reader reads
    with pytest.raises(StoreTooNew, match="items uses format version 2.0.0"):
        open_store(path)


def test_damaged_masks_are_refused(tmp_path):
    _, matrix, mask = partial_labels(n=10, c=2)
    path = masked_store(tmp_path / "s.h5", matrix, mask)
    with h5py.File(path, "r+") as f:
        f["items/label_mask"][0, 0] = 0  # hides a positive
    with pytest.raises(StoreDamaged, match="marks as unlabelled a pair"):
        open_store(path)
    path = masked_store(tmp_path / "t.h5", matrix, mask)
    with h5py.File(path, "r+") as f:
        f["items"].attrs["encoding-version"] = "1.0.0"
    with pytest.raises(StoreDamaged, match="a 1.x reader would read unlabelled pairs as negatives"):
        open_store(path)


def test_writer_refuses_masks_that_do_not_fit(tmp_path):
    _, matrix, mask = partial_labels(n=10, c=2)
    bad = mask.copy()
    bad[0, 0] = False
    for kwargs, message in ((dict(label_matrix=matrix, label_mask=bad), "marks present"),
                            (dict(label_matrix=matrix, label_mask=mask[:, :1]), "shape"),
                            (dict(labels=np.zeros(10, int), label_mask=mask), "multi-label")):
        with pytest.raises(InputError, match=message):
            with create_store(tmp_path / "x.h5", model="m", dataset="d", classes=["a", "b"]) as w:
                w.set_items([f"i{k}" for k in range(10)], **kwargs)


def test_info_says_how_many_pairs_are_unlabelled(tmp_path):
    from cli_helpers import invoke

    _, matrix, mask = partial_labels(n=10, c=2)
    path = masked_store(tmp_path / "s.h5", matrix, mask)
    result = invoke("info", path)
    assert result.exit_code == 0
    assert f"{int((~mask).sum())} of 20 item-class pairs unlabelled" in " ".join(result.output.split())
