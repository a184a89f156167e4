"""docs/store-format.md taken literally: stores read and written with plain h5py.

The helpers below (digests, tags, element writers) are transcribed from the spec and use
only h5py, numpy, hashlib and json; embedstore is used only as the other party: to write
a store we then read by hand, and to accept or reject a store we wrote by hand.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import uuid

import h5py
import numpy as np
import pytest

from embedstore.errors import NotAStore, StoreDamaged, StoreIncomplete, StoreTooNew
from embedstore.store import create_store, edit_store, open_store
from embedstore.store.verify import verify_store

STR = h5py.string_dtype("utf-8")
BIND = [True]  # writers below bind digests to paths (format 1.1); False writes a 1.0 store
CLASSES = ["flute", "violin", "cello"]
N_ITEMS, D_JOINT, D_PREJOINT = 5, 8, 12


# -- the spec, transcribed -------------------------------------------------------------


def digest_numeric(arr: np.ndarray) -> str:
    arr = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode("ascii"))
    h.update(arr.tobytes())
    return h.hexdigest()


def digest_strings(strings: list[str]) -> str:
    h = hashlib.sha256(f"str({len(strings)})".encode("ascii"))
    for s in strings:
        b = s.encode("utf-8")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def path_digest(path: str, content_digest: str) -> str:
    """Section 4.3 (format 1.1): the content digest bound to the dataset's path."""
    return hashlib.sha256(path.encode("utf-8") + b"\0" + content_digest.encode("ascii")).hexdigest()


def digests(ds, content_digest: str, bind: bool = True) -> None:
    ds.attrs["sha256"] = content_digest
    if bind:
        ds.attrs["path-sha256"] = path_digest(ds.name, content_digest)


def spec_digest(ds: h5py.Dataset) -> str:
    """Section 4: the variant follows the HDF5 dtype."""
    if h5py.check_string_dtype(ds.dtype) is not None:
        return digest_strings(list(ds.asstr()[()]))
    return digest_numeric(ds[()])


def tag(obj, encoding_type: str, version: str = "1.0.0") -> None:
    obj.attrs["encoding-type"] = encoding_type
    obj.attrs["encoding-version"] = version


def strings(group, name, values, resizable=False):
    values = [str(v) for v in values]
    ds = group.create_dataset(
        name, data=np.array(values, dtype=object), dtype=STR, maxshape=(None,) if resizable else None
    )
    tag(ds, "string-array")
    digests(ds, digest_strings(values), BIND[0])
    return ds


def numeric(group, name, values, encoding_type="numeric-array"):
    ds = group.create_dataset(name, data=values)
    tag(ds, encoding_type)
    digests(ds, digest_numeric(values), BIND[0])
    return ds


def chunk_rows(rows: int, d: int, itemsize: int) -> int:
    return max(1, min(rows, (1 << 20) // (d * itemsize)))


def embedding(group, name, values, dtype=np.float32):
    values = np.asarray(values, dtype=dtype)
    rows, d = values.shape
    ds = group.create_dataset(name, data=values, chunks=(chunk_rows(rows, d, values.itemsize), d), fletcher32=True)
    tag(ds, "embedding")
    digests(ds, digest_numeric(values), BIND[0])
    return ds


def arrays():
    rng = np.random.default_rng(7)
    return dict(
        ids=[f"note-{i}" for i in range(N_ITEMS)],
        paths=[f"Winds/Flûte/n{i}.wav" for i in range(N_ITEMS)],  # non-ASCII on purpose
        labels=np.array([0, 1, 2, 1, 0], dtype=np.int32),
        pitch=np.array([60, 62, 64, 65, 67], dtype=np.int64),
        family=["winds", "strings", "strings", "strings", "winds"],
        audio_joint=rng.normal(size=(N_ITEMS, D_JOINT)).astype(np.float32),
        audio_prejoint=rng.normal(size=(N_ITEMS, D_PREJOINT)).astype(np.float16),
        prompts=["a flute", "a violin", "a cello", "an instrument"],
        prompt_class=np.array([0, 1, 2, -1], dtype=np.int32),
        terms=["instrument/wind/flute", "instrument/string/violin", "instrument/string/cello", "instrument"],
        text_joint=rng.normal(size=(4, D_JOINT)).astype(np.float32),
    )


def write_plain_store(path, a=None, version: str = "1.1.0") -> None:
    """Section 9.2: a complete store from plain h5py, written atomically (``version`` 1.0.0:
    the previous format, without path digests)."""
    a = a or arrays()
    BIND[0] = version != "1.0.0"
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        tag(f, "embedstore", version)
        f.attrs["model"], f.attrs["dataset"] = "plain-model", "plain-notes"
        f.attrs["created"], f.attrs["store-id"] = now, uuid.uuid4().hex
        strings(f, "classes", CLASSES)
        items = f.create_group("items")
        tag(items, "items")
        items.attrs["label-kind"] = "single"
        strings(items, "id", a["ids"])
        strings(items, "path", a["paths"])
        numeric(items, "label", a["labels"], "label-index")
        meta = items.create_group("metadata")
        tag(meta, "dataframe")
        numeric(meta, "pitch", a["pitch"])
        strings(meta, "family", a["family"])
        meta.attrs["column-order"] = ["pitch", "family"]
        audio = f.create_group("audio")
        tag(audio, "spaces")
        embedding(audio, "joint", a["audio_joint"])
        embedding(audio, "prejoint", a["audio_prejoint"], np.float16)
        text = f.create_group("text")
        tag(text, "prompt-sets")
        ps = text.create_group("ontology")
        tag(ps, "prompt-set")
        strings(ps, "prompts", a["prompts"])
        numeric(ps, "class", a["prompt_class"], "label-index")
        strings(ps, "terms", a["terms"])
        spaces = ps.create_group("spaces")
        tag(spaces, "spaces")
        embedding(spaces, "joint", a["text_joint"])
        prov = f.create_dataset("provenance", data=json.dumps({"model": "plain-model"}, sort_keys=True), dtype=STR)
        tag(prov, "json")
        line = json.dumps({"action": "create", "time": now, "embedstore": "none"}, sort_keys=True)
        hist = f.create_dataset("history", data=np.array([line], dtype=object), dtype=STR, maxshape=(None,))
        tag(hist, "json-lines")
        failed = f.create_group("failed")
        tag(failed, "failed-items")
        strings(failed, "path", ["Winds/broken.wav"], resizable=True)
        strings(failed, "reason", ["decode error"], resizable=True)
    BIND[0] = True
    tmp.replace(path)


# -- (a) an embedstore-written store, read by hand ---------------------------------------

EXPECTED_TAGS = {
    "/": "embedstore",
    "/classes": "string-array",
    "/items": "items",
    "/items/id": "string-array",
    "/items/path": "string-array",
    "/items/label": "label-index",
    "/items/metadata": "dataframe",
    "/items/metadata/pitch": "numeric-array",
    "/items/metadata/family": "string-array",
    "/audio": "spaces",
    "/audio/joint": "embedding",
    "/audio/prejoint": "embedding",
    "/text": "prompt-sets",
    "/text/ontology": "prompt-set",
    "/text/ontology/prompts": "string-array",
    "/text/ontology/class": "label-index",
    "/text/ontology/terms": "string-array",
    "/text/ontology/spaces": "spaces",
    "/text/ontology/spaces/joint": "embedding",
    "/provenance": "json",
    "/history": "json-lines",
    "/failed": "failed-items",
    "/failed/path": "string-array",
    "/failed/reason": "string-array",
}


def write_with_embedstore(path, a):
    with create_store(path, model="clap", dataset="notes", classes=CLASSES, provenance={"run_id": "r1"}) as w:
        w.set_items(a["ids"], a["paths"], labels=a["labels"], metadata={"pitch": a["pitch"], "family": a["family"]})
        w.add_audio("joint", a["audio_joint"])
        w.add_audio("prejoint", a["audio_prejoint"], dtype="float16")
        w.add_prompt_set(
            "ontology", a["prompts"], a["prompt_class"], {"joint": a["text_joint"]}, terms=a["terms"]
        )
        w.add_failed("Winds/broken.wav", "decode error")


def test_embedstore_store_follows_the_spec_when_read_with_plain_h5py(tmp_path):
    a = arrays()
    path = tmp_path / "s.h5"
    write_with_embedstore(path, a)
    with h5py.File(path, "r") as f:
        found = {"/": f}
        f.visititems(lambda name, obj: found.__setitem__("/" + name, obj))
        assert set(found) == set(EXPECTED_TAGS)
        for name, obj in found.items():
            assert obj.attrs["encoding-type"] == EXPECTED_TAGS[name], name
            assert obj.attrs["encoding-version"] == ("1.1.0" if name == "/" else "1.0.0"), name

        assert (f.attrs["model"], f.attrs["dataset"]) == ("clap", "notes")
        assert re.fullmatch(r"[0-9a-f]{32}", f.attrs["store-id"])
        created = datetime.datetime.fromisoformat(f.attrs["created"])
        assert created.utcoffset() == datetime.timedelta(0)

        for name, obj in found.items():
            if isinstance(obj, h5py.Dataset) and EXPECTED_TAGS[name] in ("string-array", "json", "json-lines"):
                assert h5py.check_string_dtype(obj.dtype).encoding == "utf-8", name
                assert h5py.check_string_dtype(obj.dtype).length is None, name  # variable length
        assert list(f["classes"].asstr()[()]) == CLASSES
        assert list(f["items/path"].asstr()[()]) == a["paths"]
        assert f["items/label"].dtype == np.int32
        np.testing.assert_array_equal(f["items/label"][()], a["labels"])
        assert f["items"].attrs["label-kind"] == "single"
        assert list(f["items/metadata"].attrs["column-order"]) == ["pitch", "family"]
        np.testing.assert_array_equal(f["text/ontology/class"][()], [0, 1, 2, -1])
        assert f["text/ontology/class"].dtype == np.int32
        assert list(f["text/ontology/terms"].asstr()[()]) == a["terms"]

        for name, dtype, d in (("/audio/joint", np.float32, D_JOINT), ("/audio/prejoint", np.float16, D_PREJOINT)):
            ds = f[name]
            assert ds.dtype == dtype and ds.shape == (N_ITEMS, d)
            assert ds.chunks == (chunk_rows(N_ITEMS, d, ds.dtype.itemsize), d)
            assert ds.fletcher32
        np.testing.assert_array_equal(f["audio/prejoint"][()], a["audio_prejoint"])

        # Every recorded digest recomputed with hashlib; then one checked against a known answer.
        with_digest = [n for n, o in found.items() if isinstance(o, h5py.Dataset) and "sha256" in o.attrs]
        datasets = {n for n, o in found.items() if isinstance(o, h5py.Dataset)}
        assert set(with_digest) == datasets - {"/provenance", "/history"}
        for name in with_digest:
            assert spec_digest(found[name]) == found[name].attrs["sha256"], name
            assert found[name].attrs["path-sha256"] == path_digest(name, found[name].attrs["sha256"]), name
        assert f["audio/joint"].attrs["sha256"] == hashlib.sha256(
            f"<f4({N_ITEMS}, {D_JOINT})".encode() + a["audio_joint"].astype("<f4").tobytes()
        ).hexdigest()

        prov = json.loads(f["provenance"].asstr()[()])
        assert {"model", "dataset", "created", "versions", "run_id"} <= set(prov)
        assert not {"host", "user"} & set(prov)  # only with record_host (section 3.1)
        assert {"embedstore", "python", "numpy", "h5py", "hdf5"} <= set(prov["versions"])
        history = [json.loads(line) for line in f["history"].asstr()[()]]
        assert [h["action"] for h in history] == [
            "create", "set_items", "add_audio", "add_audio", "add_prompt_set", "add_failed"
        ]
        assert all({"time", "embedstore"} <= set(h) for h in history)
        assert f["history"].maxshape == (None,)
        assert f["failed/path"].maxshape == (None,) and f["failed/reason"].maxshape == (None,)
        assert list(f["failed/reason"].asstr()[()]) == ["decode error"]


def test_multilabel_store_has_a_uint8_label_matrix_and_no_label(tmp_path):
    matrix = np.array([[1, 0, 1], [0, 1, 0]], dtype=bool)
    path = tmp_path / "m.h5"
    with create_store(path, model="m", dataset="d", classes=CLASSES) as w:
        w.set_items(["a", "b"], label_matrix=matrix)
    with h5py.File(path, "r") as f:
        ds = f["items/label_matrix"]
        assert "label" not in f["items"] and f["items"].attrs["label-kind"] == "multi"
        assert ds.attrs["encoding-type"] == "label-matrix"
        assert ds.dtype == np.uint8 and ds.shape == (2, 3)
        np.testing.assert_array_equal(ds[()], matrix.astype(np.uint8))
        assert ds.attrs["sha256"] == digest_numeric(ds[()])


def test_digest_byte_streams_are_as_documented():
    stream = b"str(2)" + (1).to_bytes(8, "little") + b"a" + (2).to_bytes(8, "little") + b"bc"
    assert len(stream) == 25
    assert digest_strings(["a", "bc"]) == hashlib.sha256(stream).hexdigest()
    big_endian = np.arange(6, dtype=">i4").reshape(2, 3)
    expected = hashlib.sha256(b"<i4(2, 3)" + np.arange(6, dtype="<i4").tobytes()).hexdigest()
    assert digest_numeric(big_endian) == expected
    assert digest_numeric(np.zeros(0, dtype=np.int64)) == hashlib.sha256(b"<i8(0,)").hexdigest()


# -- (b) a hand-written store, accepted by embedstore ------------------------------------


def test_plain_h5py_store_is_accepted_by_open_store_and_verify(tmp_path):
    a = arrays()
    path = tmp_path / "plain.h5"
    write_plain_store(path, a)
    with open_store(path) as st:
        assert (st.model, st.dataset, st.classes, st.n_items) == ("plain-model", "plain-notes", CLASSES, N_ITEMS)
        assert list(st.item_ids) == a["ids"] and list(st.item_paths) == a["paths"]
        np.testing.assert_array_equal(st.labels, a["labels"])
        assert not st.multilabel
        np.testing.assert_array_equal(st.metadata["pitch"], a["pitch"])
        assert list(st.metadata["family"]) == a["family"]
        assert st.audio_spaces == ["joint", "prejoint"]
        np.testing.assert_array_equal(st.audio("joint"), a["audio_joint"])
        prejoint = st.audio("prejoint")
        assert prejoint.dtype == np.float32
        np.testing.assert_array_equal(prejoint, a["audio_prejoint"].astype(np.float32))
        ps = st.prompt_set("ontology")
        assert ps.prompts == a["prompts"] and ps.terms == a["terms"] and ps.spaces == ["joint"]
        np.testing.assert_array_equal(ps.classes, [0, 1, 2, -1])
        np.testing.assert_array_equal(st.text("ontology", "joint"), a["text_joint"])
        assert st.provenance == {"model": "plain-model"}
        assert st.failed == [("Winds/broken.wav", "decode error")]
    report = verify_store(path)
    assert report.ok, report.problems
    assert report.arrays_checked == 14  # every dataset but provenance and history


def test_plain_store_can_be_edited_by_embedstore_and_stays_intact(tmp_path):
    """The resizable failed/* and history datasets of the spec are what edits append to."""
    path = tmp_path / "plain.h5"
    write_plain_store(path)
    with edit_store(path) as w:
        w.add_failed("Winds/also-broken.wav", "too short")
        w.add_prompt_set("class-name", CLASSES, [0, 1, 2], {"joint": np.eye(3, D_JOINT)})
    assert verify_store(path).ok
    with open_store(path) as st:
        assert [p for p, _ in st.failed] == ["Winds/broken.wav", "Winds/also-broken.wav"]
        assert st.prompt_sets == ["class-name", "ontology"]
        assert [h["action"] for h in st.history][-3:] == ["edit", "add_failed", "add_prompt_set"]


def test_newer_minor_and_patch_versions_are_accepted(tmp_path):
    path = tmp_path / "plain.h5"
    write_plain_store(path)
    with h5py.File(path, "r+") as f:
        f.attrs["encoding-version"] = "1.4.2"
        f["audio/joint"].attrs["encoding-version"] = "1.1.0"
        tag(f.create_group("annotations"), "annotations", "1.0.0")  # a later minor's element: ignored
    with open_store(path) as st:
        assert st.format_version == "1.4.2"
    assert verify_store(path).ok


def test_plain_h5py_caption_set_and_text_only_store_are_as_documented(tmp_path):
    """Format 1.1: a caption set is a prompt set with an ``item`` item-index; a store may hold no items."""
    path = tmp_path / "plain.h5"
    write_plain_store(path)
    with h5py.File(path, "r+") as f:
        g = f["text"].create_group("captions")
        tag(g, "prompt-set")
        g.attrs["source"] = "captions of the items"
        strings(g, "prompts", ["a low flute", "a flute again", "a violin"])
        numeric(g, "class", np.array([-1, -1, -1], np.int32), "label-index")
        numeric(g, "item", np.array([0, 0, 1], np.int64), "item-index")
        spaces = g.create_group("spaces")
        tag(spaces, "spaces")
        embedding(spaces, "joint", np.ones((3, D_JOINT)))
    with open_store(path) as st:
        ps = st.prompt_set("captions")
        np.testing.assert_array_equal(ps.items, [0, 0, 1])
        assert ps.source == "captions of the items" and st.prompt_set("ontology").items is None
    assert verify_store(path).ok
    with h5py.File(path, "r+") as f:
        _replace(f, "text/captions/item", np.array([0, 0, N_ITEMS], np.int64), "item-index")
    with pytest.raises(StoreDamaged, match="captions/item holds item rows outside"):
        open_store(path).close()

    text_only = tmp_path / "text.h5"
    write_plain_store(text_only)
    with h5py.File(text_only, "r+") as f:
        empty = {"items/id": (np.array([], object), "string-array"), "items/path": (np.array([], object), "string-array"),
                 "items/label": (np.zeros(0, np.int32), "label-index"),
                 "items/metadata/pitch": (np.zeros(0, np.int64), "numeric-array"),
                 "items/metadata/family": (np.array([], object), "string-array")}
        for name, (values, encoding_type) in empty.items():
            _replace(f, name, values, encoding_type)
        for space in list(f["audio"]):
            del f["audio"][space]
    with open_store(text_only) as st:
        assert st.text_only and st.n_items == 0 and st.prompt_sets == ["ontology"]
    assert verify_store(text_only).ok


# -- (c) one broken rule at a time --------------------------------------------------------


def _replace(f, name, data, encoding_type):
    """Rewrite dataset ``name`` with ``data`` keeping the spec's tag (and a fresh digest)."""
    parent, leaf = name.rsplit("/", 1)
    del f[name]
    if h5py.check_string_dtype(np.asarray(data).dtype) or np.asarray(data).dtype.kind in "UO":
        ds = strings(f[parent or "/"], leaf, data)
    elif encoding_type == "embedding":
        ds = embedding(f[parent], leaf, data)
    else:
        ds = numeric(f[parent], leaf, np.asarray(data), encoding_type)
    ds.attrs["encoding-type"] = encoding_type


VIOLATIONS = {
    "root untagged": (lambda f: f.attrs.__delitem__("encoding-type"), NotAStore, "not an embedstore store"),
    "root tagged as another format": (lambda f: f.attrs.__setitem__("encoding-type", "anndata"), NotAStore, None),
    "root newer major": (lambda f: f.attrs.__setitem__("encoding-version", "2.0.0"), StoreTooNew, "upgrade embedstore"),
    "element newer major": (
        lambda f: f["audio/joint"].attrs.__setitem__("encoding-version", "2.0.0"), StoreTooNew, "upgrade embedstore"
    ),
    "major below 1": (lambda f: f.attrs.__setitem__("encoding-version", "0.9.0"), StoreDamaged, None),
    "root without version": (lambda f: f.attrs.__delitem__("encoding-version"), StoreDamaged, None),
    "label without tag": (lambda f: f["items/label"].attrs.__delitem__("encoding-type"), StoreDamaged, "items/label"),
    "embedding tagged as numeric": (
        lambda f: f["audio/joint"].attrs.__setitem__("encoding-type", "numeric-array"), StoreDamaged, "audio/joint"
    ),
    "missing /failed": (lambda f: f.__delitem__("failed"), StoreDamaged, "/failed"),
    "duplicate class names": (lambda f: _replace(f, "/classes", ["a", "a", "b"], "string-array"), StoreDamaged, None),
    "audio space with a wrong row count": (
        lambda f: _replace(f, "audio/joint", np.ones((N_ITEMS + 1, D_JOINT)), "embedding"), StoreDamaged, "audio/joint"
    ),
    "one path too few": (
        lambda f: _replace(f, "items/path", [f"p{i}" for i in range(N_ITEMS - 1)], "string-array"), StoreDamaged, None
    ),
    "metadata column with a wrong row count": (
        lambda f: _replace(f, "items/metadata/pitch", np.arange(N_ITEMS + 2), "numeric-array"), StoreDamaged, "pitch"
    ),
    "label outside the classes": (
        lambda f: _replace(f, "items/label", np.array([0, 1, 2, 3, 0], np.int32), "label-index"), StoreDamaged, None
    ),
    "prompt class below -1": (
        lambda f: _replace(f, "text/ontology/class", np.array([0, 1, 2, -2], np.int32), "label-index"),
        StoreDamaged, "ontology/class",
    ),
    "terms with a wrong row count": (
        lambda f: _replace(f, "text/ontology/terms", ["instrument"], "string-array"), StoreDamaged, "terms"
    ),
    "text space with a wrong row count": (
        lambda f: _replace(f, "text/ontology/spaces/joint", np.ones((3, D_JOINT)), "embedding"), StoreDamaged, None
    ),
    "integer embedding": (
        lambda f: _replace(f, "audio/joint", np.ones((N_ITEMS, D_JOINT), np.int32), "numeric-array")
        or f["audio/joint"].attrs.__setitem__("encoding-type", "embedding"),
        StoreDamaged, "dtype",
    ),
    "neither label nor label_matrix": (lambda f: f.__delitem__("items/label"), StoreDamaged, None),
    "provenance not JSON": (
        lambda f: f["provenance"].__setitem__((), "{not json"), StoreDamaged, "JSON"
    ),
}


def _external_link(f, path):
    other = path.with_name("other.h5")
    with h5py.File(other, "w") as g:
        g["joint"] = np.ones((N_ITEMS, D_JOINT), np.float32)
    del f["audio/joint"]
    f["audio/joint"] = h5py.ExternalLink(other.name, "/joint")


def _virtual(f, path):
    other = path.with_name("other.h5")
    with h5py.File(other, "w") as g:
        g["joint"] = np.ones((N_ITEMS, D_JOINT), np.float32)
    layout = h5py.VirtualLayout(shape=(N_ITEMS, D_JOINT), dtype=np.float32)
    layout[:] = h5py.VirtualSource(str(other), "joint", shape=(N_ITEMS, D_JOINT))
    attrs = dict(f["audio/joint"].attrs)
    del f["audio/joint"]
    ds = f["audio"].create_virtual_dataset("joint", layout)
    ds.attrs.update(attrs)


def _huge_unwritten(f, path):
    """(N_ITEMS, 2^22) float32, no chunk written: 80 MiB declared in a file of a few KiB."""
    del f["audio/joint"]
    ds = f["audio"].create_dataset("joint", shape=(N_ITEMS, 1 << 22), dtype=np.float32, chunks=(1, 1 << 16))
    tag(ds, "embedding")
    ds.attrs["sha256"] = "0" * 64


# Rules of section 1.3: refused by the reader (StoreDamaged) in every format version.
OBJECT_RULES = {
    "external link": (_external_link, "external link"),
    "soft link": (lambda f, p: f.__setitem__("audio/alias", h5py.SoftLink("/audio/joint")), "soft link"),
    "second name": (lambda f, p: f.__setitem__("audio/alias", f["audio/joint"]), "several names"),
    "virtual dataset": (_virtual, "virtual dataset"),
    "unwritten chunks": (_huge_unwritten, "declares"),
}


@pytest.mark.parametrize("rule", list(OBJECT_RULES))
@pytest.mark.parametrize("version", ["1.0.0", "1.1.0"])
def test_links_virtual_and_unwritten_data_are_refused_by_every_reader(tmp_path, rule, version):
    mutate, words = OBJECT_RULES[rule]
    path = tmp_path / "plain.h5"
    write_plain_store(path, version=version)
    with h5py.File(path, "r+") as f:
        mutate(f, path)
    with pytest.raises(StoreDamaged, match=words):
        open_store(path)
    report = verify_store(path)
    assert not report.ok and words in report.problems[0]


def test_a_huge_declared_array_is_refused_without_reading_it(tmp_path):
    """Memory bounded by the file, not by its header: verify and open stay small."""
    import subprocess
    import sys

    path = tmp_path / "plain.h5"
    write_plain_store(path)
    with h5py.File(path, "r+") as f:
        _huge_unwritten(f, path)
        del f["audio/joint"]
        ds = f["audio"].create_dataset("joint", shape=(N_ITEMS, 1 << 27), dtype=np.float32, chunks=(1, 1 << 16))
        tag(ds, "embedding")
    assert path.stat().st_size < 1 << 20  # 2.5 GiB declared
    child = (
        "import resource, sys\n"
        "from embedstore.store.verify import verify_store\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "report = verify_store(sys.argv[1])\n"
        "print(report.ok, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    done = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True, text=True, timeout=120)
    ok, growth_mib = done.stdout.split()
    assert ok == "False" and int(growth_mib) < 64, done.stdout + done.stderr


def _swap(f, a, b):
    f.move(a, a + "-tmp")
    f.move(b, a)
    f.move(a + "-tmp", b)


def test_swapped_prompt_sets_and_columns_are_caught_by_path_digests(tmp_path):
    path = tmp_path / "s.h5"
    write_with_embedstore(path, arrays())
    with edit_store(path) as w:
        w.add_prompt_set("track", ["x", "y", "z"], [0, 1, 2], {"joint": np.ones((3, D_JOINT))})
    assert verify_store(path).ok
    with h5py.File(path, "r+") as f:
        f["text/track/prompts"][()]  # same shapes: only the names change below
        f["text/ontology/prompts"][()]
        _swap(f, "text/track", "text/ontology")
        _swap(f, "items/metadata/pitch", "items/metadata/family")
    with open_store(path) as st:  # structurally sound: only the bindings tell
        assert st.prompt_set("track").prompts == arrays()["prompts"]
    report = verify_store(path)
    moved = sorted(p.split(":")[0] for p in report.problems)
    assert "/text/track/prompts" in moved and "/text/ontology/spaces/joint" in moved
    assert "/items/metadata/pitch" in moved and "/items/metadata/family" in moved
    assert all("moved, renamed or swapped" in p for p in report.problems)


def test_non_finite_vectors_fail_verify_even_with_a_recomputed_digest(tmp_path):
    path = tmp_path / "plain.h5"
    write_plain_store(path)
    with h5py.File(path, "r+") as f:
        ds = f["audio/joint"]
        values = ds[()]
        values[2, 3] = np.nan
        values[4, 0] = np.inf
        ds[...] = values
        digests(ds, digest_numeric(values))
    report = verify_store(path)
    assert [p.split(":")[0] for p in report.problems] == ["/audio/joint"]
    assert "2 non-finite values" in report.problems[0]


def test_a_format_1_0_store_verifies_with_a_note_and_is_upgraded_by_an_edit(tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    path = tmp_path / "old.h5"
    write_plain_store(path, version="1.0.0")
    with h5py.File(path, "r") as f:
        assert not any("path-sha256" in f[n].attrs for n in ("items/id", "audio/joint"))
    report = verify_store(path)
    assert report.ok and report.notes and "not names" in report.notes[0]
    result = CliRunner().invoke(app, ["verify", str(path)])
    assert result.exit_code == 0 and "note:" in result.output and "intact" in result.output
    with h5py.File(path, "r+") as f:  # a 1.0 store cannot tell a swap
        _swap(f, "items/metadata/pitch", "items/metadata/family")
    assert verify_store(path).ok
    with edit_store(path) as w:
        w.add_failed("x.wav", "too short")
    with h5py.File(path, "r") as f:
        assert f.attrs["encoding-version"] == "1.1.0"
        assert f["audio/joint"].attrs["path-sha256"] == path_digest("/audio/joint", f["audio/joint"].attrs["sha256"])
    with open_store(path) as st:
        assert [h["action"] for h in st.history][-3:] == ["edit", "upgrade", "add_failed"]
    report = verify_store(path)
    assert report.ok and not report.notes
    with h5py.File(path, "r+") as f:
        _swap(f, "items/metadata/pitch", "items/metadata/family")
    assert not verify_store(path).ok


@pytest.mark.parametrize("rule", list(VIOLATIONS))
def test_each_spec_violation_is_rejected_with_its_documented_error(tmp_path, rule):
    mutate, error, words = VIOLATIONS[rule]
    path = tmp_path / "plain.h5"
    write_plain_store(path)
    with h5py.File(path, "r+") as f:
        mutate(f)
    with pytest.raises(error) as info:
        open_store(path).close()
    if words:
        assert words in str(info.value)
    if error is StoreDamaged:  # verify reports damage (exit 1) instead of raising
        report = verify_store(path)
        assert not report.ok and report.problems[0] == str(info.value)
    else:  # not a store it can read (exit 2)
        with pytest.raises(error):
            verify_store(path)


def test_verify_finds_a_changed_value_and_a_flipped_bit(tmp_path):
    path = tmp_path / "plain.h5"
    write_plain_store(path)
    with h5py.File(path, "r+") as f:
        f["audio/joint"][0, 0] += 1.0  # valid chunk checksum, wrong content digest
    report = verify_store(path)
    assert [p.split(":")[0] for p in report.problems] == ["/audio/joint"]
    assert "SHA-256" in report.problems[0]

    write_plain_store(path)
    with h5py.File(path, "r") as f:
        offset = f["audio/prejoint"].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as fh:
        fh.seek(offset + 3)
        byte = fh.read(1)
        fh.seek(offset + 3)
        fh.write(bytes([byte[0] ^ 0x10]))
    report = verify_store(path)
    assert len(report.problems) == 1 and report.problems[0].startswith("/audio/prejoint: unreadable")


def test_verify_exit_codes(tmp_path):
    from typer.testing import CliRunner

    from cli.main import app

    runner = CliRunner()
    intact, damaged, not_store = tmp_path / "ok.h5", tmp_path / "bad.h5", tmp_path / "other.h5"
    write_plain_store(intact)
    write_plain_store(damaged)
    with h5py.File(damaged, "r+") as f:
        f["items/label"].attrs["sha256"] = "0" * 64
    with h5py.File(not_store, "w") as f:
        f["x"] = np.arange(3)
    assert runner.invoke(app, ["verify", str(intact)]).exit_code == 0
    assert runner.invoke(app, ["verify", str(damaged)]).exit_code == 1
    assert runner.invoke(app, ["verify", str(not_store)]).exit_code == 2
    (tmp_path / "text.h5").write_text("not hdf5")
    assert runner.invoke(app, ["verify", str(tmp_path / "text.h5")]).exit_code == 2


# -- section 7.2: the journal folder, read by hand ------------------------------------------


def test_unfinished_extraction_journal_is_as_documented(tmp_path):
    from embedstore.store.journal import Journal

    out = tmp_path / "run.h5"
    a = arrays()
    j = Journal.open(
        out,
        header=dict(model="m", dataset="d", classes=CLASSES, provenance={}),
        items=dict(ids=a["ids"], paths=a["paths"], labels=a["labels"]),
        spaces={"joint": D_JOINT},
    )
    j.append(0, [0, 2], {"joint": a["audio_joint"][[0, 2]]}, failed=[(1, "decode error")], stop=3)

    jdir = tmp_path / "run.h5.partial"
    assert sorted(p.name for p in jdir.iterdir()) == ["batch-000000000000.npz", "header.json"]
    header = json.loads((jdir / "header.json").read_text())
    assert {"model", "dataset", "classes", "provenance", "spaces", "items", "run_id"} <= set(header)
    assert header["spaces"] == {"joint": D_JOINT} and re.fullmatch(r"[0-9a-f]{32}", header["run_id"])
    assert header["items"]["ids"] == a["ids"] and header["items"]["labels"] == a["labels"].tolist()
    with np.load(jdir / "batch-000000000000.npz", allow_pickle=False) as z:
        assert set(z.files) == {"stop", "rows_ok", "failed_rows", "failed_reasons", "space/joint"}
        assert int(z["stop"]) == 3 and z["stop"].dtype == np.int64
        assert z["rows_ok"].tolist() == [0, 2] and z["failed_rows"].tolist() == [1]
        assert z["failed_reasons"].tolist() == ["decode error"]
        assert z["space/joint"].dtype == np.float32 and z["space/joint"].shape == (2, D_JOINT)
    assert not out.exists()
    with pytest.raises(StoreIncomplete, match=r"3 of 5 items done"):
        open_store(out)
