"""`embedstore report`: every experiment per store, templated result files, merged report, atomicity."""

import json
from pathlib import Path

import pytest
from semantic_stores import CHECKPOINT_SHA256, make_tinysol_store
from typer.testing import CliRunner

from analyses.centroids import run_centroids
from analyses.report import ReportOptions, build_report, md_escape, merge_results, result_name
from analyses.triplets import run_triplets
from analyses.zeroshot import run_zeroshot
from cli.main import app
from embedstore.errors import InputError, NotAStore
from embedstore.store.outputs import MARKER

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stores")
    clap = make_tinysol_store(folder / "clap.h5", model="toy_clap", seed=0)
    # Classes the ontology does not know: its triplets are skipped, with the reason.
    other = make_tinysol_store(folder / "other.h5", model="toy_muscall", seed=1,
                               classes=["violin", "kazooka", "flute"], ontology_set=False)
    return clap, other


@pytest.fixture(scope="module")
def built(stores, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "rep"
    report = build_report(list(stores), out, ReportOptions(umap=False, bootstrap=30))
    return out, report


def test_result_files_are_templated_and_hold_the_analyses_numbers(stores, built):
    clap, _ = stores
    out, _ = built
    name = result_name("toy_clap", "tinysol", "zeroshot", "label", "joint")
    assert name == "toy_clap__tinysol__zeroshot__label__joint.json"
    doc = json.loads((out / "results" / name).read_text())
    assert doc["meta"] == {"store": "toy_clap", "model": "toy_clap", "dataset": "tinysol", "experiment": "zeroshot",
                           "prompt_set": "label", "space": "joint"}
    assert doc["result"] == json.loads(json.dumps(run_zeroshot(clap, "label", bootstrap=30)))
    paper = json.loads((out / "results" / "toy_clap__tinysol__triplets-reference__label__prejoint.json").read_text())
    assert paper["result"]["n_triplets"] == 237
    assert paper["result"] == json.loads(json.dumps(run_triplets(clap, "label", space="prejoint",
                                                                 protocol="reference")))
    ontology = json.loads((out / "results" / "toy_clap__tinysol__triplets-paper__ontology__joint.json").read_text())
    assert ontology["result"]["scope"] == "ontology"
    centroids = json.loads((out / "results" / "toy_clap__tinysol__centroids__audio__prejoint.json").read_text())
    assert centroids["result"] == json.loads(json.dumps(run_centroids(clap, space="prejoint", bootstrap=30)))


def test_merged_report_has_every_experiment_side_by_side(built):
    out, report = built
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert [s["key"] for s in report["stores"]] == ["toy_clap", "toy_muscall"]
    assert report["stores"][0]["checkpoint_sha256"] == CHECKPOINT_SHA256
    clap = report["results"]["toy_clap"]
    assert set(clap) == {"zeroshot", "histograms", "confidence", "centroids", "triplets-paper", "triplets-reference",
                         "modality-gap", "probe", "text-map", "hierarchy", "confusion", "compare"}
    assert set(clap["zeroshot"]) == {"label", "sound_of"}
    assert set(clap["histograms"]) == {"label", "sound_of", "centroids"}
    assert set(clap["triplets-paper"]["label"]) == {"prejoint", "joint"}
    assert set(clap["centroids"]["audio"]) == {"prejoint", "joint"}
    assert "margins" not in clap["confidence"]["label"]["joint"]  # per-clip lists stay in results/
    # The merged numbers are the result files' numbers.
    assert merge_results(out / "results")["toy_clap"]["zeroshot"] == clap["zeroshot"]
    skipped = {(s["store"], s["experiment"], s["space"]) for s in report["skipped"]}
    assert ("toy_muscall", "triplets-paper", "joint") in skipped
    ontology_skips = [s for s in report["skipped"] if s["experiment"].startswith("triplets")
                      or s["experiment"] == "hierarchy"]
    assert ontology_skips and all("kazooka" in s["reason"] for s in ontology_skips)
    assert "triplets-paper" not in report["results"]["toy_muscall"]


def test_markdown_and_html_show_the_numbers_and_every_figure(built):
    out, report = built
    markdown, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    top1 = report["results"]["toy_clap"]["zeroshot"]["label"]["joint"]["top1"]
    for text in (markdown, page):
        assert "toy_clap" in text and "toy_muscall" in text
        assert CHECKPOINT_SHA256[:16] in text
        assert f"{top1:.3f}" in text
        assert "kazooka" in text  # the skipped list
    figures = sorted(p.relative_to(out).as_posix() for p in (out / "figures").glob("*.png"))
    assert figures == report["figures"] and len(figures) >= 8
    for figure in figures:
        assert f"]({figure})" in markdown and f"src='{figure}'" in page
        assert (out / figure).read_bytes()[:8] == PNG_MAGIC
    assert "figures/triplets__paper.png" in figures


def test_a_folder_with_files_the_report_did_not_write_is_never_replaced(stores, tmp_path):
    out = tmp_path / "rep"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for overwrite in (False, True):  # before the fix, --overwrite deleted keep.txt
        with pytest.raises(InputError, match="did not write"):
            build_report([stores[1]], out, ReportOptions(umap=False), overwrite=overwrite)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_the_input_store_inside_the_report_folder_is_never_deleted(stores, tmp_path):
    import shutil

    out = tmp_path / "rep"
    out.mkdir()
    store = shutil.copy(stores[1], out / "s.h5")
    before = Path(store).read_bytes()
    result = CliRunner().invoke(app, ["report", str(store), "--out", str(out), "--overwrite", "--no-umap"])
    assert result.exit_code == 1 and "input" in result.output and "Traceback" not in result.output
    assert (out / "s.h5").read_bytes() == before and sorted(p.name for p in out.iterdir()) == ["s.h5"]


def test_overwrite_replaces_only_an_earlier_reports_own_files(stores, tmp_path):
    out = tmp_path / "rep"
    build_report([stores[1]], out, ReportOptions(umap=False))
    first = json.loads((out / MARKER).read_text())
    assert first["command"] == "report" and "report.html" in first["files"]
    with pytest.raises(InputError, match="pass --overwrite"):
        build_report([stores[1]], out, ReportOptions(umap=False))
    report = build_report([stores[1], stores[1]], out, ReportOptions(umap=False), overwrite=True)
    # The same model twice keeps two columns, and two sets of files.
    assert [s["key"] for s in report["stores"]] == ["toy_muscall", "toy_muscall@tinysol"]
    twice = result_name("toy_muscall@tinysol", "tinysol", "zeroshot", "label", "joint")
    assert (out / "results" / twice).exists() and twice != result_name("toy_muscall", "tinysol", "zeroshot",
                                                                       "label", "joint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"]  # no temporary folder left
    (out / "notes.txt").write_text("mine")  # added by the user since
    with pytest.raises(InputError, match="notes.txt"):
        build_report([stores[1]], out, ReportOptions(umap=False), overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "report.html").exists()


def test_failure_leaves_nothing_behind(stores, tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_text("not a store")
    out = tmp_path / "rep"
    with pytest.raises(NotAStore):
        build_report([stores[0], bad], out, ReportOptions(umap=False))
    assert list(tmp_path.iterdir()) == [bad]
    with pytest.raises(InputError, match="no prompt set 'nope'"):
        build_report([stores[0]], out, ReportOptions(prompt_sets=["nope"], umap=False))
    with pytest.raises(InputError, match="unknown ontology 'nowhere'"):
        build_report([stores[0]], out, ReportOptions(ontology="nowhere"))
    with pytest.raises(InputError, match="holdout must be one of"):
        build_report([stores[0]], out, ReportOptions(holdout="half"))
    assert list(tmp_path.iterdir()) == [bad]


def test_a_second_report_into_the_same_folder_is_refused_not_interleaved(stores, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "rep"
    holder = subprocess.Popen(  # another process, as a report running there would be
        [sys.executable, "-c", "import sys, time; from embedstore.store.lock import writer_lock\n"
         "with writer_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)", str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = CliRunner().invoke(app, ["report", str(stores[0]), "--out", str(out), "--no-umap"])
    finally:
        holder.kill()
        holder.wait(30)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.strip() == (f"error: another process is writing {out} (lock rep.lock); "
                                     "wait for it to finish, then run this again")
    assert [p.name for p in tmp_path.iterdir()] == ["rep.lock"]  # the killed holder's; no folder made


def test_report_command_with_umap(stores, tmp_path):
    out = tmp_path / "rep"
    result = CliRunner().invoke(app, ["report", str(stores[1]), "--out", str(out), "--prompts", "label", "--umap"])
    assert result.exit_code == 0, result.output
    assert "toy_muscall" in result.output and "skipped" in result.output
    report = json.loads((out / "report.json").read_text())
    assert set(report["results"]["toy_muscall"]["zeroshot"]) == {"label"}
    umap = json.loads((out / "results" / "toy_muscall__tinysol__umap__label__joint.json").read_text())["result"]
    assert len(umap["coords"]) == 18 and umap["prompt_labels"] == ["violin", "kazooka", "flute"]
    assert (out / "figures" / "toy_muscall__umap.png").read_bytes()[:8] == PNG_MAGIC
    assert "figures/toy_muscall__umap.png" in (out / "report.html").read_text()
    again = CliRunner().invoke(app, ["report", str(stores[1]), "--out", str(out)])
    assert again.exit_code == 1 and "--overwrite" in again.output and "Traceback" not in again.output


def test_multilabel_store_reports_the_auc_keys_only(tmp_path):
    import numpy as np

    from embedstore.store import create_store

    rng = np.random.default_rng(4)
    classes = ["violin", "flute", "oboe", "tuba"]
    labels = rng.random((40, 4)) < 0.4
    labels[np.arange(40), np.arange(40) % 4] = True
    path = tmp_path / "ml.h5"
    with create_store(path, model="ml", dataset="mix", classes=classes) as w:
        w.set_items([f"i{k}" for k in range(40)], label_matrix=labels)
        w.add_audio("joint", rng.normal(size=(40, 8)))
        w.add_prompt_set("label", classes, np.arange(4), {"joint": rng.normal(size=(4, 8))})
    report = build_report([path], tmp_path / "rep", ReportOptions(umap=False))
    zeroshot = report["results"]["ml"]["zeroshot"]["label"]["joint"]
    assert zeroshot.get("top1") is None and 0 <= zeroshot["roc_auc_macro"] <= 1
    markdown = (tmp_path / "rep" / "report.md").read_text()
    shown, _, skipped = markdown.partition("## Skipped")  # reasons there may say "top-1"
    assert "| store | prompt set | ROC-AUC (macro) | PR-AUC (macro) |" in shown and "top-1" not in shown
    assert "this store is multi-label" in skipped  # the top-1 analyses say why they are not shown
    assert report["results"]["ml"]["triplets-paper"]["label"]["joint"]["n_triplets"] > 0


def test_report_compares_text_only_stores_and_shows_retrieval_intervals_caveats(stores, built, tmp_path):
    import numpy as np

    from analyses.retrieval import run_retrieval
    from embedstore.store import create_store, edit_store, open_store

    clap, _ = stores
    # The bootstrap intervals and the best-per-column marks of the built report.
    out, report = built
    zeroshot = report["results"]["toy_clap"]["zeroshot"]["label"]["joint"]
    low, high = zeroshot["ci95"]["top1"]
    markdown = (out / "report.md").read_text()
    assert md_escape(f"{zeroshot['top1']:.3f} [{low:.3f}, {high:.3f}]") in markdown
    assert "95% interval over 30 bootstrap resamples" in markdown
    best = max(r["joint"]["top1"] for k in ("toy_clap", "toy_muscall")
               for r in report["results"][k]["zeroshot"].values())
    assert f"**{best:.3f} \\[" in markdown
    # A caption set on a copy of the CLAP store, and a text-only store of the same classes.
    captioned = tmp_path / "captioned.h5"
    captioned.write_bytes(clap.read_bytes())
    with open_store(captioned) as st:
        audio, classes = st.audio("joint"), list(st.classes)
    rng = np.random.default_rng(0)
    rows = np.repeat(np.arange(len(audio)), 2)
    with edit_store(captioned) as w:
        w.add_prompt_set("captions", [f"caption {i}" for i in range(len(rows))], np.full(len(rows), -1),
                         {"joint": audio[rows] + rng.normal(size=(len(rows), audio.shape[1]))}, items=rows,
                         source="captions of the clips")
    text_only = tmp_path / "minilm.h5"
    with create_store(text_only, model="minilm", dataset="tinysol", classes=classes) as w:
        w.set_items([], labels=np.zeros(0, np.int32))
        w.add_prompt_set("label", classes, np.arange(len(classes)), {"sentence": rng.normal(size=(len(classes), 8))},
                         source='template "<label>"')
    report = build_report([captioned, text_only], tmp_path / "rep", ReportOptions(prompt_sets=["label"]))
    retrieval = report["results"]["toy_clap"]["retrieval"]["captions"]["joint"]
    assert retrieval == json.loads(json.dumps(run_retrieval(captioned, "captions")))
    minilm = report["results"]["minilm"]
    assert set(minilm) == {"triplets-paper", "triplets-reference"}
    assert minilm["triplets-paper"]["label"]["sentence"] == json.loads(json.dumps(
        {k: v for k, v in run_triplets(text_only, "label").items() if k not in ("per_term",)}
        | {"per_term": minilm["triplets-paper"]["label"]["sentence"]["per_term"]}))
    assert report["stores"][1]["text_only"] and not report["skipped"]
    page = (tmp_path / "rep" / "report.html").read_text()
    for words in ("Audio-text retrieval", "a2t R@1", "text only", "A text-only store", "template &quot;&lt;label&gt;&quot;",
                  "captions of the clips", "| minilm | label | sentence |"):
        assert words in page or words in (tmp_path / "rep" / "report.md").read_text(), words
    assert f"{retrieval['a2t_r1']:.3f}" in page
