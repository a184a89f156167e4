"""From audio to report: the bundled TinySOL-like notes extracted by a real (tiny) torch encoder."""

import dataclasses
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from extract_encoder import TinyEncoder  # noqa: E402

from analyses.report import ReportOptions, build_report  # noqa: E402
from embedstore.datasets import load_dataset  # noqa: E402
from embedstore.extract import run_extract  # noqa: E402
from embedstore.extract.prompts import build_prompt_set  # noqa: E402

NOTES = Path(__file__).resolve().parent.parent / "data" / "notes"


def test_extracted_store_gives_every_experiment(tmp_path):
    notes = load_dataset("tinysol", NOTES)
    dataset = dataclasses.replace(notes, items=notes.items[::3])  # every instrument, six notes each (enough for 5 probe folds)
    specs = [build_prompt_set(name, dataset.classes) for name in ("track", "ontology")]
    run_extract(TinyEncoder(), dataset, specs, tmp_path / "notes.h5", batch_size=8, long_mode="mean", command=["t"])
    report = build_report([tmp_path / "notes.h5"], tmp_path / "rep", ReportOptions(umap=False))
    assert report["skipped"] == []
    results = report["results"]["test-tiny"]
    assert set(results["zeroshot"]) == {"track"}  # the ontology set names no class for most prompts
    reference = results["triplets-reference"]["track"]
    assert set(reference) == {"prejoint", "joint"}
    assert all(r["n_triplets"] == 237 for r in reference.values())
    ontology = results["triplets-paper"]["ontology"]["joint"]
    assert ontology["n_triplets"] == 869302
    assert report["stores"][0]["checkpoint_sha256"] == TinyEncoder().checkpoint["sha256"]
    page = (tmp_path / "rep" / "report.html").read_text()
    assert report["stores"][0]["checkpoint_sha256"][:16] in page
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["results"]["test-tiny"] == results
