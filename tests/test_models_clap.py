"""LAION-CLAP encoders against the `laion_clap` package's own functions, on random weights.

Random weights make unrelated vectors nearly parallel, so closeness is measured per item
as ||ours - reference|| / (median distance between the reference's items), < 1e-3.
"""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from clap_fixtures import (  # noqa: E402
    build_laion_clap,
    import_laion_clap,
    random_windows,
    write_clap_checkpoint,
    write_tokenizer,
)

from embedstore.errors import EmbedstoreError, InputError, ModelUnavailable  # noqa: E402
from embedstore.models import clap as clap_models  # noqa: E402
from embedstore.models import (  # noqa: E402
    hub,  # noqa: E402
    list_models,
    load_model,
)

TEXTS = ["the sound of a violin", "a recording of a flute", "this is a cello",
         "the sound of a trumpet", "accordion"]
TOLERANCE = 1e-3
BF16_TOLERANCE = 0.25  # measured 0.13-0.14: bf16 keeps ~3 significant digits, and random
# weights put distinct clips close together (cosine 0.998), so the spread is small


def typical_distance(vectors: np.ndarray) -> float:
    """Median distance between distinct items."""
    pairs = np.linalg.norm(vectors[:, None] - vectors[None], axis=-1)
    typical = float(np.median(pairs[np.triu_indices(len(vectors), 1)]))
    assert typical > 0
    return typical


def relative_errors(ours: np.ndarray, reference: np.ndarray, typical: float | None = None) -> np.ndarray:
    """Per-item error over the median pairwise distance between reference items."""
    typical = typical_distance(reference) if typical is None else typical
    return np.linalg.norm(ours - reference, axis=1) / typical


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def laion_tiny(tokenizer_dir, tmp_path_factory):
    """laion_clap's HTSAT-tiny CLAP with random weights, and its published-layout checkpoint."""
    import_laion_clap()
    reference = build_laion_clap("HTSAT-tiny", tokenizer_dir)
    path = write_clap_checkpoint(reference, tmp_path_factory.mktemp("ckpt") / "tiny.pt")
    return reference, path


@pytest.fixture(scope="module")
def windows():
    return random_windows(3, 480000, seed=3)


@pytest.fixture(scope="module")
def ours_tiny(laion_tiny, tokenizer_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model("clap-general", checkpoint=laion_tiny[1], tokenizer=tokenizer_dir)


@pytest.fixture(scope="module")
def ours_audio(ours_tiny, windows):
    return ours_tiny.embed_audio(windows)


@pytest.fixture(scope="module")
def reference_audio(laion_tiny, windows):
    reference, _ = laion_tiny
    joint = reference.get_audio_embedding_from_data(windows)
    with torch.no_grad():
        batch = {"waveform": torch.from_numpy(windows),
                 "longer": torch.zeros(len(windows), 1, dtype=torch.bool)}
        prejoint = reference.model.audio_branch(batch, device="cpu")["embedding"].numpy()
    return {"joint": joint, "prejoint": prejoint}


@pytest.fixture(scope="module")
def reference_text(laion_tiny):
    reference, _ = laion_tiny
    joint = reference.get_text_embedding(TEXTS)
    tokens = reference.tokenizer(TEXTS)
    with torch.no_grad():
        prejoint = reference.model.text_branch(input_ids=tokens["input_ids"],
                                               attention_mask=tokens["attention_mask"]
                                               )["pooler_output"].numpy()
    return {"joint": joint, "prejoint": prejoint}


# ---------------------------------------------------------------- equivalence

@pytest.mark.parametrize("space", ["joint", "prejoint"])
def test_audio_matches_laion_clap(ours_tiny, ours_audio, reference_audio, space):
    assert ours_audio[space].dtype == np.float32
    assert ours_audio[space].shape == reference_audio[space].shape == (3, ours_tiny.audio_dims[space])
    assert relative_errors(ours_audio[space], reference_audio[space]).max() < TOLERANCE


@pytest.mark.parametrize("space", ["joint", "prejoint"])
def test_text_matches_laion_clap(ours_tiny, reference_text, space):
    ours = ours_tiny.embed_text(TEXTS)
    assert ours[space].shape == reference_text[space].shape == (5, ours_tiny.text_dims[space])
    assert relative_errors(ours[space], reference_text[space]).max() < TOLERANCE


def test_dims_and_normalisation(ours_tiny, ours_audio):
    assert ours_tiny.audio_dims == {"prejoint": 768, "joint": 512}  # HTSAT-tiny
    assert ours_tiny.text_dims == {"prejoint": 768, "joint": 512}
    assert ours_tiny.sample_rate == 48000 and ours_tiny.window_samples == 480000
    assert ours_tiny.int16_roundtrip
    np.testing.assert_allclose(np.linalg.norm(ours_audio["joint"], axis=1), 1.0, atol=1e-5)
    assert not np.allclose(np.linalg.norm(ours_audio["prejoint"], axis=1), 1.0, atol=1e-3)


def test_batching_does_not_change_vectors(ours_tiny, windows, ours_audio):
    alone = ours_tiny.embed_audio(windows[1:2])["prejoint"]
    whole = ours_audio["prejoint"]
    assert relative_errors(alone, whole[1:2], typical_distance(whole)).max() < TOLERANCE


def test_hf_path_matches_original_after_conversion(ours_tiny, windows, reference_audio,
                                                   reference_text, tmp_path):
    directory = clap_models.save_hf(ours_tiny, tmp_path / "converted")
    converted = load_model(f"hf:{directory}")
    assert converted.name == f"hf:{directory}"
    audio = converted.embed_audio(windows[:2])
    text = converted.embed_text(TEXTS)
    for space in ("joint", "prejoint"):
        typical = typical_distance(reference_audio[space])
        assert relative_errors(audio[space], reference_audio[space][:2], typical).max() < TOLERANCE
        assert relative_errors(text[space], reference_text[space]).max() < TOLERANCE
    assert converted.provenance()["checkpoint"]["sha256"] is not None


def test_bf16_stays_close_to_fp32(laion_tiny, tokenizer_dir, windows, reference_audio):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = load_model("clap-general", checkpoint=laion_tiny[1], tokenizer=tokenizer_dir,
                          precision="bf16")
    joint = half.embed_audio(windows)["joint"]
    assert joint.dtype == np.float32
    reference = reference_audio["joint"]
    # Measured as the other equivalence tests are: error over the spread between items, and
    # each bf16 vector nearer its own fp32 vector than any other clip's (a wrong clip fails).
    errors = relative_errors(joint, reference)
    assert errors.max() < BF16_TOLERANCE
    distances = np.linalg.norm(joint[:, None] - reference[None], axis=-1)
    assert (distances.argmin(axis=1) == np.arange(len(reference))).all()
    assert half.provenance()["precision"] == "bf16"


def test_fp16_stays_close_to_fp32_under_the_one_precision_policy(laion_tiny, tokenizer_dir, windows,
                                                                  reference_audio):
    """fp16 as bf16: autocast over fp32 weights, the STFT log-mel and the outputs in float32."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = load_model("clap-general", checkpoint=laion_tiny[1], tokenizer=tokenizer_dir,
                          precision="fp16", device="cpu")
    assert {p.dtype for p in half.model.parameters()} == {torch.float32}
    with torch.autocast("cpu", dtype=torch.float16):
        assert half.front_end(torch.from_numpy(windows[:1])).dtype == torch.float32
    out = half.embed_audio(windows)
    assert out["joint"].dtype == np.float32 and out["prejoint"].dtype == np.float32
    reference = reference_audio["joint"]
    errors = relative_errors(out["joint"], reference)  # as the bf16 test measures it
    assert errors.max() < BF16_TOLERANCE / 4  # fp16 keeps 3 more bits than bf16
    distances = np.linalg.norm(out["joint"][:, None] - reference[None], axis=-1)
    assert (distances.argmin(axis=1) == np.arange(len(reference))).all()
    assert half.provenance()["precision"] == "fp16"


@pytest.fixture(scope="module")
def laion_base(tokenizer_dir, tmp_path_factory):
    """HTSAT-base, the audio tower of the music checkpoints the study used (1024-d pre-joint)."""
    import_laion_clap()
    reference = build_laion_clap("HTSAT-base", tokenizer_dir, seed=5)
    path = write_clap_checkpoint(reference, tmp_path_factory.mktemp("ckpt") / "base.pt")
    return reference, path


def test_htsat_base_architecture_is_read_from_its_tensors(laion_base, tokenizer_dir):
    config = clap_models.infer_config(clap_models.read_checkpoint(laion_base[1]))
    assert config.audio_config.patch_embeds_hidden_size == 128
    assert list(config.audio_config.depths) == [2, 2, 12, 2]
    assert config.audio_config.hidden_size == 1024
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = load_model("clap-music", checkpoint=laion_base[1], tokenizer=tokenizer_dir)
    assert encoder.audio_dims == {"prejoint": 1024, "joint": 512}


def test_htsat_base_audio_matches_laion_clap(laion_base, tokenizer_dir):
    reference, path = laion_base
    windows = random_windows(2, 480000, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = load_model("clap-music", checkpoint=path, tokenizer=tokenizer_dir).embed_audio(windows)
    joint = reference.get_audio_embedding_from_data(windows)
    with torch.no_grad():
        batch = {"waveform": torch.from_numpy(windows), "longer": torch.zeros(2, 1, dtype=torch.bool)}
        prejoint = reference.model.audio_branch(batch, device="cpu")["embedding"].numpy()
    assert relative_errors(ours["joint"], joint).max() < TOLERANCE
    assert relative_errors(ours["prejoint"], prejoint).max() < TOLERANCE


# ---------------------------------------------------------------- front end

def test_log_mel_is_torchlibrosa_exactly(windows):
    stft = pytest.importorskip("torchlibrosa.stft")
    spectrogram = stft.Spectrogram(n_fft=1024, hop_length=480, win_length=1024, window="hann",
                                   center=True, pad_mode="reflect", freeze_parameters=True)
    logmel = stft.LogmelFilterBank(sr=48000, n_fft=1024, n_mels=64, fmin=50, fmax=14000, ref=1.0,
                                   amin=1e-10, top_db=None, freeze_parameters=True)
    x = torch.from_numpy(windows[:2])
    with torch.no_grad():
        expected = logmel(spectrogram(x))
        ours = clap_models.LogMel(clap_models.MelConfig())(x)
    assert ours.shape == expected.shape == (2, 1, 1001, 64)
    # Measured: at most 3.8e-6 dB (float32 rounding; 95.5% of elements exactly equal), where a
    # plain torch.stft front end differs by 1.2e-4 dB: the bound separates the two.
    difference = (ours - expected).abs()
    assert difference.max() < 1e-5  # dB, on values up to ~40 dB
    assert (difference == 0).float().mean() > 0.9


def test_mel_filters_are_librosa_slaney():
    librosa = pytest.importorskip("librosa")
    expected = librosa.filters.mel(sr=48000, n_fft=1024, n_mels=64, fmin=50, fmax=14000).T
    np.testing.assert_allclose(clap_models.slaney_mel_filters(clap_models.MelConfig()), expected,
                               rtol=1e-5, atol=1e-8)


def test_embed_audio_rejects_wrong_window_length(ours_tiny):
    with pytest.raises(InputError, match="480000"):
        ours_tiny.embed_audio(np.zeros((1, 48000), np.float32))


def test_empty_batches_give_empty_arrays(ours_tiny):
    assert ours_tiny.embed_audio(np.zeros((0, 480000), np.float32))["prejoint"].shape == (0, 768)
    assert ours_tiny.embed_text([])["joint"].shape == (0, 512)


# ---------------------------------------------------------------- checkpoint reading

def test_architecture_read_from_tensors(laion_tiny):
    state = clap_models.read_checkpoint(laion_tiny[1])
    assert not any(k.startswith("module.") for k in state)
    config = clap_models.infer_config(state)
    assert list(config.audio_config.depths) == [2, 2, 6, 2]
    assert list(config.audio_config.num_attention_heads) == [4, 8, 16, 32]
    assert config.audio_config.patch_embeds_hidden_size == 96
    assert config.audio_config.hidden_size == 768
    # the tiny text tower is not roberta-base: 2 layers, 96-wide MLP, 399 tokens
    assert config.text_config.num_hidden_layers == 2
    assert config.text_config.intermediate_size == 96
    assert config.text_config.vocab_size == 399
    assert config.text_config.max_position_embeddings == 80


def test_bare_state_dict_without_stale_position_ids_loads(laion_tiny, tokenizer_dir, tmp_path,
                                                         reference_text):
    state = clap_models.read_checkpoint(laion_tiny[1])
    state.pop("text_branch.embeddings.position_ids")
    torch.save(state, tmp_path / "bare.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = load_model("clap-general", checkpoint=tmp_path / "bare.pt", tokenizer=tokenizer_dir)
    text = encoder.embed_text(TEXTS)["joint"]
    assert relative_errors(text, reference_text["joint"]).max() < TOLERANCE


@pytest.mark.parametrize("change, message", [
    ("drop", "missing keys"), ("add", "unexpected keys"), ("reshape", "has shape"),
    ("fusion", "fusion"),
])
def test_mismatched_checkpoint_fails_loudly(laion_tiny, tokenizer_dir, tmp_path, change, message):
    state = {f"module.{k}": v for k, v in clap_models.read_checkpoint(laion_tiny[1]).items()}
    if change == "drop":
        del state["module.audio_branch.layers.1.blocks.0.mlp.fc2.weight"]
    elif change == "add":
        state["module.text_branch.encoder.extra.weight"] = torch.zeros(3)
    elif change == "reshape":
        state["module.audio_projection.2.bias"] = torch.zeros(7)
    else:
        state["module.audio_branch.fusion_model.local_att.0.weight"] = torch.zeros(3)
    torch.save({"state_dict": state}, tmp_path / "bad.pt")
    with pytest.raises(InputError, match=message):
        load_model("clap-general", checkpoint=tmp_path / "bad.pt", tokenizer=tokenizer_dir)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_unsafe_pickle_is_refused(tmp_path, capsys):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "evil": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="safely"):
        clap_models.read_checkpoint(tmp_path / "evil.pt")
    assert "must never run" not in capsys.readouterr().out


def test_numpy_scalars_in_published_layout_are_accepted(laion_tiny, tmp_path):
    state = torch.load(laion_tiny[1], weights_only=True)
    state["best_score"] = np.float64(90.14)  # what LAION's training loop pickles
    torch.save(state, tmp_path / "with_numpy.pt")
    assert "audio_branch.bn0.weight" in clap_models.read_checkpoint(tmp_path / "with_numpy.pt")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError):
        clap_models.read_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(InputError, match="does not exist"):
        load_model("clap-music", checkpoint=tmp_path / "missing.pt")


# ---------------------------------------------------------------- digests, cache, offline

def test_user_checkpoint_with_other_digest_warns_and_records_it(laion_tiny, tokenizer_dir):
    with pytest.warns(UserWarning, match="not the published"):
        encoder = load_model("clap-music", checkpoint=laion_tiny[1], tokenizer=tokenizer_dir)
    record = encoder.provenance()["checkpoint"]
    assert record["sha256"] == hub.sha256_file(laion_tiny[1])
    assert record["expected_sha256"] == clap_models.PUBLISHED["clap-music"].sha256
    assert record["verified"] is False


def test_offline_without_checkpoint_names_the_file_and_option(tmp_path):
    with pytest.raises(ModelUnavailable) as info:
        load_model("clap-music", cache_dir=tmp_path)
    message = str(info.value)
    assert "music_audioset_epoch_15_esc_90.14.pt" in message and "--checkpoint" in message
    assert "\n" not in message
    assert not list(tmp_path.rglob("*.pt*"))


def test_cached_file_with_wrong_digest_is_refused_and_removed(tmp_path, laion_tiny):
    """A file in the Hugging Face cache layout under the published name, with other bytes."""
    published = clap_models.PUBLISHED["clap-music"]
    repo = tmp_path / ("models--" + clap_models.HUB_REPO.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    cached = repo / "snapshots" / ("0" * 40) / published.file
    cached.parent.mkdir(parents=True)
    cached.write_bytes(laion_tiny[1].read_bytes())
    with pytest.raises(ModelUnavailable, match="SHA-256"):
        load_model("clap-music", cache_dir=tmp_path)
    assert not cached.exists()


def test_missing_tokenizer_offline_names_what_to_fetch(laion_tiny):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ModelUnavailable) as info:
            load_model("clap-general", checkpoint=laion_tiny[1])
    assert "roberta-base" in str(info.value) and "--tokenizer" in str(info.value)


# ---------------------------------------------------------------- registry

def test_registry_names_and_errors():
    names = list_models()
    for name in ("clap-music", "clap-music-speech", "clap-general"):
        assert name in names
    assert any(n.startswith("hf:") for n in names)
    with pytest.raises(InputError, match="unknown model"):
        load_model("no-such-model")
    with pytest.raises(InputError, match="precision"):
        load_model("clap-music", precision="fp8")
    with pytest.raises(EmbedstoreError):
        load_model("hf:/no/such/dir/anywhere")


def test_importing_the_registry_does_not_import_torch():
    code = "import sys, embedstore.models, embedstore.models.base; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(__file__)))
    assert out.stdout.strip() == "False"
