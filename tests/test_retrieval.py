"""Retrieval metrics against a brute-force numpy reference written from the definitions."""

from __future__ import annotations

import numpy as np
import pytest

from analyses.retrieval import run_retrieval
from embedstore.errors import InputError
from embedstore.store import create_store


def reference(audio: np.ndarray, text: np.ndarray, caption_item: np.ndarray) -> dict:
    """One query at a time: sort with np.argsort(kind="stable"), find the true matches."""
    n, p = len(audio), len(text)
    sim = audio @ text.T
    t2a = []
    for j in range(p):
        ranking = list(np.argsort(-sim[:, j], kind="stable"))
        t2a.append(ranking.index(caption_item[j]))
    t2a = np.array(t2a)
    best, aps = [], []
    for i in range(n):
        ranking = list(np.argsort(-sim[i], kind="stable"))
        mine = [j for j in range(p) if caption_item[j] == i]
        ranks = sorted(ranking.index(j) for j in mine)
        best.append(ranks[0])
        kept = [r for r in ranks if r < 10]
        aps.append(sum((k + 1) / (r + 1) for k, r in enumerate(kept)) / len(mine))
    best = np.array(best)
    out = {f"a2t_r{k}": np.mean(best < k) for k in (1, 5, 10)}
    out.update({f"t2a_r{k}": np.mean(t2a < k) for k in (1, 5, 10)})
    out["a2t_median_rank"] = np.floor(np.median(best)) + 1
    out["t2a_median_rank"] = np.floor(np.median(t2a)) + 1
    out["a2t_map10"] = np.mean(aps)
    out["t2a_map10"] = np.mean([1 / (r + 1) if r < 10 else 0 for r in t2a])
    out["a2t_mean_rank"] = best.mean() + 1
    out["t2a_mean_rank"] = t2a.mean() + 1
    return out


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def write_store(path, audio, text, caption_item, extra_items=0):
    n = len(audio) + extra_items
    rng = np.random.default_rng(9)
    full = np.vstack([audio, unit(rng.normal(size=(extra_items, audio.shape[1])))]) if extra_items else audio
    with create_store(path, model="m", dataset="d", classes=["a", "b"]) as w:
        w.set_items([f"i{k}" for k in range(n)], labels=np.arange(n) % 2)
        w.add_audio("joint", full)
        w.add_prompt_set("caps", [f"c{j}" for j in range(len(text))], np.full(len(text), -1), {"joint": text},
                         items=caption_item)
        w.add_prompt_set("track", ["a", "b"], [0, 1], {"joint": full[:2]})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_retrieval_equals_brute_force(tmp_path, seed):
    rng = np.random.default_rng(seed)
    n, d = 37, 8
    audio = unit(rng.normal(size=(n, d))).astype(np.float32)
    # 1..5 captions per item, shuffled, some near their item so that recall is not trivial.
    caption_item = rng.permutation(np.repeat(np.arange(n), rng.integers(1, 6, size=n)))
    text = unit(audio[caption_item] + rng.normal(scale=0.9, size=(len(caption_item), d))).astype(np.float32)
    write_store(tmp_path / "s.h5", audio, text, caption_item)
    got = run_retrieval(tmp_path / "s.h5")
    want = reference(audio.astype(np.float64), text.astype(np.float64), caption_item)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert got["n_items"] == n and got["n_captions"] == len(caption_item)
    assert 0 < got["a2t_r1"] < 1 and 0 < got["t2a_r1"] < 1


def test_ties_break_by_row_order_and_uncaptioned_items_are_left_out(tmp_path):
    # Every caption equals every item: all scores tie, so the stable order decides.
    audio = np.tile(unit(np.ones((1, 4))), (3, 1)).astype(np.float32)
    text = np.tile(audio[:1], (3, 1))
    write_store(tmp_path / "s.h5", audio, text, np.array([0, 1, 2]), extra_items=4)
    got = run_retrieval(tmp_path / "s.h5", "caps")
    want = reference(audio.astype(np.float64), text.astype(np.float64), np.array([0, 1, 2]))
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key
    assert got["n_items"] == 3  # the 4 uncaptioned items are not in the gallery
    assert got["t2a_r1"] == pytest.approx(1 / 3)


def test_retrieval_refuses_class_prompt_sets(tmp_path):
    audio = unit(np.random.default_rng(0).normal(size=(4, 3)))
    write_store(tmp_path / "s.h5", audio, audio, np.arange(4))
    with pytest.raises(InputError, match="caption set"):
        run_retrieval(tmp_path / "s.h5", "track")


def test_import_captions_then_analyze_retrieval(tmp_path):
    import json

    from cli_helpers import invoke

    rng = np.random.default_rng(3)
    ids = ["x1", "x2", "x3", "x4"]
    (tmp_path / "items.csv").write_text("id,label\n" + "".join(f"{i},{'ab'[k % 2]}\n" for k, i in enumerate(ids)))
    caption_ids = ["x2", "x1", "x2", "x4", "x3", "x3", "x3"]  # several rows per id, any order
    (tmp_path / "caps.csv").write_text("id,caption\n" + "".join(f"{i},caption {j} of {i}\n"
                                                                 for j, i in enumerate(caption_ids)))
    audio = unit(rng.normal(size=(4, 6))).astype(np.float32)
    rows = np.array([ids.index(i) for i in caption_ids])
    text = unit(audio[rows] + rng.normal(scale=0.8, size=(len(rows), 6))).astype(np.float32)
    np.save(tmp_path / "a.npy", audio)
    np.save(tmp_path / "t.npy", text)
    result = invoke("import", tmp_path / "s.h5", "--items", tmp_path / "items.csv", "--id-column", "id",
                    "--label-column", "label", "--audio", f"joint={tmp_path / 'a.npy'}",
                    "--captions", f"caps={tmp_path / 'caps.csv'}", "--text", f"caps:joint={tmp_path / 't.npy'}")
    assert result.exit_code == 0, result.output
    result = invoke("analyze", "retrieval", tmp_path / "s.h5", "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    got = json.loads((tmp_path / "r.json").read_text())
    want = reference(audio.astype(np.float64), text.astype(np.float64), rows)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key
    assert got["n_captions"] == 7 and got["caption_set"] == "caps"
    # A caption for an id the items CSV lacks is refused with one line.
    (tmp_path / "bad.csv").write_text("id,caption\nnope,hello\n")
    result = invoke("import", tmp_path / "s2.h5", "--items", tmp_path / "items.csv", "--id-column", "id",
                    "--label-column", "label", "--captions", f"caps={tmp_path / 'bad.csv'}")
    assert result.exit_code == 1 and "unknown item id 'nope'" in result.output
