"""The extraction pipeline: batching, pooling, bad clips, determinism, resume, extract-text."""

import h5py
import numpy as np
import pytest

pytest.importorskip("torch")

import torch  # noqa: E402

from embedstore.errors import InputError  # noqa: E402
from embedstore.extract import embed_clips, pool_windows  # noqa: E402
from embedstore.extract.feeding import groups_from_clips  # noqa: E402


class RecordingModel:
    """Row-wise 'model' that keeps every batch it was given."""

    def __init__(self):
        self.batches = []

    def forward(self, batch):
        """The pipeline's entry: a tensor batch in, tensors out."""
        return {space: torch.from_numpy(vec) for space, vec in self(batch.numpy()).items()}

    def __call__(self, batch):
        self.batches.append(batch.copy())
        pre = np.stack([batch.sum(1), batch.max(1), batch.min(1)], axis=1)
        joint = pre / np.maximum(np.linalg.norm(pre, axis=1, keepdims=True), 1e-12)
        return {"prejoint": pre.astype(np.float32), "joint": joint.astype(np.float32)}


def fake_clips(window_counts, start=0, n=8, failed=()):
    """Clip r has window_counts[r] windows filled with distinct values (None for failed rows)."""
    clips = []
    for row in range(start, len(window_counts)):
        if row in failed:
            clips.append((row, None, f"broken {row}"))
            continue
        k = window_counts[row]
        windows = (np.arange(k * n, dtype=np.float32).reshape(k, n) + 100 * row) / 1000
        clips.append((row, windows, ""))
    return clips


def run(window_counts, batch_size, start=0, failed=()):
    model = RecordingModel()
    chunks = list(embed_clips(model.forward, groups_from_clips(fake_clips(window_counts, start, failed=failed)),
                              batch_size, start))
    return model, chunks


def test_every_forward_pass_has_exactly_batch_size_windows():
    model, _ = run([1, 3, 2, 5, 1, 1, 4], batch_size=4)
    assert sum(map(len, model.batches)) == 20  # 17 windows, the last batch padded by 3
    assert all(b.shape == (4, 8) for b in model.batches)
    np.testing.assert_array_equal(model.batches[-1][1:], 0)


def test_chunks_are_contiguous_and_end_on_clip_boundaries():
    counts = [1, 3, 2, 5, 1, 1, 4, 2, 2]
    _, chunks = run(counts, batch_size=4, failed={2, 5})
    assert chunks[0].start == 0 and chunks[-1].stop == len(counts)
    for before, after in zip(chunks, chunks[1:]):
        assert before.stop == after.start
    rows_ok = [r for c in chunks for r in c.rows_ok]
    failed = [r for c in chunks for r, _ in c.failed]
    assert rows_ok == [0, 1, 3, 4, 6, 7, 8]
    assert failed == [2, 5]
    assert [reason for c in chunks for _, reason in c.failed] == ["broken 2", "broken 5"]
    # Cumulative windows at each chunk end are whole batches (the last chunk excepted).
    ends = np.cumsum([0 if r in (2, 5) else counts[r] for r in range(len(counts))])
    for chunk in chunks[:-1]:
        assert ends[chunk.stop - 1] % 4 == 0


def test_pooled_vectors_are_window_means_with_joint_renormalised():
    counts = [3, 1, 2]
    model, chunks = run(counts, batch_size=2)
    vectors = {space: np.concatenate([np.stack(c.vectors[space]) for c in chunks]) for space in ("prejoint", "joint")}
    for row, windows, _ in fake_clips(counts):
        direct = model(windows)
        np.testing.assert_allclose(vectors["prejoint"][row], direct["prejoint"].mean(0), rtol=1e-6)
        mean_joint = direct["joint"].mean(0)
        np.testing.assert_allclose(vectors["joint"][row], mean_joint / np.linalg.norm(mean_joint), rtol=1e-6)
        assert np.linalg.norm(vectors["joint"][row]) == pytest.approx(1.0, abs=1e-6)


def test_a_single_window_is_kept_exactly():
    window = {"joint": np.array([0.6, 0.8], np.float32), "prejoint": np.array([3.0, -1.0], np.float32)}
    pooled = pool_windows([window])
    for space in window:
        np.testing.assert_array_equal(pooled[space], window[space])


def test_restarting_at_a_chunk_boundary_sends_the_same_batches():
    counts = [2, 1, 3, 1, 1, 2, 4, 1, 3, 2, 1]
    full_model, full = run(counts, batch_size=3, failed={4})
    assert len(full) > 3
    for chunk in full[1:]:
        resumed_model, resumed = run(counts, batch_size=3, start=chunk.start, failed={4})
        windows_before = sum(counts[r] for r in range(chunk.start) if r != 4)
        assert windows_before % 3 == 0
        tail = full_model.batches[windows_before // 3:]
        assert len(tail) == len(resumed_model.batches)
        for a, b in zip(tail, resumed_model.batches):
            np.testing.assert_array_equal(a, b)
        assert [(c.start, c.stop, c.rows_ok) for c in resumed] == [
            (c.start, c.stop, c.rows_ok) for c in full if c.start >= chunk.start]


class WindowByWindow:
    """A clip's windows as a sized iterable that hands them out one at a time (as a long
    clip decoded window by window does)."""

    def __init__(self, windows):
        self.windows = windows

    def __len__(self):
        return len(self.windows)

    def __iter__(self):
        return (window.copy() for window in self.windows)


def test_a_clip_read_window_by_window_gives_the_same_batches_and_rows():
    counts = [2, 5, 1, 3, 4]
    model, chunks = run(counts, batch_size=3, failed={2})
    streamed_model = RecordingModel()
    clips = [(row, WindowByWindow(w) if w is not None and len(w) > 2 else w, why)
             for row, w, why in fake_clips(counts, failed={2})]
    streamed = list(embed_clips(streamed_model.forward, groups_from_clips(clips), 3))
    assert len(model.batches) == len(streamed_model.batches)
    for a, b in zip(model.batches, streamed_model.batches):
        np.testing.assert_array_equal(a, b)
    assert [(c.start, c.stop, c.rows_ok, c.failed) for c in chunks] == [
        (c.start, c.stop, c.rows_ok, c.failed) for c in streamed]
    for a, b in zip(chunks, streamed):
        for space in a.vectors:
            np.testing.assert_array_equal(np.stack(a.vectors[space]), np.stack(b.vectors[space]))


def test_clips_out_of_order_are_refused():
    clips = fake_clips([1, 1, 1])
    with pytest.raises(InputError, match="out of order"):
        list(embed_clips(RecordingModel().forward, groups_from_clips([clips[0], clips[2]]), 2))


# ---------------------------------------------------------------- end to end, with a real encoder

import soundfile as sf  # noqa: E402
from extract_encoder import TinyEncoder, save_checkpoint  # noqa: E402

from embedstore.datasets import load_dataset  # noqa: E402
from embedstore.errors import StoreExists  # noqa: E402
from embedstore.extract import add_prompt_sets, run_extract  # noqa: E402
from embedstore.extract.audio import prepare  # noqa: E402
from embedstore.extract.prompts import build_prompt_set  # noqa: E402
from embedstore.store import open_store  # noqa: E402

SR = 22050
BAD = {"broken.wav": "not decodable", "empty.wav": "empty file", "nan.wav": "non-finite"}


def write_clips(root, n_good=10):
    """Sines of different pitch and length (one long, multi-window clip), three bad files."""
    rows = []
    for i in range(n_good):
        seconds = 1.3 if i == 3 else 0.2 + 0.03 * i
        t = np.arange(int(SR * seconds)) / SR
        audio = 0.3 * np.sin(2 * np.pi * (220 + 60 * i) * t) + 0.05 * np.sin(2 * np.pi * 3000 * t * (i % 3))
        name = f"tone{i:02d}.wav"
        sf.write(root / name, audio.astype(np.float32), SR)
        rows.append((name, "low" if i % 2 else "high;loud" if i == 4 else "high", i))
    (root / "broken.wav").write_bytes(b"RIFF....WAVEfmt this is not audio")
    (root / "empty.wav").write_bytes(b"")
    nan = np.full(2000, np.nan, dtype=np.float32)
    sf.write(root / "nan.wav", nan, SR, subtype="FLOAT")
    rows[5:5] = [("broken.wav", "low", 100), ("empty.wav", "high", 101)]
    rows.append(("nan.wav", "low", 102))
    lines = ["path,label,take"] + [f"{p},{lab},{take}" for p, lab, take in rows]
    (root / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return write_clips(tmp_path_factory.mktemp("clips"))


@pytest.fixture(scope="module")
def dataset(clip_folder):
    return load_dataset("folder", clip_folder)


def extract(dataset, out, model=None, **kwargs):
    model = model or TinyEncoder()
    specs = [build_prompt_set(name, dataset.classes) for name in ("track", "ontology")]
    kwargs = {"batch_size": 4, "long_mode": "mean", **kwargs}
    return run_extract(model, dataset, specs, out, command=["test"], **kwargs)


def read_store(path):
    with open_store(path) as st:
        return dict(
            ids=list(st.item_ids), failed=list(st.failed), spaces=st.audio_spaces,
            audio={s: st.audio(s) for s in st.audio_spaces}, labels=st.label_matrix,
            sets=st.prompt_sets, provenance=st.provenance, take=st.metadata["take"],
            text={(n, s): st.text(n, s) for n in st.prompt_sets for s in st.prompt_set(n).spaces},
        )


def test_extract_writes_every_good_clip_and_records_the_bad_ones(dataset, tmp_path):
    summary = extract(dataset, tmp_path / "s.h5", workers=2)
    store = read_store(tmp_path / "s.h5")
    good = [item for item in dataset.items if item.id not in BAD]
    assert summary.items == len(good) == 10
    assert store["ids"] == [item.id for item in good]
    assert sorted(p for p, _ in store["failed"]) == sorted(BAD)
    for path, reason in store["failed"]:
        assert BAD[path] in reason
    assert len(summary.failed) == 3
    assert store["spaces"] == ["joint", "prejoint"]
    assert store["audio"]["prejoint"].shape == (10, 24) and store["audio"]["joint"].shape == (10, 16)
    np.testing.assert_allclose(np.linalg.norm(store["audio"]["joint"], axis=1), 1.0, rtol=1e-5)
    # Labels and metadata follow the items, bad rows left out.
    expected = dataset.label_matrix()[[i for i, item in enumerate(dataset.items) if item.id not in BAD]]
    np.testing.assert_array_equal(store["labels"], expected)
    np.testing.assert_array_equal(store["take"], np.arange(10))


def test_vectors_equal_the_model_on_each_clip_alone(dataset, tmp_path):
    extract(dataset, tmp_path / "s.h5")
    store = read_store(tmp_path / "s.h5")
    model = TinyEncoder()
    for row, item_id in enumerate(store["ids"]):
        windows = prepare(dataset.root / item_id, sample_rate=model.sample_rate,
                          window_seconds=model.window_seconds, long_mode="mean", int16=False)
        assert len(windows) == (3 if item_id == "tone03.wav" else 1)
        direct = model.embed_audio(windows)
        mean_joint = direct["joint"].mean(0)
        np.testing.assert_allclose(store["audio"]["prejoint"][row], direct["prejoint"].mean(0),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(store["audio"]["joint"][row], mean_joint / np.linalg.norm(mean_joint),
                                   rtol=1e-5, atol=1e-6)


def test_prompt_sets_and_provenance_are_stored(dataset, tmp_path):
    extract(dataset, tmp_path / "s.h5")
    store = read_store(tmp_path / "s.h5")
    model = TinyEncoder()
    assert store["sets"] == ["ontology", "track"]
    direct = model.embed_text(["A high track", "A loud track", "A low track"])
    for space in ("joint", "prejoint"):
        np.testing.assert_allclose(store["text"][("track", space)], direct[space], rtol=1e-6)
    with open_store(tmp_path / "s.h5") as st:
        onto = st.prompt_set("ontology")
        assert onto.terms[0] == "instrument" and (np.asarray(onto.classes) == -1).all()
    prov = store["provenance"]
    assert prov["checkpoint_sha256"] == model.checkpoint["sha256"]
    assert prov["encoder"]["name"] == "test-tiny"
    assert prov["frontend"]["sample_rate"] == 16000 and prov["frontend"]["long_mode"] == "mean"
    assert prov["extraction"]["batch_size"] == 4
    assert prov["library_versions"]["torch"] and prov["library_versions"]["soxr"]
    assert prov["versions"]["numpy"]  # the store's own record of the core libraries
    assert prov["dataset"] == {"name": "folder", "root": dataset.root.name, "items": 13,
                               "source": "embedstore", "subset": ""}


def test_same_input_and_weights_give_the_same_store_content(dataset, tmp_path):
    extract(dataset, tmp_path / "a.h5", workers=0)
    extract(dataset, tmp_path / "b.h5", workers=2)
    a, b = read_store(tmp_path / "a.h5"), read_store(tmp_path / "b.h5")
    for space in a["audio"]:
        np.testing.assert_array_equal(a["audio"][space], b["audio"][space])
    for key in a["text"]:
        np.testing.assert_array_equal(a["text"][key], b["text"][key])
    assert a["ids"] == b["ids"] and a["failed"] == b["failed"]


def test_batch_size_changes_vectors_by_float_noise_only(dataset, tmp_path):
    extract(dataset, tmp_path / "a.h5", batch_size=1)
    extract(dataset, tmp_path / "b.h5", batch_size=7)
    a, b = read_store(tmp_path / "a.h5"), read_store(tmp_path / "b.h5")
    for space in a["audio"]:
        np.testing.assert_allclose(a["audio"][space], b["audio"][space], rtol=1e-5, atol=1e-6)


def test_existing_store_needs_overwrite(dataset, tmp_path):
    extract(dataset, tmp_path / "s.h5")
    with pytest.raises(StoreExists):
        extract(dataset, tmp_path / "s.h5")
    extract(dataset, tmp_path / "s.h5", overwrite=True, long_mode="first")
    assert read_store(tmp_path / "s.h5")["provenance"]["extraction"]["long_mode"] == "first"


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch-size"),
    ({"workers": -1}, "workers"),
    ({"long_mode": "last"}, "--long"),
])
def test_bad_settings_fail_before_writing(dataset, tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        extract(dataset, tmp_path / "s.h5", **kwargs)
    assert not list(tmp_path.iterdir())


def test_add_prompt_sets_checks_the_checkpoint(dataset, tmp_path):
    ckpt_a = save_checkpoint(tmp_path / "a.safetensors", seed=1)
    ckpt_b = save_checkpoint(tmp_path / "b.safetensors", seed=2)
    store = tmp_path / "s.h5"
    extract(dataset, store, model=TinyEncoder(str(ckpt_a)))
    recording = build_prompt_set("recording", dataset.classes)
    with pytest.raises(InputError, match="checkpoint sha256"):
        add_prompt_sets(store, TinyEncoder(str(ckpt_b)), [recording])
    assert read_store(store)["sets"] == ["ontology", "track"]
    model = TinyEncoder(str(ckpt_a))
    assert add_prompt_sets(store, model, [recording]) == ["ontology", "recording", "track"]
    np.testing.assert_allclose(read_store(store)["text"][("recording", "joint")],
                               model.embed_text(recording.prompts)["joint"], rtol=1e-6)
    with pytest.raises(StoreExists, match="--replace"):
        add_prompt_sets(store, model, [build_prompt_set("track", dataset.classes)])
    lorem = build_prompt_set("lorem", dataset.classes)
    lorem.name = "track"
    add_prompt_sets(store, model, [lorem], replace=True)
    with open_store(store) as st:
        assert st.prompt_set("track").prompts == lorem.prompts


# ---------------------------------------------------------------- the commands

import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ENTRY = Path(os.environ.get("EXTRACT_ENTRY", Path(__file__).with_name("extract_encoder.py")))


@pytest.fixture
def cli(monkeypatch):
    """Run ``embedstore`` in this process, with the test encoder registered."""
    import extract_encoder
    from typer.testing import CliRunner

    from embedstore import models

    monkeypatch.setitem(models.MODELS, extract_encoder.NAME, extract_encoder.load_tiny)
    from cli.main import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def start_process(*args, delay):
    """``embedstore`` in a separate process that a test can kill; audio batches slowed by ``delay``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(ENTRY.parent)]),
           "EXTRACT_TEST_DELAY": str(delay)}
    return subprocess.Popen([sys.executable, str(ENTRY), *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_after_batches(proc, journal, batches: int) -> None:
    """``kill -9`` the extraction ``proc`` once its journal holds ``batches`` batch files."""
    deadline = time.monotonic() + 120
    while len(list(journal.glob("batch-*.npz"))) < batches:
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()


def extract_args(root, out, *extra):
    return ["extract", "--model", "test-tiny", "--dataset", "folder", "--root", root, "--out", out,
            "--batch-size", "2", "--workers", "2", "--prompts", "track", *extra]


def _strings(value):
    """Every string inside a JSON-like value (a host name can be a common word: match whole values)."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_a_store_records_no_private_path_host_or_user_unless_asked(cli, clip_folder, tmp_path):
    import getpass
    import json
    import socket

    out = tmp_path / "out" / "s.h5"
    out.parent.mkdir()
    assert cli(*extract_args(clip_folder, out)).exit_code == 0
    with h5py.File(out, "r") as f:  # every string in the file: provenance, history, item paths
        text = json.dumps([f["provenance"].asstr()[()], list(f["history"].asstr()[()]),
                           list(f["items/path"].asstr()[()]), list(f["failed/path"].asstr()[()])])
    assert str(tmp_path) not in text and str(clip_folder.parent) not in text
    with open_store(out) as st:
        values = set(_strings([st.provenance, st.history]))
        assert "host" not in st.provenance and "user" not in st.provenance
        assert socket.gethostname() not in values and getpass.getuser() not in values
        assert st.provenance["dataset"]["root"] == clip_folder.name
        assert all(not p.startswith("/") for p in st.item_paths)
    assert cli(*extract_args(clip_folder, out, "--overwrite", "--record-host")).exit_code == 0
    with open_store(out) as st:
        assert st.provenance["record_host"] is True and st.provenance["host"] == socket.gethostname()
        assert st.provenance["dataset"]["root_path"] == str(clip_folder)


def test_resume_after_kill_9_gives_the_uninterrupted_vectors(cli, clip_folder, tmp_path):
    import shutil

    full = cli(*extract_args(clip_folder, tmp_path / "full.h5"))
    assert full.exit_code == 0, full.output
    assert "failed" in full.stdout and "skipped broken.wav" in full.stdout

    out = tmp_path / "killed.h5"
    journal = tmp_path / "killed.h5.partial"
    # the first rows are journaled at once, the rest on the journal's time budget
    kill_after_batches(start_process(*extract_args(clip_folder, out), delay=0.5), journal, 2)
    assert not out.exists()
    shutil.copytree(journal, tmp_path / "smaller.h5.partial")  # the same killed run, twice

    again = cli(*extract_args(clip_folder, out))
    assert again.exit_code == 1
    assert "--resume" in again.stderr
    changed = cli(*extract_args(clip_folder, out, "--resume", "--long", "first"))
    assert changed.exit_code == 1 and "another --long" in changed.stderr

    resumed = cli(*extract_args(clip_folder, out, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert "resumed at row" in resumed.stdout
    a, b = read_store(tmp_path / "full.h5"), read_store(out)
    assert a["ids"] == b["ids"] and a["failed"] == b["failed"]
    for space in a["audio"]:
        np.testing.assert_array_equal(a["audio"][space], b["audio"][space])
    assert not journal.exists()
    assert b["provenance"]["resumed"] >= 2 and "resumed" not in a["provenance"]
    assert "batch_size_changes" not in b["provenance"]["extraction"]

    # A smaller batch size (after running out of device memory) continues the run; the
    # vectors then differ by rounding at most, and the change is recorded.
    smaller = cli(*extract_args(clip_folder, tmp_path / "smaller.h5", "--resume", "--batch-size", "1"))
    assert smaller.exit_code == 0, smaller.output
    c = read_store(tmp_path / "smaller.h5")
    assert c["ids"] == a["ids"] and c["failed"] == a["failed"]
    for space in a["audio"]:
        np.testing.assert_allclose(c["audio"][space], a["audio"][space], rtol=1e-5, atol=1e-6)
    resumed_at = c["provenance"]["resumed"]
    assert c["provenance"]["extraction"]["batch_size_changes"] == [{"row": resumed_at, "from": 2, "to": 1}]


def test_command_errors_are_one_line(cli, clip_folder, tmp_path):
    for args, message in [
        (extract_args(clip_folder, tmp_path / "s.h5", "--prompts", "nope"), "unknown prompt set 'nope'"),
        (extract_args(tmp_path / "missing", tmp_path / "s.h5"), "does not exist"),
        (extract_args(clip_folder, tmp_path / "s.h5", "--long", "last"), "--long"),
        (extract_args(clip_folder, tmp_path / "s.h5", "--model", "no-such-model"), "no-such-model"),
        (["extract-text", tmp_path / "none.h5", "--prompts", "track"], "none.h5"),
    ]:
        result = cli(*args)
        assert result.exit_code != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not (tmp_path / "s.h5").exists()


def test_extract_text_command_checks_the_weights(cli, clip_folder, tmp_path):
    ckpt_a = save_checkpoint(tmp_path / "a.safetensors", seed=1)
    ckpt_b = save_checkpoint(tmp_path / "b.safetensors", seed=2)
    store = tmp_path / "s.h5"
    made = cli(*extract_args(clip_folder, store, "--checkpoint", ckpt_a))
    assert made.exit_code == 0, made.output
    wrong = cli("extract-text", store, "--prompts", "solo", "--checkpoint", ckpt_b)
    assert wrong.exit_code == 1 and "checkpoint sha256" in wrong.stderr
    prompts = tmp_path / "mine.json"
    prompts.write_text('{"high": "a high tone", "low": ["a low tone", "a deep hum"], "loud": "noise"}')
    added = cli("extract-text", store, "--prompts", prompts, "--prompts", "solo", "--checkpoint", ckpt_a)
    assert added.exit_code == 0, added.output
    with open_store(store) as st:
        assert st.prompt_sets == ["mine", "solo", "track"]
        assert st.prompt_set("mine").prompts == ["a high tone", "a low tone", "a deep hum", "noise"]
    again = cli("extract-text", store, "--prompts", "solo", "--checkpoint", ckpt_a)
    assert again.exit_code != 0 and "--replace" in again.stderr


def test_real_clap_architecture_through_the_pipeline(tmp_path):
    """HTSAT-tiny with random weights, loaded by the registry, through run_extract (~30 s on CPU)."""
    import clap_fixtures

    from embedstore.models import load_model

    clap_fixtures.import_laion_clap()
    tokenizer = clap_fixtures.write_tokenizer(tmp_path / "tokenizer")
    checkpoint = clap_fixtures.write_clap_checkpoint(
        clap_fixtures.build_laion_clap("HTSAT-tiny", tokenizer), tmp_path / "tiny.pt")
    with pytest.warns(UserWarning, match="not the published"):
        model = load_model("clap-music", checkpoint=checkpoint, tokenizer=tokenizer)
    folder = tmp_path / "clips"
    folder.mkdir()
    data = load_dataset("folder", write_clips(folder, n_good=3))
    summary = run_extract(model, data, [build_prompt_set("track", data.classes)], tmp_path / "s.h5",
                          batch_size=2, long_mode="first")
    assert summary.items == 3 and len(summary.failed) == 3
    store = read_store(tmp_path / "s.h5")
    assert store["audio"]["prejoint"].shape == (3, 768) and store["audio"]["joint"].shape == (3, 512)
    windows = np.concatenate([prepare(folder / item_id, sample_rate=48000, window_seconds=10.0,
                                      long_mode="first", int16=True) for item_id in store["ids"]])
    direct = model.embed_audio(windows)
    for space in ("joint", "prejoint"):
        np.testing.assert_allclose(store["audio"][space], direct[space], rtol=1e-4, atol=1e-5)
    assert store["provenance"]["checkpoint_sha256"] == model.provenance()["checkpoint"]["sha256"]


def test_missing_torch_gives_the_install_hint(cli, clip_folder, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    result = cli(*extract_args(clip_folder, tmp_path / "s.h5"))
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: install the extract extra: pip install 'embedstore[extract]'"


def test_decoding_workers_start_before_the_first_group_is_asked_for(dataset):
    import multiprocessing

    from embedstore.extract.pipeline import read_clips

    before = set(multiprocessing.active_children())
    groups = read_clips(dataset, 0, TinyEncoder(), long_mode="mean", workers=1, batch_size=4)
    assert set(multiprocessing.active_children()) - before  # decoding while the text tower runs
    rows = [row for group in groups for row in group.rows]
    assert rows == list(range(len(dataset.items)))


def test_item_captions_become_a_caption_set_tied_to_the_kept_items(dataset, tmp_path):
    """A dataset whose items carry captions (Item.captions): extract writes the caption set
    ``captions``, each caption tied to its item's row; captions of failed clips are dropped."""
    import dataclasses

    from analyses.embeddings import class_prompt_sets
    from analyses.retrieval import run_retrieval

    items = [dataclasses.replace(item, captions=tuple(f"{item.id} take {k}" for k in range(1 + i % 3)))
             for i, item in enumerate(dataset.items)]
    captioned = dataclasses.replace(dataset, items=items)
    extract(captioned, tmp_path / "s.h5")
    model = TinyEncoder()
    with open_store(tmp_path / "s.h5") as st:
        ps = st.prompt_set("captions")
        ids = list(st.item_ids)
        assert ps.source.startswith("captions of the") and (ps.classes == -1).all()
        want = [(c, item.id) for item in items if item.id in ids for c in item.captions]
        assert [(p, ids[row]) for p, row in zip(ps.prompts, ps.items)] == want
        assert not any(p.startswith(bad) for p in ps.prompts for bad in BAD)
        np.testing.assert_allclose(st.text("captions", "joint"), model.embed_text(ps.prompts)["joint"], atol=1e-6)
        assert "captions" not in class_prompt_sets(st)  # zero-shot never takes captions for class prompts
    result = run_retrieval(tmp_path / "s.h5")
    assert result["n_items"] == 10 and result["n_captions"] == len(want)
