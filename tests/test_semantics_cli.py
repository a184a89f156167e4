"""`embedstore analyze triplets | spaces | umap`: tables, JSON files, figures, one-line errors."""

import json

import pytest
from cli_helpers import PNG_MAGIC
from cli_helpers import invoke as cli_invoke
from semantic_stores import make_tinysol_store

from analyses.spaces import run_spaces
from analyses.triplets import run_triplets


def invoke(*args):
    return cli_invoke("analyze", *args)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_tinysol_store(tmp_path_factory.mktemp("sem") / "toy.h5")


def test_triplets_command(store, tmp_path):
    out = tmp_path / "t.json"
    result = invoke("triplets", store, "--prompts", "label", "--protocol", "reference", "--space", "prejoint",
                    "--json", out)
    assert result.exit_code == 0, result.output
    assert "237" in result.output and "Bass Tuba" in result.output and "tuba" in result.output
    assert json.loads(out.read_text()) == json.loads(json.dumps(run_triplets(store, "label", space="prejoint",
                                                                            protocol="reference")))


def test_triplets_ontology_scope_and_map(store, tmp_path):
    result = invoke("triplets", store, "--prompts", "ontology", "--scope", "ontology")
    assert result.exit_code == 0, result.output
    mapping = tmp_path / "map.csv"
    mapping.write_text("class,node\nAccordion,harmonica\n")
    out = tmp_path / "m.json"
    result = invoke("triplets", store, "--prompts", "label", "--ontology-map", mapping, "--json", out)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["nodes"][4].endswith("/mouth_blown/harmonica")


@pytest.mark.parametrize("args, message", [
    (["--prompts", "nope"], "no prompt set 'nope'"),
    (["--prompts", "label", "--protocol", "fast"], "unknown triplet protocol 'fast'"),
    (["--prompts", "label", "--ontology", "nowhere"], "unknown ontology 'nowhere'"),
    (["--prompts", "label", "--scope", "ontology"], "carries no ontology terms"),
    (["--prompts", "label", "--ontology-map", "missing.csv"], "ontology map not found"),
])
def test_triplets_errors_are_one_line(store, args, message):
    result = invoke("triplets", store, *args)
    assert result.exit_code == 1
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_spaces_command(store, tmp_path):
    out, figure = tmp_path / "s.json", tmp_path / "s.png"
    result = invoke("spaces", store, "--json", out, "--plot", figure)
    assert result.exit_code == 0, result.output
    assert "prejoint" in result.output and "label" in result.output and "sound_of" in result.output
    assert json.loads(out.read_text()) == json.loads(json.dumps({**run_spaces(store), "selection": None}))
    assert figure.read_bytes()[:8] == PNG_MAGIC
    wrong = invoke("spaces", store, "--plot", tmp_path / "s.pdf")
    assert wrong.exit_code == 1 and "--plot writes PNG" in wrong.output


def test_umap_command(store, tmp_path):
    out, figure = tmp_path / "u.json", tmp_path / "u.png"
    result = invoke("umap", store, "--color", "family", "--prompts", "label", "--json", out, "--plot", figure)
    assert result.exit_code == 0, result.output
    payload = json.loads(out.read_text())
    assert len(payload["coords"]) == 84 and payload["categories"] == ["Brass", "Keyboards", "Strings", "Winds"]
    assert figure.read_bytes()[:8] == PNG_MAGIC
    bad = invoke("umap", store, "--color", "pitch")
    assert bad.exit_code == 1 and "cannot colour by 'pitch'" in bad.output


def test_not_a_store_exits_2(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_text("hello")
    assert invoke("triplets", junk, "--prompts", "label").exit_code == 2
