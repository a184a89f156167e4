"""Nearest neighbours: exact blocked search against scikit-learn's cosine similarities; the usearch index."""

import json

import numpy as np
import pytest
from sklearn.metrics.pairwise import cosine_similarity

from analyses.neighbors import build_index, exact_neighbors, index_paths, neighbors, recall_at_k
from embedstore.errors import InputError
from embedstore.store import create_store, edit_store

CLASSES = ["a", "b", "c"]


def make_store(path, n=300, d=8, seed=0):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    with create_store(path, model="m", dataset="d", classes=CLASSES) as w:
        w.set_items([f"i{j}" for j in range(n)], labels=rng.integers(0, 3, n))
        w.add_audio("joint", vectors)
        w.add_prompt_set("track", ["x", "y"], [0, 1], {"joint": rng.normal(size=(2, d))})
    return path, vectors


def reference(vectors, query, k, exclude=-1):
    """Brute force: scikit-learn cosines, sorted by (-cosine, row)."""
    scores = cosine_similarity(query[None].astype(np.float64), vectors.astype(np.float64))[0]
    order = [r for r in np.lexsort((np.arange(len(scores)), -scores)) if r != exclude][:k]
    return np.array(order), scores[order]


@pytest.mark.parametrize("block_rows", [7, 64, 100000])
def test_exact_search_equals_brute_force_in_any_block_size(block_rows):
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(150, 6))
    vectors[10] = vectors[20] * 3  # equal cosines: the lower row first
    vectors[40] = 0                # a zero vector has no cosine
    queries = rng.normal(size=(5, 6))
    queries[0] = vectors[20]
    exclude = np.array([20, -1, 3, 149, -1])
    rows, scores = exact_neighbors(vectors, queries, 12, exclude=exclude, block_rows=block_rows)
    for q in range(5):
        want_rows, want_scores = reference(np.delete(vectors, 40, 0), queries[q], 12,
                                           exclude=exclude[q] - (exclude[q] > 40))
        want_rows = want_rows + (want_rows >= 40)
        np.testing.assert_array_equal(rows[q], want_rows)
        np.testing.assert_allclose(scores[q], want_scores, rtol=1e-12)
    assert rows[0][0] == 10  # vector 10 is vector 20 scaled: cosine 1, vector 20 itself left out


def test_k_larger_than_the_store_returns_every_usable_row():
    rows, scores = exact_neighbors(np.eye(3), np.ones((1, 3)), 10)
    assert sorted(rows[0].tolist()) == [0, 1, 2]
    with pytest.raises(InputError):
        exact_neighbors(np.eye(3), np.zeros((1, 3)), 2)
    with pytest.raises(InputError):
        exact_neighbors(np.eye(3), np.ones((1, 3)), 0)


def test_item_and_prompt_queries_on_a_store(tmp_path):
    store, vectors = make_store(tmp_path / "s.h5")
    result = neighbors(store, "joint", item="i7", k=10)
    want_rows, want_scores = reference(vectors, vectors[7], 10, exclude=7)
    assert result.rows.tolist() == want_rows.tolist() and result.ids == [f"i{r}" for r in want_rows]
    np.testing.assert_allclose(result.scores, want_scores, rtol=1e-6)
    from embedstore.store import open_store

    with open_store(store) as st:
        prompt = st.text("track", "joint")[1]
        labels = st.labels
    result = neighbors(store, "joint", prompt="track:1", k=5)
    want_rows, _ = reference(vectors, prompt, 5)
    assert result.rows.tolist() == want_rows.tolist()
    assert result.labels == [[CLASSES[labels[r]]] for r in want_rows]
    for bad in (dict(item="nope"), dict(prompt="track:2"), dict(prompt="track"), dict(prompt="other:0"), {}):
        with pytest.raises(InputError):
            neighbors(store, "joint", **bad)


def test_recall_at_k():
    assert recall_at_k([np.array([1, 2]), np.array([3, 4])], [np.array([2, 9]), np.array([4, 3])]) == 0.75


def test_approximate_index_is_built_once_checked_and_bound_to_the_store(tmp_path):
    pytest.importorskip("usearch")
    store, vectors = make_store(tmp_path / "s.h5", n=2000, d=16)
    record = build_index(store, "joint", k=10, sample=100)
    index_file, record_file = index_paths(store, "joint")
    assert index_file.is_file() and json.loads(record_file.read_text()) == record
    # recall against an independent brute force, on the same items the index was checked on
    assert record["recall_at_10"] >= 0.9, record
    approx = neighbors(store, "joint", item="i5", k=10, approximate=True)
    exact = neighbors(store, "joint", item="i5", k=10)
    assert 5 not in approx.rows.tolist()
    assert len(set(approx.rows.tolist()) & set(exact.rows.tolist())) >= 8
    np.testing.assert_allclose(approx.scores, cosine_similarity(vectors[5:6], vectors[approx.rows])[0], atol=1e-5)
    with pytest.raises(InputError):  # the output policy: an existing index only with overwrite
        build_index(store, "joint")
    with edit_store(store) as w:     # other vectors: the index is stale
        w.add_audio("joint", vectors[::-1].copy(), replace=True)
    with pytest.raises(InputError, match="rebuild"):
        neighbors(store, "joint", item="i5", approximate=True)
    build_index(store, "joint", overwrite=True)
    neighbors(store, "joint", item="i5", approximate=True)


def test_neighbors_command(tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    store, _ = make_store(tmp_path / "s.h5")
    result = CliRunner().invoke(app, ["neighbors", str(store), "--item", "i3", "-k", "4",
                                      "--json", str(tmp_path / "n.json")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "n.json").read_text())
    assert [n["id"] for n in payload["neighbors"]] == neighbors(store, "joint", item="i3", k=4).ids
    result = CliRunner().invoke(app, ["neighbors", str(store), "--item", "i3", "--prompt", "track:0"])
    assert result.exit_code != 0 and "exactly one" in result.output
