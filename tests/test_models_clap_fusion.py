"""LAION-CLAP fusion checkpoints against laion_clap's own ``CLAP_Module(enable_fusion=True)``.

Random weights on the real HTSAT-tiny fusion architecture (the published fusion checkpoints'
one), saved in the published ``{"state_dict": ...}`` layout and loaded strictly. laion_clap's
front end runs with stand-ins for torchaudio and torchvision (tests/fusion_reference.py) and
its random crops pinned to our rule; transformers' ``ClapFeatureExtractor(truncation="fusion")``
is a second, independent reference for the fused features. Closeness as in
tests/test_models_clap.py: per item, ||ours - reference|| / (median distance between the
reference's items) < 1e-3.
"""

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
)
from fusion_reference import laion_embeddings, laion_features, laion_fusion_patches, pinned_crops  # noqa: E402
from test_models_clap import (  # noqa: E402, F401  (_offline and tokenizer_dir: fixtures used here)
    TOLERANCE,
    _offline,
    relative_errors,
    tokenizer_dir,
    typical_distance,
)

from embedstore.errors import InputError  # noqa: E402
from embedstore.extract.audio import int16_roundtrip  # noqa: E402
from embedstore.models import clap_fusion, load_model  # noqa: E402
from embedstore.models.clap import MelConfig, fusion_settings  # noqa: E402

RATE = 48000
#: samples: short, exactly 10 s, the corner case (over 10 s by less than a hop: not "longer"),
#: then longer clips of 1.3, 3.1 and 6.5 windows
LENGTHS = {"3.2 s": 153_600, "10 s": 480_000, "10 s + 300": 480_300, "12.5 s": 600_000,
           "31 s": 1_488_000, "65 s": 3_120_000}
LONGER = {"3.2 s": False, "10 s": False, "10 s + 300": False, "12.5 s": True, "31 s": True, "65 s": True}
FEATURE_TOLERANCE_DB = 1e-3


@pytest.fixture(scope="module")
def laion_fusion(tokenizer_dir, tmp_path_factory):
    """laion_clap's HTSAT-tiny fusion CLAP with random weights, and its published-layout .pt."""
    import_laion_clap()
    reference = build_laion_clap("HTSAT-tiny", tokenizer_dir, seed=7, enable_fusion=True)
    path = write_clap_checkpoint(reference, tmp_path_factory.mktemp("ckpt") / "fusion.pt")
    return reference, path


@pytest.fixture(scope="module")
def ours(laion_fusion, tokenizer_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model("clap-general-fusion", checkpoint=laion_fusion[1], tokenizer=tokenizer_dir)


@pytest.fixture(scope="module")
def clips():
    """Distinct int16-representable clips, as the pipeline's decoding gives them."""
    return {name: int16_roundtrip(random_windows(1, n, seed=20 + i)[0])
            for i, (name, n) in enumerate(LENGTHS.items())}


@pytest.fixture(scope="module")
def reference_audio(laion_fusion, clips):
    """laion_clap's vectors of every clip in one batch (mixed: some are longer)."""
    with laion_fusion_patches():
        return laion_embeddings(laion_fusion[0], list(clips.values()))


@pytest.fixture(scope="module")
def ours_audio(ours, clips):
    return ours.embed_waveforms(list(clips.values()))


# ---------------------------------------------------------------- fused features

def test_fused_features_match_laion_clap(laion_fusion, clips, ours):
    with laion_fusion_patches():
        reference = laion_features(laion_fusion[0], list(clips.values()))
    for i, (name, clip) in enumerate(clips.items()):
        stack, longer = ours.clip_front_end.features(clip)
        assert stack.shape == (4, 1001, 64) and stack.dtype == np.float32
        assert longer == bool(reference["longer"][i]) == LONGER[name], name
        # measured: at most 2.4e-4 dB (our filterbank is computed in float64, torchaudio's in float32)
        assert np.abs(stack - reference["mel_fusion"][i].numpy()).max() < FEATURE_TOLERANCE_DB, name


def test_fused_features_match_transformers_feature_extractor(ours, clips):
    from transformers import ClapFeatureExtractor

    extractor = ClapFeatureExtractor(frequency_min=50, frequency_max=14000, truncation="fusion")
    with pinned_crops():  # a batch with longer clips: the extractor flips no flag at random
        out = extractor([c.astype(np.float64) for c in clips.values()], sampling_rate=RATE,
                        return_tensors="np")
    assert out["is_longer"].ravel().tolist() == list(LONGER.values())
    for i, (name, clip) in enumerate(clips.items()):
        stack, _ = ours.clip_front_end.features(clip)
        # measured: at most 2.3e-4 dB (numpy float64 STFT against torch.stft in float32)
        assert np.abs(stack - out["input_features"][i]).max() < FEATURE_TOLERANCE_DB, name


def test_the_crops_are_the_middle_of_each_third():
    # 12.5 s: 1251 frames, 251 possible starts split 84/84/83
    assert clap_fusion.crop_starts(1251, 1001) == [41, 125, 209]
    assert clap_fusion.crop_starts(1002, 1001) == [0, 1, 0]  # an empty third falls back to 0, as laion_clap's
    ranges = np.array_split(np.arange(3101 - 1001 + 1), 3)
    assert clap_fusion.crop_starts(3101, 1001) == [int(r[(len(r) - 1) // 2]) for r in ranges]


def test_the_stft_in_blocks_equals_one_centred_stft(clips, monkeypatch):
    front = clap_fusion.FusionFrontEnd(MelConfig())
    wave = torch.from_numpy(clips["31 s"])
    power = torch.stft(wave, 1024, hop_length=480, win_length=1024, window=torch.hann_window(1024),
                       center=True, pad_mode="reflect", onesided=True, return_complex=True).abs().pow(2.0)
    one_shot = (10.0 * torch.log10((power.T @ torch.from_numpy(front.filters)).clamp(min=1e-10))).numpy()
    np.testing.assert_array_equal(front.log_mel(clips["31 s"]), one_shot)
    monkeypatch.setattr(clap_fusion, "STFT_BLOCK_FRAMES", 97)  # blocks, and a short last one
    np.testing.assert_array_equal(front.log_mel(clips["31 s"]), one_shot)
    for start, stop in [(-512, 700), (1_487_000, 1_488_512), (-5, 1_488_003)]:
        padded = torch.nn.functional.pad(wave[None, None], (512, 512), mode="reflect")[0, 0]
        np.testing.assert_array_equal(clap_fusion.reflect_slice(wave, start, stop), padded[start + 512:stop + 512])


def test_a_non_antialiased_resize_is_what_laion_trained_with(laion_fusion, clips, ours):
    """torchvision >= 0.17 antialiases a tensor Resize by default; the fused stack we feed is the
    pre-0.17 one (and transformers'), which a 0.17 resize would move measurably."""
    long_clips = [clips["31 s"], clips["65 s"]]
    with laion_fusion_patches(antialias=True):
        antialiased = laion_features(laion_fusion[0], long_clips)["mel_fusion"][:, 0].numpy()
    ours_global = np.stack([ours.clip_front_end.features(c)[0][0] for c in long_clips])
    # measured: 5.7 dB (12.5 s) to 17.7 dB (65 s) at the most; the vectors move by 3-11% of the
    # spread between items, four orders of magnitude above TOLERANCE
    assert np.abs(ours_global - antialiased).max() > 1.0  # dB: a different global channel


# ---------------------------------------------------------------- embeddings

@pytest.mark.parametrize("space", ["joint", "prejoint"])
def test_audio_matches_laion_clap_fusion(ours, ours_audio, reference_audio, space):
    assert ours_audio[space].dtype == np.float32
    assert ours_audio[space].shape == reference_audio[space].shape == (len(LENGTHS), ours.audio_dims[space])
    # measured: at most 1.9e-6 (joint) and 1.7e-6 (prejoint); 1.4e-6 for the short batch below
    assert relative_errors(ours_audio[space], reference_audio[space]).max() < TOLERANCE


def test_a_batch_of_short_clips_matches_laion_clap(laion_fusion, ours, clips, reference_audio):
    """laion_clap takes another path (its eval early return) when no clip in a batch is longer."""
    short = [clips["3.2 s"], clips["10 s + 300"]]
    with laion_fusion_patches():
        reference = laion_embeddings(laion_fusion[0], short)
    mine = ours.embed_waveforms(short)
    for space in ("joint", "prejoint"):
        typical = typical_distance(reference_audio[space])
        assert relative_errors(mine[space], reference[space], typical).max() < TOLERANCE


def test_vectors_do_not_depend_on_the_batch(ours, clips, ours_audio):
    alone = ours.embed_waveforms([clips["31 s"]])["joint"]
    whole = ours_audio["joint"]
    index = list(LENGTHS).index("31 s")
    assert relative_errors(alone, whole[index:index + 1], typical_distance(whole)).max() < TOLERANCE


def test_items_and_provenance(ours, clips):
    assert ours.item_size == 4 * 1001 * 64 + 1
    item = ours.clip_front_end(clips["12.5 s"])
    assert item.shape == (ours.item_size,) and item[-1] == 1.0
    assert ours.clip_front_end(clips["3.2 s"])[-1] == 0.0
    with pytest.raises(InputError, match="items of its clip front end"):
        ours.embed_audio(np.zeros((1, 480000), np.float32))
    record = ours.provenance()
    assert record["architecture"]["audio"]["fusion"] == {"type": "aff_2d", "aff_block_r": 4}
    front = record["front_end"]
    assert front["crops"] == "middle" and "middle" in front["crop_rule"]
    assert front["log_mel"]["mel_scale"] == "htk" and "antialias=False" in front["global_channel"]


def test_an_hf_fusion_folder_gets_the_fusion_front_end(ours, clips, ours_audio, tmp_path):
    from embedstore.models import clap as clap_models

    converted = load_model(f"hf:{clap_models.save_hf(ours, tmp_path / 'hf')}")
    assert isinstance(converted, clap_models.FusionClapEncoder)
    names = ["3.2 s", "31 s"]
    vectors = converted.embed_waveforms([clips[n] for n in names])
    rows = [list(LENGTHS).index(n) for n in names]
    for space in ("joint", "prejoint"):
        typical = typical_distance(ours_audio[space])
        assert relative_errors(vectors[space], ours_audio[space][rows], typical).max() < TOLERANCE


# ---------------------------------------------------------------- loading

def test_fusion_and_plain_names_refuse_the_other_kind(laion_fusion, tokenizer_dir, tmp_path):
    with pytest.raises(InputError, match="is a fusion checkpoint; load it as clap-general-fusion"):
        load_model("clap-general", checkpoint=laion_fusion[1], tokenizer=tokenizer_dir)
    state = {k: v for k, v in torch.load(laion_fusion[1], weights_only=True)["state_dict"].items()
             if ".mel_conv2d." not in k and ".fusion_model." not in k}
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": state}, plain)
    with pytest.raises(InputError, match="is not a fusion checkpoint; load it as clap-music"):
        load_model("clap-630k-fusion", checkpoint=plain, tokenizer=tokenizer_dir)


@pytest.mark.parametrize("key, message", [
    ("audio_branch.mel_conv1d.weight", "1-D feature fusion"),
    ("audio_branch.patch_embed.mel_conv2d.weight", "not aff_2d"),
])
def test_other_fusion_types_are_refused(key, message):
    with pytest.raises(InputError, match=message):
        fusion_settings({key: torch.zeros(1)})


# ---------------------------------------------------------------- extraction

class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def fusion_folder(tmp_path_factory):
    """A `folder` dataset at 48 kHz: a short clip and two longer than 10 s."""
    import soundfile as sf

    folder = tmp_path_factory.mktemp("fusion-clips")
    seconds = {"a.wav": 2.5, "b.wav": 14.0, "c.wav": 23.0}
    for i, (name, length) in enumerate(seconds.items()):
        sf.write(folder / name, random_windows(1, int(length * RATE), seed=40 + i, int16=False)[0] * 0.5,
                 RATE, subtype="FLOAT")
    (folder / "labels.csv").write_text("path,label\na.wav,low\nb.wav,high\nc.wav,low\n")
    return folder


def test_extract_then_report_matches_laion_clap_and_resumes(laion_fusion, tokenizer_dir, ours,
                                                             fusion_folder, tmp_path):
    from cli_helpers import invoke

    from embedstore.datasets import load_dataset
    from embedstore.extract import run_extract
    from embedstore.extract.audio import load_audio, to_mono
    from embedstore.store import open_store

    out = tmp_path / "fusion.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extracted = invoke("extract", "--model", "clap-general-fusion", "--checkpoint", laion_fusion[1],
                           "--tokenizer", tokenizer_dir, "--dataset", "folder", "--root", fusion_folder,
                           "--out", out, "--batch-size", "2", "--workers", "0", "--prompts", "track")
    assert extracted.exit_code == 0, extracted.output
    report = invoke("report", out, "--out", tmp_path / "report", "--no-umap")
    assert report.exit_code == 0, report.output
    with open_store(out) as store:
        paths, stored = list(store.item_paths), {s: store.audio(s) for s in ("joint", "prejoint")}
        provenance = store.provenance
    assert provenance["frontend"]["long_mode"] == "whole clip"
    assert provenance["frontend"]["clip_front_end"]["crops"] == "middle"
    assert provenance["extraction"]["long_mode"] == "whole clip"

    # end to end: the store's vectors are laion_clap's of the same decoded files
    decoded = [to_mono(load_audio(fusion_folder / p)[0]) for p in paths]
    with laion_fusion_patches():
        reference = laion_embeddings(laion_fusion[0], decoded)
    for space in ("joint", "prejoint"):
        assert relative_errors(stored[space], reference[space]).max() < TOLERANCE

    # killed after the first batch, resumed (decoding in a worker process): the same vectors
    dataset = load_dataset("folder", fusion_folder)
    resumed = tmp_path / "resumed.h5"

    def stop_early(done, total, failed):
        if done >= 2:
            raise Stop

    with pytest.raises(Stop):
        run_extract(ours, dataset, [], resumed, batch_size=2, workers=1, journal_seconds=0,
                    progress=stop_early)
    # --long does not apply to a whole-clip model, so another one does not stop the resume
    summary = run_extract(ours, dataset, [], resumed, batch_size=2, workers=1, resume=True, long_mode="center")
    assert summary.resumed_from == 2
    with open_store(resumed) as store:
        for space in ("joint", "prejoint"):
            np.testing.assert_array_equal(store.audio(space), stored[space])
