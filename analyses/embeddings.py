"""From a store's arrays to the unit vectors the analyses compare.

Audio rows, prompt ensembles (one vector per class) and audio-only class centroids,
all L2-normalised so that a dot product is a cosine similarity.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator

import numpy as np

from embedstore.errors import InputError

READ_BLOCK = 8192
# The last space's unit audio of each open store: a command scoring several prompt sets, or
# the report running many analyses, reads and normalises the audio once per space. One
# entry per store, dropped before the next space is read, so memory holds at most one
# space's unit vectors beyond what the running analysis holds.
_UNIT_AUDIO: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def opened(store, selection=None) -> Iterator:
    """Yield ``store`` itself, or the store at a path (closed again on exit).

    With ``selection`` (an :class:`analyses.selection.Selection`) the store is seen
    through it: every item-indexed array keeps only the chosen items. This is the one
    place where analyses meet item selection.
    """
    from analyses.selection import select

    if isinstance(store, (str, os.PathLike)):
        from embedstore.store import open_store

        with open_store(store) as st:
            yield select(st, selection)
    else:
        yield select(store, selection)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm, as float32; all-zero rows stay zero.

    Norms are taken in float64 so that float16 stores lose nothing more here.
    """
    x64 = np.asarray(x, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", x64, x64))
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return (x64 * scale[:, None]).astype(np.float32)


def unit_rows(rows) -> np.ndarray:
    """``rows`` L2-normalised into a new float32 array, a block of rows at a time.

    ``rows`` may be an ndarray or an h5py dataset; only one block is ever held in
    float64.
    """
    n, d = rows.shape
    out = np.empty((n, d), np.float32)
    for start in range(0, n, READ_BLOCK):
        stop = min(n, start + READ_BLOCK)
        out[start:stop] = l2_normalize(rows[start:stop])
    return out


def unit_audio(store, space: str) -> np.ndarray:
    """The store's audio vectors in ``space``, L2-normalised: (n_items, d) float32, read-only.

    Read once per open store and space while no other space is asked for in between
    (``_UNIT_AUDIO``); the array is shared, hence read-only.

    Raises
    ------
    InputError
        If the space is missing or holds NaN or infinite values.
    """
    cached = _UNIT_AUDIO.pop(store, None)
    if cached is not None and cached[0] == space:
        _UNIT_AUDIO[store] = cached
        return cached[1]
    del cached
    out = unit_rows(store.audio(space, lazy=True))
    if not np.all(np.isfinite(out)):
        raise InputError(f"audio space {space!r} holds NaN or infinite values")
    out.flags.writeable = False
    _UNIT_AUDIO[store] = (space, out)
    return out


def class_prompt_sets(store) -> list[str]:
    """The prompt sets whose every prompt stands for a class (the default for zero-shot)."""
    return [name for name in store.prompt_sets
            if (classes := store.prompt_set(name).classes).size and np.all(classes >= 0)]


def check_every_class_prompted(prompt_classes: np.ndarray, classes: list[str], set_name: str = "") -> None:
    """Raise InputError naming the classes that no prompt of the set stands for."""
    prompt_classes = np.asarray(prompt_classes)
    if prompt_classes.size == 0:
        raise InputError(f"prompt set {set_name!r} holds no prompts")
    covered = np.bincount(prompt_classes[prompt_classes >= 0], minlength=len(classes))
    missing = [classes[c] for c in np.flatnonzero(covered == 0)]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise InputError(f"prompt set {set_name!r} has no prompt for class {shown}")


def prompt_ensemble(prompt_classes: np.ndarray, text: np.ndarray, classes: list[str], set_name: str = "") -> np.ndarray:
    """One unit vector per class: the mean of its normalised prompt vectors, renormalised.

    Parameters
    ----------
    prompt_classes : np.ndarray
        (p,) class index of each prompt; -1 marks prompts that stand for no class and
        are left out.
    text : np.ndarray
        (p, d) prompt vectors.
    classes : list of str
        The class names, in class-index order.
    set_name : str
        For error messages.

    Returns
    -------
    np.ndarray
        (n_classes, d) float32.

    Raises
    ------
    InputError
        If a class has no prompt.
    """
    prompt_classes = np.asarray(prompt_classes)
    n_classes = len(classes)
    check_every_class_prompted(prompt_classes, classes, set_name)
    unit_text = l2_normalize(text).astype(np.float64)
    keep = prompt_classes >= 0
    sums = np.zeros((n_classes, unit_text.shape[1]), np.float64)
    np.add.at(sums, prompt_classes[keep], unit_text[keep])
    return l2_normalize(sums)


def class_vectors(store, set_name: str, space: str) -> np.ndarray:
    """The prompt ensemble of prompt set ``set_name`` in ``space``: (n_classes, d) float32."""
    prompt_set = store.prompt_set(set_name)
    text = store.text(set_name, space)
    if not np.all(np.isfinite(text)):
        raise InputError(f"prompt set {set_name!r} holds NaN or infinite values in space {space!r}")
    return prompt_ensemble(prompt_set.classes, text, list(store.classes), set_name)


def tied_classes(class_vectors: np.ndarray, classes: list[str]) -> list[list[str]]:
    """Groups of classes whose label vectors are identical, in class order.

    Such classes score every clip the same (a prompt set that gives several classes one
    prompt, like ``family``), so which of them is ranked first is the tie-break's choice
    and the top-2 margin between them is 0.

    Returns
    -------
    list of list of str
        Each group holds two or more class names; empty when no classes tie.
    """
    groups: dict[bytes, list[str]] = {}
    for name, row in zip(classes, np.ascontiguousarray(class_vectors)):
        groups.setdefault(row.tobytes(), []).append(name)
    return [names for names in groups.values() if len(names) > 1]
