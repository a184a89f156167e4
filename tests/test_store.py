"""The store: round trips, consistency checks, integrity, atomic writes and resumable appends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from embedstore.errors import (
    InputError,
    NotAStore,
    StoreDamaged,
    StoreExists,
    StoreIncomplete,
    StoreTooNew,
)
from embedstore.store import create_store, edit_store, journal_dir, open_store
from embedstore.store.journal import Journal
from embedstore.store.verify import verify_store

ROOT = Path(__file__).resolve().parents[1]

CLASSES = ["violin", "flute", "oboe"]


def make_store(path, n=12, multilabel=False, dtype="float32", seed=0):
    rng = np.random.default_rng(seed)
    audio = {"joint": rng.standard_normal((n, 8)), "prejoint": rng.standard_normal((n, 16))}
    text = rng.standard_normal((4, 8))
    with create_store(path, model="toy", dataset="unit", classes=CLASSES, provenance={"checkpoint_sha256": "ab"}) as w:
        kw = (
            {"label_matrix": rng.integers(0, 2, (n, 3))}
            if multilabel
            else {"labels": np.arange(n) % 3}
        )
        w.set_items(
            [f"id{i}" for i in range(n)],
            [f"audio/{i}.wav" for i in range(n)],
            metadata={"family": ["strings", "winds", "winds"] * (n // 3), "pitch": np.arange(n) + 60},
            **kw,
        )
        for space, arr in audio.items():
            w.add_audio(space, arr, dtype=dtype)
        w.add_prompt_set("track", [f"A {c} track" for c in CLASSES] + ["A flute track"], [0, 1, 2, 1], {"joint": text})
        w.add_failed("audio/broken.wav", "zero-length file")
    return audio, text, kw


@pytest.mark.parametrize("multilabel", [False, True])
def test_round_trip(tmp_path, multilabel):
    path = tmp_path / "s.h5"
    audio, text, kw = make_store(path, multilabel=multilabel)
    with open_store(path) as st:
        assert st.model == "toy" and st.dataset == "unit"
        assert st.classes == CLASSES
        assert st.n_items == 12 and st.multilabel == multilabel
        assert list(st.item_ids[:2]) == ["id0", "id1"]
        assert st.item_paths[3] == "audio/3.wav"
        if multilabel:
            np.testing.assert_array_equal(st.label_matrix, kw["label_matrix"].astype(bool))
            with pytest.raises(InputError):
                st.labels
        else:
            np.testing.assert_array_equal(st.labels, kw["labels"])
            assert st.label_matrix.sum() == 12 and st.label_matrix[4, 1]
        assert st.metadata_columns == ["family", "pitch"]
        np.testing.assert_array_equal(st.metadata["pitch"], np.arange(12) + 60)
        assert st.metadata["family"][1] == "winds"
        assert st.audio_spaces == ["joint", "prejoint"]
        for space, arr in audio.items():
            np.testing.assert_array_equal(st.audio(space), arr.astype(np.float32))
        lazy = st.audio("joint", lazy=True)
        assert isinstance(lazy, h5py.Dataset) and lazy.chunks[1] == 8
        ps = st.prompt_set("track")
        assert ps.prompts[3] == "A flute track" and list(ps.classes) == [0, 1, 2, 1]
        np.testing.assert_array_equal(st.text("track", "joint"), text.astype(np.float32))
        assert st.failed == [("audio/broken.wav", "zero-length file")]
        assert st.provenance["checkpoint_sha256"] == "ab" and "numpy" in st.provenance["versions"]
        assert [e["action"] for e in st.history][:2] == ["create", "set_items"]
    assert verify_store(path).ok


def test_float16(tmp_path):
    path = tmp_path / "s.h5"
    audio, _, _ = make_store(path, dtype="float16")
    with open_store(path) as st:
        assert st.audio("joint", lazy=True).dtype == np.float16
        got = st.audio("joint")
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, audio["joint"].astype(np.float16).astype(np.float32))
    assert verify_store(path).ok


def test_float16_overflow_refused(tmp_path):
    with pytest.raises(InputError, match="overflows float16"):
        with create_store(tmp_path / "s.h5", model="m", dataset="d", classes=["a"]) as w:
            w.set_items(["x"], labels=[0])
            w.add_audio("joint", np.array([[1e6]]), dtype="float16")
    assert not (tmp_path / "s.h5").exists()


@pytest.mark.parametrize(
    "action, message",
    [
        (lambda w: w.add_audio("joint", np.ones((3, 4))), "3 rows for 12 items"),
        (lambda w: w.add_audio("joint", np.ones(12)), "2-D"),
        (lambda w: w.add_audio("joint", np.full((12, 2), np.nan)), "non-finite"),
        (lambda w: w.add_audio("joint", np.ones((12, 2))), "already has audio space"),
        (lambda w: w.add_prompt_set("track", ["x"], [0]), "already has prompt set"),
        (lambda w: w.add_prompt_set("new", ["x"], [7]), "class indices"),
        (lambda w: w.add_prompt_set("new", ["x", "y"], [0, 1], {"joint": np.ones((3, 2))}), "3 rows for 2 prompts"),
        (lambda w: w.add_audio("a/b", np.ones((12, 2))), "invalid space name"),
    ],
)
def test_bad_writes_are_refused_and_leave_the_store_intact(tmp_path, action, message):
    path = tmp_path / "s.h5"
    make_store(path)
    before = path.read_bytes()
    with pytest.raises((InputError, StoreExists), match=message):
        with edit_store(path) as w:
            action(w)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.h5"]  # no temp file left behind


def test_item_errors(tmp_path):
    def attempt(**kw):
        with create_store(tmp_path / "s.h5", model="m", dataset="d", classes=["a", "b"]) as w:
            w.set_items(**kw)

    with pytest.raises(InputError, match="unique"):
        attempt(ids=["x", "x"], labels=[0, 1])
    with pytest.raises(InputError, match="0..1"):
        attempt(ids=["x", "y"], labels=[0, 2])
    with pytest.raises(InputError, match="exactly one"):
        attempt(ids=["x"])
    with pytest.raises(InputError, match="shape"):
        attempt(ids=["x"], label_matrix=np.ones((1, 3)))
    with pytest.raises(InputError, match="metadata column"):
        attempt(ids=["x"], labels=[0], metadata={"pitch": [1, 2]})
    assert not (tmp_path / "s.h5").exists()
    with pytest.raises(InputError, match="unique"):
        create_store(tmp_path / "t.h5", model="m", dataset="d", classes=["a", "a"]).__enter__()


def test_replace_needs_a_flag_and_is_recorded(tmp_path):
    path = tmp_path / "s.h5"
    make_store(path)
    with pytest.raises(StoreExists):
        make_store(path)
    with edit_store(path) as w:
        w.add_prompt_set("track", ["only violin"], [0], {"joint": np.ones((1, 8))}, replace=True)
    with open_store(path) as st:
        assert st.prompt_set("track").prompts == ["only violin"]
        last = st.history[-1]
        assert last["action"] == "add_prompt_set" and last["replaced"] is True
        assert st.history[-2]["action"] == "edit"


def test_not_a_store(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(NotAStore):
        open_store(text)
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f["x"] = np.ones(3)
    with pytest.raises(NotAStore):
        open_store(plain)
    with pytest.raises(NotAStore):
        verify_store(plain)
    with pytest.raises(InputError, match="no such file"):
        open_store(tmp_path / "missing.h5")


def test_newer_major_version_is_refused(tmp_path):
    path = tmp_path / "s.h5"
    make_store(path)
    with h5py.File(path, "r+") as f:
        f.attrs["encoding-version"] = "2.0.0"
    with pytest.raises(StoreTooNew, match="upgrade embedstore"):
        open_store(path)
    with h5py.File(path, "r+") as f:
        f.attrs["encoding-version"] = "1.3.0"  # a newer minor version still reads
        f["audio/joint"].attrs["encoding-version"] = "9.0.0"
    with pytest.raises(StoreTooNew, match="/audio/joint"):
        open_store(path)


def reshape(f, name, data):
    """Replace a dataset by one of another shape, keeping its tags."""
    attrs = dict(f[name].attrs)
    del f[name]
    f[name] = data
    f[name].attrs.update(attrs)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: f["items/label"].__setitem__(0, 7), "outside"),
        (lambda f: f["audio"].move("joint", "gone") or f["audio/gone"].attrs.__setitem__("encoding-type", "bogus"), "tagged"),
        (lambda f: reshape(f, "audio/prejoint", np.ones((5, 3), np.float32)), "expected 12 rows"),
        (lambda f: reshape(f, "items/path", np.array(["a", "b"], dtype=object)), "2 rows"),
        (lambda f: f.__delitem__("items"), "missing /items"),
        (lambda f: f["text/track/class"].__setitem__(0, 9), "class indices"),
    ],
)
def test_inconsistent_stores_are_detected(tmp_path, damage, message):
    path = tmp_path / "s.h5"
    make_store(path)
    with h5py.File(path, "r+") as f:
        damage(f)
    with pytest.raises(StoreDamaged, match=message):
        open_store(path)
    assert not verify_store(path).ok


def test_verify_catches_a_flipped_byte_in_an_embedding_chunk(tmp_path):
    path = tmp_path / "s.h5"
    make_store(path)
    with h5py.File(path, "r") as f:
        offset = f["audio/prejoint"].id.get_chunk_info(0).byte_offset
    data = bytearray(path.read_bytes())
    data[offset + 17] ^= 0x01
    path.write_bytes(bytes(data))
    report = verify_store(path)
    assert not report.ok
    assert "/audio/prejoint" in report.problems[0]


def test_verify_catches_a_changed_value_with_valid_checksums(tmp_path):
    # Rewriting a value through HDF5 keeps fletcher32 happy; the digest still differs.
    path = tmp_path / "s.h5"
    make_store(path)
    with h5py.File(path, "r+") as f:
        f["audio/joint"][3, 2] += 1.0
    problems = verify_store(path).problems
    assert problems == ["/audio/joint: content differs from its recorded SHA-256"]


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.02])
def test_verify_catches_truncation(tmp_path, keep):
    path = tmp_path / "s.h5"
    make_store(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    report = verify_store(path)
    assert not report.ok and "truncated" in report.problems[0]


def test_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "s.h5"
    with pytest.raises(RuntimeError):
        with create_store(path, model="m", dataset="d", classes=["a"]) as w:
            w.set_items(["x"], labels=[0])
            raise RuntimeError("simulated crash")
    assert list(tmp_path.iterdir()) == []


def test_writer_refuses_an_incomplete_store(tmp_path):
    with pytest.raises(InputError, match="items table"):
        with create_store(tmp_path / "s.h5", model="m", dataset="d", classes=["a"]):
            pass
    assert list(tmp_path.iterdir()) == []


# -- the resumable journal ------------------------------------------------------------

JOURNAL_SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from embedstore.store.journal import Journal

    import embedstore.store.journal as journal_module

    out, resume, slow, hold_at = sys.argv[1], sys.argv[2] == "1", float(sys.argv[3]), int(sys.argv[4])
    real_write_atomic = journal_module.write_atomic

    def write_atomic(path, write):
        # From row hold_at on, stop halfway through writing a batch file and wait for the kill.
        if hold_at >= 0 and path.name.startswith("batch-") and int(path.stem.split("-")[1]) >= hold_at:
            def half_then_wait(fh):
                write(fh)
                fh.truncate(fh.tell() // 2)
                fh.flush()
                os.fsync(fh.fileno())
                print("mid-append", flush=True)
                time.sleep(600)
            return real_write_atomic(path, half_then_wait)
        return real_write_atomic(path, write)

    journal_module.write_atomic = write_atomic
    n = 300
    vectors = np.random.default_rng(7).standard_normal((n, 6)).astype(np.float32)
    j = Journal.open(
        out,
        header=dict(model="toy", dataset="unit", classes=["a", "b", "c"], provenance={"checkpoint_sha256": "ab"}),
        items=dict(ids=[f"i{i}" for i in range(n)], paths=[f"p{i}.wav" for i in range(n)],
                   labels=[i % 3 for i in range(n)], metadata={"pitch": list(range(n))}),
        spaces={"joint": 6},
        resume=resume,
    )
    while not j.already_done and not j.complete:
        start = j.next_row
        stop = min(n, start + 7)
        ok = [r for r in range(start, stop) if r % 50 != 13]
        failed = [(r, "silent clip") for r in range(start, stop) if r % 50 == 13]
        j.append(start, ok, {"joint": vectors[ok]}, failed=failed, stop=stop)
        print(stop, flush=True)
        time.sleep(slow)
    if not j.already_done:
        j.finalize([dict(name="track", prompts=["a", "b", "c"], classes=[0, 1, 2], embeddings={"joint": vectors[:3]})])
    print("finished", flush=True)
    """
)


def run_journal(tmp_path, out, resume, slow=0.0, kill_mid_append_at=None):
    """Run the journal script; with ``kill_mid_append_at``, SIGKILL it while the batch
    starting at or after that row is half written."""
    script = tmp_path / "journal_writer.py"
    script.write_text(JOURNAL_SCRIPT)
    hold_at = -1 if kill_mid_append_at is None else kill_mid_append_at
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out), "1" if resume else "0", str(slow), str(hold_at)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    if kill_mid_append_at is None:
        out_text, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        return out_text
    for line in proc.stdout:
        if line.strip() == "mid-append":
            os.kill(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the writer finished before its kill"
    return None


def store_content(path):
    with open_store(path) as st:
        return (
            list(st.item_ids),
            st.labels.tolist(),
            st.audio("joint").tobytes(),
            st.failed,
            st.metadata["pitch"].tolist(),
            st.text("track", "joint").tobytes(),
        )


def test_journal_killed_mid_append_resumes_to_the_same_content(tmp_path):
    reference = tmp_path / "reference.h5"
    run_journal(tmp_path, reference, resume=False)
    out = tmp_path / "killed.h5"
    run_journal(tmp_path, out, resume=False, kill_mid_append_at=50)
    assert journal_dir(out).is_dir() and not out.exists()
    # the kill landed inside an append: its half-written batch is on disk under a temp name
    assert [p for p in journal_dir(out).iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(StoreIncomplete, match="56 of 300 items done"):
        open_store(out)
    run_journal(tmp_path, out, resume=True, kill_mid_append_at=150)
    run_journal(tmp_path, out, resume=True)
    assert not journal_dir(out).exists()
    assert store_content(out) == store_content(reference)
    assert verify_store(out).ok
    with open_store(out) as st:
        assert st.n_items == 294 and len(st.failed) == 6 and st.failed[0] == ("p13.wav", "silent clip")


def test_journal_needs_resume_flag_and_same_run(tmp_path):
    out = tmp_path / "s.h5"
    header = dict(model="toy", dataset="unit", classes=["a"], provenance={})
    items = dict(ids=["x", "y"], paths=["x.wav", "y.wav"], labels=[0, 0])
    j = Journal.open(out, header=header, items=items, spaces={"joint": 2})
    j.append(0, [0], {"joint": np.ones((1, 2))}, stop=1)
    with pytest.raises(StoreExists, match="--resume"):
        Journal.open(out, header=header, items=items, spaces={"joint": 2})
    with pytest.raises(InputError, match="different items"):
        Journal.open(out, header=header, items=dict(items, ids=["x", "z"]), spaces={"joint": 2}, resume=True)
    with pytest.raises(InputError, match="expects row 1"):
        Journal.open(out, header=header, items=items, spaces={"joint": 2}, resume=True).append(0, [0], {"joint": np.ones((1, 2))})
    resumed = Journal.open(out, header=header, items=items, spaces={"joint": 2}, resume=True)
    assert resumed.next_row == 1
    resumed.append(1, [1], {"joint": np.zeros((1, 2))})
    resumed.finalize()
    with open_store(out) as st:
        np.testing.assert_array_equal(st.audio("joint"), [[1, 1], [0, 0]])


def test_kill_after_final_rename_is_recognised(tmp_path):
    # Simulate a kill between renaming the store into place and removing the journal.
    out = tmp_path / "s.h5"
    header = dict(model="toy", dataset="unit", classes=["a"], provenance={})
    items = dict(ids=["x"], paths=["x.wav"], labels=[0])
    j = Journal.open(out, header=header, items=items, spaces={"joint": 2})
    j.append(0, [0], {"joint": np.ones((1, 2))})
    saved = {p.name: p.read_bytes() for p in journal_dir(out).iterdir()}
    j.finalize()
    journal_dir(out).mkdir()
    for name, data in saved.items():
        (journal_dir(out) / name).write_bytes(data)
    again = Journal.open(out, header=header, items=items, spaces={"joint": 2}, resume=True)
    assert again.already_done and not journal_dir(out).exists()
    assert verify_store(out).ok


def test_resume_removes_the_temp_file_of_a_killed_final_write(tmp_path):
    out = tmp_path / "s.h5"
    header = dict(model="toy", dataset="unit", classes=["a"], provenance={})
    items = dict(ids=["x"], paths=["x.wav"], labels=[0])
    j = Journal.open(out, header=header, items=items, spaces={"joint": 2})
    j.append(0, [0], {"joint": np.ones((1, 2))})
    stale = tmp_path / ".s.h5.0123abcd.tmp"  # what a kill inside create_store leaves
    stale.write_bytes(b"half a store")
    other = tmp_path / ".t.h5.0123abcd.tmp"  # another store's: not ours to touch
    other.write_bytes(b"x")
    Journal.open(out, header=header, items=items, spaces={"joint": 2}, resume=True).finalize()
    assert not stale.exists() and other.exists()
    assert verify_store(out).ok
