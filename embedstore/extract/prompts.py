"""Prompt sets: the texts a model's text tower embeds for each class.

A prompt set is a list of prompts, each tied to a class index (several prompts may
share a class; ``-1`` marks a prompt that names no class, such as an ontology category).
The built-in sets reproduce the prompt styles of the ISMIR 2024 study "I can listen but
cannot read":

- ``track``: ``"A <label> track"``;
- ``definition``: a one-sentence definition of the instrument;
- ``definition-nolabel``: the same definition with the instrument's name removed;
- ``lorem``: the label followed by a seeded lorem-ipsum phrase;
- ``recording``: ``"This is a recording of <label>"``;
- ``solo``: ``"Solo musical instrument sound of <label>"``;
- ``negative``: ``"A no <label> track"``;
- ``family``: ``"A <family> instruments track"``, from each class's family;
- ``ontology``: every node of the hdio ontology as ``"A <term> track"``.

and the templates the CLAP papers use for sound datasets (:func:`clap_prompt_sets`):

- ``sound``: ``"This is a sound of <label>."`` (the CLAP papers' ESC-50 template);
- ``sound-clap``: ``"This is a sound of <label>"``, exactly as LAION-CLAP's README
  scores ESC-50 zero-shot (no full stop).

Definitions and families are known for the 14 TinySOL instruments
(``data/prompts/definitions.json``). User sets come from a file: ``.txt`` (one prompt per
line, for the classes in order), ``.csv`` (columns ``class,prompt``) or ``.json``
(``{class: [prompt, ...]}``); the set is named after the file's stem.

Examples
--------
>>> spec = build_prompt_set("track", ["Violin", "Flute"])
>>> spec.prompts
['A Violin track', 'A Flute track']
>>> spec.classes
array([0, 1], dtype=int32)
"""

from __future__ import annotations

import csv
import json
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from embedstore.errors import InputError
from embedstore.store.names import check_name
from embedstore.resources import DATA_DIR

PROMPTS_DIR = DATA_DIR / "prompts"

#: Seed of the ``lorem`` set; each class's phrase also depends on its label, not its position.
LOREM_SEED = 2024
LOREM_WORDS = 6
_LOREM_VOCABULARY = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud "
    "exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis aute irure "
    "in reprehenderit voluptate velit esse cillum eu fugiat nulla pariatur excepteur sint "
    "occaecat cupidatat non proident sunt culpa qui officia deserunt mollit anim id est laborum"
).split()

ONTOLOGY_NAME = "hdio"
ONTOLOGY_TEMPLATE = "A {} track"

# One template per class-label set; "{}" is the label.
_TEMPLATES = {
    "track": "A {} track",
    "recording": "This is a recording of {}",
    "solo": "Solo musical instrument sound of {}",
    "negative": "A no {} track",
    "sound": "This is a sound of {}.",
    "sound-clap": "This is a sound of {}",
}
_FILE_SUFFIXES = (".txt", ".csv", ".json")


@dataclass
class PromptSpec:
    """A prompt set ready to embed.

    Attributes
    ----------
    name : str
        Name of the set in the store (``"track"``, or a user file's stem).
    prompts : list[str]
        The texts, in order.
    classes : np.ndarray, shape (p,), int32
        Class index of each prompt; ``-1`` for a prompt that names no class.
    terms : list[str] or None
        For ontology sets, the node path each prompt stands for; ``None`` otherwise.
    items : np.ndarray or None
        For caption sets, the dataset row (item) each caption describes; ``None`` otherwise.
    source : str
        What the set is, in a phrase (its template, or where its texts come from); stored
        with the set and shown in the report.
    """

    name: str
    prompts: list[str]
    classes: np.ndarray
    terms: list[str] | None = None
    items: np.ndarray | None = None
    source: str = ""


#: Name of the caption set ``embedstore extract`` writes for a dataset whose items carry captions.
CAPTION_SET = "captions"


def caption_prompt_set(dataset, name: str = CAPTION_SET) -> PromptSpec | None:
    """The captions of a dataset's items as one caption set (None when no item has one).

    Every caption is tied to its item's row (``items``) and to no class (-1): retrieval
    pairs captions with items.
    """
    prompts, rows = [], []
    for row, item in enumerate(dataset.items):
        for caption in getattr(item, "captions", ()) or ():
            prompts.append(str(caption))
            rows.append(row)
    if not prompts:
        return None
    return PromptSpec(name, prompts, np.full(len(prompts), -1, dtype=np.int32),
                      items=np.asarray(rows, dtype=np.int64),
                      source=f"captions of the {dataset.name} items, each tied to its item")


def builtin_prompt_sets() -> list[str]:
    """Names of the built-in prompt sets, in the order :func:`default_prompt_specs` tries them."""
    return ["track", "definition", "definition-nolabel", "lorem", "recording", "solo",
            "negative", "family", "ontology"]


def clap_prompt_sets() -> list[str]:
    """Names of the built-in sets the CLAP papers use for sound datasets (not defaults:
    ``embedstore extract`` adds them for the datasets they fit)."""
    return ["sound", "sound-clap"]


def build_prompt_set(name_or_file: str | Path, classes: list[str],
                     families: list[str] | None = None) -> PromptSpec:
    """Build a built-in prompt set by name, or read a user set from a file.

    Parameters
    ----------
    name_or_file : str or Path
        A name from :func:`builtin_prompt_sets`, or a ``.txt``, ``.csv`` or ``.json`` file.
    classes : list[str]
        The dataset's classes; a prompt's class index is its position in this list.
    families : list[str], optional
        Family of each class (``"Strings"``...), for the ``family`` set; by default the
        families of the TinySOL instruments.

    Returns
    -------
    PromptSpec

    Raises
    ------
    InputError
        Unknown set name, unreadable or malformed file, a class the file or the set does
        not know.
    """
    path = Path(name_or_file)
    if path.suffix.lower() in _FILE_SUFFIXES or path.is_file():
        return read_prompt_file(path, classes)
    name = str(name_or_file)
    if families is not None and len(families) != len(classes):
        raise InputError(f"{len(families)} families given for {len(classes)} classes")
    labels = [class_label(cls) for cls in classes]
    if name in _TEMPLATES:
        prompts = [_TEMPLATES[name].format(label) for label in labels]
    elif name == "lorem":
        prompts = [f"{label} {lorem_phrase(label)}" for label in labels]
    elif name == "definition":
        prompts = [_instrument(cls, name)["definition"] for cls in classes]
    elif name == "definition-nolabel":
        prompts = [remove_label_words(_instrument(cls, name)) for cls in classes]
    elif name == "family":
        prompts = [f"A {word} instruments track" for word in _family_words(classes, families)]
    elif name == "ontology":
        return ontology_prompt_set(classes)
    else:
        known = ", ".join(builtin_prompt_sets() + clap_prompt_sets())
        raise InputError(f"unknown prompt set {name!r} (built in: {known}; or a .txt/.csv/.json file)")
    return PromptSpec(name, prompts, np.arange(len(classes), dtype=np.int32), source=_source(name))


_SOURCES = {
    "lorem": "the label followed by a seeded lorem-ipsum phrase",
    "definition": "a one-sentence definition of each instrument (data/prompts/definitions.json)",
    "definition-nolabel": "the definition with the instrument's name removed",
    "family": '"A <family> instruments track", from each class\'s family',
}


def _source(name: str) -> str:
    if name in _TEMPLATES:
        return f'template "{_TEMPLATES[name].format("<label>")}"'
    return _SOURCES[name]


def default_prompt_specs(classes: list[str], families: list[str] | None = None) -> list[PromptSpec]:
    """Every built-in set that fits these classes (definitions and families need known instruments)."""
    specs = []
    for name in builtin_prompt_sets():
        try:
            specs.append(build_prompt_set(name, classes, families))
        except InputError:
            continue
    return specs


def class_label(cls: str) -> str:
    """The text a prompt uses for a class: its name with underscores as spaces."""
    return " ".join(cls.replace("_", " ").split())


def lorem_phrase(label: str, n_words: int = LOREM_WORDS) -> str:
    """A lorem-ipsum phrase seeded by :data:`LOREM_SEED` and the label itself."""
    rng = np.random.default_rng([LOREM_SEED, zlib.crc32(label.encode("utf-8"))])
    return " ".join(rng.choice(_LOREM_VOCABULARY, size=n_words))


def remove_label_words(instrument: dict) -> str:
    """An instrument's definition with each of its ``label_words`` phrases removed."""
    text = instrument["definition"]
    for phrase in sorted(instrument["label_words"], key=len, reverse=True):
        text = re.sub(rf"\b{re.escape(phrase)}\b", "", text, flags=re.IGNORECASE)
    text = re.sub(r"\s+([,.;:])", r"\1", text)
    return " ".join(text.split())


def ontology_prompt_set(classes: list[str], ontology: str = ONTOLOGY_NAME,
                        template: str = ONTOLOGY_TEMPLATE) -> PromptSpec:
    """Every node of an ontology as a prompt, with its path as ``terms``.

    A node that a class maps to (``embedstore.ontology.map_classes``) carries that
    class's index; every other node carries ``-1``.
    """
    from embedstore.ontology import load_ontology, map_classes

    onto = load_ontology(ontology)
    class_of_node = {}
    for index, cls in enumerate(classes):
        try:
            (node,) = map_classes(onto, [cls])
        except InputError:
            continue  # a class outside the ontology simply has no node
        class_of_node.setdefault(node.path, index)
    prompts = [template.format(onto.term(node)) for node in onto.nodes]
    terms = [node.path for node in onto.nodes]
    codes = np.array([class_of_node.get(path, -1) for path in terms], dtype=np.int32)
    return PromptSpec("ontology", prompts, codes, terms,
                      source=f'every node of the {ontology} ontology as "{template.format("<term>")}"')


def read_prompt_file(path: str | Path, classes: list[str]) -> PromptSpec:
    """Read a user prompt set; its name is the file's stem.

    ``.txt``: one prompt per non-empty line, exactly one per class, in class order.
    ``.csv``: a header with ``class`` and ``prompt`` columns, one row per prompt.
    ``.json``: an object mapping each class to a prompt or a list of prompts.
    Every class needs at least one prompt.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _FILE_SUFFIXES:
        raise InputError(f"prompt file {path} must end in .txt, .csv or .json")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first prompt
    except FileNotFoundError:
        raise InputError(f"prompt file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read prompt file {path}: {exc}") from None
    if suffix == ".txt":
        pairs = _read_txt(path, text, classes)
    elif suffix == ".csv":
        pairs = _read_csv(path, text)
    else:
        pairs = _read_json(path, text)
    resolve = _class_resolver(classes)
    prompts, codes = [], []
    for cls, prompt in pairs:
        index = resolve(cls)
        if index is None:
            raise InputError(f"prompt file {path}: unknown class {cls!r} "
                             f"(classes: {', '.join(classes)})")
        prompt = " ".join(str(prompt).split())
        if not prompt:
            raise InputError(f"prompt file {path}: empty prompt for class {cls!r}")
        prompts.append(check_name(prompt, f"prompt in {path}"))
        codes.append(index)
    missing = [cls for i, cls in enumerate(classes) if i not in set(codes)]
    if missing:
        raise InputError(f"prompt file {path} has no prompt for: {', '.join(missing)}")
    name = check_name(path.stem, f"prompt set name (the stem of {path})", object_name=True)
    return PromptSpec(name, prompts, np.asarray(codes, dtype=np.int32), source=f"file {path.name}")


def _read_txt(path: Path, text: str, classes: list[str]) -> list[tuple[str, str]]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != len(classes):
        raise InputError(f"prompt file {path} has {len(lines)} prompts, one per class needs "
                         f"{len(classes)} (one line each, in class order)")
    return list(zip(classes, lines))


def _read_csv(path: Path, text: str) -> list[tuple[str, str]]:
    try:
        rows = list(csv.DictReader(text.splitlines()))
    except csv.Error as exc:
        raise InputError(f"cannot read prompt file {path}: {exc}") from None
    if not rows or not {"class", "prompt"} <= set(rows[0]):
        raise InputError(f"prompt file {path} needs a header with columns 'class' and 'prompt'")
    return [((row["class"] or "").strip(), row["prompt"] or "") for row in rows]


def _read_json(path: Path, text: str) -> list[tuple[str, str]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"prompt file {path} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError(f"prompt file {path} must hold an object mapping classes to prompts")
    pairs = []
    for cls, prompts in doc.items():
        prompts = [prompts] if isinstance(prompts, str) else prompts
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise InputError(f"prompt file {path}: class {cls!r} must map to a string or a list of strings")
        pairs.extend((cls, prompt) for prompt in prompts)
    return pairs


def _class_key(name: str) -> str:
    """Case-folded name with '_' and '-' as spaces, for forgiving class lookups."""
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


def _class_resolver(classes: list[str]):
    """A function from a class name in a file to its index (exact name first), or None."""
    exact = {cls: i for i, cls in enumerate(classes)}
    loose: dict[str, int] = {}
    for i, cls in enumerate(classes):
        loose.setdefault(_class_key(cls), i)
    return lambda name: exact.get(name, loose.get(_class_key(name)))


@lru_cache(maxsize=1)
def _instrument_table() -> tuple[dict, dict[str, dict]]:
    """``(families, {alias key: instrument})`` from ``definitions.json``."""
    doc = json.loads((PROMPTS_DIR / "definitions.json").read_text(encoding="utf-8"))
    by_key = {}
    for instrument in doc["instruments"]:
        for alias in (instrument["code"], instrument["name"], *instrument["aliases"]):
            by_key[_class_key(alias)] = instrument
    return doc["families"], by_key


def _instrument(cls: str, set_name: str) -> dict:
    instrument = _instrument_table()[1].get(_class_key(cls))
    if instrument is None:
        raise InputError(f"prompt set {set_name!r} knows the 14 TinySOL instruments only, "
                         f"not class {cls!r}; give a prompt file instead")
    return instrument


def _family_words(classes: list[str], families: list[str] | None) -> list[str]:
    """The word each class's family puts in ``"A <word> instruments track"``."""
    family_words = _instrument_table()[0]
    if families is None:
        families = [_instrument(cls, "family")["family"] for cls in classes]
    return [family_words.get(family, family_words.get(family.title(), family.lower()))
            for family in families]
