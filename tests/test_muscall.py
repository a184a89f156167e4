"""MusCALL: front end against numpy, the authors' checkpoint layout, model directories, loss."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from embedstore.errors import InputError, ModelUnavailable  # noqa: E402
from embedstore.models import muscall  # noqa: E402

SMALL_AUDIO = dict(model="ModifiedResNet", pooling="attention", audio_len_seconds=0.5,
                   hidden_size=32, conv_out_channels=8, n_mels=32, sample_rate=16000,
                   n_fft=512, f_min=0, f_max=11025)
SMALL_TEXT = dict(model="TextTransformer", num_hidden_layers=2, hidden_size=32,
                  num_attention_heads=4, vocab_size=514, max_position_embeddings=77,
                  attention_dropout=0.2, dropout=0.2)
SMALL_CONFIG = dict(model_name="muscall", projection_dim=16, temperature=None,
                    audio=SMALL_AUDIO, text=SMALL_TEXT, loss="clip")


def _byte_symbols():
    """GPT-2 / CLIP byte-to-unicode table, for a tiny CLIP vocabulary."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes, extra = printable[:], 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def write_tiny_clip_tokenizer(folder):
    """Character-level CLIP vocabulary: 512 symbols, then start and end of text (the largest id)."""
    folder.mkdir(parents=True)
    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")


def write_authors_experiment(folder, seed=0):
    """An experiment folder as the authors' trainer leaves it; returns the model it saved."""
    torch.manual_seed(seed)
    model = muscall.MusCALL(SMALL_CONFIG)
    # move batch-norm statistics off their defaults so that loading them matters
    model.train()
    with torch.no_grad():
        model.audio_backbone(torch.randn(4, 8000))
    model.eval()
    optimizer = torch.optim.Adam(model.parameters())
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 3, "state_dict": model.state_dict(), "optimizer": optimizer.state_dict()},
               folder / "checkpoint.pth.tar")
    import yaml

    (folder / "config.yaml").write_text(yaml.safe_dump({
        "env": {"experiment_id": "x", "data_root": "${env.root}/data"},
        "model_config": SMALL_CONFIG,
        "dataset_config": {"dataset_name": "audiocaption",
                           "text": {"max_seq_length": 77, "tokenizer": "cliptokenizer"}},
    }))
    write_tiny_clip_tokenizer(folder / "tokenizer")
    return model


# ------------------------------------------------------------------ front end


def numpy_log_mel(audio, sample_rate, n_fft, n_mels, f_min, f_max, top_db=100.0):
    """Independent reference: reflect-padded periodic-Hann STFT, HTK mel, dB with top_db."""
    hop = n_fft // 2
    padded = np.pad(audio, n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    frames = np.stack([padded[i:i + n_fft] * window
                       for i in range(0, len(padded) - n_fft + 1, hop)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 / np.sum(window ** 2)
    freqs = np.linspace(0, sample_rate // 2, n_fft // 2 + 1)
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges = 700 * (10 ** (np.linspace(mel(f_min), mel(f_max), n_mels + 2) / 2595) - 1)
    filters = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        lo, centre, hi = edges[m:m + 3]
        rising = (freqs - lo) / (centre - lo)
        falling = (hi - freqs) / (hi - centre)
        filters[m] = np.maximum(0, np.minimum(rising, falling))
    db = 10 * np.log10(np.maximum(filters @ power.T, 1e-10))
    return np.maximum(db, db.max() - top_db)


@pytest.mark.parametrize("n_fft,n_mels,f_max", [(1024, 128, 11025), (512, 64, 8000)])
def test_log_mel_matches_numpy_reference(n_fft, n_mels, f_max):
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(16000)).astype(np.float32)
    audio[:4000] = 0.0  # silence exercises the 1e-10 floor and top_db
    front = muscall.MelSpectrogram(16000, n_fft, 0, f_max, n_mels)
    ours = muscall.power_to_db(front(torch.from_numpy(audio)[None]))[0].numpy()
    reference = numpy_log_mel(audio.astype(np.float64), 16000, n_fft, n_mels, 0, f_max)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours, reference, atol=2e-3 * np.abs(reference).max())


def test_top_db_floor_is_per_clip():
    quiet = torch.full((1, 8000), 1e-4)
    loud = torch.randn(1, 8000)
    front = muscall.MelSpectrogram(16000, 512, 0, 8000, 32)
    alone = muscall.power_to_db(front(quiet))
    batched = muscall.power_to_db(front(torch.cat([quiet, loud])))
    torch.testing.assert_close(batched[:1], alone)


# ------------------------------------------------------------------ authors' checkpoints


def test_authors_checkpoint_round_trip(tmp_path):
    saved = write_authors_experiment(tmp_path / "exp")
    encoder = muscall.load_muscall(checkpoint=str(tmp_path / "exp"))
    assert encoder.sample_rate == 16000 and encoder.window_samples == 8000
    assert encoder.audio_dims == {"prejoint": 32, "joint": 16}
    assert encoder.text_dims == {"prejoint": 32, "joint": 16}

    audio = np.random.default_rng(1).standard_normal((3, 8000)).astype(np.float32)
    got = encoder.embed_audio(audio)
    with torch.no_grad():
        pooled = saved.audio_backbone(torch.from_numpy(audio))
        joint = saved.audio_projection(pooled)
    np.testing.assert_allclose(got["prejoint"], pooled.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["joint"], (joint / joint.norm(dim=-1, keepdim=True)).numpy(),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got["joint"], axis=1), 1.0, atol=1e-5)

    texts = ["A violin track", "a flute"]
    ids = torch.zeros((2, 77), dtype=torch.long)
    for row, text in enumerate(texts):  # the authors' prepare_labels: encode, then 0-padding
        encoded = encoder.tokenize.tokenizer.encode(text, max_length=77, truncation=True)
        ids[row, :len(encoded)] = torch.tensor(encoded)
    with torch.no_grad():
        hidden = saved.textual_head(ids)
        text_joint = saved.text_projection(hidden)
    got_text = encoder.embed_text(texts)
    np.testing.assert_allclose(got_text["prejoint"], hidden.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_text["joint"],
                               (text_joint / text_joint.norm(dim=-1, keepdim=True)).numpy(),
                               rtol=1e-5, atol=1e-5)
    provenance = encoder.provenance()
    json.dumps(provenance)
    assert provenance["checkpoint"]["file"] == "checkpoint.pth.tar"
    assert len(provenance["checkpoint"]["sha256"]) == 64


AUTHORS_LAYOUT = Path(__file__).parent / "fixtures" / "muscall_authors_state_dict.json"


def test_published_config_builds_the_authors_parameter_layout():
    """Names and shapes written down from the authors' module code, not from our class."""
    fixture = json.loads(AUTHORS_LAYOUT.read_text())
    ours = {k: list(v.shape) for k, v in muscall.MusCALL(fixture["model_config"]).state_dict().items()}
    assert ours == fixture["state_dict"]


def test_a_checkpoint_in_the_authors_layout_loads_strictly(tmp_path):
    """A state_dict made from the fixture alone (random tensors of the authors' names and
    shapes, as their trainer saves it) loads strictly and every tensor lands in place."""
    import yaml

    fixture = json.loads(AUTHORS_LAYOUT.read_text())
    generator = torch.Generator().manual_seed(0)
    state = {f"module.{k}" if i % 2 else k:  # DataParallel prefixes, as multi-GPU runs save
             (torch.tensor(7) if k.endswith("num_batches_tracked") else torch.randn(shape, generator=generator))
             for i, (k, shape) in enumerate(fixture["state_dict"].items())}
    folder = tmp_path / "exp"
    folder.mkdir()
    torch.save({"epoch": 9, "state_dict": state, "optimizer": {}}, folder / "best_model.pth.tar")
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "model_config": fixture["model_config"],
        "dataset_config": {"text": {"max_seq_length": 77, "tokenizer": "cliptokenizer"}}}))
    write_tiny_clip_tokenizer(folder / "tokenizer")
    encoder = muscall.load_muscall(checkpoint=str(folder))
    loaded = encoder.model.state_dict()
    assert sorted(loaded) == sorted(fixture["state_dict"])
    for key, value in state.items():
        assert torch.equal(loaded[key.removeprefix("module.")].cpu(), value.to(loaded[key.removeprefix("module.")].dtype))
    assert encoder.audio_dims == {"prejoint": 256, "joint": 512}
    assert encoder.window_samples == 20 * 16000


def test_text_pooling_is_at_end_of_text_token(tmp_path):
    write_authors_experiment(tmp_path / "exp")
    encoder = muscall.load_muscall(checkpoint=str(tmp_path / "exp"))
    ids, _ = encoder.tokenize(["ab"])
    assert ids[0, :4].tolist() == [512, *ids[0, 1:3].tolist(), 513]
    assert int(ids[0].argmax()) == 3 and ids[0, 4:].eq(0).all()


def test_prefers_best_model_and_strips_data_parallel_prefix(tmp_path):
    saved = write_authors_experiment(tmp_path / "exp", seed=0)
    other = muscall.MusCALL(SMALL_CONFIG)
    state = {"module." + k: v for k, v in saved.state_dict().items()}
    torch.save({"epoch": 9, "state_dict": state}, tmp_path / "exp" / "best_model.pth.tar")
    torch.save({"epoch": 1, "state_dict": other.state_dict()}, tmp_path / "exp" / "checkpoint.pth.tar")
    encoder = muscall.load_muscall(checkpoint=str(tmp_path / "exp"))
    assert encoder.provenance()["checkpoint"]["file"] == "best_model.pth.tar"
    audio = np.zeros((1, 8000), dtype=np.float32) + 0.1
    with torch.no_grad():
        expected = saved.audio_backbone(torch.from_numpy(audio)).numpy()
    np.testing.assert_allclose(encoder.embed_audio(audio)["prejoint"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_problems_are_one_line_errors(tmp_path):
    write_authors_experiment(tmp_path / "exp")
    with pytest.raises(ModelUnavailable, match="no MusCALL weights"):
        muscall.load_muscall(checkpoint=None)
    with pytest.raises(ModelUnavailable, match="not found"):
        muscall.load_muscall(checkpoint=str(tmp_path / "nothing.pth.tar"))

    class Payload:  # anything that is not plain tensors must be refused, never run
        def __reduce__(self):
            return (print, ("unpickled!",))

    with open(tmp_path / "exp" / "checkpoint.pth.tar", "wb") as fh:
        pickle.dump({"state_dict": Payload()}, fh)
    with pytest.raises(ModelUnavailable, match="cannot read checkpoint"):
        muscall.load_muscall(checkpoint=str(tmp_path / "exp"))

    wrong = muscall.MusCALL({**SMALL_CONFIG, "projection_dim": 8})
    torch.save({"state_dict": wrong.state_dict()}, tmp_path / "exp" / "checkpoint.pth.tar")
    with pytest.raises(ModelUnavailable, match="does not match"):
        muscall.load_muscall(checkpoint=str(tmp_path / "exp"))

    (tmp_path / "exp" / "config.yaml").unlink()
    with pytest.raises(ModelUnavailable, match="config.yaml"):
        muscall.load_muscall(checkpoint=str(tmp_path / "exp"))


def test_missing_tokenizer_is_model_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    write_authors_experiment(tmp_path / "exp")
    for path in (tmp_path / "exp" / "tokenizer").iterdir():
        path.unlink()
    (tmp_path / "exp" / "tokenizer").rmdir()
    with pytest.raises(ModelUnavailable, match="tokenizer"):
        muscall.load_authors_checkpoint(tmp_path / "exp", cache_dir=str(tmp_path / "empty-cache"))


def test_wrong_window_length_is_input_error(tmp_path):
    write_authors_experiment(tmp_path / "exp")
    encoder = muscall.load_muscall(checkpoint=str(tmp_path / "exp"))
    with pytest.raises(InputError, match="8000"):
        encoder.embed_audio(np.zeros((2, 7000), dtype=np.float32))


# ------------------------------------------------------------------ loss


def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def test_contrastive_loss_matches_numpy():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((5, 5))
    diagonal = np.arange(5)
    by_audio = -_log_softmax(logits)[diagonal, diagonal]
    by_text = -_log_softmax(logits.T)[diagonal, diagonal]
    got = muscall.contrastive_loss(torch.tensor(logits)).item()
    assert got == pytest.approx((by_audio.mean() + by_text.mean()) / 2, rel=1e-9)

    similarity = rng.uniform(0, 1, (5, 5))
    mean_sim = (similarity * (1 - np.eye(5))).mean(axis=1)
    weight = np.exp(mean_sim / mean_sim.sum() / 0.01)
    expected = ((weight * by_audio).sum() / weight.sum() + (weight * by_text).sum() / weight.sum()) / 2
    got = muscall.contrastive_loss(torch.tensor(logits), torch.tensor(similarity)).item()
    assert got == pytest.approx(expected, rel=1e-9)


def test_registry_loads_muscall_with_a_tokenizer_folder(tmp_path):
    from embedstore.models import list_models, load_model

    assert {"muscall", "notes-toy"} <= set(list_models())
    saved = write_authors_experiment(tmp_path / "exp")
    (tmp_path / "exp" / "tokenizer").rename(tmp_path / "clip-tokenizer")
    with pytest.raises(ModelUnavailable, match="tokenizer"):
        load_model("muscall", checkpoint=str(tmp_path / "exp"),
                   cache_dir=str(tmp_path / "empty-cache"))
    encoder = load_model("muscall", checkpoint=str(tmp_path / "exp"),
                         tokenizer=str(tmp_path / "clip-tokenizer"))
    audio = np.full((1, 8000), 0.05, dtype=np.float32)
    with torch.no_grad():
        expected = saved.audio_backbone(torch.from_numpy(audio)).numpy()
    np.testing.assert_allclose(encoder.embed_audio(audio)["prejoint"], expected, rtol=1e-5, atol=1e-5)
