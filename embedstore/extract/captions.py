"""Generated captions for single instrument notes, to train a two-tower model on them.

Each note gets sentences naming its instrument, and in most of them its family, pitch
(with a register word) and dynamics, in varied wording. The templates deliberately never
use the evaluation prompt form "A <label> track", so zero-shot scores with that prompt
measure generalisation to an unseen sentence.

>>> rng = np.random.default_rng(0)
>>> note_captions("violin", "Strings", "A4", "pp", 2, rng)  # doctest: +SKIP
['a pianissimo A4 on the violin', 'violin, a string instrument, playing A4 very softly']
"""

from __future__ import annotations

import numpy as np

FAMILY_WORDS = {"Brass": "brass", "Strings": "string", "Winds": "woodwind",
                "Keyboards": "keyboard"}

# dynamics -> (adjectives, adverbs)
DYNAMICS_WORDS = {
    "pp": (["pianissimo", "very soft", "quiet", "hushed"],
           ["very softly", "pianissimo", "quietly"]),
    "p": (["piano", "soft", "gentle"], ["softly", "piano", "gently"]),
    "mf": (["mezzo-forte", "moderately loud", "medium-loud"],
           ["mezzo-forte", "at a moderate level", "moderately loud"]),
    "f": (["forte", "loud", "strong"], ["loudly", "forte", "strongly"]),
    "ff": (["fortissimo", "very loud", "powerful", "forceful"],
           ["fortissimo", "very loudly", "with full force"]),
}

TEMPLATES = [
    "a {dyn_adj} {pitch} on the {instrument}",
    "{instrument}, a {family} instrument, playing {pitch} {dyn_adv}",
    "a single {instrument} note at {pitch}, played {dyn_adv}",
    "the sound of a {instrument} holding a {register} {pitch}",
    "{dyn_adj} {family} sound: a {instrument} on {pitch}",
    "an isolated {register} note from a {instrument}",
    "one {dyn_adj} note played by a {instrument}",
    "a recording of a {instrument}",
    "solo {instrument}, {register} register, {dyn_adj}",
    "{instrument} sustaining {pitch}",
    "a {family} instrument: the {instrument}",
    "the {instrument} plays a {register} note {dyn_adv}",
]


def register_word(midi_pitch: int) -> str:
    """A coarse register name for a MIDI pitch."""
    if midi_pitch < 48:
        return "low"
    if midi_pitch < 72:
        return "middle"
    return "high"


def note_captions(instrument: str, family: str, pitch: str, dynamics: str, count: int,
                  rng: np.random.Generator, midi_pitch: int | None = None) -> list[str]:
    """``count`` distinct captions for one note, drawn from :data:`TEMPLATES`.

    Parameters
    ----------
    instrument : str
        Instrument name as it should read in the sentence (e.g. the class name).
    family : str
        TinySOL family (``Brass``, ``Strings``, ``Winds``, ``Keyboards``).
    pitch : str
        Pitch name such as ``"A#3"``.
    dynamics : str
        TinySOL dynamics mark (``pp`` ... ``ff``).
    count : int
        Number of captions, at most ``len(TEMPLATES)``.
    rng : np.random.Generator
        Source of the template and word choices.
    midi_pitch : int, optional
        For the register word; taken from ``pitch`` when omitted.
    """
    if midi_pitch is None:
        from embedstore.datasets.pitch import midi_pitch as to_midi

        midi_pitch = to_midi(pitch)
    adjectives, adverbs = DYNAMICS_WORDS[dynamics]
    chosen = rng.choice(len(TEMPLATES), size=count, replace=False)
    return [
        TEMPLATES[i].format(
            instrument=instrument, family=FAMILY_WORDS.get(family, family.lower()),
            pitch=pitch, register=register_word(midi_pitch),
            dyn_adj=adjectives[rng.integers(len(adjectives))],
            dyn_adv=adverbs[rng.integers(len(adverbs))],
        )
        for i in chosen
    ]
