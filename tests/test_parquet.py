"""Parquet export: every value of a store read back with pyarrow (and pandas, HF datasets if installed)."""

import json

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from embedstore.errors import InputError  # noqa: E402
from embedstore.store import create_store, open_store  # noqa: E402
from embedstore.store.parquet import METADATA_KEY, export_parquet, prompts_path  # noqa: E402

CLASSES = ["flute", "oboe", "violin"]


def make_store(path, *, multilabel, dtype="float32", n=11):
    rng = np.random.default_rng(3)
    with create_store(path, model="m", dataset="d", classes=CLASSES, provenance={"note": "ünï"}) as w:
        ids = [f"clip-{i}" for i in range(n)]
        meta = {"pitch": np.arange(n) * 3, "loud": rng.normal(size=n), "family": [f"f{i % 2}é" for i in range(n)]}
        if multilabel:
            matrix = rng.integers(0, 2, size=(n, 3)).astype(np.uint8)
            w.set_items(ids, [f"a/{i}.wav" for i in range(n)], label_matrix=matrix, metadata=meta)
        else:
            w.set_items(ids, [f"a/{i}.wav" for i in range(n)], labels=rng.integers(0, 3, n), metadata=meta)
        w.add_audio("joint", rng.normal(size=(n, 5)), dtype=dtype)
        w.add_audio("prejoint", rng.normal(size=(n, 7)), dtype=dtype)
        w.add_prompt_set("track", ["a flute", "an oboe", "a violin", "noise"], [0, 1, 2, -1],
                         {"joint": rng.normal(size=(4, 5))}, terms=["flute", "oboe", "violin", "x"], dtype=dtype)
        w.add_prompt_set("plain", ["p", "q"], [2, 0], {"joint": rng.normal(size=(2, 5)),
                                                     "prejoint": rng.normal(size=(2, 6))}, dtype=dtype)
        w.add_failed("bad.wav", "not decodable")
    return path


def make_partial_caption_store(path, *, n=8):
    """A partially labelled multi-label store (a label mask) with a caption set beside a prompt set."""
    rng = np.random.default_rng(4)
    mask = rng.random((n, 3)) < 0.6
    matrix = (rng.random((n, 3)) < 0.5) & mask
    with create_store(path, model="m", dataset="openmic", classes=CLASSES) as w:
        w.set_items([f"clip-{i}" for i in range(n)], label_matrix=matrix, label_mask=mask,
                    metadata={"split": ["train", "test"] * (n // 2)})
        w.add_audio("joint", rng.normal(size=(n, 5)))
        w.add_prompt_set("captions", ["a flute", "two oboes", "strings"], [-1, -1, 2],
                         {"joint": rng.normal(size=(3, 5))}, items=[3, 3, 0], source="captions imported from c.csv")
        w.add_prompt_set("track", ["a flute", "an oboe", "a violin"], [0, 1, 2], {"joint": rng.normal(size=(3, 5))},
                         source='template "A <label> track"')
        w.add_prompt_set("none yet", [], [], items=np.zeros(0, np.int64))
    return path


def make_text_only_store(path):
    """What `extract-text --out` writes: no items, no audio, prompt sets."""
    rng = np.random.default_rng(5)
    with create_store(path, model="minilm", dataset="d", classes=CLASSES) as w:
        w.set_items([], labels=np.zeros(0, np.int32), metadata={"pitch": np.zeros(0, np.int64)})
        w.add_prompt_set("class-name", CLASSES, [0, 1, 2], {"joint": rng.normal(size=(3, 4))})
    return path


@pytest.mark.parametrize("kind", ["single-float32", "multi-float16", "partial-captions", "text-only"])
def test_parquet_holds_every_value_of_the_store(tmp_path, kind):
    store = {"single-float32": lambda p: make_store(p, multilabel=False),
             "multi-float16": lambda p: make_store(p, multilabel=True, dtype="float16"),
             "partial-captions": make_partial_caption_store, "text-only": make_text_only_store}[kind](tmp_path / "s.h5")
    items_file, prompts_file = export_parquet(store, tmp_path / "s.parquet")
    assert prompts_file == prompts_path(tmp_path / "s.parquet") == tmp_path / "s.prompts.parquet"
    items, prompts = pq.read_table(items_file), pq.read_table(prompts_file)
    with open_store(store) as st:
        assert items.num_rows == st.n_items
        assert items.column("id").to_pylist() == list(st.item_ids)
        assert items.column("path").to_pylist() == list(st.item_paths)
        expected = [[c for c, on in zip(st.classes, row) if on] for row in st.label_matrix]
        assert items.column("labels").to_pylist() == expected
        if st.label_mask is None:
            assert "labels_unknown" not in items.column_names
        else:  # the pairs the mask leaves out, as class names
            unknown = [[c for c, known in zip(st.classes, row) if not known] for row in st.label_mask]
            assert items.column("labels_unknown").to_pylist() == unknown and any(unknown)
        for col, values in st.metadata.items():
            assert items.column(col).to_pylist() == values.tolist()
        for space in st.audio_spaces:
            got = np.array(items.column(f"audio_{space}").to_pylist(), dtype=np.float32)
            assert got.tobytes() == st.audio(space).tobytes()
            assert items.schema.field(f"audio_{space}").type.list_size == st.audio(space).shape[1]
        row = 0
        for name in st.prompt_sets:
            ps = st.prompt_set(name)
            part = prompts.slice(row, len(ps.prompts)).to_pydict()
            row += len(ps.prompts)
            assert part["set"] == [name] * len(ps.prompts) and part["index"] == list(range(len(ps.prompts)))
            assert part["prompt"] == ps.prompts
            assert part["class"] == [st.classes[c] if c >= 0 else None for c in ps.classes]
            assert part["term"] == (ps.terms or [None] * len(ps.prompts))
            assert part["item"] == ([st.item_ids[i] for i in ps.items] if ps.is_caption_set
                                    else [None] * len(ps.prompts))
            for space in [f[len("text_"):] for f in prompts.column_names if f.startswith("text_")]:
                if space in ps.spaces:
                    got = np.array(part[f"text_{space}"], dtype=np.float32)
                    assert got.tobytes() == st.text(name, space).tobytes()
                else:
                    assert part[f"text_{space}"] == [None] * len(ps.prompts)
        assert row == prompts.num_rows
        for table in (items, prompts):
            described = json.loads(table.schema.metadata[METADATA_KEY])
            assert described["provenance"] == st.provenance and described["classes"] == CLASSES
            assert described["model"] == st.model and described["multilabel"] == st.multilabel
            assert described["label_mask"] == (st.label_mask is not None)
            assert described["prompt_sets"] == {name: {"source": st.prompt_set(name).source,
                                                       "caption_set": st.prompt_set(name).is_caption_set}
                                                for name in st.prompt_sets}


def test_pandas_and_hf_datasets_read_it(tmp_path):
    store = make_store(tmp_path / "s.h5", multilabel=False)
    items_file, _ = export_parquet(store, tmp_path / "s.parquet")
    pd = pytest.importorskip("pandas")
    frame = pd.read_parquet(items_file)
    with open_store(store) as st:
        assert frame["id"].tolist() == list(st.item_ids)
        np.testing.assert_array_equal(np.stack(frame["audio_joint"].to_numpy()), st.audio("joint"))
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_parquet(str(items_file))
    assert ds["id"] == frame["id"].tolist()


def test_parquet_follows_the_output_policy(tmp_path):
    store = make_store(tmp_path / "s.h5", multilabel=False)
    export_parquet(store, tmp_path / "s.parquet")
    with pytest.raises(InputError):
        export_parquet(store, tmp_path / "s.parquet")
    export_parquet(store, tmp_path / "s.parquet", overwrite=True)
    with pytest.raises(InputError):
        export_parquet(store, tmp_path / "s.csv")


def test_export_command_writes_parquet(tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    store = make_store(tmp_path / "s.h5", multilabel=False)
    result = CliRunner().invoke(app, ["export", str(store), "--format", "parquet", "--out", str(tmp_path / "x.parquet")])
    assert result.exit_code == 0, result.output
    assert pq.read_table(tmp_path / "x.parquet").num_rows == 11
    assert pq.read_table(tmp_path / "x.prompts.parquet").num_rows == 6
    result = CliRunner().invoke(app, ["export", str(store), "--format", "parquet", "--audio", "joint",
                                      "--out", str(tmp_path / "y.parquet")])
    assert result.exit_code == 2
