"""`embedstore analyze modality-gap | probe | text-map | hierarchy | confusion | compare`: files, keys, errors."""

import json

import pytest
from cli_helpers import PNG_MAGIC
from cli_helpers import invoke as cli_invoke
from metric_stores import make_store

from analyses.compare import run_compare
from analyses.confusion import run_confusion
from analyses.hierarchy import run_hierarchy
from analyses.modality_gap import run_modality_gap
from analyses.probe import run_probe
from analyses.text_map import run_text_map


def invoke(*args):
    return cli_invoke("analyze", *args)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("cli") / "toy.h5")


def as_json(value):
    return json.loads(json.dumps(value))


def test_modality_gap_command(store, tmp_path):
    out, png = tmp_path / "g.json", tmp_path / "g.png"
    result = invoke("modality-gap", store, "--json", out, "--plot", png)
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert list(payload["results"]) == ["pair", "single"]
    pair = payload["results"]["pair"]
    assert set(pair) >= {"gap_distance", "shift"} and set(pair["shift"][0]) == {"lambda", "top1"}
    assert pair == as_json(run_modality_gap(store, "pair"))
    assert png.read_bytes().startswith(PNG_MAGIC)
    again = invoke("modality-gap", store, "--json", out)
    assert again.exit_code != 0 and "--overwrite" in again.output
    assert invoke("modality-gap", store, "--json", out, "--overwrite", "--lambda", 0, "--lambda", 1).exit_code == 0
    assert [p["lambda"] for p in json.loads(out.read_text())["results"]["pair"]["shift"]] == [0.0, 1.0]


def test_probe_and_text_map_commands(store, tmp_path):
    result = invoke("probe", store, "--folds", 4, "--seed", 2, "--json", tmp_path / "p.json")
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "p.json").read_text())
    for key in ("top1", "top1_sd", "f1_weighted", "f1_weighted_sd", "knn1_top1", "knn5_top1"):
        assert payload[key] == run_probe(store, folds=4, seed=2)[key]
    result = invoke("text-map", store, "--prompts", "pair", "--map", "ridge", "--folds", 2, "--json", tmp_path / "t.json")
    assert result.exit_code == 0, result.output
    mapped = json.loads((tmp_path / "t.json").read_text())["results"]["pair"]
    assert mapped == as_json(run_text_map(store, "pair", method="ridge", folds=2))
    assert {"top1_mapped", "top1_unmapped"} <= set(mapped)


def test_hierarchy_and_confusion_commands(store, tmp_path):
    result = invoke("hierarchy", store, "--prompts", "pair", "--centroids", "--json", tmp_path / "h.json")
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "h.json").read_text())["results"]
    assert payload["centroids"] == as_json(run_hierarchy(store, centroids=True))
    assert payload["pair"]["family_top1"] >= payload["pair"]["top1"]
    result = invoke("confusion", store, "--prompts", "pair", "--json", tmp_path / "c.json", "--plot", tmp_path / "c.png")
    assert result.exit_code == 0, result.output
    assert "most confused with" in result.output
    payload = json.loads((tmp_path / "c.json").read_text())
    assert {k: payload[k] for k in ("matrix", "per_class", "top1")} == {
        k: v for k, v in as_json(run_confusion(store, prompt_set="pair")).items() if k in ("matrix", "per_class", "top1")}
    assert (tmp_path / "c.png").read_bytes().startswith(PNG_MAGIC)


def test_compare_command(store, tmp_path):
    result = invoke("compare", store, "--prompts", "pair", "--prompts", "single", "--resamples", 200,
                    "--json", tmp_path / "x.json")
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "x.json").read_text())
    expected = as_json(run_compare(store, prompts_a="pair", prompts_b="single", resamples=200))
    assert payload["top1"] == expected["top1"] and payload["f1_weighted"] == expected["f1_weighted"]
    assert set(payload["top1"]) == {"a", "b", "diff", "ci95", "p_value"}
    centroids = invoke("compare", store, "--prompts", "pair", "--centroids", "--resamples", 50)
    assert centroids.exit_code == 0 and "centroids" in centroids.output


@pytest.mark.parametrize("args, message", [
    (["confusion", "{store}"], "exactly one of --prompts SET and --centroids"),
    (["hierarchy", "{store}"], "--prompts SET"),
    (["compare", "{store}", "--prompts", "pair"], "--prompts A --prompts B"),
    (["text-map", "{store}", "--prompts", "pair", "--map", "affine"], "unknown map 'affine'"),
    (["probe", "{store}", "--folds", 1], "--folds"),
    (["modality-gap", "{store}", "--prompts", "nope"], "no prompt set 'nope'"),
    (["confusion", "{store}", "--centroids", "--plot", "{tmp}/c.svg"], "PNG"),
    (["probe", "{store}", "--json", "{store}"], "is an input of this command"),
])
def test_bad_input_is_one_line_and_writes_nothing(store, tmp_path, args, message):
    args = [str(a).format(store=store, tmp=tmp_path) for a in args]
    result = invoke(*args)
    assert result.exit_code != 0
    assert message in result.output.replace("\n", " ")
    assert list(tmp_path.iterdir()) == []
