"""A store from each dataset's fixture tree, extracted by the tests' tiny encoder, goes
through `report`."""

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from dataset_trees import (  # noqa: E402
    captions_tree,
    esc50_tree,
    irmas_tree,
    medley_solos_tree,
    nsynth_tree,
    openmic_tree,
    tinysol_mirdata_tree,
)
from extract_encoder import TinyEncoder  # noqa: E402

from analyses.report import ReportOptions, build_report  # noqa: E402
from embedstore.datasets import load_dataset  # noqa: E402
from embedstore.extract import run_extract  # noqa: E402
from embedstore.extract.prompts import build_prompt_set  # noqa: E402
from embedstore.store import open_store  # noqa: E402


def _tinysol(root):
    from test_datasets import SYNTHETIC, TINYSOL_HEADER

    return tinysol_mirdata_tree(root, SYNTHETIC, TINYSOL_HEADER)


TREES = {  # dataset -> (tree builder, prompt sets)
    "esc50": (esc50_tree, ("sound", "sound-clap")),
    "nsynth": (nsynth_tree, ("track",)),
    "nsynth-source": (nsynth_tree, ("sound",)),
    "captions": (captions_tree, ("track",)),
    "medley-solos": (medley_solos_tree, ("track",)),
    "irmas": (irmas_tree, ("track",)),
    "irmas-test": (irmas_tree, ("solo",)),
    "openmic": (openmic_tree, ("track",)),
    "tinysol": (_tinysol, ("track",)),
}


@pytest.mark.parametrize("name", list(TREES))
def test_a_store_from_each_dataset_goes_through_report(name, tmp_path):
    if name in ("medley-solos", "irmas", "irmas-test", "openmic", "tinysol"):
        pytest.importorskip("mirdata")
    build, sets = TREES[name]
    dataset = load_dataset(name, build(tmp_path / "data"))
    specs = [build_prompt_set(s, dataset.classes) for s in sets]
    store = tmp_path / f"{name}.h5"
    run_extract(TinyEncoder(), dataset, specs, store, batch_size=4, long_mode="mean", command=["t"])
    with open_store(store) as st:
        assert st.dataset == name and st.n_items == len(dataset.items) and not st.failed
        assert st.provenance["dataset"]["source"] == dataset.source
        if name == "openmic":
            assert np.array_equal(st.label_mask, dataset.label_mask())
    report = build_report([store], tmp_path / "report", ReportOptions(umap=False))
    results = report["results"]["test-tiny"]
    if name == "captions":  # one class: classification and top-2 margins refused (see below); the rest ran
        assert {"histograms", "retrieval"} <= set(results) and "confidence" not in results
        return
    assert set(results["zeroshot"]) == set(sets)
    written = json.loads((tmp_path / "report" / "report.json").read_text())
    assert written["results"]["test-tiny"] == results
    zeroshot = results["zeroshot"][sets[0]]["joint"]
    assert zeroshot["n_items"] == len(dataset.items)
    if name == "openmic":  # per-class counts of labelled clips, from the mask
        assert zeroshot["per_class"]["voice"]["labelled"] == 2


def test_one_class_captions_are_refused_classification_with_a_reason(tmp_path):
    dataset = load_dataset("captions", captions_tree(tmp_path / "data"))
    store = tmp_path / "captions.h5"
    run_extract(TinyEncoder(), dataset, [build_prompt_set("track", dataset.classes)], store,
                batch_size=4, long_mode="mean", command=["t"])
    report = build_report([store], tmp_path / "report", ReportOptions(umap=False))
    reasons = {s["experiment"]: s["reason"] for s in report["skipped"]}
    assert "two classes or more, not 1" in reasons["zeroshot"]
    assert "zeroshot" not in report["results"]["test-tiny"]
    # nor top-2 margins: with one class there is no second (the report drew an empty figure)
    assert "two classes or more, not 1" in reasons["confidence"]
    assert "confidence" not in report["results"]["test-tiny"]
    assert "Confidence margins" not in (tmp_path / "report" / "report.html").read_text()


def test_the_readme_esc50_run_selects_fold_1_and_laion_s_prompts(tmp_path):
    """The README's ESC-50 command, with the bundled toy model standing in for the weights."""
    from cli_helpers import invoke

    from embedstore.datasets import ESC50_CLASSES

    root = esc50_tree(tmp_path / "esc")
    out = tmp_path / "esc50-fold1.h5"
    result = invoke("extract", "--dataset", "esc50", "--root", root, "--where", "fold=1",
                    "--prompts", "sound-clap", "--out", out, "--workers", "0")
    assert result.exit_code == 0, result.output
    with open_store(out) as st:
        assert st.metadata["fold"].tolist() == [1, 1, 1] and st.prompt_sets == ["sound-clap"]
        assert st.provenance["dataset"]["subset"] == "fold=1"
        prompts = st.prompt_set("sound-clap").prompts
    # LAION-CLAP's README: "This is a sound of " + each key of ESC50_class_labels_indices_space.json
    laion_labels = [c.replace("_", " ") for c in ESC50_CLASSES]
    assert prompts == ["This is a sound of " + t for t in laion_labels]
    result = invoke("analyze", "zeroshot", out, "--prompts", "sound-clap")
    assert result.exit_code == 0 and "top1" in result.output.replace("-", "")
    bad = invoke("extract", "--dataset", "esc50", "--root", root, "--where", "fold", "--out", tmp_path / "x.h5")
    assert bad.exit_code == 1 and "COLUMN=VALUE" in bad.output


def test_extract_defaults_add_the_clap_sound_sets_where_they_fit(tmp_path):
    from cli.extract_cmds import fitting_clap_specs

    esc = fitting_clap_specs(load_dataset("esc50", esc50_tree(tmp_path / "esc")))
    assert [spec.name for spec in esc] == ["sound", "sound-clap"]
    assert esc[0].prompts[11] == "This is a sound of sea waves."
    assert fitting_clap_specs(load_dataset("notes")) == []  # the study's defaults stay as they were
