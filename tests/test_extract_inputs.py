"""Issue 10: --resume continues the same run or refuses; every input is checked before
the first clip is decoded; extract-text on a store without extraction settings."""

import hashlib

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("torch")

from extract_encoder import TinyEncoder, save_checkpoint  # noqa: E402

from embedstore.datasets import Dataset, Item, load_dataset  # noqa: E402
from embedstore.errors import InputError  # noqa: E402
from embedstore.extract import run_extract  # noqa: E402
from embedstore.extract.fingerprint import (  # noqa: E402
    FINGERPRINT_SETTINGS,
    fingerprint_mismatch,
    settings_fingerprint,
)
from embedstore.extract.prompts import build_prompt_set  # noqa: E402
from embedstore.store import create_store, open_store  # noqa: E402

SR = 16000


class Stop(Exception):
    """Raised from the progress callback: the run dies after its first batches, journal kept."""


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    lines = ["path,label"]
    for i in range(8):
        t = np.arange(int(SR * (0.3 + 0.1 * i))) / SR
        sf.write(root / f"c{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32), SR)
        lines.append(f"c{i}.wav,{'low' if i % 2 else 'high'}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


def extract(dataset, out, prompts=("track",), model=None, stop_after=None, **kwargs):
    model = model or TinyEncoder()
    specs = [build_prompt_set(p, dataset.classes) for p in prompts]

    def progress(done, total, failed):
        if stop_after is not None and done >= stop_after:
            raise Stop

    kwargs = {"batch_size": 2, "long_mode": "mean", **kwargs}
    return run_extract(model, dataset, specs, out, command=["test"], progress=progress, **kwargs)


def interrupted(dataset, out, **kwargs):
    with pytest.raises(Stop):
        extract(dataset, out, stop_after=2, **kwargs)
    assert (out.parent / (out.name + ".partial")).is_dir() and not out.exists()


def test_fingerprint_names_the_setting_and_leaves_out_batch_size_and_device():
    a = settings_fingerprint({"model": "m", "items": {"ids": ["a"]}, "dtype": "float32"})
    assert fingerprint_mismatch(a, a) is None
    assert fingerprint_mismatch(a, {**a, "dtype": "x"}) == "dtype"
    assert fingerprint_mismatch(a, {k: v for k, v in a.items() if k != "items"}) == "items"
    assert all(len(v) == 16 for v in a.values())
    assert "batch_size" not in FINGERPRINT_SETTINGS and "device" not in FINGERPRINT_SETTINGS


@pytest.mark.parametrize("change, setting", [
    ({"prompts": ("solo",)}, "--prompts"),
    ({"dtype": "float16"}, "--dtype"),
    ({"long_mode": "first"}, "--long"),
])
def test_resume_with_other_settings_is_refused_naming_the_setting(folder, tmp_path, change, setting):
    data = load_dataset("folder", folder)
    out = tmp_path / "s.h5"
    interrupted(data, out)
    with pytest.raises(InputError, match=f"cannot resume .* another {setting}"):
        extract(data, out, resume=True, **change)
    assert not out.exists()
    summary = extract(data, out, resume=True)  # the same settings still finish the run
    assert summary.resumed_from >= 2 and not summary.already_complete
    with open_store(out) as st:
        assert set(st.provenance["settings_fingerprint"]) == set(FINGERPRINT_SETTINGS)
        assert st.prompt_sets == ["track"]


def test_resume_with_other_weights_is_refused(folder, tmp_path):
    data = load_dataset("folder", folder)
    out = tmp_path / "s.h5"
    interrupted(data, out)
    other = TinyEncoder(str(save_checkpoint(tmp_path / "b.safetensors", seed=7)))
    with pytest.raises(InputError, match="another checkpoint"):
        extract(data, out, model=other, resume=True)


def test_resume_on_another_device_continues(folder, tmp_path):
    class OtherDevice(TinyEncoder):
        def provenance(self):
            return {**super().provenance(), "device": "cuda:0"}

    data = load_dataset("folder", folder)
    out = tmp_path / "s.h5"
    interrupted(data, out)
    summary = extract(data, out, model=OtherDevice(), resume=True)
    assert summary.items == 8 and summary.resumed_from >= 2


def test_finished_store_same_settings_is_already_complete_other_settings_refused(folder, tmp_path):
    data = load_dataset("folder", folder)
    out = tmp_path / "s.h5"
    extract(data, out)
    before = hashlib.sha256(out.read_bytes()).hexdigest()
    summary = extract(data, out, resume=True)
    assert summary.already_complete and summary.items == 8
    for change, setting in (({"dtype": "float16"}, "--dtype"), ({"prompts": ("solo",)}, "--prompts"),
                            ({"model": TinyEncoder(str(save_checkpoint(tmp_path / "w.safetensors", 3)))},
                             "checkpoint")):
        with pytest.raises(InputError, match=f"finished store; it was made with another {setting}"):
            extract(data, out, resume=True, **change)
    assert hashlib.sha256(out.read_bytes()).hexdigest() == before


def test_already_complete_on_the_command_line(folder, tmp_path, monkeypatch):
    import extract_encoder
    from typer.testing import CliRunner

    from cli.main import app
    from embedstore import models

    monkeypatch.setitem(models.MODELS, extract_encoder.NAME, extract_encoder.load_tiny)
    args = ["extract", "--model", "test-tiny", "--dataset", "folder", "--root", str(folder),
            "--out", str(tmp_path / "s.h5"), "--batch-size", "2", "--workers", "0", "--prompts", "track"]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    again = runner.invoke(app, [*args, "--resume"], env={"COLUMNS": "300"})
    assert again.exit_code == 0 and "already complete" in again.stdout
    other = runner.invoke(app, [*args, "--resume", "--dtype", "float16"])
    assert other.exit_code == 1 and "--dtype" in other.stderr and "Traceback" not in other.output


# ---------------------------------------------------------------- inputs checked before the long pass


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any clip is decoded."""
    import embedstore.extract.audio as audio

    def refuse(*args, **kwargs):
        raise AssertionError("a clip was decoded before the inputs were checked")

    for name in ("prepare", "decode", "load_audio", "mono_blocks"):
        monkeypatch.setattr(audio, name, refuse)


def write_labels(folder, text):
    (folder / "labels.csv").write_bytes(text.encode("utf-8"))
    return folder / "labels.csv"


def test_column_with_a_slash_is_refused_when_the_csv_is_read(folder):
    write_labels(folder, "path,label,split/fold\nc0.wav,low,1\nc1.wav,high,2\n")
    with pytest.raises(InputError, match="split/fold.*'/'"):
        load_dataset("folder", folder)


def test_trailing_comma_header_and_bom_are_read(folder):
    write_labels(folder, "\ufeffpath,label,take,\r\nc0.wav,low,1,\r\nc1.wav,\ufeffhigh,2,\r\n")
    data = load_dataset("folder", folder)
    assert data.classes == ["high", "low"] and list(data.items[0].metadata) == ["take"]
    write_labels(folder, "path,label,,take\nc0.wav,low,x,1\n")
    with pytest.raises(InputError, match="empty"):
        load_dataset("folder", folder)
    write_labels(folder, "path,label,\nc0.wav,low,oops\n")
    with pytest.raises(InputError, match="empty"):
        load_dataset("folder", folder)


@pytest.mark.parametrize("rows, message", [
    ("c0.wav,\n", "line 2 has no label"),
    ("c0.wav,low;\n", "empty label"),
    (",low\n", "line 2 has no path"),
    ("c0.wav,lo\x00w\n", "control character"),
])
def test_empty_or_bad_cells_are_refused(folder, rows, message):
    write_labels(folder, "path,label\n" + rows)
    with pytest.raises(InputError, match=message):
        load_dataset("folder", folder)


def test_nul_in_a_prompt_file_is_refused_when_read(tmp_path):
    prompts = tmp_path / "mine.txt"
    prompts.write_text("a high tone\na lo\x00w tone\n")
    with pytest.raises(InputError, match="control character"):
        build_prompt_set(prompts, ["high", "low"])
    prompts.write_text("\ufeffa high tone\na low tone\n")
    assert build_prompt_set(prompts, ["high", "low"]).prompts == ["a high tone", "a low tone"]


@pytest.mark.parametrize("field, value, message", [
    ("column", "split/fold", "metadata column"),
    ("class", "lo\x00w", "class"),
    ("id", "", "item id"),
    ("value", "x\x00y", "NUL"),
])
def test_run_extract_checks_every_name_before_decoding(folder, tmp_path, no_decoding, field, value, message):
    items, classes = [], ["high", "low"]
    for i in range(3):
        metadata = {"split/fold" if field == "column" else "take": value if field == "value" else str(i)}
        item_id = value if field == "id" and i == 0 else f"c{i}"
        items.append(Item(item_id, folder / f"c{i}.wav", (classes[i % 2],), metadata))
    if field == "class":
        classes = ["high", value]
        items = [Item(it.id, it.path, ((classes[j % 2]),), it.metadata) for j, it in enumerate(items)]
    data = Dataset("folder", folder, classes, items, multilabel=False)
    with pytest.raises(InputError, match=message):
        extract(data, tmp_path / "s.h5")
    assert not (tmp_path / "s.h5").exists() and not (tmp_path / "s.h5.partial").exists()


def test_run_extract_checks_prompts_before_decoding(folder, tmp_path, no_decoding):
    from embedstore.extract.prompts import PromptSpec

    data = load_dataset("folder", folder)
    for spec, message in ((PromptSpec("a/b", ["x", "y"], np.arange(2, dtype=np.int32)), "prompt set name"),
                          (PromptSpec("ok", ["x", "y\x00"], np.arange(2, dtype=np.int32)), "prompt of set")):
        with pytest.raises(InputError, match=message):
            run_extract(TinyEncoder(), data, [spec], tmp_path / "s.h5", batch_size=2)


def test_extract_text_on_a_store_without_extraction_settings_is_one_line(tmp_path, monkeypatch):
    import extract_encoder
    from typer.testing import CliRunner

    from cli.main import app
    from embedstore import models

    monkeypatch.setitem(models.MODELS, extract_encoder.NAME, extract_encoder.load_tiny)
    store = tmp_path / "s.h5"
    sha = TinyEncoder().provenance()["checkpoint"]["sha256"]
    with create_store(store, model="test-tiny", dataset="d", classes=["high", "low"],
                      provenance={"extraction": None, "checkpoint_sha256": sha}) as w:
        w.set_items(["a", "b"], labels=np.array([0, 1]))
        w.add_audio("joint", np.eye(2, 16))
    result = CliRunner().invoke(app, ["extract-text", str(store), "--prompts", "track"])
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    assert result.exit_code == 0, result.output
    with open_store(store) as st:
        assert st.prompt_sets == ["track"]
