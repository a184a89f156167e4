"""Issue 10, sections 2, 5 and 8 at the CLI: every reproduced failure, one test each.

Nothing the user owns is overwritten (every writing command goes through the output
policy before any work), store strings print as they are, bad paths and numbers are
one line, and report file names stay distinct per source name.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from metric_stores import make_store
from typer.testing import CliRunner

from analyses.report import ReportOptions, build_report, file_stem, md_escape, result_name
from cli.main import app
from embedstore.store import create_store

runner = CliRunner()


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    return result


def error_line(result) -> str:
    """The one stderr line of a failed command."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("store") / "s.h5")


# ------------------------------------------------------------------ section 2: outputs


def test_an_analysis_never_writes_its_json_over_its_store(store, tmp_path):
    target = shutil.copy(store, tmp_path / "s.h5")
    before = Path(target).read_bytes()
    for extra in ([], ["--overwrite"]):  # before the fix the store became JSON
        result = cli("analyze", "zeroshot", target, "--prompts", "single", "--json", target, *extra)
        assert result.exit_code == 1 and "is an input" in error_line(result)
    assert Path(target).read_bytes() == before


@pytest.mark.parametrize("command", [["zeroshot", "--prompts", "single"], ["centroids"],
                                     ["histograms", "--centroids"], ["confidence", "--prompts", "single"]])
def test_analysis_outputs_need_overwrite(store, tmp_path, command):
    name, *options = command
    mine = tmp_path / "mine.json"
    mine.write_text("my notes")
    result = cli("analyze", name, store, *options, "--json", mine)
    assert result.exit_code == 1 and "pass --overwrite" in error_line(result)
    assert mine.read_text() == "my notes"
    assert cli("analyze", name, store, *options, "--json", mine, "--overwrite").exit_code == 0
    assert json.loads(mine.read_text())["model"] == "toy"


def test_export_never_replaces_the_users_files_without_overwrite(store, tmp_path):
    rel = tmp_path / "rel"
    rel.mkdir()
    (rel / "items.csv").write_text("id,label\nmine,1\n")
    result = cli("export", store, "--audio", "joint", "--out", rel / "items")
    assert result.exit_code == 1 and "items.csv exists; pass --overwrite" in error_line(result)
    assert (rel / "items.csv").read_text() == "id,label\nmine,1\n" and not (rel / "items.npy").exists()
    assert cli("export", store, "--audio", "joint", "--out", rel / "items", "--overwrite").exit_code == 0
    assert np.load(rel / "items.npy").shape == (240, 12)


def test_import_never_writes_over_its_own_items_csv(tmp_path):
    items = tmp_path / "items.csv"
    items.write_text("id,label\na,x\nb,y\n")
    np.save(tmp_path / "a.npy", np.eye(2))
    for extra in ([], ["--overwrite"]):
        result = cli("import", items, "--items", items, "--id-column", "id", "--label-column", "label",
                     "--audio", f"joint={tmp_path / 'a.npy'}", *extra)
        assert result.exit_code == 1 and "is an input" in error_line(result)
    result = cli("import", tmp_path / "a.npy", "--items", items, "--id-column", "id", "--label-column", "label",
                 "--audio", f"joint={tmp_path / 'a.npy'}", "--overwrite")
    assert result.exit_code == 1 and "is an input" in error_line(result)
    assert items.read_text() == "id,label\na,x\nb,y\n" and np.load(tmp_path / "a.npy").shape == (2, 2)


@pytest.fixture
def tiny_cli(monkeypatch):
    """The CLI with the small torch test encoder registered, counting its loads."""
    pytest.importorskip("torch")
    import extract_encoder

    from embedstore import models

    loads = []

    def load(*args, **kwargs):
        loads.append(args)
        return extract_encoder.load_tiny(*args, **kwargs)

    monkeypatch.setitem(models.MODELS, extract_encoder.NAME, load)
    return loads


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    t = np.arange(4000) / 16000
    for i, label in enumerate(["low", "high", "low", "high"]):
        sf.write(root / f"c{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t)).astype(np.float32), 16000)
    (root / "labels.csv").write_text("path,label\n" + "".join(
        f"c{i}.wav,{label}\n" for i, label in enumerate(["low", "high", "low", "high"])))
    return root


def extract_args(root, out, *extra):
    return ["extract", "--model", "test-tiny", "--dataset", "folder", "--root", root, "--out", out,
            "--workers", "0", "--prompts", "track", *extra]


def test_extract_refuses_a_folder_or_an_existing_store_before_any_work(tiny_cli, clips, tmp_path):
    folder = tmp_path / "out.h5"
    folder.mkdir()
    result = cli(*extract_args(clips, folder))
    assert result.exit_code == 1 and "is a folder" in error_line(result)
    existing = tmp_path / "mine.h5"
    existing.write_bytes(b"precious")
    result = cli(*extract_args(clips, existing))
    assert result.exit_code == 1 and "pass --overwrite" in error_line(result)
    assert tiny_cli == []  # no model was loaded, no clip read: the checks came first
    assert existing.read_bytes() == b"precious" and list(folder.iterdir()) == []
    result = cli(*extract_args(clips, clips / "labels.csv", "--overwrite"))
    assert result.exit_code == 1 and "is an input" in error_line(result)


def test_extract_text_takes_overwrite_for_replace_and_survives_null_extraction(tiny_cli, clips, tmp_path):
    store = tmp_path / "s.h5"
    assert cli(*extract_args(clips, store)).exit_code == 0
    result = cli("extract-text", store, "--prompts", "track")
    assert result.exit_code == 1 and "pass --replace" in error_line(result)
    assert len(tiny_cli) == 1  # refused before the model loaded again
    assert cli("extract-text", store, "--prompts", "track", "--overwrite").exit_code == 0
    null = tmp_path / "null.h5"
    with create_store(null, model="test-tiny", dataset="d", classes=["a"], provenance={"extraction": None}) as w:
        w.set_items(["x"], labels=[0])
    result = cli("extract-text", null, "--prompts", "track")  # crashed with AttributeError
    assert result.exit_code == 1 and "checkpoint digest" in error_line(result)


def test_train_never_replaces_a_model_folder_it_did_not_make(tmp_path):
    from embedstore.models.muscall import BUNDLED_DIR

    t = np.arange(8000) / 16000
    for i in range(4):
        sf.write(tmp_path / f"t{i}.wav", np.sin(2 * np.pi * (220 + 110 * i) * t).astype(np.float32), 16000)
    (tmp_path / "c.csv").write_text("path,caption\n" + "".join(f"t{i}.wav,tone {i}\n" for i in range(4)))
    # A copy of the bundled model folder: a regression must not damage the checkout's own.
    copy = shutil.copytree(BUNDLED_DIR, tmp_path / "notes-toy")
    before = {p.name: p.read_bytes() for p in copy.iterdir()}
    for extra in ([], ["--overwrite"], ["--resume"]):  # --overwrite replaced its weights before
        result = cli("train", "--csv", tmp_path / "c.csv", "--out", copy, "--epochs", "1", *extra)
        assert result.exit_code == 1 and "did not write" in error_line(result), result.output
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == before


# ------------------------------------------------------------------ section 5: one line


@pytest.fixture(scope="module")
def markup_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("markup") / "m[bold]x.h5"
    rng = np.random.default_rng(0)
    with create_store(path, model="m[/]x", dataset="d[bold]", classes=["[noise]", "a[/]", "b"]) as w:
        w.set_items([f"i{k}" for k in range(12)], labels=np.arange(12) % 3)
        w.add_audio("joint", rng.normal(size=(12, 4)))
        w.add_prompt_set("p[red]", ["x", "y", "z"], np.arange(3), embeddings={"joint": rng.normal(size=(3, 4))})
    return path


def test_markup_in_store_strings_is_printed_as_written(markup_store, tmp_path):
    info = cli("info", markup_store)
    assert info.exit_code == 0
    for shown in ("m[/]x", "d[bold]", "[noise], a[/], b", "p[red]"):
        assert shown in info.stdout  # [noise] vanished before, [/] crashed
    zeroshot = cli("analyze", "zeroshot", markup_store)
    assert zeroshot.exit_code == 0 and "p[red]" in zeroshot.stdout and "m[/]x" in zeroshot.stdout
    confidence = cli("analyze", "confidence", markup_store, "--prompts", "p[red]")
    assert confidence.exit_code == 0
    for command in ("confusion", "modality-gap"):  # the analyses beyond the study print alike
        beyond = cli("analyze", command, markup_store, "--prompts", "p[red]")
        assert beyond.exit_code == 0 and "p[red]" in beyond.stdout and "\\[" not in beyond.stdout, beyond.stdout
    report = cli("report", markup_store, "--out", tmp_path / "rep", "--no-umap")
    assert report.exit_code == 0 and "m[/]x" in report.stdout
    missing = cli("info", tmp_path / "[/]missing.h5")
    assert "[/]missing.h5" in error_line(missing)


def test_verify_of_a_missing_file_is_not_a_store(tmp_path):
    result = cli("verify", tmp_path / "missing.h5")
    assert result.exit_code == 2 and "no such file" in error_line(result)


def test_a_fifo_is_refused_before_anything_opens_it(store, tmp_path):
    fifo = tmp_path / "pipe.h5"
    os.mkfifo(fifo)
    # A watchdog unblocks a reader stuck on the FIFO, so a regression fails instead of hanging.
    import threading

    done = threading.Event()

    def unblock():
        if not done.wait(30):
            with open(fifo, "wb"):
                pass

    threading.Thread(target=unblock, daemon=True).start()
    try:
        for args in (["info", fifo], ["verify", fifo], ["analyze", "zeroshot", fifo],
                     ["export", fifo, "--audio", "joint", "--out", tmp_path / "e"],
                     ["analyze", "zeroshot", store, "--json", fifo, "--overwrite"],
                     ["report", fifo, "--out", tmp_path / "rep"]):
            result = cli(*args)
            assert result.exit_code == 2 and "not a regular file" in error_line(result)
    finally:
        done.set()
    from embedstore.errors import NotAStore
    from embedstore.store import open_store

    with pytest.raises(NotAStore, match="not a regular file"):
        open_store(fifo)


def test_umap_parameters_and_spaces_fail_in_one_line(tmp_path):
    from semantic_stores import make_tinysol_store

    from analyses.umap_map import run_umap
    from embedstore.errors import InputError

    store = make_tinysol_store(tmp_path / "t.h5", per_class=2)
    result = cli("analyze", "umap", store, "--neighbors", "1")
    assert result.exit_code == 2 and "--neighbors" in error_line(result)
    with pytest.raises(InputError, match="at least 2 neighbours"):
        run_umap(store, n_neighbors=1)
    # audio pre-joint vectors are 24-D, the prompts' 20-D: a traceback from numpy before
    result = cli("analyze", "umap", store, "--space", "prejoint", "--prompts", "label")
    assert result.exit_code == 1 and "cannot share a map" in error_line(result)
    report = cli("report", store, "--out", tmp_path / "rep", "--space", "prejoint", "--umap")
    assert report.exit_code == 0
    skipped = json.loads((tmp_path / "rep" / "report.json").read_text())["skipped"]
    assert any(s["experiment"] == "umap" and "cannot share a map" in s["reason"] for s in skipped)


def test_notes_toy_with_a_weights_file_says_what_to_do(tmp_path):
    pytest.importorskip("torch")
    from embedstore.errors import InputError
    from embedstore.models import load_model

    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"x")
    with pytest.raises(InputError, match="--model muscall --checkpoint"):
        load_model("notes-toy", checkpoint=weights)


def test_usage_errors_are_one_line_too(store):
    for args in (["analyze", "zeroshot", store, "--bootstrap", "-1"], ["analyze", "zeroshot", store, "--bogus"],
                 ["analyze", "umap", store, "--seed", "x[/]"], ["train", "--csv", "c.csv", "--out", "o", "--lr", "nan"]):
        result = cli(*args)
        assert result.exit_code == 2 and "--help" in error_line(result)


# ------------------------------------------------------------------ section 8: report names


def test_distinct_names_get_distinct_files():
    names = ["a b", "a-b", "A-b", "a__b", "a_b", "a/b", "a\\b", "", "..", "x" * 300]
    stems = [file_stem(n) for n in names]
    assert len(set(stems)) == len(names)
    assert file_stem("track") == "track" and file_stem("toy_clap") == "toy_clap"
    assert all("__" not in s and "/" not in s and len(s) < 60 for s in stems)
    # parts never blur across the "__" between them
    assert result_name("m__x", "d", "e", "p", "s") != result_name("m", "x__d", "e", "p", "s")


def _set_store(path, model, sets, seed):
    rng = np.random.default_rng(seed)
    with create_store(path, model=model, dataset="d", classes=["c1", "c2", "c3"]) as w:
        w.set_items([f"i{k}" for k in range(15)], labels=np.arange(15) % 3)
        w.add_audio("joint", rng.normal(size=(15, 6)))
        for name in sets:
            w.add_prompt_set(name, ["c1", "c2", "c3"], np.arange(3), embeddings={"joint": rng.normal(size=(3, 6))})
    return path


def test_report_keeps_prompt_sets_and_models_whose_slugs_collide_apart(tmp_path):
    one = _set_store(tmp_path / "one.h5", "m x", ["a b", "a-b"], 0)
    two = _set_store(tmp_path / "two.h5", "m-x", ["a b"], 1)
    report = build_report([one, two], tmp_path / "rep", ReportOptions(umap=False))
    results = report["results"]
    assert set(results) == {"m x", "m-x"} and set(results["m x"]["zeroshot"]) == {"a b", "a-b"}
    # Each number in the merged report is its own store's and set's, not the other's.
    from analyses.zeroshot import run_zeroshot

    for key, path, name in (("m x", one, "a b"), ("m x", one, "a-b"), ("m-x", two, "a b")):
        expected = json.loads(json.dumps(run_zeroshot(path, name)))
        assert results[key]["zeroshot"][name]["joint"]["top1"] == expected["top1"]
    files = list((tmp_path / "rep" / "results").glob("*zeroshot*"))
    assert len(files) == 3
    histograms = [f for f in report["figures"] if "__histograms" in f]
    assert len(histograms) == len(set(histograms)) == 2  # one grid per store (its sets and centroids), none shared


def test_report_markdown_carries_no_raw_html_or_markup_from_stores(tmp_path):
    store = _set_store(tmp_path / "s.h5", "<script>alert(1)</script>", ["**bold** [x](e) | a"], 0)
    build_report([store], tmp_path / "rep", ReportOptions(umap=False))
    markdown = (tmp_path / "rep" / "report.md").read_text()
    assert "<script>" not in markdown and "&lt;script&gt;" in markdown
    assert "**bold**" not in markdown and "[x](e)" not in markdown and "\\*\\*bold\\*\\*" in markdown
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "<script>" not in page
    assert md_escape("a|b\nc") == "a\\|b c"


def test_an_interrupted_command_that_can_resume_says_how(capsys):
    """Ctrl-C ends a command with exit 130; one with --resume names it (its work is kept)."""
    from cli.common import handle_errors

    @handle_errors
    def resumable(resume: bool = False):
        raise KeyboardInterrupt

    @handle_errors
    def plain(overwrite: bool = False):
        raise KeyboardInterrupt

    for command, hint in ((resumable, True), (plain, False)):
        with pytest.raises(SystemExit) as exited:
            command(resume=False) if hint else command(overwrite=False)
        assert exited.value.code == 130
        lines = [line for line in capsys.readouterr().err.splitlines() if line]
        assert len(lines) == 1 and lines[0].startswith("interrupted")
        assert ("--resume" in lines[0]) is hint
