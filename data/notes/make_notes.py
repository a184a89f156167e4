"""Render the bundled TinySOL-like single notes with FluidSynth and a General MIDI soundfont.

The output mirrors TinySOL's layout and naming so that the same reader handles both::

    data/notes/TinySOL/<Family>/<Instrument_Full_Name>/ordinario/<Instr>-ord-<pitch>-<dyn>-N-N.flac
    data/notes/TinySOL_metadata.csv

Each instrument gets ``PITCHES_PER_INSTRUMENT`` pitches spread evenly over its real range and
three dynamics (pp, mf, ff as MIDI velocities). One MIDI file per instrument is rendered in a
single FluidSynth run (loading the 140 MB soundfont once), then cut into notes: note-on, the
held note, its release, trailing silence trimmed, a short fade-out, and a peak level that
depends on the dynamics so that pp stays quieter than ff across instruments whose GM presets
differ wildly in loudness. Output is mono 44.1 kHz 16-bit FLAC.

The script is deterministic (dry synth: no reverb, no chorus; float rendering; no dither) and
re-runnable: it rewrites ``TinySOL/`` and the CSV from scratch.

Usage::

    python data/notes/make_notes.py [--soundfont PATH] [--out DIR]

Needs the ``fluidsynth`` program and a GM soundfont; on Debian/Ubuntu::

    apt-get install fluidsynth fluid-soundfont-gm
"""

from __future__ import annotations

import argparse
import csv
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 44100
DEFAULT_SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
PITCHES_PER_INSTRUMENT = 6

# code, TinySOL folder name, full name as in TinySOL_metadata.csv, family, 0-based GM program,
# lowest and highest MIDI pitch rendered (inside the instrument's TinySOL range and the pitches
# the FluidR3 GM presets sound: its contrabass is silent above A3)
INSTRUMENTS = [
    ("BTb", "Bass_Tuba", "Bass Tuba", "Brass", 58, 29, 65),
    ("Hn", "French_Horn", "French Horn", "Brass", 60, 36, 77),
    ("Tbn", "Trombone", "Trombone", "Brass", 57, 40, 72),
    ("TpC", "Trumpet_C", "Trumpet in C", "Brass", 56, 55, 84),
    ("Acc", "Accordion", "Accordion", "Keyboards", 21, 33, 93),
    ("Cb", "Contrabass", "Contrabass", "Strings", 43, 28, 57),
    ("Vn", "Violin", "Violin", "Strings", 40, 55, 96),
    ("Va", "Viola", "Viola", "Strings", 41, 48, 86),
    ("Vc", "Violoncello", "Violoncello", "Strings", 42, 36, 79),
    ("Bn", "Bassoon", "Bassoon", "Winds", 70, 34, 75),
    ("ClBb", "Clarinet_Bb", "Clarinet in Bb", "Winds", 71, 50, 89),
    ("Fl", "Flute", "Flute", "Winds", 73, 60, 96),
    ("Ob", "Oboe", "Oboe", "Winds", 68, 58, 91),
    ("ASax", "Sax_Alto", "Alto Saxophone", "Winds", 65, 49, 80),
]

# dynamics -> (MIDI velocity, TinySOL dynamics id, peak level in dBFS after normalisation)
DYNAMICS = {"pp": (32, 0, -20.0), "mf": (80, 2, -10.0), "ff": (120, 4, -3.0)}

PITCH_CLASSES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]

HOLD_SECONDS = 1.4  # note-on to note-off
SLOT_SECONDS = 4.0  # spacing of notes in the rendered MIDI file; leaves room for release tails
MAX_SECONDS = 2.5
MIN_SECONDS = 1.5
SILENCE_DB = -50.0  # trailing audio below this (relative to the note's peak) is trimmed
FADE_SECONDS = 0.02
FOLDS = 5

CSV_COLUMNS = [
    "Path", "Fold", "Family", "Instrument (abbr.)", "Instrument (in full)",
    "Technique (abbr.)", "Technique (in full)", "Pitch", "Pitch ID", "Dynamics",
    "Dynamics ID", "Instance ID", "String ID (if applicable)", "Needed digital retuning",
]


def pitch_name(midi: int) -> str:
    """Scientific pitch name with sharps, C4 = MIDI 60 (TinySOL's convention)."""
    return f"{PITCH_CLASSES[midi % 12]}{midi // 12 - 1}"


def spread_pitches(low: int, high: int, count: int) -> list[int]:
    """``count`` distinct MIDI pitches evenly spread from ``low`` to ``high`` inclusive."""
    return sorted({int(round(p)) for p in np.linspace(low, high, count)})


def _varlen(value: int) -> bytes:
    """MIDI variable-length quantity."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def write_midi(path: Path, program: int, notes: list[tuple[int, int]]) -> None:
    """Write a format-0 Standard MIDI File playing ``notes`` (pitch, velocity) one per slot.

    120 bpm at 480 ticks per quarter note gives 960 ticks per second.
    """
    ticks_per_second = 960
    hold = int(HOLD_SECONDS * ticks_per_second)
    slot = int(SLOT_SECONDS * ticks_per_second)
    events = [
        _varlen(0) + b"\xff\x51\x03" + (500000).to_bytes(3, "big"),  # tempo: 120 bpm
        _varlen(0) + bytes([0xC0, program]),
        _varlen(0) + bytes([0xB0, 7, 127]),  # channel volume full; levels are set afterwards
    ]
    for index, (pitch, velocity) in enumerate(notes):
        # note ``index`` starts at exactly ``index`` slots, so notes can be cut at known offsets
        events.append(_varlen(0 if index == 0 else slot - hold) + bytes([0x90, pitch, velocity]))
        events.append(_varlen(hold) + bytes([0x80, pitch, 0]))
    events.append(_varlen(slot - hold) + b"\xff\x2f\x00")  # room for the last release
    track = b"".join(events)
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480)
    path.write_bytes(header + b"MTrk" + struct.pack(">I", len(track)) + track)


def render(midi_path: Path, wav_path: Path, soundfont: Path) -> np.ndarray:
    """Render a MIDI file with FluidSynth (dry, float) and return it as mono float64."""
    command = [
        "fluidsynth", "-q", "-n", "-i", "-R", "0", "-C", "0", "-g", "0.5",
        "-r", str(SAMPLE_RATE), "-O", "float", "-T", "wav", "-F", str(wav_path),
        str(soundfont), str(midi_path),
    ]
    subprocess.run(command, check=True, capture_output=True)
    audio, sr = sf.read(wav_path, dtype="float64", always_2d=True)
    assert sr == SAMPLE_RATE, sr
    return audio.mean(axis=1)


def cut_note(rendered: np.ndarray, index: int, peak_db: float) -> np.ndarray:
    """Cut note ``index`` out of a rendering, trim its tail, fade it out and set its peak."""
    start = int(round(index * SLOT_SECONDS * SAMPLE_RATE))
    note = rendered[start:start + int(MAX_SECONDS * SAMPLE_RATE)].copy()
    peak = np.max(np.abs(note))
    if peak == 0:
        raise RuntimeError(f"note {index} rendered silent")
    loud = np.flatnonzero(np.abs(note) >= peak * 10 ** (SILENCE_DB / 20))
    end = max(loud[-1] + 1, int(MIN_SECONDS * SAMPLE_RATE))
    note = note[:end]
    fade = int(FADE_SECONDS * SAMPLE_RATE)
    note[-fade:] *= np.linspace(1.0, 0.0, fade)  # no click where the tail was cut
    return note * (10 ** (peak_db / 20) / peak)


def check_tools(soundfont: Path) -> None:
    """Exit with install instructions when fluidsynth or the soundfont is missing."""
    problems = []
    if shutil.which("fluidsynth") is None:
        problems.append("the 'fluidsynth' program is not on PATH")
    if not soundfont.is_file():
        problems.append(f"soundfont {soundfont} does not exist")
    if problems:
        sys.exit(
            "make_notes: " + "; ".join(problems) + ". Install them with "
            "'apt-get install fluidsynth fluid-soundfont-gm' (Debian/Ubuntu) or pass --soundfont."
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soundfont", type=Path, default=DEFAULT_SOUNDFONT)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    check_tools(args.soundfont)

    audio_root = args.out / "TinySOL"
    if audio_root.exists():
        shutil.rmtree(audio_root)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for code, folder, full_name, family, program, low, high in INSTRUMENTS:
            pitches = spread_pitches(low, high, PITCHES_PER_INSTRUMENT)
            notes = [(p, DYNAMICS[d][0], d) for p in pitches for d in DYNAMICS]
            midi_path = Path(tmp) / f"{code}.mid"
            write_midi(midi_path, program, [(p, v) for p, v, _ in notes])
            rendered = render(midi_path, Path(tmp) / f"{code}.wav", args.soundfont)
            note_dir = audio_root / family / folder / "ordinario"
            note_dir.mkdir(parents=True)
            for index, (pitch, _, dynamics) in enumerate(notes):
                note = cut_note(rendered, index, DYNAMICS[dynamics][2])
                name = f"{code}-ord-{pitch_name(pitch)}-{dynamics}-N-N.flac"
                sf.write(note_dir / name, note, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
                rows.append({
                    "Path": f"{family}/{folder}/ordinario/{name}",
                    "Fold": pitches.index(pitch) % FOLDS,  # folds balanced over the range
                    "Family": family,
                    "Instrument (abbr.)": code,
                    "Instrument (in full)": full_name,
                    "Technique (abbr.)": "ord",
                    "Technique (in full)": "ordinario",
                    "Pitch": pitch_name(pitch),
                    "Pitch ID": pitch,
                    "Dynamics": dynamics,
                    "Dynamics ID": DYNAMICS[dynamics][1],
                    "Instance ID": 0,
                    "String ID (if applicable)": "",
                    "Needed digital retuning": "FALSE",
                })
            print(f"{full_name:16s} {len(notes):3d} notes, MIDI {pitches[0]}-{pitches[-1]}")
    with open(args.out / "TinySOL_metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"{len(rows)} notes written under {audio_root}")


if __name__ == "__main__":
    main()
