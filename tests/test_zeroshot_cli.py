"""`embedstore analyze zeroshot | centroids | histograms | confidence`: output, files, errors."""

import json

import pytest
from cli_helpers import PNG_MAGIC
from cli_helpers import invoke as cli_invoke
from metric_stores import make_store

from analyses.centroids import run_centroids
from analyses.zeroshot import run_zeroshot


def invoke(*args):
    return cli_invoke("analyze", *args)


@pytest.fixture
def store(tmp_path):
    return make_store(tmp_path / "toy.h5")


def test_zeroshot_defaults_to_every_class_prompt_set(store, tmp_path):
    out = tmp_path / "z.json"
    result = invoke("zeroshot", store, "--json", out, "--plot", tmp_path / "z.png")
    assert result.exit_code == 0, result.output
    assert "pair" in result.output and "single" in result.output
    payload = json.loads(out.read_text())
    # "ontology" has a prompt that names no class: not a default
    assert list(payload["results"]) == ["pair", "single"]
    assert payload["results"]["pair"] == run_zeroshot(store, "pair")
    assert payload["model"] == "toy" and payload["space"] == "joint"
    assert (tmp_path / "z.png").read_bytes().startswith(PNG_MAGIC)


def test_zeroshot_bootstrap_and_per_class(store, tmp_path):
    out = tmp_path / "z.json"
    result = invoke("zeroshot", store, "--prompts", "pair", "--bootstrap", 30, "--seed", 2, "--per-class", "--json", out)
    assert result.exit_code == 0, result.output
    assert "95% CI" in result.output and "violin" in result.output
    payload = json.loads(out.read_text())
    assert payload["results"]["pair"]["ci95"] == run_zeroshot(store, "pair", bootstrap=30, seed=2)["ci95"]
    assert "NaN" not in out.read_text()


def test_centroids_command(store, tmp_path):
    out = tmp_path / "c.json"
    result = invoke("centroids", store, "--holdout", "loo", "--json", out, "--plot", tmp_path / "c.png")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.png").read_bytes().startswith(PNG_MAGIC)
    payload = json.loads(out.read_text())
    expected = run_centroids(store, holdout="loo")
    assert {k: payload[k] for k in expected} == expected


def test_histograms_and_confidence_commands(store, tmp_path):
    result = invoke("histograms", store, "--centroids", "--bins", 20, "--json", tmp_path / "h.json",
                    "--plot", tmp_path / "h.png")
    assert result.exit_code == 0, result.output
    assert "Bhattacharyya" in result.output
    assert len(json.loads((tmp_path / "h.json").read_text())["positive_counts"]) == 20
    assert (tmp_path / "h.png").read_bytes().startswith(PNG_MAGIC)
    result = invoke("confidence", store, "--prompts", "pair", "--plot", tmp_path / "m.png", "--json", tmp_path / "m.json")
    assert result.exit_code == 0, result.output
    assert "correct" in result.output and "wrong" in result.output
    assert (tmp_path / "m.png").read_bytes().startswith(PNG_MAGIC)
    assert json.loads((tmp_path / "m.json").read_text())["correct"]["n"] > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["zeroshot", "{store}", "--prompts", "nope"], "has no prompt set 'nope'"),
        (["zeroshot", "{store}", "--space", "other"], "no audio space 'other'"),
        (["zeroshot", "{store}", "--bootstrap", "-1"], "Invalid value for '--bootstrap'"),
        (["zeroshot", "{store}", "--plot", "{tmp}/fig.pdf"], "give a path ending in .png"),
        (["centroids", "{store}", "--holdout", "half"], "holdout must be one of none, loo"),
        (["histograms", "{store}"], "exactly one of --prompts SET and --centroids"),
        (["histograms", "{store}", "--prompts", "pair", "--centroids"], "exactly one of"),
        (["histograms", "{store}", "--centroids", "--bins", "0"], "Invalid value for '--bins'"),
        (["confidence", "{store}", "--prompts", "pair", "--space", "prejoint"], "has no space 'prejoint'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(store, tmp_path, args, message):
    out = tmp_path / "out.json"
    args = [a.format(store=store, tmp=tmp_path) for a in args]
    result = invoke(*args, "--json", out)
    assert result.exit_code == (2 if "Invalid value" in message else 1)  # typer's range checks: usage
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_not_a_store_is_refused(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    result = invoke("zeroshot", junk)
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1
