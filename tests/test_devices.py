"""Devices and numerics on the CPU: device choice, bad devices, the precision flags, out of
memory, device identity on resume, and the per-batch checks of the vectors.

No GPU is needed: CUDA's presence is emulated by replacing torch.cuda's queries, and
running out of memory by an encoder that raises torch's own error.
"""

import json
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from extract_encoder import NAME, TinyEncoder, load_tiny  # noqa: E402
from test_extract import extract, read_store, write_clips  # noqa: E402

from embedstore.datasets import load_dataset  # noqa: E402
from embedstore.errors import InputError  # noqa: E402
from embedstore.extract import run_extract  # noqa: E402
from embedstore.extract.feeding import window_problems  # noqa: E402
from embedstore.models import device as devices  # noqa: E402


@pytest.fixture
def one_gpu(monkeypatch):
    """This process believes it has one CUDA device."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


def test_auto_picks_cuda_then_mps_then_cpu(monkeypatch, one_gpu):
    assert devices.resolve_device("auto") == torch.device("cuda", 0)
    assert devices.resolve_device(None) == torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: True)
    assert devices.resolve_device("auto") == torch.device("mps")
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    assert devices.resolve_device("auto") == torch.device("cpu")


def test_named_devices_are_checked_against_the_machine(one_gpu, monkeypatch):
    assert devices.resolve_device("cuda") == torch.device("cuda", 0)
    assert devices.resolve_device("CUDA:0") == torch.device("cuda", 0)
    with pytest.raises(InputError, match=r"--device cuda:1: this machine has 1 CUDA device \(cuda:0\)"):
        devices.resolve_device("cuda:1")
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    with pytest.raises(InputError, match="MPS is not available"):
        devices.resolve_device("mps")
    with pytest.raises(InputError, match="unknown device 'gpu0'"):
        devices.resolve_device("gpu0")
    with pytest.raises(InputError, match="not supported"):
        devices.resolve_device("meta")


def test_cuda_without_cuda_is_refused(no_gpu):
    with pytest.raises(InputError, match="--device cuda: CUDA is not available here"):
        devices.resolve_device("cuda")


@pytest.fixture
def cli(monkeypatch):
    from typer.testing import CliRunner

    from cli.main import app
    from embedstore import models

    monkeypatch.setitem(models.MODELS, NAME, load_tiny)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    return write_clips(tmp_path_factory.mktemp("clips"), n_good=6)


@pytest.fixture(scope="module")
def dataset(clip_folder):
    return load_dataset("folder", clip_folder)


def extract_args(root, out, *extra):
    return ["extract", "--model", NAME, "--dataset", "folder", "--root", root, "--out", out,
            "--batch-size", "2", "--workers", "0", "--prompts", "track", *extra]


@pytest.mark.parametrize("device, fake, message", [
    ("cuda", None, "--device cuda: CUDA is not available here"),
    ("cuda:1", "one_gpu", "--device cuda:1: this machine has 1 CUDA device (cuda:0)"),
    ("mps", None, "--device mps: Apple's MPS is not available"),
    ("tpu", None, "unknown device 'tpu'"),
])
def test_bad_devices_are_one_line_before_anything_is_written(cli, clip_folder, tmp_path, request,
                                                              monkeypatch, device, fake, message):
    if fake:
        request.getfixturevalue(fake)
    else:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(devices, "_mps_available", lambda: False)
    result = cli(*extract_args(clip_folder, tmp_path / "s.h5", "--device", device))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert not list(tmp_path.iterdir())


def test_the_bundled_model_loader_never_moves_to_a_missing_gpu(one_gpu):
    from embedstore.models import load_model

    with pytest.raises(InputError, match="cuda:1"):
        load_model("notes-toy", device="cuda:1")


def test_fp32_is_ieee_everywhere_and_the_flags_are_recorded(dataset, tmp_path):
    torch.backends.cudnn.conv.fp32_precision = "tf32"  # torch's default for cuDNN convolutions
    torch.backends.cudnn.benchmark = True
    extract(dataset, tmp_path / "s.h5")
    assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"
    assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic is True
    provenance = read_store(tmp_path / "s.h5")["provenance"]
    numerics = provenance["numerics"]
    assert numerics["precision"] == "fp32"
    assert numerics["tf32_matmul"] is False and numerics["tf32_cudnn"] is False
    assert numerics["cudnn_benchmark"] is False and numerics["cudnn_deterministic"] is True
    assert numerics["float32_matmul_precision"] == "highest"
    assert provenance["device"]["type"] == "cpu" and provenance["device"]["name"]


def test_a_gpu_identity_names_the_card_and_its_libraries(monkeypatch, one_gpu):
    class Props:
        name, major, minor, total_memory, uuid = "NVIDIA H200", 9, 0, 150_000_000_000, "GPU-1234"

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: Props)
    monkeypatch.setattr(torch.backends.cudnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91002)
    identity = devices.device_identity("cuda:0")
    assert identity["name"] == "NVIDIA H200" and identity["capability"] == "9.0"
    assert identity["cudnn"] == 91002 and identity["uuid"] == "GPU-1234"
    assert {"driver", "cuda", "cuda_driver_api", "memory_bytes", "index"} <= set(identity)


def test_same_hardware_refuses_another_card_and_warns_on_versions():
    h200 = {"type": "cuda", "name": "NVIDIA H200", "driver": "570.1", "cuda": "12.8", "cudnn": 91002}
    assert devices.same_hardware(h200, dict(h200)) == ([], [])
    refused, _ = devices.same_hardware(h200, {**h200, "name": "NVIDIA A100"})
    assert refused and "A100" in refused[0]
    refused, _ = devices.same_hardware(h200, {"type": "cpu", "name": "AMD EPYC"})
    assert refused and "device type" in refused[0]
    refused, warned = devices.same_hardware(h200, {**h200, "driver": "575.0"})
    assert not refused and warned == ["driver '570.1', now '575.0'"]
    refused, warned = devices.same_hardware({"type": "cpu", "name": "Intel"}, {"type": "cpu", "name": "AMD"})
    assert not refused and "CPU" in warned[0]


# ---------------------------------------------------------------- out of memory and resume

class OutOfMemoryAfter(TinyEncoder):
    """The tiny encoder, running out of device memory from its ``limit``-th audio batch on
    when batches hold more than ``fits`` windows."""

    def __init__(self, limit: int, fits: int = 1):
        super().__init__()
        self.limit, self.fits, self.calls = limit, fits, 0

    def forward_audio(self, windows):
        self.calls += 1
        if self.calls >= self.limit and len(windows) > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward_audio(windows)


def test_out_of_memory_is_one_line_and_resume_continues_with_a_smaller_batch(dataset, tmp_path):
    out = tmp_path / "s.h5"
    with pytest.raises(devices.DeviceOutOfMemory) as caught:
        extract(dataset, out, model=OutOfMemoryAfter(limit=3), batch_size=2, journal_seconds=1e9)
    message = str(caught.value)
    assert message == ("out of memory on cpu with --batch-size 2; try --batch-size 1 with --resume "
                       "(the rows done so far are kept)")
    journal = tmp_path / "s.h5.partial"
    assert sorted(p.name for p in journal.glob("batch-*.npz"))  # the rows that fitted were kept
    with pytest.raises(InputError, match="another --long"):
        extract(dataset, out, model=OutOfMemoryAfter(limit=1), batch_size=1, resume=True,
                long_mode="first")
    extract(dataset, out, model=OutOfMemoryAfter(limit=1), batch_size=1, resume=True)
    extract(dataset, tmp_path / "straight.h5", batch_size=2)
    resumed, straight = read_store(out), read_store(tmp_path / "straight.h5")
    assert resumed["ids"] == straight["ids"] and resumed["failed"] == straight["failed"]
    for space in straight["audio"]:
        np.testing.assert_allclose(resumed["audio"][space], straight["audio"][space], rtol=1e-5, atol=1e-6)
    row = resumed["provenance"]["resumed"]
    assert row > 0
    assert resumed["provenance"]["extraction"]["batch_size"] == 2
    assert resumed["provenance"]["extraction"]["batch_size_changes"] == [{"row": row, "from": 2, "to": 1}]


def test_out_of_memory_on_the_command_line_is_one_line(cli, clip_folder, tmp_path, monkeypatch):
    from embedstore import models

    monkeypatch.setitem(models.MODELS, NAME, lambda *a, **k: OutOfMemoryAfter(limit=1))
    result = cli(*extract_args(clip_folder, tmp_path / "s.h5"))
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert errors == ["error: out of memory on cpu with --batch-size 2; try --batch-size 1 with "
                      "--resume (the rows done so far are kept)"], result.output  # no traceback


def test_text_out_of_memory_is_one_line(dataset, tmp_path):
    class TextTooBig(TinyEncoder):
        def embed_text(self, texts):
            raise torch.OutOfMemoryError("CUDA out of memory.")

    with pytest.raises(devices.DeviceOutOfMemory, match="with --batch-size 4; try --batch-size 2"):
        extract(dataset, tmp_path / "s.h5", model=TextTooBig())


def _tamper_device(journal_dir, **changes):
    header_path = journal_dir / "header.json"
    header = json.loads(header_path.read_text())
    header["provenance"]["device"].update(changes)
    header_path.write_text(json.dumps(header))


def test_resume_compares_the_device_identity_not_its_name_string(dataset, tmp_path):
    out = tmp_path / "s.h5"
    with pytest.raises(devices.DeviceOutOfMemory):
        extract(dataset, out, model=OutOfMemoryAfter(limit=3), batch_size=2, journal_seconds=1e9)
    journal = tmp_path / "s.h5.partial"
    _tamper_device(journal, type="cuda", name="NVIDIA A100-SXM4-80GB")
    with pytest.raises(InputError, match="started on device type 'cuda', now 'cpu'"):
        extract(dataset, out, batch_size=2, resume=True)
    _tamper_device(journal, type="cpu", name="Some other CPU")
    with pytest.warns(UserWarning, match="CPU 'Some other CPU'"):
        extract(dataset, out, batch_size=2, resume=True)
    assert read_store(out)["provenance"]["resumed"] > 0


# ---------------------------------------------------------------- the checks on the vectors

def test_window_problems_flag_non_finite_and_non_unit_vectors():
    joint = np.array([[0.6, 0.8], [0.0, 0.0], [np.nan, 1.0], [0.6, 0.8]], np.float32)
    prejoint = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [np.inf, 0.0]], np.float32)
    problems = window_problems({"joint": joint, "prejoint": prejoint}, " (hint)")
    assert problems[0] is None
    assert problems[1] == "the model gave a joint vector of length 0, not 1 (hint)"
    assert problems[2] == "the model gave a non-finite joint vector (hint)"
    assert problems[3] == "the model gave a non-finite prejoint vector (hint)"


@pytest.fixture(scope="module")
def notes_toy():
    from embedstore.models import load_model

    return load_model("notes-toy", device="cpu")


@pytest.fixture(scope="module")
def few_notes():
    import dataclasses

    notes = load_dataset("notes", None)
    return dataclasses.replace(notes, items=notes.items[:5])


def _scaled_attention_pool(model, scale):
    """Multiply the audio tower's attention-pool output (its c_proj) by ``scale``."""
    projection = model.model.audio_backbone.attnpool.c_proj
    with torch.no_grad():
        projection.weight.mul_(scale)
        projection.bias.mul_(scale)


@pytest.mark.parametrize("scale, precision, reason", [
    (1e36, "fp32", "the model gave a joint vector of length 0, not 1"),
    (1e4, "fp16", "the model gave a non-finite joint vector (fp16 overflow? try --precision bf16 or fp32)"),
])
def test_an_overflowing_model_stores_nothing_and_says_why(notes_toy, few_notes, tmp_path, scale,
                                                          precision, reason):
    """notes-toy with activations near float32's limit (1e37) or past fp16's (65,504)."""
    _scaled_attention_pool(notes_toy, scale)
    notes_toy.precision = precision
    try:
        summary = run_extract(notes_toy, few_notes, [], tmp_path / "s.h5", batch_size=2)
    finally:
        _scaled_attention_pool(notes_toy, 1 / scale)
        notes_toy.precision = "fp32"
    assert summary.items == 0 and len(summary.failed) == 5
    assert {why for _, why in summary.failed} == {reason}


def test_the_same_scale_is_stored_in_fp32_and_bf16(notes_toy, few_notes, tmp_path):
    _scaled_attention_pool(notes_toy, 1e4)
    try:
        for precision in ("fp32", "bf16"):
            notes_toy.precision = precision
            summary = run_extract(notes_toy, few_notes, [], tmp_path / f"{precision}.h5", batch_size=2)
            assert summary.items == 5 and not summary.failed
    finally:
        _scaled_attention_pool(notes_toy, 1e-4)
        notes_toy.precision = "fp32"


def test_the_command_says_how_many_clips_failed_the_checks(cli, clip_folder, tmp_path, monkeypatch):
    from embedstore import models

    class Overflowing(TinyEncoder):
        def forward_audio(self, windows):
            out = super().forward_audio(windows)
            out["joint"][0] = float("inf")  # the first window of every batch overflows
            return out

    monkeypatch.setitem(models.MODELS, NAME, lambda *a, **k: Overflowing())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = cli(*extract_args(clip_folder, tmp_path / "s.h5"))
    assert result.exit_code == 0, result.output
    assert "clip(s) gave non-finite or non-unit vectors and were not stored" in result.stdout
    failed = read_store(tmp_path / "s.h5")["failed"]
    checked = [path for path, why in failed if why == "the model gave a non-finite joint vector"]
    assert checked and f"{len(checked)} clip(s) gave non-finite" in result.stdout


# ---------------------------------------------------------------- extract-text follows the store

def test_extract_text_follows_the_stores_device_and_precision(cli, clip_folder, tmp_path, monkeypatch,
                                                              no_gpu):
    from embedstore import models

    class MadeOnGpu(TinyEncoder):
        def provenance(self):
            return {**super().provenance(), "device": "cuda:0", "precision": "bf16"}

    monkeypatch.setitem(models.MODELS, NAME, lambda *a, **k: MadeOnGpu())
    store = tmp_path / "s.h5"
    assert cli(*extract_args(clip_folder, store)).exit_code == 0
    asked = []

    def loader(checkpoint, device, precision, cache_dir, **_):
        asked.append((device, precision))
        return TinyEncoder()

    monkeypatch.setitem(models.MODELS, NAME, loader)
    refused = cli("extract-text", store, "--prompts", "solo")
    assert refused.exit_code == 1 and not asked
    assert refused.stderr.strip().splitlines() == [
        f"error: {store} was made on cuda:0, which this machine does not have; pass --device (e.g. "
        "--device cpu: its text vectors then differ from the store's by rounding)"]
    told = cli("extract-text", store, "--prompts", "solo", "--device", "cpu")
    assert told.exit_code == 0, told.output
    assert asked == [("cpu", "bf16")]  # the store's precision, the device it was told
