"""Pre-joint against joint: centroids checked with numpy + scikit-learn, triplets per space."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, top_k_accuracy_score

from analyses.spaces import ordered_spaces, plot_spaces, run_spaces
from analyses.triplets import run_triplets
from embedstore.errors import InputError

CLASSES = ["Violin", "Viola", "Flute", "Oboe", "Bass Tuba"]


@pytest.fixture
def two_space_store(tmp_path):
    from embedstore.store import create_store

    rng = np.random.default_rng(11)
    labels = np.repeat(np.arange(5), 12)
    joint = rng.normal(size=(5, 8))[labels] + rng.normal(size=(60, 8)) * 1.5
    prejoint = rng.normal(size=(5, 20))[labels] + rng.normal(size=(60, 20)) * 0.5
    path = tmp_path / "s.h5"
    with create_store(path, model="m", dataset="d", classes=CLASSES) as w:
        w.set_items([f"i{k}" for k in range(60)], labels=labels)
        w.add_audio("joint", joint)
        w.add_audio("prejoint", prejoint)
        w.add_prompt_set("plain", CLASSES, np.arange(5), {"joint": rng.normal(size=(5, 8)),
                                                         "prejoint": rng.normal(size=(5, 20))})
        w.add_prompt_set("joint_only", CLASSES * 2, np.tile(np.arange(5), 2), {"joint": rng.normal(size=(10, 8))})
    return path, labels, {"joint": joint, "prejoint": prejoint}


def reference_centroid_scores(audio, labels):
    """The study's centroids: the mean of the raw vectors, normalised; clips compared by cosine."""
    unit = audio / np.linalg.norm(audio, axis=1, keepdims=True)
    centroids = np.stack([audio[labels == c].mean(0) for c in range(labels.max() + 1)])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    return unit @ centroids.T


def test_spaces_side_by_side(two_space_store, tmp_path):
    path, labels, audio = two_space_store
    result = run_spaces(path)
    assert result["spaces"] == ["prejoint", "joint"]
    assert result["prompt_sets"] == ["joint_only", "plain"]
    for space in ("prejoint", "joint"):
        scores = reference_centroid_scores(audio[space], labels)
        got = result["centroids"][space]
        assert got["top1"] == pytest.approx(top_k_accuracy_score(labels, scores, k=1), abs=1e-9)
        assert got["roc_auc_macro"] == pytest.approx(
            roc_auc_score(np.eye(5)[labels], scores, average="macro"), abs=1e-9)
        assert got["n_items"] == 60
    # The prejoint clusters are tighter, so its centroid labels are better.
    assert result["centroids"]["prejoint"]["top1"] > result["centroids"]["joint"]["top1"]
    assert set(result["triplets"]["plain"]) == {"prejoint", "joint"}
    assert set(result["triplets"]["joint_only"]) == {"joint"}
    for space in ("prejoint", "joint"):
        alone = run_triplets(path, "plain", space=space)
        assert result["triplets"]["plain"][space] == {k: alone[k] for k in ("accuracy", "n_triplets", "n_correct")}
    figure = tmp_path / "spaces.png"
    plot_spaces(result, figure)
    assert figure.stat().st_size > 1000


def test_spaces_options(two_space_store):
    path, _, _ = two_space_store
    result = run_spaces(path, prompt_set="plain", protocol="reference", holdout="loo")
    assert result["prompt_sets"] == ["plain"] and result["protocol"] == "reference"
    assert result["holdout"] == "loo"
    with pytest.raises(InputError, match="no prompt set 'nope'"):
        run_spaces(path, prompt_set="nope")


def test_spaces_shows_every_space_with_triplets_and_accepts_text_only_stores(tmp_path):
    from embedstore.store import create_store

    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(5), 4)
    # audio in prejoint only; the prompt set has both spaces: its joint triplets are computed and shown
    path = tmp_path / "prejoint-audio.h5"
    text = {"joint": rng.normal(size=(5, 8)), "prejoint": rng.normal(size=(5, 6))}
    with create_store(path, model="m", dataset="d", classes=CLASSES) as w:
        w.set_items([f"i{k}" for k in range(20)], labels=labels)
        w.add_audio("prejoint", rng.normal(size=(20, 6)))
        w.add_prompt_set("plain", CLASSES, np.arange(5), text)
    result = run_spaces(path)
    assert result["spaces"] == ["prejoint", "joint"] and result["audio_spaces"] == ["prejoint"]
    assert set(result["triplets"]["plain"]) == {"prejoint", "joint"}
    # a text-only store: classes and prompt sets, no items or audio
    text_only = tmp_path / "text-only.h5"
    with create_store(text_only, model="m", dataset="d", classes=CLASSES) as w:
        w.set_items([], labels=np.zeros(0, np.int32))
        w.add_prompt_set("plain", CLASSES, np.arange(5), text)
    result = run_spaces(text_only)
    assert result["centroids"] == {} and result["audio_spaces"] == []
    assert result["triplets"]["plain"] == {s: {k: run_triplets(text_only, "plain", space=s)[k]
                                               for k in ("accuracy", "n_triplets", "n_correct")}
                                           for s in ("prejoint", "joint")}
    plot_spaces(result, tmp_path / "text-only.png")


def test_ordered_spaces():
    assert ordered_spaces(["joint", "extra", "prejoint", "a"]) == ["prejoint", "joint", "a", "extra"]


def drawn_panels(result, monkeypatch, tmp_path) -> list[dict]:
    """Each panel plot_spaces draws: its title and the colours its legend shows."""
    from matplotlib.colors import to_hex

    from analyses import plots

    seen = []
    real_save = plots._save

    def save(fig, path):
        for ax in fig.axes:
            legend = ax.get_legend()
            colours = [to_hex(h.get_facecolor()) for h in legend.legend_handles] if legend else []
            seen.append({"title": ax.get_title(), "legend": colours})
        real_save(fig, path)

    monkeypatch.setattr(plots, "_save", save)
    plot_spaces(result, tmp_path / "spaces.png")
    return seen


def test_spaces_figure_leaves_out_a_panel_with_nothing_to_show(two_space_store, monkeypatch, tmp_path):
    path, _, _ = two_space_store
    result = run_spaces(path)
    both = drawn_panels(result, monkeypatch, tmp_path)
    assert [p["title"].split(" (")[0] for p in both] == ["audio-only centroid labels", "ontology triplet accuracy"]
    # no prompt set with triplets (a multi-label store, or classes the ontology cannot place):
    # one panel, and its legend tells the spaces apart
    result["triplets"] = {ps: {} for ps in result["prompt_sets"]}
    alone = drawn_panels(result, monkeypatch, tmp_path)
    assert [p["title"].split(" (")[0] for p in alone] == ["audio-only centroid labels"]
    assert len(set(alone[0]["legend"])) == 2
