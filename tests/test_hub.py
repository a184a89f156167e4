"""Published files through huggingface_hub, against a hub emulated on 127.0.0.1."""

import hashlib

import pytest
from hub_server import HubServer

from embedstore.errors import ModelUnavailable
from embedstore.models import hub

WEIGHTS = b"\x00weights" * 4096
DIGEST = hashlib.sha256(WEIGHTS).hexdigest()


@pytest.fixture
def server(monkeypatch, tmp_path):
    """The emulated hub, HF_ENDPOINT pointed at it, downloads on, an empty HF cache."""
    import huggingface_hub.constants

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    # huggingface_hub reads HF_HUB_OFFLINE once, at import; another test may have set it then
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with HubServer() as running:
        running.repos["owner/models"] = {"weights.pt": WEIGHTS, "notes.txt": b"hello"}
        monkeypatch.setenv("HF_ENDPOINT", running.url)
        yield running


def cached_files(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file() and ".locks" not in p.parts
                  and p.name != "CACHEDIR.TAG" and "refs" not in p.parts)


def test_download_lands_in_the_hf_cache_and_is_reused_offline(server, tmp_path, monkeypatch):
    fetched = hub.download("owner/models", "weights.pt", DIGEST)
    assert fetched.source == "hub" and fetched.sha256 == DIGEST
    assert fetched.revision == server.commit("owner/models")
    assert (tmp_path / "hf-cache") in fetched.path.parents
    assert fetched.record()["hub_revision"] == fetched.revision
    served = len(server.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = hub.download("owner/models", "weights.pt", DIGEST)
    assert again.source == "hf-cache" and again.path == fetched.path
    assert len(server.requests) == served  # nothing asked of the hub


@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"])
@pytest.mark.parametrize("value", ["1", "ON", "on", "YES", "yes", "TRUE", "True", "true"])
def test_every_offline_spelling_stops_downloads(server, monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ModelUnavailable) as info:
        hub.download("owner/models", "weights.pt", DIGEST)
    message = str(info.value)
    assert "weights.pt" in message and "--checkpoint PATH" in message and "\n" not in message
    assert server.requests == []


@pytest.mark.parametrize("value", ["0", "off", "no", "false", ""])
def test_other_values_leave_downloads_on(server, monkeypatch, value):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert not hub.hub_offline()
    assert hub.download("owner/models", "weights.pt", DIGEST).source == "hub"


def test_hf_token_is_sent(server, monkeypatch):
    server.required_token = "secret-token"
    with pytest.raises(ModelUnavailable) as info:
        hub.download("owner/models", "weights.pt", DIGEST)
    assert "weights.pt" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setenv("HF_TOKEN", "secret-token")
    assert hub.download("owner/models", "weights.pt", DIGEST).sha256 == DIGEST
    assert server.requests[-1][2] == "Bearer secret-token"


def test_a_mismatched_digest_is_refused_and_removed(server, tmp_path):
    with pytest.raises(ModelUnavailable) as info:
        hub.download("owner/models", "weights.pt", "0" * 64)
    assert "refusing" in str(info.value) and DIGEST in str(info.value)
    assert cached_files(tmp_path / "hf-cache") == []


def test_a_missing_file_or_an_unreachable_hub_is_one_line(server, monkeypatch, capfd):
    with pytest.raises(ModelUnavailable) as info:
        hub.download("owner/models", "absent.pt", None)
    assert "absent.pt" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    capfd.readouterr()
    with pytest.raises(ModelUnavailable) as info:
        hub.download("owner/models", "weights.pt", DIGEST)
    assert "weights.pt" in str(info.value) and "\n" not in str(info.value)
    # huggingface_hub's retries ("Retrying in 8s [Retry 5/5]") are not printed: the error is the one line
    assert capfd.readouterr().err == ""


def test_snapshot_records_the_commit(server):
    folder, revision, source = hub.snapshot("owner/models", ["*.txt"])
    assert source == "hub" and revision == server.commit("owner/models")
    assert (folder / "notes.txt").read_bytes() == b"hello" and not (folder / "weights.pt").exists()
    assert hub.digests(folder, "*.txt") == {"notes.txt": hashlib.sha256(b"hello").hexdigest()}


# ---------------------------------------------------------------- through the registry

def test_a_published_name_refuses_a_mismatched_download(server, tmp_path):
    pytest.importorskip("torch")
    from embedstore.models import clap as clap_models
    from embedstore.models import load_model

    published = clap_models.PUBLISHED["clap-music"]
    server.repos[clap_models.HUB_REPO] = {published.file: b"tampered" * 1000}
    with pytest.raises(ModelUnavailable) as info:
        load_model("clap-music", cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert published.sha256 in message and "refusing" in message and "\n" not in message
    assert cached_files(tmp_path / "cache") == []


def test_hf_hub_id_records_revision_and_weight_digests(server, tmp_path):
    pytest.importorskip("torch")
    from clap_fixtures import write_tokenizer
    from transformers import ClapConfig, ClapModel

    from embedstore.models import load_model

    tokenizer = write_tokenizer(tmp_path / "tok")
    config = ClapConfig(text_config=dict(vocab_size=399, hidden_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=32,
                                         max_position_embeddings=80, pad_token_id=1),
                        audio_config=dict(patch_embeds_hidden_size=16, depths=[1, 1, 1, 1],
                                          num_attention_heads=[1, 1, 1, 1], hidden_size=128),
                        projection_dim=16)
    ClapModel(config).save_pretrained(str(tmp_path / "saved"))
    files = {p.name: p.read_bytes() for p in (tmp_path / "saved").iterdir()}
    files.update({p.name: p.read_bytes() for p in tokenizer.iterdir()})
    server.repos["owner/clap"] = files
    encoder = load_model("hf:owner/clap")
    record = encoder.provenance()["checkpoint"]
    assert record["hub_revision"] == server.commit("owner/clap") and record["source"] == "hub"
    assert record["files_sha256"] == {"model.safetensors": hashlib.sha256(files["model.safetensors"]).hexdigest()}
    assert record["sha256"] == record["files_sha256"]["model.safetensors"]
    assert encoder.embed_text(["a violin"])["joint"].shape == (1, 16)
