"""Every registered model goes through `embedstore extract` and `embedstore report`.

Tiny random weights in each model's published format, a folder of synthesized clips. The
msclap models are covered in tests/test_models_msclap.py::test_extract_then_report, the
LAION-CLAP fusion names in tests/test_models_clap_fusion.py and notes-toy in
tests/test_train.py; this module covers the rest and checks none is missed.
"""

import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from cli_helpers import extract_and_report  # noqa: E402

from embedstore.models import MODELS  # noqa: E402
from embedstore.store import open_store  # noqa: E402

LAION_NAMES = ["clap-music", "clap-music-speech", "clap-general"]
# the fusion names: tests/test_models_clap_fusion.py::test_extract_then_report_matches_laion_clap_and_resumes
COVERED_ELSEWHERE = {"msclap-2022", "msclap-2023", "notes-toy", "clap-general-fusion", "clap-630k-fusion"}


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_every_registered_name_has_an_extract_test():
    assert set(MODELS) == set(LAION_NAMES) | {"muscall"} | COVERED_ELSEWHERE


@pytest.fixture(scope="module")
def laion(tmp_path_factory):
    """laion_clap's HTSAT-tiny CLAP with random weights: its .pt, tokenizer and hf: folder."""
    import clap_fixtures

    from embedstore.models import clap as clap_models
    from embedstore.models import load_model

    clap_fixtures.import_laion_clap()
    folder = tmp_path_factory.mktemp("laion")
    tokenizer = clap_fixtures.write_tokenizer(folder / "tokenizer")
    checkpoint = clap_fixtures.write_clap_checkpoint(
        clap_fixtures.build_laion_clap("HTSAT-tiny", tokenizer), folder / "tiny.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        converted = clap_models.save_hf(load_model("clap-general", checkpoint=checkpoint,
                                                   tokenizer=tokenizer), folder / "hf")
    return checkpoint, tokenizer, converted


def _check(result, report, out, prejoint_width):
    assert result.exit_code == 0, result.output
    assert report.exit_code == 0, report.output
    with open_store(out) as store:
        assert store.audio("prejoint").shape == (4, prejoint_width)
        return store.provenance


# The three names share one loader (only the expected digest differs): one runs in CI.
@pytest.mark.parametrize("name", [pytest.param("clap-music", marks=pytest.mark.slow),
                                  pytest.param("clap-music-speech", marks=pytest.mark.slow),
                                  "clap-general"])
def test_laion_clap_names_extract_then_report(laion, name, tmp_path):
    checkpoint, tokenizer, _ = laion
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcome = extract_and_report(tmp_path, name, "--checkpoint", checkpoint, "--tokenizer", tokenizer)
    provenance = _check(*outcome, 768)
    assert provenance["frontend"]["padding"] == "repeatpad"


def test_hf_folder_extracts_then_reports(laion, tmp_path):
    _, _, converted = laion
    provenance = _check(*extract_and_report(tmp_path, f"hf:{converted}"), 768)
    assert provenance["checkpoint_sha256"]


def test_muscall_extracts_then_reports(tmp_path):
    from test_muscall import write_authors_experiment

    write_authors_experiment(tmp_path / "exp")
    _check(*extract_and_report(tmp_path, "muscall", "--checkpoint", tmp_path / "exp"), 32)
