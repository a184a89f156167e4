"""UMAP maps: shape, seeds, structure kept (scikit-learn trustworthiness), colours and the figure."""

import numpy as np
import pytest
from sklearn.manifold import trustworthiness

from analyses.umap_map import plot_umap, run_umap
from embedstore.errors import InputError

CLASSES = ["violin", "flute", "tuba"]


@pytest.fixture(scope="module")
def clustered_store(tmp_path_factory):
    from embedstore.store import create_store

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(3, 24)) * 4
    labels = np.repeat(np.arange(3), 40)
    audio = centres[labels] + rng.normal(size=(labels.size, 24))
    prompts = centres + rng.normal(size=(3, 24)) * 0.1
    path = tmp_path_factory.mktemp("umap") / "s.h5"
    with create_store(path, model="m", dataset="d", classes=CLASSES) as w:
        w.set_items([f"i{k}" for k in range(labels.size)], labels=labels,
                     metadata={"dynamics": np.array(["pp", "ff"])[np.arange(labels.size) % 2]})
        w.add_audio("joint", audio)
        w.add_prompt_set("plain", CLASSES, np.arange(3), {"joint": prompts})
    return path, audio, labels


def test_map_keeps_clusters_and_neighbourhoods(clustered_store):
    path, audio, labels = clustered_store
    result = run_umap(path, seed=0)
    coords = np.asarray(result["coords"])
    assert coords.shape == (labels.size, 2) and np.isfinite(coords).all()
    unit = audio / np.linalg.norm(audio, axis=1, keepdims=True)
    assert trustworthiness(unit, coords, n_neighbors=5, metric="cosine") > 0.9
    # Every point's nearest map neighbour carries its own class.
    d = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(1)] == labels).mean() > 0.95
    assert result["values"] == [CLASSES[k] for k in labels]
    assert result["categories"] == CLASSES


def test_same_seed_same_map_and_prompts_join_it(clustered_store, tmp_path):
    path, _, labels = clustered_store
    first = run_umap(path, prompt_set="plain", color="dynamics", seed=5)
    again = run_umap(path, prompt_set="plain", color="dynamics", seed=5)
    assert np.allclose(first["coords"], again["coords"])
    assert first["prompt_labels"] == CLASSES and np.asarray(first["prompt_coords"]).shape == (3, 2)
    assert first["categories"] == ["pp", "ff"]
    # Each prompt lands among its own class's clips.
    coords, prompts = np.asarray(first["coords"]), np.asarray(first["prompt_coords"])
    nearest = ((prompts[:, None] - coords[None]) ** 2).sum(-1).argmin(1)
    assert labels[nearest].tolist() == [0, 1, 2]
    figure = tmp_path / "umap.png"
    plot_umap(first, figure)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input(clustered_store):
    path, _, _ = clustered_store
    with pytest.raises(InputError, match="no audio space 'prejoint'"):
        run_umap(path, space="prejoint")
    with pytest.raises(InputError, match="cannot colour by 'pitch'.*dynamics"):
        run_umap(path, color="pitch")
    with pytest.raises(InputError, match="no prompt set 'nope'"):
        run_umap(path, prompt_set="nope")
