"""Dataset readers: the bundled notes, synthetic TinySOL trees, labelled folders."""

import csv
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from embedstore.datasets import (
    TINYSOL_CLASSES,
    default_notes_root,
    load_dataset,
    load_folder,
    load_tinysol,
    midi_pitch,
    pitch_name,
)
from embedstore.errors import InputError

TINYSOL_HEADER = [
    "Path", "Fold", "Family", "Instrument (abbr.)", "Instrument (in full)", "Technique (abbr.)",
    "Technique (in full)", "Pitch", "Pitch ID", "Dynamics", "Dynamics ID", "Instance ID",
    "String ID (if applicable)", "Needed digital retuning",
]

# relative path -> a row of the real TinySOL_metadata.csv's shape
SYNTHETIC = {
    "Strings/Violoncello/ordinario/Vc-ord-D3-pp-4c-N.wav":
        ["3", "Strings", "Vc", "Violoncello", "ord", "ordinario", "D3", "50", "pp", "0", "0",
         "4.0", "FALSE"],
    "Keyboards/Accordion/ordinario/Acc-ord-A1-ff-N-T22u.wav":
        ["1", "Keyboards", "Acc", "Accordion", "ord", "ordinario", "A1", "33", "ff", "4", "0",
         "", "TRUE"],
    "Brass/Bass_Tuba/ordinario/BTb-ord-F4-mf-N-N.wav":
        ["0", "Brass", "BTb", "Bass Tuba", "ord", "ordinario", "F4", "65", "mf", "2", "0", "",
         "FALSE"],
    "Winds/Clarinet_Bb/ordinario/ClBb-ord-A#3-p-alt2-N.wav":
        ["2", "Winds", "ClBb", "Clarinet in Bb", "ord", "ordinario", "A#3", "58", "p", "1", "2",
         "", "FALSE"],
}


def write_tone(path, seconds=0.05, sr=8000):
    path.parent.mkdir(parents=True, exist_ok=True)
    subtype = None if path.suffix == ".ogg" else "PCM_16"  # ogg: vorbis, the default
    sf.write(path, 0.1 * np.sin(np.arange(int(sr * seconds)) * 0.3), sr, subtype=subtype)


@pytest.fixture
def tinysol(tmp_path):
    """A TinySOL-shaped tree without a metadata CSV: tmp/TinySOL/<Family>/..."""
    for rel in SYNTHETIC:
        write_tone(tmp_path / "TinySOL" / rel)
    return tmp_path


def write_metadata(path, header=TINYSOL_HEADER, rows=None):
    rows = [[rel, *fields] for rel, fields in SYNTHETIC.items()] if rows is None else rows
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


# ---------------------------------------------------------------- bundled notes


def test_bundled_notes_cover_14_instruments_evenly():
    ds = load_dataset("notes")
    assert ds.name == "notes" and not ds.multilabel
    assert ds.classes == TINYSOL_CLASSES and len(ds.classes) == 14
    assert len(ds.items) == 252
    assert set(Counter(item.labels[0] for item in ds.items).values()) == {18}
    assert len(set(ds.ids)) == 252
    assert all(item.path.suffix == ".flac" and item.path.is_file() for item in ds.items)
    np.testing.assert_array_equal(np.bincount(ds.labels(), minlength=14), [18] * 14)


def test_bundled_notes_metadata_agrees_with_file_names_and_csv():
    ds = load_dataset("notes")
    with open(default_notes_root() / "TinySOL_metadata.csv", newline="") as f:
        rows = {r["Path"].rsplit("/", 1)[1].removesuffix(".flac"): r for r in csv.DictReader(f)}
    assert set(rows) == set(ds.ids)
    for item in ds.items:
        meta, row = item.metadata, rows[item.id]
        code, _, pitch, dynamics, _, _ = item.id.split("-")
        assert meta["instrument_code"] == code == row["Instrument (abbr.)"]
        assert meta["pitch"] == pitch and meta["midi_pitch"] == midi_pitch(pitch)
        assert meta["midi_pitch"] == int(row["Pitch ID"])
        assert meta["dynamics"] == dynamics
        assert meta["dynamics_id"] == {"pp": 0, "mf": 2, "ff": 4}[dynamics]
        assert meta["fold"] == int(row["Fold"]) and 0 <= meta["fold"] < 5
        assert meta["family"] == row["Family"] == item.path.parts[-4]
        assert meta["instrument"] == item.labels[0]
    columns = ds.metadata_columns()
    assert columns["midi_pitch"].dtype == np.int64 and columns["family"].dtype.kind == "U"
    assert set(columns["family"]) == {"Brass", "Keyboards", "Strings", "Winds"}
    # six pitches spread over each instrument's range
    for cls in ds.classes:
        pitches = {i.metadata["midi_pitch"] for i in ds.items if i.labels == (cls,)}
        assert len(pitches) == 6 and max(pitches) - min(pitches) >= 24


def test_bundled_notes_audio_format_and_size():
    root = default_notes_root()
    files = sorted((root / "TinySOL").rglob("*.flac"))
    assert len(files) == 252
    assert sum(f.stat().st_size for f in files) < 15e6
    for path in files[::7]:  # a sample keeps the test fast
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.subtype) == (44100, 1, "PCM_16")
        assert 1.5 <= info.duration <= 2.5
        x, _ = sf.read(path)
        assert 0.05 < np.abs(x).max() <= 1.0


def test_bundled_notes_get_louder_with_dynamics():
    ds = load_dataset("notes")
    peaks = {}
    for item in ds.items:
        x, _ = sf.read(item.path)
        peaks[item.id] = np.abs(x).max()
    for item_id, peak in peaks.items():
        if "-pp-" in item_id:
            assert peak < peaks[item_id.replace("-pp-", "-mf-")] < peaks[item_id.replace("-pp-", "-ff-")]


# ---------------------------------------------------------------- synthetic TinySOL


def test_tinysol_without_csv_parses_file_names(tinysol):
    ds = load_tinysol(tinysol)
    assert ds.root == (tinysol / "TinySOL").resolve()
    assert ds.classes == TINYSOL_CLASSES and len(ds.items) == 4
    by_id = {item.id: item for item in ds.items}
    cello = by_id["Vc-ord-D3-pp-4c-N"]
    assert cello.labels == ("violoncello",)
    assert cello.metadata == {
        "instrument": "violoncello", "instrument_code": "Vc", "family": "Strings",
        "technique": "ord", "pitch": "D3", "midi_pitch": 50, "dynamics": "pp",
        "dynamics_id": 0, "instance": "4c", "instance_id": 0, "string_id": 4,
        "retuning": "N", "retuned": 0, "fold": -1,
    }
    accordion = by_id["Acc-ord-A1-ff-N-T22u"].metadata
    assert (accordion["retuning"], accordion["retuned"], accordion["midi_pitch"]) == ("T22u", 1, 33)
    clarinet = by_id["ClBb-ord-A#3-p-alt2-N"]
    assert clarinet.labels == ("clarinet in b-flat",)
    assert (clarinet.metadata["instance_id"], clarinet.metadata["dynamics_id"]) == (2, 1)
    # the TinySOL folder itself works as root too
    assert load_tinysol(tinysol / "TinySOL").ids.tolist() == ds.ids.tolist()


@pytest.mark.parametrize("where", ["parent", "audio", "annotation"])
def test_tinysol_csv_values_are_used(tinysol, where):
    folder = {"parent": tinysol, "audio": tinysol / "TinySOL",
              "annotation": tinysol / "annotation"}[where]
    folder.mkdir(exist_ok=True)
    rows = [[rel, *fields] for rel, fields in SYNTHETIC.items()]
    rows[2][1] = "3"  # the tuba's fold; file names carry no folds
    write_metadata(folder / "TinySOL_metadata.csv", rows=rows)
    root = tinysol / "TinySOL" if where == "audio" else tinysol
    meta = {item.id: item.metadata for item in load_tinysol(root).items}
    assert meta["BTb-ord-F4-mf-N-N"]["fold"] == 3
    assert meta["Vc-ord-D3-pp-4c-N"]["fold"] == 3 and meta["Vc-ord-D3-pp-4c-N"]["string_id"] == 4
    assert meta["Acc-ord-A1-ff-N-T22u"]["retuned"] == 1
    assert meta["ClBb-ord-A#3-p-alt2-N"]["instance_id"] == 2


def test_tinysol_csv_wins_over_file_names(tinysol):
    rows = [[rel, *fields] for rel, fields in SYNTHETIC.items()]
    rows[0][13] = "TRUE"  # the cello marked retuned although its name says N
    write_metadata(tinysol / "TinySOL_metadata.csv", rows=rows)
    meta = {item.id: item.metadata for item in load_tinysol(tinysol).items}
    assert meta["Vc-ord-D3-pp-4c-N"]["retuned"] == 1


def test_tinysol_csv_with_few_columns_and_flac_files(tmp_path):
    # a .wav CSV describes the .flac renderings of the same notes; missing columns tolerated
    for rel in SYNTHETIC:
        write_tone(tmp_path / "TinySOL" / rel.replace(".wav", ".flac"))
    write_metadata(tmp_path / "TinySOL_metadata.csv", header=["Path", "Fold"],
                   rows=[[rel, str(i)] for i, rel in enumerate(SYNTHETIC)])
    ds = load_tinysol(tmp_path)
    assert sorted(item.metadata["fold"] for item in ds.items) == [0, 1, 2, 3]
    assert {item.labels[0] for item in ds.items} == {
        "violoncello", "accordion", "bass tuba", "clarinet in b-flat"}


def test_tinysol_full_names_label_files_with_unparseable_names(tmp_path):
    write_tone(tmp_path / "TinySOL" / "Winds" / "Clarinet_Bb" / "ordinario" / "note one.wav")
    write_tone(tmp_path / "TinySOL" / "Brass" / "Trumpet_C" / "ordinario" / "note two.wav")
    write_metadata(tmp_path / "TinySOL_metadata.csv", header=["Path", "Instrument (in full)"],
                   rows=[["Winds/Clarinet_Bb/ordinario/note one.wav", "Clarinet in Bb"],
                         ["Brass/Trumpet_C/ordinario/note two.wav", "Trumpet in C"]])
    labels = {item.id: item.labels for item in load_tinysol(tmp_path).items}
    assert labels == {"note one": ("clarinet in b-flat",), "note two": ("trumpet in c",)}


def test_tinysol_errors(tmp_path, tinysol):
    with pytest.raises(InputError, match="does not exist"):
        load_tinysol(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no audio files"):
        load_tinysol(tmp_path / "empty")
    write_tone(tinysol / "TinySOL" / "Winds" / "Kazoo" / "ordinario" / "Kz-ord-C4-ff-N-N.wav")
    with pytest.raises(InputError, match=r"instrument of 1 file\(s\), first: .*Kz-ord"):
        load_tinysol(tinysol)


def test_tinysol_csv_errors(tinysol):
    csv_path = tinysol / "TinySOL_metadata.csv"
    write_metadata(csv_path, header=["File", "Fold"], rows=[["x.wav", "0"]])
    with pytest.raises(InputError, match="no 'Path' column"):
        load_tinysol(tinysol)
    rows = [[rel, *fields] for rel, fields in SYNTHETIC.items()]
    rows += [["Winds/Oboe/ordinario/Ob-ord-C4-ff-N-N.wav", *rows[0][1:]],
             ["Winds/Oboe/ordinario/Ob-ord-D4-ff-N-N.wav", *rows[0][1:]]]
    write_metadata(csv_path, rows=rows)
    with pytest.raises(InputError, match=r"2 file\(s\) listed .* missing, first: .*Ob-ord-C4"):
        load_tinysol(tinysol)
    rows = [[rel, *fields] for rel, fields in SYNTHETIC.items()]
    rows[1][1] = "one"
    write_metadata(csv_path, rows=rows)
    with pytest.raises(InputError, match="line 3: bad 'Fold' value 'one'"):
        load_tinysol(tinysol)


def test_midi_pitch():
    assert [midi_pitch(p) for p in ("C4", "A4", "C#1", "A#3", "B-1", "H4", "C")] == [
        60, 69, 25, 58, 11, None, None]


# ---------------------------------------------------------------- folders


@pytest.fixture
def folder(tmp_path):
    for name in ("a.wav", "b.wav", "sub/c.flac", "d.ogg"):
        write_tone(tmp_path / name)
    return tmp_path


def write_labels(path, rows, header=("path", "label", "split", "take", "gain")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_folder_single_label(folder):
    labels = write_labels(folder / "labels.csv", [
        ("a.wav", "violin", "train", "1", "0.5"), ("b.wav", "cello", "test", "2", "1"),
        ("sub/c.flac", "violin", "train", "3", "2.25"), ("d.ogg", "bass", "train", "4", "-1")])
    ds = load_folder(folder, labels)
    assert ds.name == "folder" and not ds.multilabel
    assert ds.classes == ["bass", "cello", "violin"]
    assert ds.ids.tolist() == ["a.wav", "b.wav", "sub/c.flac", "d.ogg"]
    assert ds.items[2].path == (folder / "sub" / "c.flac").resolve()
    np.testing.assert_array_equal(ds.labels(), [2, 1, 2, 0])
    assert ds.items[0].metadata == {"split": "train", "take": 1, "gain": 0.5}
    columns = ds.metadata_columns()
    assert columns["take"].dtype == np.int64 and columns["gain"].dtype == np.float64
    assert columns["split"].tolist() == ["train", "test", "train", "train"]
    assert load_dataset("folder", folder).ids.tolist() == ds.ids.tolist()  # labels.csv default


def test_folder_multi_label(folder):
    labels = write_labels(folder / "tags.csv", [
        ("a.wav", "piano; voice", "", "", ""), ("b.wav", "voice", "", "", ""),
        ("sub/c.flac", "drums;piano;drums", "", "", "")], header=("Path", "Label", "x", "y", "z"))
    ds = load_dataset("folder", folder, labels)
    assert ds.multilabel and ds.classes == ["drums", "piano", "voice"]
    assert ds.items[2].labels == ("drums", "piano")
    np.testing.assert_array_equal(ds.label_matrix(), [[0, 1, 1], [0, 0, 1], [1, 1, 0]])
    with pytest.raises(InputError, match="multi-label"):
        ds.labels()


@pytest.mark.parametrize("rows, header, message", [
    ([("a.wav", "x")], ("file", "label"), r"lacks column\(s\) path"),
    ([("a.wav", "x")], ("path", "class"), r"lacks column\(s\) label"),
    ([], ("path", "label"), "lists no files"),
    ([("a.wav", "x"), ("b.wav", " ; ")], ("path", "label"), "line 3 has no label"),
    ([("a.wav", "x"), ("a.wav", "y")], ("path", "label"), "lists 'a.wav' twice"),
    ([("a.wav", "x"), ("gone.wav", "y"), ("also/gone.wav", "y")], ("path", "label"),
     r"2 path\(s\) in .* do not exist under .*, first: gone.wav"),
])
def test_folder_errors(folder, rows, header, message):
    labels = write_labels(folder / "labels.csv", rows, header=header)
    with pytest.raises(InputError, match=message):
        load_folder(folder, labels)


def test_load_dataset_errors(tmp_path):
    with pytest.raises(InputError, match="unknown dataset 'urbansound8k'"):
        load_dataset("urbansound8k", tmp_path)
    with pytest.raises(InputError, match="needs a root"):
        load_dataset("tinysol")
    with pytest.raises(InputError, match="labels CSV .* does not exist"):
        load_dataset("folder", tmp_path)
    with pytest.raises(InputError, match="dataset folder .* does not exist"):
        load_folder(tmp_path / "nope", tmp_path / "labels.csv")


@pytest.mark.slow  # renders all 252 notes: ~10 s
@pytest.mark.skipif(shutil.which("fluidsynth") is None
                    or not Path("/usr/share/sounds/sf2/FluidR3_GM.sf2").is_file(),
                    reason="needs fluidsynth and fluid-soundfont-gm")
def test_make_notes_regenerates_the_bundled_notes(tmp_path):
    root = default_notes_root()
    subprocess.run([sys.executable, str(root / "make_notes.py"), "--out", str(tmp_path)],
                   check=True, capture_output=True)
    assert (tmp_path / "TinySOL_metadata.csv").read_text() == \
        (root / "TinySOL_metadata.csv").read_text()
    names = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.flac"))
    assert names == sorted(p.relative_to(root) for p in root.rglob("*.flac"))
    for name in names[::25]:
        new, _ = sf.read(tmp_path / name)
        old, _ = sf.read(root / name)
        # the same FluidSynth build gives identical samples; another build, near-identical ones
        assert len(new) == len(old) and np.corrcoef(new, old)[0, 1] > 0.99


def test_pitch_name_inverts_midi_pitch():
    assert pitch_name(60) == "C4" and pitch_name(70) == "A#4" and pitch_name(21) == "A0"
    assert all(midi_pitch(pitch_name(m)) == m for m in range(0, 128))
