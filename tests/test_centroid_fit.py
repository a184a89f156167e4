"""Centroids fitted on some items and scored on others (`analyze centroids --fit-where`),
against a numpy and scikit-learn reference; and selections of a partially labelled store."""

import json

import numpy as np
import pytest
from cli_helpers import invoke
from sklearn.metrics import f1_score, roc_auc_score

from analyses.centroids import run_centroids
from analyses.embeddings import opened
from analyses.selection import Selection
from analyses.zeroshot import run_zeroshot
from embedstore.errors import InputError
from embedstore.store import create_store

CLASSES = ["flute", "oboe", "violin", "tuba"]
N = 160


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Four classes; raw vectors of very different lengths (so raw and unit centroids differ)."""
    rng = np.random.default_rng(7)
    labels = np.arange(N) % 4
    centers = rng.normal(size=(4, 8))
    audio = (centers[labels] + 1.2 * rng.normal(size=(N, 8))) * rng.uniform(0.2, 5.0, size=(N, 1))
    split = np.where(np.arange(N) % 5 < 3, "train", np.where(np.arange(N) % 5 == 3, "test", "val"))
    path = tmp_path_factory.mktemp("fit") / "s.h5"
    with create_store(path, model="m", dataset="d", classes=CLASSES) as w:
        w.set_items([f"i{k}" for k in range(N)], labels=labels, metadata={"split": split})
        w.add_audio("joint", audio)
        w.add_prompt_set("p", CLASSES, np.arange(4), {"joint": centers + rng.normal(size=(4, 8))})
    return path, audio, labels, split


def reference(audio, labels, fit, scored, centroid):
    """Cosines of the scored unit vectors against the class means of the fit items (numpy)."""
    unit = audio / np.linalg.norm(audio, axis=1, keepdims=True)
    members = audio if centroid == "raw" else unit
    means = np.stack([members[fit & (labels == c)].mean(axis=0) for c in range(len(CLASSES))])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    return unit[scored] @ means.T


@pytest.mark.parametrize("centroid", ["raw", "unit"])
def test_fitted_centroids_equal_numpy_and_sklearn(store, tmp_path, centroid):
    path, audio, labels, split = store
    out = tmp_path / "c.json"
    result = invoke("analyze", "centroids", path, "--fit-where", "split=train", "--where", "split=test",
                    "--centroid", centroid, "--json", out)
    assert result.exit_code == 0, result.output
    assert "fitted on 96 others" in " ".join(result.output.split())
    got = json.loads(out.read_text())
    fit, scored = split == "train", split == "test"
    scores = reference(audio, labels, fit, scored, centroid)
    truth = labels[scored]
    predicted = scores.argmax(axis=1)
    assert got["n_items"] == scored.sum() == 32
    assert got["top1"] == pytest.approx(np.mean(predicted == truth), abs=1e-12)
    assert got["f1_weighted"] == pytest.approx(f1_score(truth, predicted, average="weighted"), abs=1e-12)
    onehot = np.eye(4, dtype=bool)[truth]
    assert got["roc_auc_macro"] == pytest.approx(roc_auc_score(onehot, scores, average="macro"), abs=1e-6)
    assert got["selection"]["where"] == {"split": ["test"]} and got["selection"]["n_items"] == 32
    assert got["fit_selection"]["where"] == {"split": ["train"]} and got["fit_selection"]["n_items"] == 96
    assert got["selection"]["fit"] == got["fit_selection"]
    # it answers another question than the study's centroids on the test items themselves
    with opened(path, Selection.parse(["split=test"])) as view:
        own = run_centroids(view, centroid=centroid)
    assert own["fit_selection"] is None
    assert (own["top1"], own["roc_auc_macro"]) != (got["top1"], got["roc_auc_macro"])


def test_raw_and_unit_fitted_centroids_differ(store):
    path, audio, labels, split = store
    with opened(path, Selection.parse(["split=test"])) as view:
        fit = Selection.parse(["split=train"], flag="--fit-where")
        raw, unit = (run_centroids(view, centroid=c, fit=fit) for c in ("raw", "unit"))
    assert raw["roc_auc_macro"] != unit["roc_auc_macro"]


@pytest.mark.parametrize("args, message", [
    (["--fit-where", "split=train"], "give --where or --items"),  # no --where: every item would be scored
    (["--fit-where", "split=train", "--where", "split=train"], "share 96 items"),
    (["--fit-where", "split=train", "--where", "split=test", "--where", "split=train"], "share"),
    (["--fit-where", "split=nothing", "--where", "split=test"], "keeps none"),
    (["--fit-where", "nosuch=1", "--where", "split=test"], "--fit-where nosuch"),
    (["--fit-where", "split", "--where", "split=test"], "--fit-where takes COLUMN=VALUE"),
    (["--fit-where", "split=train", "--where", "split=test", "--holdout", "loo"], "--holdout loo"),
])
def test_bad_fit_selections_are_refused(store, args, message):
    result = invoke("analyze", "centroids", store[0], *args)
    assert result.exit_code != 0 and message in result.output, result.output


def test_a_class_without_fit_items_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    with create_store(tmp_path / "s.h5", model="m", dataset="d", classes=["a", "b"]) as w:
        w.set_items(["x", "y", "z", "w"], labels=[0, 0, 1, 1], metadata={"split": ["train", "test", "test", "test"]})
        w.add_audio("joint", rng.normal(size=(4, 3)))
    result = invoke("analyze", "centroids", tmp_path / "s.h5", "--fit-where", "split=train", "--where", "split=test")
    assert result.exit_code == 1 and "no item of class 'b'" in result.output


def test_a_selection_of_a_partially_labelled_store_keeps_its_label_mask(tmp_path):
    """The view's label mask is the selected rows' (it was the whole store's, and refused)."""
    rng = np.random.default_rng(3)
    n = 60
    mask = rng.random((n, 3)) < 0.7
    mask[:6] = True
    matrix = (rng.random((n, 3)) < 0.4) & mask
    matrix[:3] = np.eye(3, dtype=bool)
    with create_store(tmp_path / "s.h5", model="m", dataset="d", classes=["a", "b", "c"]) as w:
        w.set_items([f"i{k}" for k in range(n)], label_matrix=matrix, label_mask=mask,
                    metadata={"half": np.where(np.arange(n) % 2 == 0, "even", "odd")})
        w.add_audio("joint", rng.normal(size=(n, 4)))
        w.add_prompt_set("p", ["a", "b", "c"], [0, 1, 2], {"joint": rng.normal(size=(3, 4))})
    keep = np.arange(n) % 2 == 0
    with opened(tmp_path / "s.h5", Selection.parse(["half=even"])) as view:
        np.testing.assert_array_equal(view.label_mask, mask[keep])
        result = run_zeroshot(view, "p")
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    with opened(tmp_path / "s.h5") as st:
        scores = unit(st.audio("joint"))[keep] @ unit(st.text("p", "joint")).T
    aucs = [roc_auc_score(matrix[keep][mask[keep][:, j], j], scores[mask[keep][:, j], j]) for j in range(3)]
    assert result["roc_auc_macro"] == pytest.approx(np.mean(aucs), abs=1e-6)
    with pytest.raises(InputError):
        run_centroids(tmp_path / "s.h5", holdout="loo", fit=Selection.parse(["half=odd"]))


def test_every_centroid_label_follows_the_fit_selection(store, tmp_path):
    """`--fit-where` reaches every analysis that labels with centroids (through the view), and the report."""
    path, audio, labels, split = store
    fit, scored = split == "train", split == "test"
    predicted = reference(audio, labels, fit, scored, "raw").argmax(axis=1)
    truth = labels[scored]
    selection = ["--where", "split=test", "--fit-where", "split=train"]
    result = invoke("analyze", "confusion", path, "--centroids", *selection, "--json", tmp_path / "c.json")
    assert result.exit_code == 0, result.output
    confusion = json.loads((tmp_path / "c.json").read_text())
    expected = np.zeros((4, 4), int)
    np.add.at(expected, (truth, predicted), 1)
    assert confusion["matrix"] == expected.tolist()
    assert confusion["selection"]["fit"]["n_items"] == 96
    result = invoke("report", path, "--out", tmp_path / "rep", "--no-umap", *selection)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    centroids = report["results"]["m"]["centroids"]["audio"]["joint"]
    assert centroids["top1"] == pytest.approx(np.mean(predicted == truth), abs=1e-12)
    assert centroids["fit_selection"]["where"] == {"split": ["train"]}
    assert report["options"]["fit"] == "split=train"
    assert report["results"]["m"]["zeroshot"]["p"]["joint"]["n_items"] == 32
    markdown = (tmp_path / "rep" / "report.md").read_text()
    assert "centroids fitted on" in markdown and "split=train (96 items)" in markdown
    result = invoke("report", path, "--out", tmp_path / "rep2", "--no-umap", "--fit-where", "split=train")
    assert result.exit_code == 1 and "give --where or --items" in result.output
