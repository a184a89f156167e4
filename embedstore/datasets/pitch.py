"""Scientific pitch names and MIDI numbers (``"C4"`` <-> 60), as TinySOL names its notes."""

from __future__ import annotations

import re

_PITCH = re.compile(r"^([A-G]#?)(-?\d+)$")
_PITCH_CLASSES = {"C": 0, "C#": 1, "D": 2, "D#": 3, "E": 4, "F": 5, "F#": 6, "G": 7,
                  "G#": 8, "A": 9, "A#": 10, "B": 11}
_PITCH_NAMES = list(_PITCH_CLASSES)


def midi_pitch(pitch: str) -> int | None:
    """MIDI number of a scientific pitch name with sharps (``"C4"`` -> 60), None if malformed."""
    match = _PITCH.match(pitch)
    if match is None:
        return None
    return 12 * (int(match.group(2)) + 1) + _PITCH_CLASSES[match.group(1)]


def pitch_name(midi: int) -> str:
    """Scientific pitch name with sharps, the inverse of :func:`midi_pitch` (60 -> ``"C4"``)."""
    return f"{_PITCH_NAMES[midi % 12]}{midi // 12 - 1}"
