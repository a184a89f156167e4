"""Export is import's inverse: ``export STORE --out DIR`` then ``import OUT --from DIR``
gives the same store (every element, attribute and value; the provenance of the exported
store), for single- and multi-label stores with every kind of metadata column, several
spaces and prompt sets, caption sets with their item links, partial labels (a label mask),
text-only stores, and names and values that a CSV or a file system would break."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from cli_helpers import invoke

from embedstore.store import create_store, open_store
from embedstore.store import elements as el
from embedstore.store.verify import verify_store

CLASSES = ["violin", "flute", "oboe, the reed"]  # a comma: CSV quoting must hold


def build(path, multilabel: bool) -> None:
    rng = np.random.default_rng(5 + multilabel)
    n = 7
    metadata = {
        "pitch": np.arange(60, 60 + n, dtype=np.int64),
        "loudness": rng.standard_normal(n),  # float64, full precision
        "gain": rng.standard_normal(n).astype(np.float32),
        "muted": np.arange(n) % 2 == 0,
        "family": ["strings", "winds", "winds", "reeds \"double\"", "strings", "", "winds"],
        "id": [f"other-{i}" for i in range(n)],  # a column named like the id column
    }
    labels = dict(label_matrix=rng.integers(0, 2, (n, 3))) if multilabel else dict(labels=np.arange(n) % 3)
    with create_store(path, model="paper-clap", dataset="tinysol", classes=CLASSES) as w:
        w.set_items([f"clip {i}" for i in range(n)], [f"Winds/Flûte/{i}.wav" for i in range(n)], metadata=metadata, **labels)
        w.add_audio("joint", rng.standard_normal((n, 4)))
        w.add_audio("prejoint", rng.standard_normal((n, 6)), dtype="float16")
        w.add_audio("mert", rng.standard_normal((n, 3)))
        w.add_prompt_set("track", ["A violin track", "A flute track", "An oboe track"], [0, 1, 2],
                         {"joint": rng.standard_normal((3, 4)), "prejoint": rng.standard_normal((3, 5))})
        w.add_prompt_set("ontology", ["instrument", "a violin", "a flute"], [-1, 0, 1],
                         {"joint": rng.standard_normal((3, 4))}, terms=["instrument", "instrument/violin", "instrument/flute"])
        w.add_prompt_set("empty-spaces", ["x"], [2])
        w.add_failed("Winds/broken.wav", "decode error")


def build_captions(path) -> None:
    """Caption sets: several captions per item, an item with none, a captioned class, terms, sources."""
    rng = np.random.default_rng(11)
    with create_store(path, model="clap", dataset="clotho", classes=["captioned", "speech"],
                      provenance={"encoder": {"checkpoint": "630k.pt"}, "checkpoint_sha256": "ab" * 32}) as w:
        w.set_items([f"c{i}.wav" for i in range(5)], [f"c{i}.wav" for i in range(5)], labels=[0, 0, 1, 0, 0])
        w.add_audio("joint", rng.standard_normal((5, 4)))
        w.add_prompt_set("captions", ["a dog barks", "a dog, barking", "rain\non a roof", "", "speech"],
                         [-1, -1, -1, -1, 1], {"joint": rng.standard_normal((5, 4))}, items=[0, 0, 2, 3, 2],
                         source="captions imported from clotho.csv")
        w.add_prompt_set("one-per-clip", ["x", "y"], [-1, -1], {"joint": rng.standard_normal((2, 4))},
                         items=[4, 1], terms=["t/x", "t/y"])
        w.add_prompt_set("track", ["A captioned track", "A speech track"], [0, 1],
                         {"joint": rng.standard_normal((2, 4))}, source='template "A <label> track"')
        w.add_prompt_set("no captions yet", [], [], items=np.zeros(0, np.int64))


def build_partial_labels(path, all_labelled: bool = False) -> None:
    """A multi-label store with a label mask (OpenMIC-style): empty cells in the one-hot CSV."""
    rng = np.random.default_rng(12)
    n = 9
    mask = np.ones((n, 3), bool) if all_labelled else rng.random((n, 3)) < 0.6
    matrix = (rng.random((n, 3)) < 0.5) & mask
    with create_store(path, model="m", dataset="openmic", classes=["guitar", "piano", "voice"]) as w:
        w.set_items([f"{i:03d}" for i in range(n)], label_matrix=matrix, label_mask=mask,
                     metadata={"split": ["train", "test", "train"] * 3})
        w.add_audio("joint", rng.standard_normal((n, 4)), dtype="float16")


def build_text_only(path) -> None:
    """What `extract-text --out` writes (no items, no audio), with metadata columns and empty sets."""
    rng = np.random.default_rng(13)
    with create_store(path, model="minilm", dataset="tinysol", classes=["violin", "flute"]) as w:
        w.set_items([], labels=np.zeros(0, np.int32),
                    metadata={"pitch": np.zeros(0, np.int64), "family": np.zeros(0, str)})
        w.add_prompt_set("class-name", ["violin", "flute"], [0, 1], {"joint": rng.standard_normal((2, 3))},
                         source="class names")
        w.add_prompt_set("ontology", ["instrument"], [-1], {"joint": rng.standard_normal((1, 3))},
                         terms=["instrument"])
        w.add_prompt_set("empty", [], [])


HUGE = "long " * 60_000  # 300 kB: beyond the csv module's default field limit (128 KiB)


def build_hostile_names(path) -> None:
    """Names and values a CSV, a text file or a file system would break, all valid in a store."""
    rng = np.random.default_rng(14)
    long_name = "set " + "x" * 250  # longer than a file name may be
    classes = ["a\u2028b", "Flûte", "c, d", "id"]  # a line separator inside a name; a class named like a column
    with create_store(path, model="m" * 1000, dataset="ünï", classes=classes) as w:
        w.set_items(["x\u2028y", "z", "w"], ["p\rq", "", HUGE], label_matrix=np.eye(3, 4, dtype=np.uint8),
                    metadata={"path": ["1", "2", "3"], "label": ["a", "b", "c"], "path_": ["\r", "\n", "\r\n"]})
        w.add_audio("joint", rng.standard_normal((3, 2)))
        w.add_audio("Joint", rng.standard_normal((3, 2)))  # differs only in case from another file name
        for name in (long_name, "Track", "track", "ünï set", "...", "a\\b", "con"):
            w.add_prompt_set(name, [f"{name} \r prompt", HUGE], [0, -1], {"joint": rng.standard_normal((2, 2)),
                             "Joint": rng.standard_normal((2, 2))}, source="s" * 200_000)


def content(path) -> dict:
    """Everything a store holds but its provenance and history, read with plain h5py."""
    out = {}
    with h5py.File(path, "r") as f:
        out["/"] = {k: str(f.attrs[k]) for k in ("model", "dataset")}

        def visit(name, obj):
            if name in ("provenance", "history"):
                return
            attrs = {k: (list(v) if isinstance(v, np.ndarray) else v) for k, v in obj.attrs.items()}
            if isinstance(obj, h5py.Dataset):
                attrs["dtype"], attrs["shape"] = obj.dtype.str, obj.shape
            out[name] = attrs

        f.visititems(visit)
    return out


def round_trip(tmp_path, original) -> tuple[dict, dict]:
    """Export ``original``, import it back; the contents of both stores."""
    copy, folder = tmp_path / "copy.h5", tmp_path / "export"
    result = invoke("export", original, "--out", folder)
    assert result.exit_code == 0, result.output
    result = invoke("import", copy, "--from", folder)
    assert result.exit_code == 0, result.output
    assert verify_store(copy).ok
    with open_store(original) as st, open_store(copy) as st2:  # the exported store's provenance, and this import
        imported = st2.provenance.pop("imported_from_export")
        assert st2.provenance == st.provenance and imported["source"] == "embedstore import --from"
    return content(original), content(copy)


@pytest.mark.parametrize("multilabel", [False, True])
def test_export_then_import_gives_the_same_store(tmp_path, multilabel):
    original, copy = tmp_path / "s.h5", tmp_path / "copy.h5"
    build(original, multilabel)
    a, b = round_trip(tmp_path, original)
    assert a == b  # same names, tags, dtypes, shapes and digests (values) everywhere
    assert sum(el.DIGEST_ATTR in v for v in a.values()) >= 25
    with open_store(original) as st, open_store(copy) as st2:
        assert st2.metadata_columns == st.metadata_columns
        for col, values in st.metadata.items():
            assert st2.metadata[col].dtype == values.dtype
            np.testing.assert_array_equal(st2.metadata[col], values)


@pytest.mark.parametrize("builder", [build_captions, build_partial_labels,
                                     lambda p: build_partial_labels(p, all_labelled=True),
                                     build_text_only, build_hostile_names],
                         ids=["captions", "label-mask", "label-mask-all-ones", "text-only", "hostile-names"])
def test_every_kind_of_store_comes_back_the_same(tmp_path, builder):
    original = tmp_path / "s.h5"
    builder(original)
    a, b = round_trip(tmp_path, original)
    assert a == b  # every element, every attribute (item links, label mask, sources) and every digest


def test_caption_links_and_label_mask_come_back_value_for_value(tmp_path):
    build_captions(tmp_path / "c.h5")
    (tmp_path / "1").mkdir()
    round_trip(tmp_path / "1", tmp_path / "c.h5")
    with open_store(tmp_path / "c.h5") as st, open_store(tmp_path / "1" / "copy.h5") as st2:
        for name in st.prompt_sets:
            ps, ps2 = st.prompt_set(name), st2.prompt_set(name)
            assert ps2.is_caption_set == ps.is_caption_set and ps2.source == ps.source
            if ps.is_caption_set:
                np.testing.assert_array_equal(ps2.items, ps.items)
        assert st2.prompt_set("captions").items.tolist() == [0, 0, 2, 3, 2]
    build_partial_labels(tmp_path / "m.h5")
    (tmp_path / "2").mkdir()
    round_trip(tmp_path / "2", tmp_path / "m.h5")
    with open_store(tmp_path / "m.h5") as st, open_store(tmp_path / "2" / "copy.h5") as st2:
        assert not st.label_mask.all()
        np.testing.assert_array_equal(st2.label_mask, st.label_mask)
        np.testing.assert_array_equal(st2.label_matrix, st.label_matrix)
        assert el.read_tag(st2._file["items"])[1] == el.MASKED_ITEMS_VERSION


def test_what_the_folder_cannot_hold_is_refused_in_one_line(tmp_path):
    import h5py

    rng = np.random.default_rng(0)
    with create_store(tmp_path / "s.h5", model="m", dataset="d", classes=["a", "family"]) as w:
        w.set_items(["i", "j"], label_matrix=np.eye(2, dtype=np.uint8), metadata={"family": ["x", "y"]})
    result = invoke("export", tmp_path / "s.h5", "--out", tmp_path / "e")
    assert result.exit_code == 1 and "'family'" in result.output and not (tmp_path / "e").exists()
    with create_store(tmp_path / "t.h5", model="m", dataset="d", classes=["a"]) as w:
        w.set_items(["i"], labels=[0])
        w.add_prompt_set("p", ["x"], [0], {"joint": rng.standard_normal((1, 2))})
    with h5py.File(tmp_path / "t.h5", "r+") as f:  # a second space in another dtype, as plain h5py may write
        spaces = f["text/p/spaces"]
        el.write_embedding(spaces, "prejoint", rng.standard_normal((1, 2)), "float16")
    result = invoke("export", tmp_path / "t.h5", "--out", tmp_path / "e")
    assert result.exit_code == 1 and "float16 and float32" in result.output
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1


def test_export_folder_follows_the_output_policy(tmp_path):
    build(tmp_path / "s.h5", False)
    folder = tmp_path / "export"
    assert invoke("export", tmp_path / "s.h5", "--out", folder).exit_code == 0
    result = invoke("export", tmp_path / "s.h5", "--out", folder)
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert invoke("export", tmp_path / "s.h5", "--out", folder, "--overwrite").exit_code == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    result = invoke("export", tmp_path / "s.h5", "--out", tmp_path / "mine", "--overwrite")
    assert result.exit_code == 1 and (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_import_reads_partial_labels_and_caption_links_from_a_release(tmp_path):
    """A release's one-hot CSV with empty cells (unlabelled pairs) and a prompt CSV with an item column."""
    (tmp_path / "items.csv").write_text("id,guitar,piano\na,1,\nb,,0\nc,0,1\n")
    (tmp_path / "captions.csv").write_text("class,prompt,item\n,a guitar solo,a\npiano,piano chords,c\n,more guitar,a\n")
    base = ["import", tmp_path / "s.h5", "--items", tmp_path / "items.csv", "--id-column", "id", "--onehot"]
    result = invoke(*base)
    assert result.exit_code == 1 and "--partial-labels" in result.output  # an empty cell is never read as 0
    result = invoke(*base, "--partial-labels", "--prompts", f"caps={tmp_path / 'captions.csv'}")
    assert result.exit_code == 0, result.output
    assert "2 of 6 item-class pairs unlabelled" in result.output
    with open_store(tmp_path / "s.h5") as st:
        assert st.label_mask.tolist() == [[True, False], [False, True], [True, True]]
        assert st.label_matrix.tolist() == [[True, False], [False, False], [False, True]]
        caps = st.prompt_set("caps")
        assert caps.items.tolist() == [0, 2, 0] and caps.classes.tolist() == [-1, 1, -1]
    (tmp_path / "bad.csv").write_text("class,prompt,item\n,x,nobody\n")
    result = invoke(*base, "--partial-labels", "--prompts", f"caps={tmp_path / 'bad.csv'}", "--overwrite")
    assert result.exit_code == 1 and "'nobody'" in result.output
    result = invoke("import", tmp_path / "t.h5", "--items", tmp_path / "items.csv", "--id-column", "id",
                    "--label-column", "guitar", "--partial-labels")
    assert result.exit_code == 1 and "--onehot" in result.output


def test_a_newer_export_folder_is_refused(tmp_path):
    import json

    build(tmp_path / "s.h5", False)
    assert invoke("export", tmp_path / "s.h5", "--out", tmp_path / "e").exit_code == 0
    manifest = json.loads((tmp_path / "e" / "import.json").read_text())
    (tmp_path / "e" / "import.json").write_text(json.dumps({**manifest, "export_version": 99}))
    result = invoke("import", tmp_path / "c.h5", "--from", tmp_path / "e")
    assert result.exit_code == 1 and "export version 99" in result.output and not (tmp_path / "c.h5").exists()


def test_import_from_refuses_options_it_would_ignore(tmp_path):
    """The folder says how to read it: --float16, --model, --onehot ... beside --from are refused, never ignored."""
    build(tmp_path / "s.h5", False)
    assert invoke("export", tmp_path / "s.h5", "--out", tmp_path / "e").exit_code == 0
    for extra in (["--float16"], ["--model", "other"], ["--onehot", "--partial-labels"], ["--extra-space", "mert"]):
        result = invoke("import", tmp_path / "c.h5", "--from", tmp_path / "e", *extra)
        assert result.exit_code == 2 and extra[0] in result.output and not (tmp_path / "c.h5").exists()
