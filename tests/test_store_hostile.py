"""The store commands (info, verify, export in its three forms, import --from, merge) on
stores with odd but valid contents, and on stores another program is writing."""

import os
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import invoke
from test_export_roundtrip import content

from embedstore.store import create_store, open_store
from embedstore.store.merge import shard_path

pa = pytest.importorskip("pyarrow")


def zero_items(path):
    with create_store(path, model="m", dataset="d", classes=["a"]) as w:
        w.set_items([], labels=np.zeros(0, np.int32), metadata={"s": np.zeros(0, str)})
        w.add_audio("joint", np.zeros((0, 4)))
        w.add_prompt_set("p", ["a"], [0], {"joint": np.ones((1, 4))})


def text_only(path):
    with create_store(path, model="minilm", dataset="d", classes=["a", "b"]) as w:
        w.set_items([], labels=np.zeros(0, np.int32))
        w.add_prompt_set("p", ["a", "b"], [0, 1], {"joint": np.eye(2, 4)})


def one_class(path):
    with create_store(path, model="m", dataset="d", classes=["only"]) as w:
        w.set_items(["x"], labels=[0])
        w.add_audio("joint", np.ones((1, 4)))
        w.add_prompt_set("p", ["only"], [0], {"joint": np.ones((1, 4))})


def unicode_names(path):
    rng = np.random.default_rng(1)
    with create_store(path, model="模型", dataset="データ", classes=["flûte", "小提琴", "[red]x[/red]"]) as w:
        w.set_items(["ä/ö", "[bold]", "ü\u2028v"], ["p/ä.wav", "", ""], labels=[0, 1, 2],
                    metadata={"größe": ["a", "b", "c"], "[x]": [1, 2, 3]})
        w.add_audio("joint", rng.normal(size=(3, 4)))
        w.add_prompt_set("ünï [set]", ["é", "ü", "ö"], [0, 1, 2], {"joint": rng.normal(size=(3, 4))},
                         source="[link=x]y")


def long_prompt_set(path):
    rng = np.random.default_rng(2)
    p = 50_000
    with create_store(path, model="m", dataset="d", classes=["a", "b"]) as w:
        w.set_items(["x", "y"], labels=[0, 1])
        w.add_audio("joint", rng.normal(size=(2, 8)))
        w.add_prompt_set("many", [f"prompt {i}" for i in range(p)], np.arange(p) % 2,
                         {"joint": rng.normal(size=(p, 8))})


def huge_attributes(path):
    rng = np.random.default_rng(3)
    with create_store(path, model="m" * 100_000, dataset="d" * 70_000, classes=["a" * 100_000, "b"],
                      provenance={"k": "v" * 1_000_000}) as w:
        w.set_items(["x" * 70_000, "y"], labels=[0, 1])
        w.add_audio("joint", rng.normal(size=(2, 4)))
        w.add_prompt_set("p" * 200, ["a", "b"], [0, 1], {"joint": rng.normal(size=(2, 4))}, source="s" * 1_000_000)


KINDS = {"zero-items": zero_items, "text-only": text_only, "one-class": one_class, "unicode": unicode_names,
         "long-prompt-set": long_prompt_set, "huge-attributes": huge_attributes}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_store_command_handles_odd_stores(tmp_path, kind):
    store = tmp_path / "s.h5"
    KINDS[kind](store)
    for args in (["info", store], ["verify", store]):
        result = invoke(*args)
        assert result.exit_code == 0, (args, result.output)
    assert invoke("export", store, "--out", tmp_path / "e").exit_code == 0
    assert invoke("import", tmp_path / "copy.h5", "--from", tmp_path / "e").exit_code == 0
    assert content(tmp_path / "copy.h5") == content(store)
    assert invoke("export", store, "--format", "parquet", "--out", tmp_path / "s.parquet").exit_code == 0
    with open_store(store) as st:
        import pyarrow.parquet as pq

        assert pq.read_table(tmp_path / "s.parquet").column("id").to_pylist() == list(st.item_ids)
        assert pq.read_table(tmp_path / "s.prompts.parquet").num_rows == sum(
            len(st.prompt_set(n).prompts) for n in st.prompt_sets)
        name = st.prompt_sets[0]
        result = invoke("export", store, "--text", f"{name}:joint", "--out", tmp_path / "t")
        assert result.exit_code == 0, result.output
        np.testing.assert_array_equal(np.load(tmp_path / "t.npy"), st.text(name, "joint", lazy=True)[()])
        result = invoke("export", store, "--audio", "joint", "--out", tmp_path / "a")
        if st.text_only:  # no audio space: one line, nothing written
            assert result.exit_code == 1 and "no audio space" in result.output
            assert not (tmp_path / "a.npy").exists()
        else:
            assert result.exit_code == 0 and np.load(tmp_path / "a.npy").shape == st.audio("joint").shape


def test_a_caption_set_exported_alone_keeps_its_item_ids(tmp_path):
    """`export --text SET:SPACE` of a caption set writes the item column; import reads it back."""
    from embedstore.store.interchange import read_csv

    with create_store(tmp_path / "s.h5", model="m", dataset="d", classes=["c"]) as w:
        w.set_items(["a b", "z"], labels=[0, 0])
        w.add_audio("joint", np.eye(2, 3))
        w.add_prompt_set("caps", ["line\rbreak", "two"], [-1, -1], {"joint": np.eye(2, 3)}, items=[1, 0])
    assert invoke("export", tmp_path / "s.h5", "--text", "caps:joint", "--out", tmp_path / "t").exit_code == 0
    columns, rows = read_csv(tmp_path / "t.csv")
    assert columns == ["class", "prompt", "item"]
    assert [r["item"] for r in rows] == ["z", "a b"] and rows[0]["prompt"] == "line\rbreak"
    (tmp_path / "items.csv").write_text("id,label\na b,c\nz,c\n")
    result = invoke("import", tmp_path / "c.h5", "--items", tmp_path / "items.csv", "--id-column", "id",
                    "--label-column", "label", "--prompts", f"caps={tmp_path / 't.csv'}",
                    "--text", f"caps:joint={tmp_path / 't.npy'}")
    assert result.exit_code == 0, result.output
    with open_store(tmp_path / "c.h5") as st:
        caps = st.prompt_set("caps")
        assert caps.items.tolist() == [1, 0] and caps.prompts == ["line\rbreak", "two"]


def test_merge_keeps_label_masks_caption_links_and_sources(tmp_path):
    """Shards cut from one store (one of them empty, as when all its clips failed) merge back into it."""
    rng = np.random.default_rng(4)
    n, classes = 7, ["a", "b", "c"]
    mask = rng.random((n, 3)) < 0.6
    matrix = (rng.random((n, 3)) < 0.5) & mask
    audio = rng.normal(size=(n, 3)).astype(np.float32)
    caption_items = np.array([0, 0, 3, 5, 6, 6])
    captions = rng.normal(size=(6, 3)).astype(np.float32)
    ids = [f"ü{i}" for i in range(n)]

    def write(path, rows, provenance):
        rows = np.asarray(rows, dtype=np.int64)
        kept = np.isin(caption_items, rows)
        with create_store(path, model="m", dataset="d", classes=classes, provenance=provenance) as w:
            w.set_items([ids[i] for i in rows], label_matrix=matrix[rows], label_mask=mask[rows],
                        metadata={"s": np.array([f"v{i}" for i in rows], dtype=str)})
            w.add_audio("joint", audio[rows])
            w.add_prompt_set("p", classes, [0, 1, 2], {"joint": np.eye(3)}, source="template")
            w.add_prompt_set("caps", [f"cap {k}" for k in np.flatnonzero(kept)], [-1] * int(kept.sum()),
                             {"joint": captions[kept]}, items=np.searchsorted(rows, caption_items[kept]),
                             source="captions")

    write(tmp_path / "single.h5", range(n), {})
    cuts = [(0, 3), (3, 3), (3, 7)]
    for k, (start, stop) in enumerate(cuts):
        record = {"index": k, "count": 3, "start": start, "stop": stop, "items_total": n}
        write(shard_path(tmp_path / "run.h5", k, 3), range(start, stop),
              {"shard": record, "settings_fingerprint": {"model": "0" * 16}})
    result = invoke("merge", *[shard_path(tmp_path / "run.h5", k, 3) for k in range(3)], "--out", tmp_path / "m.h5")
    assert result.exit_code == 0, result.output
    assert content(tmp_path / "m.h5") == content(tmp_path / "single.h5")
    with open_store(tmp_path / "m.h5") as st:
        np.testing.assert_array_equal(st.label_mask, mask)
        assert st.prompt_set("caps").items.tolist() == caption_items.tolist()


def test_merge_refuses_shards_that_disagree_on_a_label_mask(tmp_path):
    for k, masked in enumerate([True, False]):
        record = {"index": k, "count": 2, "start": k, "stop": k + 1, "items_total": 2}
        with create_store(shard_path(tmp_path / "run.h5", k, 2), model="m", dataset="d", classes=["a"],
                          provenance={"shard": record, "settings_fingerprint": {"model": "0"}}) as w:
            w.set_items([f"i{k}"], label_matrix=[[1]], label_mask=[[1]] if masked else None)
            w.add_audio("joint", np.ones((1, 2)))
    result = invoke("merge", *[shard_path(tmp_path / "run.h5", k, 2) for k in range(2)], "--out", tmp_path / "m.h5")
    assert result.exit_code == 1 and "label mask" in result.output and not (tmp_path / "m.h5").exists()


def _hold(code: str, cwd) -> subprocess.Popen:
    """Run ``code`` in another process until it prints ``held``; the caller kills it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=cwd, env=env)
    assert proc.stdout.readline().strip() == b"held"
    return proc


def test_a_store_another_writer_holds(tmp_path):
    """An embedstore writer holds the lock: readers read the last complete store, writers are refused
    in one line. A program holding the file open for writing (plain h5py): one line saying so."""
    one_class(tmp_path / "s.h5")
    assert invoke("export", tmp_path / "s.h5", "--out", tmp_path / "e").exit_code == 0
    before = content(tmp_path / "s.h5")
    holder = _hold("import time\nfrom embedstore.store import edit_store\n"
                   "with edit_store('s.h5') as w:\n    w.add_audio('prejoint', [[1.0, 2.0]])\n"
                   "    print('held', flush=True)\n    time.sleep(120)", tmp_path)
    try:
        for args in (["info", "s.h5"], ["verify", "s.h5"], ["export", "s.h5", "--out", tmp_path / "e2"]):
            result = invoke(*[tmp_path / a if a == "s.h5" else a for a in args])
            assert result.exit_code == 0, result.output
        assert content(tmp_path / "s.h5") == before  # the edit is not visible before it completes
        result = invoke("import", tmp_path / "s.h5", "--from", tmp_path / "e", "--overwrite")
        assert result.exit_code == 1 and "another process is writing" in result.output
    finally:
        holder.kill()
        holder.wait()
    assert content(tmp_path / "s.h5") == before
    holder = _hold("import time, h5py\nf = h5py.File('s.h5', 'a')\nf.flush()\nprint('held', flush=True)\n"
                   "time.sleep(120)", tmp_path)
    try:
        for args in (["info"], ["verify"], ["export", "--out", tmp_path / "e3"]):
            result = invoke(args[0], tmp_path / "s.h5", *args[1:])
            assert result.exit_code == 1 and "marked open for writing" in result.output, result.output
            assert len(result.output.strip().splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()
    result = invoke("info", tmp_path / "s.h5")  # killed while writing: the mark stays, and the message names the fix
    assert result.exit_code == 1 and "h5clear -s" in result.output


def test_two_exports_into_one_output_never_mix_their_files(tmp_path):
    """While one export writes a folder (or a Parquet pair, or one space's pair), a second one to the
    same output is refused in one line; once the first is done, the output policy applies as ever."""
    one_class(tmp_path / "s.h5")
    targets = {"folder": (["--out", "e"], "e"), "parquet": (["--format", "parquet", "--out", "x.parquet"], "x.parquet"),
               "space": (["--audio", "joint", "--out", "a"], "a.npy")}
    for options, locked in targets.values():
        holder = _hold("import time\nfrom embedstore.store.lock import writer_lock\n"
                       f"with writer_lock({locked!r}):\n    print('held', flush=True)\n    time.sleep(120)", tmp_path)
        try:
            result = invoke("export", tmp_path / "s.h5", *[tmp_path / o if o == options[-1] else o for o in options])
            assert result.exit_code == 1 and "another process is writing" in result.output, result.output
        finally:
            holder.kill()
            holder.wait()
        result = invoke("export", tmp_path / "s.h5", *[tmp_path / o if o == options[-1] else o for o in options])
        assert result.exit_code == 0, result.output
