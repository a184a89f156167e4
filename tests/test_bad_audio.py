"""Hostile audio through the real ``embedstore extract``: each file is embedded correctly or
recorded as failed with its reason, the run finishes, and no good clip is lost."""

import os
import stat

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("soxr")

import soundfile as sf  # noqa: E402
from extract_encoder import NAME, TinyEncoder, load_tiny  # noqa: E402

from embedstore.datasets import load_dataset  # noqa: E402
from embedstore.extract import pool_windows, run_extract  # noqa: E402
from embedstore.extract.audio import prepare  # noqa: E402
from embedstore.extract.prompts import build_prompt_set  # noqa: E402
from embedstore.store import open_store  # noqa: E402
from embedstore.store.verify import verify_store  # noqa: E402

RATES = (8000, 11025, 22050, 44100, 48000, 96000, 192000)


def tone(seconds, rate, freq=440.0, channels=1, seed=0):
    """A sine plus a little seeded noise, float32 (n,) or (n, channels)."""
    t = np.arange(int(round(seconds * rate))) / rate
    rng = np.random.default_rng(seed)
    columns = [0.4 * np.sin(2 * np.pi * freq * (1 + 0.25 * c) * t) + 0.01 * rng.standard_normal(len(t))
               for c in range(channels)]
    out = np.stack(columns, axis=1).astype(np.float32)
    return out[:, 0] if channels == 1 else out


def write_corpus(root):
    """The corpus, and what each entry must become: ``None`` (embedded) or a reason fragment."""
    expect = {}

    def good(name, audio, rate, **kw):
        sf.write(root / name, audio, rate, **kw)
        expect[name] = None

    good("control_a.wav", tone(0.3, 16000, 330), 16000)
    (root / "empty.wav").write_bytes(b"")
    expect["empty.wav"] = "empty file"
    sf.write(root / "zero_frames.wav", np.zeros(0, np.float32), 16000)
    expect["zero_frames.wav"] = "no samples"
    whole = (root / "control_a.wav").read_bytes()
    (root / "truncated_header.wav").write_bytes(whole[:30])
    expect["truncated_header.wav"] = "not decodable"
    (root / "truncated_body.wav").write_bytes(whole[:len(whole) // 2])  # header promises more
    expect["truncated_body.wav"] = None
    (root / "text.wav").write_text("this is a text file, renamed\n" * 40)
    expect["text.wav"] = "not decodable"
    with_nan = tone(0.3, 16000)
    with_nan[100:110] = np.nan
    sf.write(root / "nan.wav", with_nan, 16000, subtype="FLOAT")
    expect["nan.wav"] = "non-finite"
    with_inf = tone(0.3, 16000)
    with_inf[5], with_inf[-5] = np.inf, -np.inf
    sf.write(root / "inf.wav", with_inf, 16000, subtype="FLOAT")
    expect["inf.wav"] = "non-finite"
    good("silence.wav", np.zeros(8000, np.float32), 16000)
    eight = tone(0.4, 16000, 250, channels=8)
    good("eight_channels.wav", eight, 16000, subtype="FLOAT")
    good("eight_channels_mixdown.wav", eight.mean(axis=1, dtype=np.float32), 16000, subtype="FLOAT")
    for rate in RATES:
        good(f"rate_{rate}.wav", tone(0.7, rate, 500), rate)
    good("ten_minutes.wav", tone(600.0, 8000, 200), 8000, subtype="PCM_16")
    sf.write(root / "three_samples_192k.wav", np.array([0.5, 0.2, 0.1], np.float32), 192000,
             subtype="FLOAT")
    expect["three_samples_192k.wav"] = "too short"
    good("flac_named.wav", tone(0.3, 22050, 700), 22050, format="FLAC")
    (root / "a_directory.wav").mkdir()
    expect["a_directory.wav"] = "is a directory"
    os.mkfifo(root / "a_fifo.wav")
    expect["a_fifo.wav"] = "not a regular file"
    locked = root / "locked.wav"
    sf.write(locked, tone(0.3, 16000, 880), 16000)
    locked.chmod(0)
    try:  # root reads it anyway: then it must be embedded
        locked.open("rb").close()
        expect["locked.wav"] = None
    except PermissionError:
        expect["locked.wav"] = "not readable"
    good("control_b.wav", tone(0.2, 16000, 990), 16000)

    names = list(expect)
    lines = ["path,label"] + [f"{name},{'odd' if i % 2 else 'even'}" for i, name in enumerate(names)]
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return expect


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_audio")
    expect = write_corpus(root)
    yield root, expect
    (root / "locked.wav").chmod(stat.S_IRUSR | stat.S_IWUSR)


@pytest.fixture
def cli(monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app
    from embedstore import models

    monkeypatch.setitem(models.MODELS, NAME, load_tiny)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


def direct_vectors(path, model):
    """The clip embedded alone, outside the pipeline: its windows, one pass, pooled."""
    windows = prepare(path, sample_rate=model.sample_rate, window_seconds=model.window_seconds,
                      long_mode="mean", int16=model.int16_roundtrip)
    out = model.embed_audio(windows)
    return pool_windows([{space: vec[i] for space, vec in out.items()} for i in range(len(windows))])


def test_bad_files_are_recorded_and_good_ones_embedded(cli, corpus, tmp_path):
    root, expect = corpus
    out = tmp_path / "s.h5"
    result = cli("extract", "--model", NAME, "--dataset", "folder", "--root", root, "--out", out,
                 "--batch-size", "32", "--workers", "2", "--long", "mean", "--prompts", "track")
    assert result.exit_code == 0, result.output
    assert verify_store(out).ok

    should_embed = [name for name, reason in expect.items() if reason is None]
    should_fail = {name: reason for name, reason in expect.items() if reason is not None}
    with open_store(out) as st:
        assert list(st.item_ids) == should_embed  # dataset order, nothing lost or added
        failed = dict(st.failed)
        audio = {space: st.audio(space) for space in st.audio_spaces}
    assert sorted(failed) == sorted(should_fail)
    for name, fragment in should_fail.items():
        assert fragment in failed[name], (name, failed[name])
        assert "\n" not in failed[name]

    model = TinyEncoder()
    for row, name in enumerate(should_embed):
        direct = direct_vectors(root / name, model)
        for space, vectors in audio.items():
            assert np.isfinite(vectors[row]).all(), name
            np.testing.assert_allclose(vectors[row], direct[space], rtol=1e-5, atol=1e-6, err_msg=name)
    # Eight channels are their mean: the same vector as the mixdown written as one channel.
    i, j = should_embed.index("eight_channels.wav"), should_embed.index("eight_channels_mixdown.wav")
    for vectors in audio.values():
        np.testing.assert_allclose(vectors[i], vectors[j], rtol=1e-6, atol=1e-7)
    # The ten-minute clip is every one of its 1200 windows, averaged.
    assert len(prepare(root / "ten_minutes.wav", sample_rate=16000, window_seconds=0.5,
                       long_mode="mean", int16=False)) == 1200


def test_an_unexpected_decoder_error_fails_one_clip_only(corpus, tmp_path, monkeypatch):
    import embedstore.extract.audio

    root, expect = corpus
    real_decode = embedstore.extract.audio.decode

    def flaky(path, **kwargs):
        if str(path).endswith("rate_44100.wav"):
            raise RuntimeError("resampler blew up\nsecond line")
        return real_decode(path, **kwargs)

    monkeypatch.setattr(embedstore.extract.audio, "decode", flaky)
    data = load_dataset("folder", root)
    summary = run_extract(TinyEncoder(), data, [build_prompt_set("track", data.classes)],
                          tmp_path / "s.h5", batch_size=3, workers=0, long_mode="first")
    failed = dict(summary.failed)
    assert failed["rate_44100.wav"].endswith("RuntimeError resampler blew up")
    assert summary.items == sum(reason is None for reason in expect.values()) - 1
