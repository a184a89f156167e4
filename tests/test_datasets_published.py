"""Each dataset reads a fixture tree in its published layout (file names, metadata files,
mirdata index entries)."""

import json

import numpy as np
import pytest

from dataset_trees import (
    ESC50_ROWS,
    IRMAS_TEST,
    MEDLEY_ROWS,
    NSYNTH_NOTES,
    OPENMIC_LABELS,
    captions_tree,
    esc50_tree,
    irmas_tree,
    medley_solos_tree,
    nsynth_tree,
    openmic_tree,
    tinysol_mirdata_tree,
)
from embedstore.datasets import (
    DATASETS,
    ESC50_CLASSES,
    NSYNTH_FAMILIES,
    load_captions,
    load_dataset,
    load_esc50,
    load_nsynth,
    load_tinysol,
)
from embedstore.errors import InputError


def test_esc50_classes_are_the_50_categories_by_target_and_folds_are_kept(tmp_path):
    ds = load_dataset("esc50", esc50_tree(tmp_path))
    assert len(ds.classes) == 50 and ds.classes[0] == "dog" and ds.classes[49] == "hand_saw"
    assert [ds.classes[row[2]] for row in ESC50_ROWS] == [row[3] for row in ESC50_ROWS]
    assert [item.id for item in ds.items] == [row[0][:-4] for row in ESC50_ROWS]
    assert ds.labels().tolist() == [row[2] for row in ESC50_ROWS]
    first = ds.items[0].metadata
    assert first == {"fold": 1, "target": 0, "esc10": 1, "src_file": "100032", "take": "A"}
    fold1 = ds.where("fold", "1")
    assert len(fold1.items) == 3 and fold1.subset == "fold=1" and fold1.classes == ds.classes


def test_esc50_refuses_a_target_that_is_not_its_category(tmp_path):
    esc50_tree(tmp_path)
    meta = tmp_path / "ESC-50-master" / "meta" / "esc50.csv"
    meta.write_text(meta.read_text().replace("1-100032-A-0.wav,1,0,dog", "1-100032-A-0.wav,1,3,dog"))
    with pytest.raises(InputError, match="line 2: target 3 with category 'dog'"):
        load_esc50(tmp_path)
    (tmp_path / "ESC-50-master" / "audio" / "2-100648-A-43.wav").unlink()
    meta.write_text(meta.read_text().replace(",1,3,dog", ",1,0,dog"))
    with pytest.raises(InputError, match="1 clip.* missing, first: .*2-100648-A-43.wav"):
        load_esc50(tmp_path)


def test_nsynth_family_and_source_come_from_examples_json(tmp_path):
    nsynth_tree(tmp_path, "test")
    family = load_dataset("nsynth", tmp_path)
    assert family.classes == NSYNTH_FAMILIES
    assert [item.labels[0] for item in family.items] == [v[1] for v in NSYNTH_NOTES.values()]
    meta = family.items[2].metadata
    assert meta == {"split": "test", "instrument": "guitar_acoustic_010", "family": "guitar", "source": "acoustic",
                    "pitch": 65, "velocity": 75, "sample_rate": 16000, "qualities": "bright;percussive"}
    source = load_dataset("nsynth-source", tmp_path / "nsynth-test")
    assert source.classes == ["acoustic", "electronic", "synthetic"]
    assert [item.labels[0] for item in source.items] == [v[3] for v in NSYNTH_NOTES.values()]


def test_nsynth_refuses_a_family_id_that_disagrees_with_its_name(tmp_path):
    nsynth_tree(tmp_path)
    path = tmp_path / "nsynth-test" / "examples.json"
    doc = json.loads(path.read_text())
    doc["bass_synthetic_033-022-050"]["instrument_family"] = 5
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="instrument_family 5 / 'bass'"):
        load_nsynth(tmp_path)


def test_captions_long_form_groups_rows_by_file_and_wide_form_reads_clotho(tmp_path):
    captions_tree(tmp_path)
    long = load_dataset("captions", tmp_path)
    assert [item.id for item in long.items] == ["audio/waves.wav", "audio/birds.wav", "audio/engine.wav"]
    assert long.items[0].captions == ("Waves crash on a rocky shore.", "The sea roars under wind.")
    assert long.items[1].captions == ("Birds sing in the morning.",)  # the repeat dropped
    assert long.classes == ["captioned"] and long.items[0].metadata == {"n_captions": 2}
    (tmp_path / "audio").rename(tmp_path / "evaluation")
    wide = load_captions(tmp_path / "evaluation", tmp_path / "clotho_captions_evaluation.csv")
    assert [len(item.captions) for item in wide.items] == [5, 5, 5]
    assert wide.items[2].captions[0] == "engine caption 1"


def test_captions_refuse_a_csv_without_caption_column(tmp_path):
    captions_tree(tmp_path)
    (tmp_path / "bad.csv").write_text("file,text\naudio/waves.wav,x\n")
    with pytest.raises(InputError, match="needs a file column .* and a caption column"):
        load_captions(tmp_path, tmp_path / "bad.csv")


# -- through mirdata -------------------------------------------------------------------

mirdata = pytest.importorskip("mirdata")


def test_medley_solos_reads_through_mirdata_index(tmp_path):
    ds = load_dataset("medley-solos", medley_solos_tree(tmp_path))
    assert len(ds.classes) == 8 and ds.classes[3] == "flute"
    assert [item.id for item in ds.items] == [row[4] for row in MEDLEY_ROWS]
    assert ds.labels().tolist() == [row[2] for row in MEDLEY_ROWS]
    assert ds.items[1].metadata == {"subset": "validation", "instrument_id": 3, "song_id": 210}
    assert ds.source.startswith(f"mirdata {mirdata.__version__}") and "medley_solos_db_index_1.2.json" in ds.source


def test_a_mirdata_dataset_without_its_index_says_how_to_get_it(tmp_path):
    medley_solos_tree(tmp_path)
    (tmp_path / "medley_solos_db_index_1.2.json").unlink()
    with pytest.raises(InputError, match="no mirdata index medley_solos_db_index_1.2.json .*datasets download"):
        load_dataset("medley-solos", tmp_path)


def test_irmas_training_is_single_label_and_test_set_multi_label(tmp_path):
    irmas_tree(tmp_path)
    train = load_dataset("irmas", tmp_path)
    assert [item.labels for item in train.items] == [("clarinet",), ("cello",), ("voice",)]
    assert [item.metadata for item in train.items] == [
        {"genre": "cla", "drums": -1}, {"genre": "pop_roc", "drums": 1}, {"genre": "jaz_blu", "drums": 0}]
    test = load_dataset("irmas-test", tmp_path)
    assert test.multilabel and [item.id for item in test.items] == list(IRMAS_TEST)
    assert [item.labels for item in test.items] == [
        ("electric guitar", "voice"), ("piano",), ("acoustic guitar", "voice", "cello")]
    assert test.label_matrix().sum() == 6 and test.label_mask() is None


def test_openmic_keeps_unknown_pairs_out_of_the_labels(tmp_path):
    ds = load_dataset("openmic", openmic_tree(tmp_path))
    assert ds.multilabel and len(ds.classes) == 20 and ds.classes[0] == "accordion"
    mask, matrix = ds.label_mask(), ds.label_matrix()
    for row, (key, scores) in enumerate(OPENMIC_LABELS.items()):
        assert ds.items[row].id == key
        known = {ds.classes[j] for j in np.nonzero(mask[row])[0]}
        present = {ds.classes[j] for j in np.nonzero(matrix[row])[0]}
        assert known == set(scores)
        assert present == {name for name, score in scores.items() if score >= 0.5}
    assert ds.items[1].metadata["split"] == "split01_train" and ds.items[3].metadata["split"] == "split01_test"
    assert ds.items[1].metadata["start_time"] == pytest.approx(483.84)


def test_openmic_reads_the_release_folder_beside_the_downloaded_index(tmp_path):
    openmic_tree(tmp_path / "openmic-2018")
    (tmp_path / "openmic-2018" / "openmic2018_index_1.0.json").rename(tmp_path / "openmic2018_index_1.0.json")
    ds = load_dataset("openmic", tmp_path)
    assert ds.root == tmp_path / "openmic-2018" and len(ds.items) == len(OPENMIC_LABELS)


def test_tinysol_through_mirdata_equals_our_reader_on_the_same_tree(tmp_path):
    from test_datasets import SYNTHETIC, TINYSOL_HEADER

    tinysol_mirdata_tree(tmp_path, SYNTHETIC, TINYSOL_HEADER)
    through_mirdata = load_dataset("tinysol", tmp_path)
    ours = load_tinysol(tmp_path)
    assert through_mirdata.source.startswith("mirdata") and ours.source == "embedstore"
    assert through_mirdata.classes == ours.classes
    assert [(i.id, i.labels, i.metadata) for i in through_mirdata.items] == \
        [(i.id, i.labels, i.metadata) for i in ours.items]
    assert {i.metadata["fold"] for i in ours.items} == {0, 1, 2, 3}


def test_every_registered_dataset_is_listed_with_its_facts():
    for name, info in DATASETS.items():
        assert info.name == name and info.labels and info.licence and info.get
    assert DATASETS["esc50"].classes == len(ESC50_CLASSES)
    assert "sound" in DATASETS["esc50"].prompts
