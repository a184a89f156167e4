"""Microsoft CLAP encoders against the `msclap` package's own functions, on random weights.

As for LAION-CLAP, closeness is per item: ||ours - reference|| over the median distance
between the reference's items, < 1e-3.
"""

import json
import re
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import msclap_fixtures as mf  # noqa: E402
from clap_fixtures import random_windows  # noqa: E402
from cli_helpers import extract_and_report  # noqa: E402
from test_models_clap import relative_errors  # noqa: E402

from embedstore.errors import InputError, ModelUnavailable  # noqa: E402
from embedstore.extract.audio import windows as audio_windows  # noqa: E402
from embedstore.models import list_models, load_model  # noqa: E402
from embedstore.models import msclap as ours_msclap  # noqa: E402

TEXTS = ["the sound of a violin", "a recording of a flute", "this is a cello!",
         "The sound of a Trumpet", "accordion"]
TOLERANCE = 1e-3
VERSIONS = ["2022", "2023"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module", params=VERSIONS)
def setup(request, tmp_path_factory):
    """msclap's CLAP with random weights in the published layout, msclap's own wrapper on it,
    and ours on the same file."""
    mf.import_msclap()
    version = request.param
    folder = tmp_path_factory.mktemp(f"msclap{version}")
    tokenizer = mf.write_tokenizer(version, folder / "tokenizer")
    model, text_model = mf.build_msclap(version, tokenizer)
    checkpoint = mf.write_msclap_checkpoint(model, folder / f"CLAP_weights_{version}.pth")
    del model
    reference = mf.msclap_reference(version, checkpoint, tokenizer, text_model)
    ours = load_model(f"msclap-{version}", checkpoint=checkpoint, tokenizer=tokenizer)
    return {"version": version, "tokenizer": tokenizer, "checkpoint": checkpoint,
            "reference": reference, "ours": ours}


def _with_prejoint(reference, call, projection):
    """Run a msclap call and catch what enters its projection head (the pre-joint vector)."""
    caught = {}

    def keep_input(module, args, output):  # returns None: the output is left alone
        caught["x"] = args[0].detach()

    hook = projection.register_forward_hook(keep_input)
    try:
        joint = call().numpy()
    finally:
        hook.remove()
    return {"joint": joint / np.linalg.norm(joint, axis=1, keepdims=True), "prejoint": caught["x"].numpy()}


@pytest.fixture(scope="module")
def audio(setup):
    reference, ours = setup["reference"], setup["ours"]
    windows = random_windows(3, ours.window_samples, seed=3, rate=44100, int16=False)
    expected = _with_prejoint(reference, lambda: reference._get_audio_embeddings(
        torch.from_numpy(windows)[:, None, :]), reference.clap.audio_encoder.projection)
    return ours.embed_audio(windows), expected


@pytest.mark.parametrize("space", ["joint", "prejoint"])
def test_audio_matches_msclap(setup, audio, space):
    ours, expected = audio
    assert ours[space].dtype == np.float32
    assert ours[space].shape == expected[space].shape == (3, setup["ours"].audio_dims[space])
    assert relative_errors(ours[space], expected[space]).max() < TOLERANCE


@pytest.mark.parametrize("space", ["joint", "prejoint"])
def test_text_matches_msclap(setup, space):
    reference = setup["reference"]
    expected = _with_prejoint(reference, lambda: reference.get_text_embeddings(TEXTS),
                              reference.clap.caption_encoder.projection)
    ours = setup["ours"].embed_text(TEXTS)
    assert ours[space].shape == expected[space].shape
    assert relative_errors(ours[space], expected[space]).max() < TOLERANCE


def test_a_text_longer_than_text_len_is_embedded_as_msclap_embeds_it_alone(setup):
    if setup["version"] != "2022":
        pytest.skip("the tiny GPT-2 has 80 positions, barely more than text_len")
    reference, ours = setup["reference"], setup["ours"]
    long_text = " ".join(["violin flute cello"] * 40)  # > 100 tokens, < 128 positions
    assert len(ours.tokenizer(long_text)["input_ids"]) > 100
    with torch.no_grad():
        alone = reference.get_text_embeddings([long_text]).numpy()
    both = ours.embed_text([long_text, "a cello"])["joint"]
    typical = np.linalg.norm(both[0] - both[1])
    assert np.linalg.norm(both[0] - alone[0] / np.linalg.norm(alone[0])) / typical < TOLERANCE


def test_dims_rates_and_provenance(setup):
    ours = setup["ours"]
    prejoint = {"2022": 2048, "2023": 768}[setup["version"]]
    assert ours.audio_dims == {"prejoint": prejoint, "joint": 1024}
    assert ours.text_dims == {"prejoint": 768, "joint": 1024}
    assert ours.sample_rate == 44100
    assert ours.window_samples == {"2022": 5, "2023": 7}[setup["version"]] * 44100
    assert not ours.int16_roundtrip and ours.padding == "repeat"
    record = ours.provenance()
    assert record["front_end"]["filterbank_sample_rate"] == {"2022": 44100, "2023": 32000}[setup["version"]]
    assert record["front_end"]["mel_filters"] == "checkpoint"
    assert record["front_end"]["mel_filters_match_config"] is True
    assert record["checkpoint"]["sha256"] and record["checkpoint"]["verified"] is None
    json.dumps(record)


def test_short_clips_are_filled_as_msclap_fills_them(setup):
    """Our `repeat` padding against msclap's load_audio_into_tensor (its file reader stubbed)."""
    reference = setup["reference"]
    clip = np.random.default_rng(0).standard_normal(100_000).astype(np.float32)
    reference.read_audio = lambda path, resample=True: (torch.from_numpy(clip)[None], 44100)
    expected = reference.load_audio_into_tensor("clip.wav", reference.args.duration).numpy()
    ours = audio_windows(clip, setup["ours"].window_samples, "first", padding="repeat")[0]
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("change, message", [
    ("drop_text", "missing"), ("add", "unexpected"), ("reshape", "has shape"), ("no_audio", "not an msclap"),
])
def test_mismatched_checkpoint_fails_loudly(setup, tmp_path, change, message):
    state = ours_msclap.read_checkpoint(setup["checkpoint"])
    if change == "drop_text":  # msclap would silently keep the hub's pretrained tensor here
        del state[next(k for k in state if k.startswith("caption_encoder.base.")
                       and re.search(r"\.(layer|h)\.1\.", k) and k.endswith("weight"))]
    elif change == "add":
        state["audio_encoder.extra.weight"] = torch.zeros(3)
    elif change == "reshape":
        state["caption_encoder.projection.linear2.weight"] = torch.zeros(7, 7)
    else:
        state = {k: v for k, v in state.items() if not k.startswith("audio_encoder.base.")}
    torch.save({"model": state}, tmp_path / "bad.pth")
    with pytest.raises(InputError, match=message):
        load_model(f"msclap-{setup['version']}", checkpoint=tmp_path / "bad.pth",
                   tokenizer=setup["tokenizer"])


def test_not_an_msclap_checkpoint(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(InputError, match="not an msclap checkpoint"):
        ours_msclap.read_checkpoint(tmp_path / "other.pth")


@pytest.mark.parametrize("name, file", [("msclap-2022", "CLAP_weights_2022.pth"),
                                        ("msclap-2023", "CLAP_weights_2023.pth")])
def test_offline_without_checkpoint_names_the_file_and_option(tmp_path, name, file):
    assert name in list_models()
    with pytest.raises(ModelUnavailable) as info:
        load_model(name, cache_dir=tmp_path)
    message = str(info.value)
    assert file in message and "microsoft/msclap" in message and "--checkpoint" in message
    assert "\n" not in message


@pytest.mark.parametrize("name, hub_id", [("msclap-2022", "bert-base-uncased"), ("msclap-2023", "gpt2")])
def test_missing_tokenizer_offline_names_what_to_fetch(tmp_path, name, hub_id, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    (tmp_path / "w.pth").write_bytes(b"never read: the tokenizer is looked for first")
    with pytest.raises(ModelUnavailable) as info:
        load_model(name, checkpoint=tmp_path / "w.pth")
    assert hub_id in str(info.value) and "--tokenizer" in str(info.value)


def test_extract_then_report(setup, tmp_path):
    """`embedstore extract` with the published-layout file, then `embedstore report`."""
    from embedstore.store import open_store

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result, report, out = extract_and_report(tmp_path, f"msclap-{setup['version']}", "--checkpoint",
                                                 setup["checkpoint"], "--tokenizer", setup["tokenizer"])
    assert result.exit_code == 0, result.output
    with open_store(out) as store:
        prejoint = store.audio("prejoint")
        assert prejoint.shape == (4, setup["ours"].audio_dims["prejoint"])
        assert store.provenance["frontend"]["padding"] == "repeat"
        assert store.provenance["frontend"]["sample_rate"] == 44100
    assert report.exit_code == 0, report.output
    assert (tmp_path / "report" / "report.json").is_file()
