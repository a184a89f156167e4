"""Hostile checkpoints: pickle payloads never run, downloads with the wrong digest are refused
and removed, and a user's own weights load with a warning and their digest in the store."""

import hashlib
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from embedstore.errors import InputError, ModelUnavailable  # noqa: E402
from embedstore.models import clap as clap_models  # noqa: E402
from embedstore.models import hub, load_model  # noqa: E402
from embedstore.models.muscall import _torch_load as muscall_torch_load  # noqa: E402


class OpenPayload:
    """Unpickling this creates the marker file (``open(marker, "w")``)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class SystemPayload:
    """Unpickling this runs a shell command that creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def hostile_files(folder, marker):
    """Checkpoints whose loading with plain pickle would create ``marker``, one per way in."""
    folder.mkdir(exist_ok=True)
    files = {}
    files["zip, payload beside the weights"] = folder / "beside.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": OpenPayload(marker)},
               files["zip, payload beside the weights"])
    files["zip, payload as a weight"] = folder / "as_weight.pt"
    torch.save({"state_dict": {"w": SystemPayload(marker)}}, files["zip, payload as a weight"])
    files["legacy pickle, os.system"] = folder / "legacy.pt"
    files["legacy pickle, os.system"].write_bytes(pickle.dumps(SystemPayload(marker), protocol=2))
    files["hand-written opcodes"] = folder / "opcodes.pth.tar"
    files["hand-written opcodes"].write_bytes(
        b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    return files


@pytest.fixture
def hostile(tmp_path):
    marker = tmp_path / "PWNED"
    return marker, hostile_files(tmp_path / "checkpoints", marker)


def test_the_payloads_are_live(hostile):
    """Plain unpickling of each file does create the marker: the refusals below mean something."""
    marker, files = hostile
    script = (
        "import os, pickle, sys, torch\n"
        "for path in sys.argv[2:]:\n"
        "    if path.endswith('.pt') and open(path, 'rb').read(2) == b'PK':\n"
        "        torch.load(path, weights_only=False)\n"
        "    else:\n"
        "        pickle.load(open(path, 'rb'))\n"
        "    print(os.path.exists(sys.argv[1]))\n"
        "    os.path.exists(sys.argv[1]) and os.unlink(sys.argv[1])\n"
    )
    ran = subprocess.run([sys.executable, "-c", script, str(marker), *map(str, files.values())],
                         cwd=Path(__file__).parent, capture_output=True, text=True, check=False)
    assert ran.stdout.split() == ["True"] * len(files), ran.stderr


@pytest.mark.parametrize("reader, error", [
    (clap_models.read_checkpoint, InputError),
    (muscall_torch_load, ModelUnavailable),
])
def test_loaders_refuse_pickle_payloads_without_running_them(hostile, reader, error):
    marker, files = hostile
    for what, path in files.items():
        with pytest.raises(error) as info:
            reader(Path(path))
        message = str(info.value)
        assert "\n" not in message and str(path.name) in message, (what, message)
        assert not marker.exists(), what


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    pytest.importorskip("tokenizers")
    from clap_fixtures import write_tokenizer

    return write_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture
def cli(monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runner = CliRunner()
    return lambda *args, env=None: runner.invoke(app, [str(a) for a in args],
                                                 env={"COLUMNS": "200", **(env or {})})


def test_extract_with_a_hostile_checkpoint_fails_in_one_line(hostile, tokenizer_dir, cli, tmp_path):
    marker, files = hostile
    for what, path in files.items():
        out = tmp_path / "s.h5"
        result = cli("extract", "--model", "clap-music", "--checkpoint", path, "--tokenizer", tokenizer_dir,
                     "--dataset", "notes", "--out", out, "--workers", "0")
        assert result.exit_code == 1, (what, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "safely" in lines[0], (what, result.stderr)
        assert not marker.exists(), what
        assert not out.exists() and not list(tmp_path.glob("s.h5*"))


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """The published CLAP repository served by a hub on 127.0.0.1, an empty HF cache."""
    import huggingface_hub.constants
    from hub_server import HubServer

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    with HubServer() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server, tmp_path / "cache"


def _cached(cache):
    return [p for p in cache.rglob("*") if p.is_file() and ".locks" not in p.parts
            and "refs" not in p.parts and p.name != "CACHEDIR.TAG"]


def test_a_download_with_the_wrong_digest_is_refused_and_removed(mirror, hostile):
    server, cache = mirror
    marker, files = hostile
    published = clap_models.PUBLISHED["clap-music"]
    server.repos[clap_models.HUB_REPO] = {
        published.file: files["zip, payload beside the weights"].read_bytes()}
    with pytest.raises(ModelUnavailable) as info:
        load_model("clap-music", cache_dir=cache)
    message = str(info.value)
    assert published.sha256 in message and "refusing" in message and "\n" not in message
    assert not _cached(cache)  # neither the file nor a partial one
    assert not marker.exists()


def test_a_download_with_the_right_digest_is_kept(mirror):
    """The same download keeps a file whose digest matches (so the refusal above is about the digest)."""
    server, cache = mirror
    server.repos["owner/weights"] = {"weights.bin": b"\x00weights" * 4096}
    digest = hashlib.sha256(b"\x00weights" * 4096).hexdigest()
    fetched = hub.download("owner/weights", "weights.bin", digest, cache_dir=cache)
    assert fetched.path.read_bytes() == b"\x00weights" * 4096
    assert sorted(p.name for p in _cached(cache)) == [digest, "weights.bin"]  # blob and snapshot link


def test_the_cli_refuses_a_mismatched_download(mirror, cli, tmp_path, tokenizer_dir, monkeypatch):
    import huggingface_hub.constants

    server, cache = mirror
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    server.repos[clap_models.HUB_REPO] = {clap_models.PUBLISHED["clap-music"].file: b"tampered" * 1000}
    out = tmp_path / "s.h5"
    result = cli("extract", "--model", "clap-music", "--tokenizer", tokenizer_dir, "--dataset", "notes",
                 "--out", out, "--workers", "0", env={"HF_HUB_OFFLINE": "0", "HF_HUB_CACHE": str(cache)})
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing" in lines[0]
    assert not out.exists() and not _cached(cache)


@pytest.mark.slow
def test_a_user_checkpoint_with_another_digest_loads_with_a_warning_and_is_recorded(cli, tmp_path, tokenizer_dir):
    """A real (tiny, random) LAION-CLAP file through `embedstore extract --checkpoint`."""
    import clap_fixtures

    from embedstore.store import open_store

    clap_fixtures.import_laion_clap()
    checkpoint = clap_fixtures.write_clap_checkpoint(
        clap_fixtures.build_laion_clap("HTSAT-tiny", tokenizer_dir), tmp_path / "mine.pt")
    digest = hub.sha256_file(checkpoint)
    assert digest != clap_models.PUBLISHED["clap-music"].sha256
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(2):
        t = np.arange(12000) / 48000
        sf.write(folder / f"c{i}.wav", (0.3 * np.sin(2 * np.pi * (300 + 200 * i) * t)).astype(np.float32), 48000)
    (folder / "labels.csv").write_text("path,label\nc0.wav,low\nc1.wav,high\n")
    out = tmp_path / "s.h5"
    result = cli("extract", "--model", "clap-music", "--checkpoint", checkpoint, "--tokenizer", tokenizer_dir,
                 "--dataset", "folder", "--root", folder, "--out", out, "--workers", "0",
                 "--prompts", "track", "--long", "first")
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and digest in warned[0] and "not the published" in warned[0], result.stderr
    with open_store(out) as st:
        assert st.provenance["checkpoint_sha256"] == digest
        record = st.provenance["encoder"]["checkpoint"]
        assert record["file"] == "mine.pt" and record["verified"] is False
        assert record["expected_sha256"] == clap_models.PUBLISHED["clap-music"].sha256


class Interrupted(Exception):
    """Stands in for a kill: raised from the progress callback once rows are journaled."""


def test_resume_refuses_other_weights_and_accepts_the_same(tmp_path):
    from extract_encoder import TinyEncoder, save_checkpoint

    from embedstore.datasets import load_dataset
    from embedstore.extract import run_extract
    from embedstore.extract.prompts import build_prompt_set
    from embedstore.store import open_store

    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(6):
        sf.write(folder / f"c{i}.wav", np.sin(np.arange(4000) * (0.05 + 0.02 * i)).astype(np.float32), 16000)
    (folder / "labels.csv").write_text("path,label\n" + "".join(f"c{i}.wav,{'ab'[i % 2]}\n" for i in range(6)))
    data = load_dataset("folder", folder)
    specs = [build_prompt_set("track", data.classes)]
    ckpt_a = save_checkpoint(tmp_path / "a.safetensors", seed=1)
    ckpt_b = save_checkpoint(tmp_path / "b.safetensors", seed=2)
    out = tmp_path / "s.h5"

    def stop_after_first_rows(done, total, failed):
        if done:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_extract(TinyEncoder(str(ckpt_a)), data, specs, out, batch_size=2, progress=stop_after_first_rows)
    with pytest.raises(InputError, match="weights"):
        run_extract(TinyEncoder(str(ckpt_b)), data, specs, out, batch_size=2, resume=True)
    summary = run_extract(TinyEncoder(str(ckpt_a)), data, specs, out, batch_size=2, resume=True)
    assert summary.resumed_from > 0
    run_extract(TinyEncoder(str(ckpt_a)), data, specs, tmp_path / "whole.h5", batch_size=2)
    with open_store(out) as resumed, open_store(tmp_path / "whole.h5") as whole:
        assert resumed.provenance["checkpoint_sha256"] == TinyEncoder(str(ckpt_a)).checkpoint["sha256"]
        for space in whole.audio_spaces:
            assert resumed.audio(space).tobytes() == whole.audio(space).tobytes()
