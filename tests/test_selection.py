"""Item selection (--where / --items): every analysis sees exactly the chosen items."""

import json

import numpy as np
import pytest
from cli_helpers import PNG_MAGIC
from cli_helpers import invoke as cli_invoke

from analyses import selection as selection_module
from analyses.centroids import run_centroids
from analyses.embeddings import opened
from analyses.probe import run_probe
from analyses.selection import SelectedRows, Selection
from analyses.zeroshot import run_zeroshot
from embedstore.errors import InputError
from embedstore.store import create_store

CLASSES = ["flute", "oboe", "violin"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 120
    labels = np.arange(n) % 3
    path = tmp_path_factory.mktemp("sel") / "s.h5"
    with create_store(path, model="m", dataset="d", classes=CLASSES) as w:
        w.set_items([f"i{k}" for k in range(n)], labels=labels,
                    metadata={"split": np.where(np.arange(n) % 4 == 0, "test", "train"),
                              "pitch": 40 + np.arange(n) % 7, "family": np.where(labels == 2, "strings", "winds")})
        w.add_audio("joint", rng.normal(size=(3, 6))[labels] + rng.normal(size=(n, 6)))
        w.add_prompt_set("p", CLASSES, np.arange(3), embeddings={"joint": rng.normal(size=(3, 6))})
    return path


def subset_store(source, keep, path):
    """The reference: a new store holding only the kept rows (plain numpy indexing)."""
    from embedstore.store import open_store

    with open_store(source) as st, create_store(path, model="m", dataset="d", classes=list(st.classes)) as w:
        w.set_items(list(st.item_ids[keep]), labels=st.labels[keep])
        w.add_audio("joint", st.audio("joint")[keep])
        w.add_prompt_set("p", st.prompt_set("p").prompts, st.prompt_set("p").classes,
                         embeddings={"joint": st.text("p", "joint")})
    return path


def test_a_selection_equals_a_store_of_the_selected_items(store, tmp_path):
    sel = Selection.parse(["split=test", "pitch=41", "pitch=43"])
    with opened(store) as st:
        meta = st.metadata
        keep = (meta["split"] == "test") & np.isin(meta["pitch"], [41, 43])
    reference = subset_store(store, keep, tmp_path / "ref.h5")
    with opened(store, sel) as view:
        assert view.n_items == keep.sum() > 5
        assert view.record == {"where": {"split": ["test"], "pitch": ["41", "43"]}, "items_file": None,
                               "n_items": int(keep.sum()), "n_store_items": 120}
        assert run_zeroshot(view, "p") == run_zeroshot(reference, "p")
        assert run_centroids(view) == run_centroids(reference)


def test_items_file_and_where_combine_with_and(store, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("# chosen\ni0\ni2\n\ni4\ni8\ni5\n")
    with opened(store, Selection.parse(["split=test"], ids)) as view:
        assert view.item_ids.tolist() == ["i0", "i4", "i8"]
        assert view.labels.tolist() == [0, 1, 2]
        assert view.record["items_file_sha256"] and view.record["n_items"] == 3


@pytest.mark.parametrize("where, message", [
    (["split"], "COLUMN=VALUE"),
    (["nope=1"], "no item column 'nope'"),
    (["pitch=high"], "is numeric"),
    (["split=val"], "keeps none of the 120 items"),
])
def test_bad_selections_are_refused(store, where, message):
    with pytest.raises(InputError, match=message):
        with opened(store, Selection.parse(where)):
            pass


def test_unknown_ids_are_refused(store, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("i1\nghost\n")
    with pytest.raises(InputError, match="1 id\\(s\\) the store does not have: 'ghost'"):
        with opened(store, Selection.parse(None, ids)):
            pass


def test_selected_rows_read_block_by_block(monkeypatch):
    monkeypatch.setattr(selection_module, "READ_BLOCK", 5)
    rows = np.arange(200, dtype=np.float32).reshape(50, 4)
    index = np.array([0, 1, 3, 9, 10, 11, 30, 49])
    lazy = SelectedRows(rows, index)
    np.testing.assert_array_equal(lazy[:], rows[index])
    np.testing.assert_array_equal(lazy[2:7], rows[index[2:7]])


def test_every_item_command_records_the_selection(store, tmp_path):
    def run(*args):
        result = cli_invoke("analyze", *args, "--where", "split=train", "--where", "family=winds")
        assert result.exit_code == 0, result.output
        return result

    for command, extra in (("zeroshot", ["--prompts", "p"]), ("centroids", []), ("histograms", ["--centroids"]),
                           ("confidence", ["--prompts", "p"]), ("probe", ["--folds", 3]),
                           ("modality-gap", ["--prompts", "p"]), ("confusion", ["--prompts", "p"])):
        out = tmp_path / f"{command}.json"
        run(command, store, *extra, "--json", out)
        record = json.loads(out.read_text())["selection"]
        assert record["where"] == {"split": ["train"], "family": ["winds"]} and record["n_items"] == 60, command
    with opened(store, Selection.parse(["split=train", "family=winds"])) as view:
        assert json.loads((tmp_path / "probe.json").read_text())["top1"] == run_probe(view, folds=3)["top1"]


def test_report_runs_on_the_selection(store, tmp_path):
    result = cli_invoke("report", store, "--out", tmp_path / "rep", "--no-umap", "--where", "split=test")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["stores"][0]["selection"]["n_items"] == 30 and report["options"]["selection"] == "split=test"
    assert report["results"]["m"]["zeroshot"]["p"]["joint"]["n_items"] == 30
    assert "split=test" in (tmp_path / "rep" / "report.md").read_text()
    assert (tmp_path / "rep" / "figures" / "m__modality-gap.png").read_bytes().startswith(PNG_MAGIC)
