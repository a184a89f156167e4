"""Issue 10, section 1: the study's centroid definition recorded, tied classes flagged,
every computed number shown, text-only stores accepted, one display unit."""

import json
import re

import numpy as np
import pytest
from cli_helpers import invoke
from metric_stores import make_store

from analyses.confidence import run_confidence
from analyses.embeddings import tied_classes
from analyses.histograms import run_histograms
from analyses.report import ReportOptions, build_report
from analyses.zeroshot import run_zeroshot
from embedstore.store import create_store, edit_store


@pytest.fixture
def tied_store(tmp_path):
    """The metric store plus a ``family``-like set: flute and oboe share one prompt, violin and cello another."""
    path = make_store(tmp_path / "toy.h5")
    rng = np.random.default_rng(1)
    family = rng.normal(size=(3, 12))
    with edit_store(path) as w:
        w.add_prompt_set("family", ["A wind track", "A wind track", "A string track", "A string track",
                                    "A brass track"], np.arange(5), {"joint": family[[0, 0, 1, 1, 2]]})
    return path


def test_tied_classes_groups_identical_label_vectors():
    vectors = np.array([[1, 0], [0, 1], [1, 0], [0.6, 0.8], [0, 1]], np.float32)
    assert tied_classes(vectors, list("abcde")) == [["a", "c"], ["b", "e"]]
    assert tied_classes(np.eye(3, dtype=np.float32), list("abc")) == []


def test_tied_classes_in_every_json(tied_store):
    ties = [["flute", "oboe"], ["violin", "cello"]]
    assert run_zeroshot(tied_store, "family")["tied_classes"] == ties
    assert run_confidence(tied_store, "family")["tied_classes"] == ties
    assert run_histograms(tied_store, "family")["tied_classes"] == ties
    assert run_zeroshot(tied_store, "pair")["tied_classes"] == []
    # among tied classes the margin is 0: every clip whose top class is tied has margin 0
    margins = np.array(run_confidence(tied_store, "family")["margins"])
    assert np.sum(margins == 0) > 0


def test_tied_classes_flagged_in_tables(tied_store, tmp_path):
    result = invoke("analyze", "zeroshot", tied_store, "--prompts", "family", "--prompts", "pair")
    assert result.exit_code == 0, result.output
    assert "family *" in result.output and "pair *" not in result.output
    assert "flute = oboe" in result.output and "violin = cello" in result.output
    result = invoke("analyze", "confidence", tied_store, "--prompts", "family")
    assert result.exit_code == 0 and "flute = oboe" in result.output


def test_tied_classes_and_centroid_definition_in_the_report(tied_store, tmp_path):
    report = build_report([tied_store], tmp_path / "report", ReportOptions(umap=False))
    assert report["options"]["centroid"] == "raw"
    assert report["results"]["toy"]["centroids"]["audio"]["joint"]["centroid"] == "raw"
    assert report["results"]["toy"]["zeroshot"]["family"]["joint"]["tied_classes"] == [["flute", "oboe"],
                                                                                      ["violin", "cello"]]
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| family \\* |" in markdown and "flute = oboe" in markdown  # report.md escapes Markdown
    assert "mean of its stored audio vectors, then L2-normalised, as the study defines it" in markdown
    unit = build_report([tied_store], tmp_path / "unit", ReportOptions(umap=False, centroid="unit"))
    assert unit["results"]["toy"]["centroids"]["audio"]["joint"]["centroid"] == "unit"
    assert "centroid unit" in (tmp_path / "unit" / "report.md").read_text()


def test_centroid_option_recorded_in_json(tmp_path):
    store = make_store(tmp_path / "toy.h5")
    for centroid in ("raw", "unit"):
        out = tmp_path / f"{centroid}.json"
        result = invoke("analyze", "centroids", store, "--centroid", centroid, "--json", out)
        assert result.exit_code == 0, result.output
        assert json.loads(out.read_text())["centroid"] == centroid
        out = tmp_path / f"h-{centroid}.json"
        assert invoke("analyze", "histograms", store, "--centroids", "--centroid", centroid, "--json", out).exit_code == 0
        assert json.loads(out.read_text())["centroid"] == centroid
    assert json.loads((tmp_path / "raw.json").read_text()) != json.loads((tmp_path / "unit.json").read_text())
    result = invoke("analyze", "centroids", store, "--centroid", "mean")
    assert result.exit_code == 1 and "centroid must be one of raw, unit" in result.output


def test_spaces_cli_on_a_text_only_store_shows_the_triplets(tmp_path):
    path = tmp_path / "text-only.h5"
    rng = np.random.default_rng(0)
    classes = ["Violin", "Viola", "Flute", "Oboe", "Bass Tuba"]
    with create_store(path, model="m", dataset="d", classes=classes) as w:
        w.set_items([], labels=np.zeros(0, np.int32))
        w.add_prompt_set("plain", classes, np.arange(5), {"joint": rng.normal(size=(5, 8)),
                                                         "prejoint": rng.normal(size=(5, 6))})
    out = tmp_path / "s.json"
    result = invoke("analyze", "spaces", path, "--json", out)
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert payload["audio_spaces"] == [] and payload["spaces"] == ["prejoint", "joint"]
    for space in ("prejoint", "joint"):
        assert f"{payload['triplets']['plain'][space]['accuracy']:.3f}" in result.output
    assert invoke("analyze", "triplets", path, "--prompts", "plain").exit_code == 0


def test_one_display_unit_fractions_in_every_table(tmp_path):
    store = make_store(tmp_path / "toy.h5")
    expected = run_zeroshot(store, "pair")
    outputs = [invoke("analyze", "zeroshot", store, "--prompts", "pair").output,
               invoke("analyze", "centroids", store).output,
               invoke("analyze", "spaces", store).output]
    assert f"{expected['top1']:.3f}" in outputs[0]
    for text in outputs:
        assert "%" not in text.replace("95% CI", "")
        assert not re.search(r"\b\d{2}\.\d\b", text)  # no percent-style 84.2
