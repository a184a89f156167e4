"""Export is import's inverse: ``export STORE --out DIR`` then ``import OUT --from DIR``
gives the same store (every array, name, dtype and order), for single- and multi-label
stores with every kind of metadata column, several spaces and prompt sets."""

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


@pytest.mark.parametrize("multilabel", [False, True])
def test_export_then_import_gives_the_same_store(tmp_path, multilabel):
    original, copy, folder = tmp_path / "s.h5", tmp_path / "copy.h5", tmp_path / "export"
    build(original, multilabel)
    result = invoke("export", original, "--out", folder)
    assert result.exit_code == 0, result.output
    result = invoke("import", copy, "--from", folder)
    assert result.exit_code == 0, result.output
    assert ("multi-label" if multilabel else "single-label") in result.output
    a, b = content(original), content(copy)
    assert a == b  # same names, tags, dtypes, shapes and digests (values) everywhere
    assert sum(el.DIGEST_ATTR in v for v in a.values()) >= 25
    assert verify_store(copy).ok
    with open_store(original) as st, open_store(copy) as st2:
        assert st2.metadata_columns == st.metadata_columns
        for col, values in st.metadata.items():
            assert st2.metadata[col].dtype == values.dtype
            np.testing.assert_array_equal(st2.metadata[col], values)


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
