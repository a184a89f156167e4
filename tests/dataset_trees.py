"""Fixture trees in each dataset's published layout: real file names, real metadata files,
and the mirdata index entries a reader needs, with short synthesised audio."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000


def tone(path: Path, freq: float, seconds: float = 0.3, sr: int = SR) -> Path:
    """A short sine (with a little seeded noise) at ``path``; ``.ogg`` as Vorbis."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(sr * seconds)) / sr
    noise = np.random.default_rng(int(freq)).normal(0, 0.01, t.size)
    subtype = None if path.suffix == ".ogg" else "PCM_16"
    sf.write(path, 0.3 * np.sin(2 * np.pi * freq * t) + noise, sr, subtype=subtype)
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_index(root: Path, filename: str, tracks: dict[str, dict[str, str | None]]) -> Path:
    """A mirdata index: ``{"version", "tracks": {id: {key: [relative path, md5]}}}``."""
    entries = {tid: {key: [rel, md5(root / rel) if rel and (root / rel).is_file() else None]
                     for key, rel in files.items()} for tid, files in tracks.items()}
    path = root / filename
    path.write_text(json.dumps({"version": "fixture", "tracks": entries}), encoding="utf-8")
    return path


# -- ESC-50 --------------------------------------------------------------------------

ESC50_ROWS = [  # filename, fold, target, category, esc10, src_file, take
    ("1-100032-A-0.wav", 1, 0, "dog", "True", "100032", "A"),
    ("1-100038-A-14.wav", 1, 14, "chirping_birds", "False", "100038", "A"),
    ("1-101296-A-19.wav", 1, 19, "thunderstorm", "False", "101296", "A"),
    ("2-100648-A-43.wav", 2, 43, "car_horn", "False", "100648", "A"),
    ("2-102414-B-0.wav", 2, 0, "dog", "True", "102414", "B"),
    ("2-104532-A-14.wav", 2, 14, "chirping_birds", "False", "104532", "A"),
]


def esc50_tree(root: Path) -> Path:
    """``root/ESC-50-master/{audio,meta}`` as the GitHub archive unpacks."""
    folder = root / "ESC-50-master"
    for filename, _, target, *_ in ESC50_ROWS:
        tone(folder / "audio" / filename, 200 + 40 * target)
    write_csv(folder / "meta" / "esc50.csv",
              ["filename", "fold", "target", "category", "esc10", "src_file", "take"], ESC50_ROWS)
    return root


# -- NSynth --------------------------------------------------------------------------

NSYNTH_NOTES = {  # note_str -> (family id, family, source id, source, pitch, velocity, qualities)
    "bass_synthetic_033-022-050": (0, "bass", 2, "synthetic", 22, 50, ["dark"]),
    "keyboard_electronic_001-021-127": (4, "keyboard", 1, "electronic", 21, 127, []),
    "guitar_acoustic_010-065-075": (3, "guitar", 0, "acoustic", 65, 75, ["bright", "percussive"]),
    "string_acoustic_012-040-100": (8, "string", 0, "acoustic", 40, 100, []),
}


def nsynth_tree(root: Path, split: str = "test") -> Path:
    folder = root / f"nsynth-{split}"
    examples = {}
    for k, (note, (fam, fam_s, src, src_s, pitch, velocity, qualities)) in enumerate(NSYNTH_NOTES.items()):
        tone(folder / "audio" / f"{note}.wav", 110 * 2 ** ((pitch - 45) / 12))
        examples[note] = {
            "note": 1000 + k, "note_str": note, "instrument": 100 + k,
            "instrument_str": note.rsplit("-", 2)[0], "pitch": pitch, "velocity": velocity,
            "sample_rate": SR, "qualities": [int(q in qualities) for q in ("bright", "dark", "percussive")],
            "qualities_str": qualities, "instrument_family": fam, "instrument_family_str": fam_s,
            "instrument_source": src, "instrument_source_str": src_s,
        }
    (folder / "examples.json").write_text(json.dumps(examples, indent=2), encoding="utf-8")
    return root


# -- captions ------------------------------------------------------------------------

def captions_tree(root: Path) -> Path:
    """Long form (``file,caption``, several rows per file) and Clotho's wide form."""
    names = ["waves.wav", "birds.wav", "engine.wav"]
    for k, name in enumerate(names):
        tone(root / "audio" / name, 300 + 150 * k)
    write_csv(root / "captions.csv", ["file", "caption"], [
        ["audio/waves.wav", "Waves crash on a rocky shore."],
        ["audio/birds.wav", "Birds sing in the morning."],
        ["audio/waves.wav", "The sea  roars   under wind."],
        ["audio/engine.wav", "An engine idles, then revs."],
        ["audio/birds.wav", "Birds sing in the morning."],
    ])
    write_csv(root / "clotho_captions_evaluation.csv",
              ["file_name"] + [f"caption_{k}" for k in range(1, 6)],
              [[name] + [f"{name.split('.')[0]} caption {k}" for k in range(1, 6)] for name in names])
    return root


# -- mirdata datasets ----------------------------------------------------------------

MEDLEY_ROWS = [  # subset, instrument, instrument_id, song_id, uuid4
    ("test", "clarinet", 0, 1, "0e4371ac-1c6a-51ab-fdb7-f8abd5fbf1a3"),
    ("validation", "flute", 3, 210, "d07b1fc0-567d-52c2-fef4-239f31c9d40e"),
    ("training", "piano", 4, 33, "a1b2c3d4-0000-5111-a222-333344445555"),
    ("training", "violin", 7, 96, "f0e1d2c3-1111-5222-b333-444455556666"),
]


def medley_solos_tree(root: Path) -> Path:
    tracks = {}
    for subset, _, instrument_id, _, uuid in MEDLEY_ROWS:
        rel = f"audio/Medley-solos-DB_{subset}-{instrument_id}_{uuid}.wav"
        tone(root / rel, 220 + 60 * instrument_id)
        tracks[uuid] = {"audio": rel}
    write_csv(root / "annotation" / "Medley-solos-DB_metadata.csv",
              ["subset", "instrument", "instrument_id", "song_id", "uuid4"], MEDLEY_ROWS)
    write_index(root, "medley_solos_db_index_1.2.json", tracks)
    return root


IRMAS_TRAIN = {  # track id -> relative path
    "0189__2": "IRMAS-TrainingData/cla/[cla][cla]0189__2.wav",
    "0001__1": "IRMAS-TrainingData/cel/[cel][dru][pop_roc]0001__1.wav",
    "0412__3": "IRMAS-TrainingData/voi/[voi][nod][jaz_blu]0412__3.wav",
}
IRMAS_TEST = {  # track id -> (relative path without suffix, instrument codes)
    "1": ("IRMAS-TestingData-Part1/Part1/02 - And The Body Will Die-8", ["gel", "voi"]),
    "2": ("IRMAS-TestingData-Part1/Part1/01 - Sad Song-3", ["pia"]),
    "3": ("IRMAS-TestingData-Part2/IRTestingData-Part2/(02) dont kill the whale-1", ["gac", "voi", "cel"]),
}


def irmas_tree(root: Path) -> Path:
    tracks = {}
    for k, (tid, rel) in enumerate(IRMAS_TRAIN.items()):
        tone(root / rel, 250 + 90 * k)
        tracks[tid] = {"audio": rel, "annotation": rel}
    for k, (tid, (stem, codes)) in enumerate(IRMAS_TEST.items()):
        tone(root / f"{stem}.wav", 330 + 70 * k, seconds=0.6)
        (root / f"{stem}.txt").write_text("".join(f"{code}\t\n" for code in codes), encoding="utf-8")
        tracks[tid] = {"audio": f"{stem}.wav", "annotation": f"{stem}.txt"}
    write_index(root, "irmas_index_1.0.json", tracks)
    return root


OPENMIC_LABELS = {  # sample key -> {instrument: relevance}; unlisted instruments are unknown
    "000046_3840": {"clarinet": 0.17105, "flute": 0.0, "trumpet": 0.0},
    "000135_483840": {"guitar": 1.0, "drums": 0.83, "voice": 0.0},
    "000139_119040": {"piano": 0.5, "violin": 0.33, "clarinet": 0.0},
    "000141_153600": {"voice": 0.75, "drums": 0.0, "trumpet": 0.9},
}
_OPENMIC_META = ["track_id", "artist_name", "track_genres", "track_title", "track_url", "sample_key", "start_time"]


def openmic_tree(root: Path) -> Path:
    tracks, meta_rows = {}, []
    for k, key in enumerate(OPENMIC_LABELS):
        rel = f"audio/{key[:3]}/{key}.ogg"
        tone(root / rel, 260 + 80 * k, seconds=0.5)
        tracks[key] = {"audio": rel, "vggish": f"vggish/{key[:3]}/{key}.json"}
        start = int(key.split("_")[1]) / 1000
        meta_rows.append([int(key.split("_")[0]), f"Artist {k}",
                          "[{'genre_id': '76', 'genre_title': 'Experimental Pop', 'genre_url': 'x'}]",
                          f"Title {k}", f"http://freemusicarchive.org/music/{k}", key, start])
    write_csv(root / "openmic-2018-metadata.csv", _OPENMIC_META, meta_rows)
    write_csv(root / "openmic-2018-aggregated-labels.csv", ["sample_key", "instrument", "relevance", "num_responses"],
              [[key, name, score, 3] for key, scores in OPENMIC_LABELS.items() for name, score in scores.items()])
    keys = list(OPENMIC_LABELS)
    (root / "partitions").mkdir(parents=True, exist_ok=True)
    (root / "partitions" / "split01_train.csv").write_text("\n".join(keys[:3]) + "\n")
    (root / "partitions" / "split01_test.csv").write_text(keys[3] + "\n")
    from mirdata.datasets.openmic2018 import INSTRUMENTS

    (root / "class-map.json").write_text(json.dumps(INSTRUMENTS))
    write_index(root, "openmic2018_index_1.0.json", tracks)
    return root


def tinysol_mirdata_tree(root: Path, rows: dict[str, list[str]], header: list[str]) -> Path:
    """mirdata's TinySOL data home: ``audio/TinySOL/...``, ``annotation/TinySOL_metadata.csv``, index."""
    tracks = {}
    for k, rel in enumerate(rows):
        audio = f"audio/TinySOL/{rel}"
        tone(root / audio, 200 + 50 * k)
        tracks[Path(rel).stem] = {"audio": audio}
    write_csv(root / "annotation" / "TinySOL_metadata.csv", header, [[rel, *row] for rel, row in rows.items()])
    write_index(root, "tinysol_index_6.0.json", tracks)
    return root
