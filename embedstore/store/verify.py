"""Prove a store intact: structure, tags, HDF5 chunk checksums, content digests bound to
their paths, and finite vectors. Arrays are read in row blocks: memory stays bounded
whatever the store's size."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from embedstore.errors import StoreDamaged
from embedstore.store import elements as el
from embedstore.store.core import FORMAT_VERSION, binds_paths, link_names, open_store

# Element types written without a SHA-256 attribute.
UNDIGESTED = ("json", "json-lines")


@dataclass
class VerifyReport:
    """What ``verify_store`` found: ``problems`` is empty when the store is intact."""

    path: str
    arrays_checked: int = 0
    problems: list[str] = field(default_factory=list)
    # What the checks did not cover (a 1.0 store's names); they do not make it damaged.
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(path: str | os.PathLike) -> VerifyReport:
    """Check a store completely.

    Opens it with the full structural checks of :func:`embedstore.store.open_store`
    (which refuse links to other files, virtual datasets and arrays larger than what the
    file holds), then reads every array in row blocks (HDF5 verifies each chunk's
    fletcher32 checksum on the way), compares its SHA-256 with the digest recorded beside
    it and, from format 1.1, that digest's binding to the array's path; vectors must be
    finite. A format 1.0 store has no path bindings: the report then carries a note.

    Raises
    ------
    NotAStore, StoreTooNew
        The file is not a store this version can read (exit code 2).
    """
    report = VerifyReport(str(path))
    try:
        store = open_store(path)
    except StoreDamaged as exc:
        report.problems.append(str(exc))
        return report
    with store:
        bound = binds_paths(store.format_version)
        if not bound:
            report.notes.append(
                f"format {store.format_version}: digests cover contents, not names, so a renamed or swapped "
                f"element is not detected (any edit upgrades the store to {FORMAT_VERSION})"
            )
        _check_names(store, report)
        try:
            for name in link_names(store._file):
                _check(store._file[name], report, bound)
        except (OSError, RuntimeError, UnicodeDecodeError) as exc:
            # Damaged object headers or attributes that the structural checks never touched.
            report.problems.append(f"{path}: unreadable HDF5 objects ({el.first_line(exc)})")
    return report


def _check_names(store, report: VerifyReport) -> None:
    """Check that every audio space, prompt set and prompt-set space the history added exists.

    Digests cover contents, not names: a damaged link name ("track" read as "t2ack") or an
    element deleted whole with an HDF5 editor leaves a store that is consistent otherwise.
    Nothing is ever removed by name, so a name the history added must still be there;
    names without a history entry (stores written to the spec by other tools) are allowed.
    """
    audio, text = set(), {}
    for event in store.history:
        if event.get("action") == "add_audio":
            audio.add(str(event.get("space")))
        elif event.get("action") == "add_prompt_set":
            text[str(event.get("name"))] = {str(s) for s in event.get("spaces") or []}
    missing = sorted(audio - set(store.audio_spaces))
    if missing:
        report.problems.append(f"audio spaces {missing} that the history added are missing")
    missing = sorted(set(text) - set(store.prompt_sets))
    if missing:
        report.problems.append(f"prompt sets {missing} that the history added are missing")
    for name in sorted(set(text) & set(store.prompt_sets)):
        lost = sorted(text[name] - set(store.prompt_set(name).spaces))
        if lost:
            report.problems.append(f"prompt set {name!r} lacks the spaces {lost} that the history added")


def _check(obj, report: VerifyReport, bound: bool) -> None:
    if el.TYPE_ATTR not in obj.attrs:
        report.problems.append(f"{obj.name}: untagged element (no {el.TYPE_ATTR})")
        return
    if not isinstance(obj, h5py.Dataset) or el.DIGEST_ATTR not in obj.attrs:
        # Every dataset but the JSON records (provenance, history) carries a digest.
        if isinstance(obj, h5py.Dataset) and el._as_str(obj.attrs[el.TYPE_ATTR]) not in UNDIGESTED:
            report.problems.append(f"{obj.name}: array without a recorded digest")
        return
    report.arrays_checked += 1
    recorded = el._as_str(obj.attrs[el.DIGEST_ATTR])
    if bound and not _bound_to_its_path(obj, recorded, report):
        return
    non_finite = [0]

    def count_non_finite(block):
        non_finite[0] += int(block.size - np.isfinite(block).sum())

    is_embedding = el._as_str(obj.attrs[el.TYPE_ATTR]) == "embedding" and obj.dtype.kind == "f"
    try:
        actual = el.digest_dataset(obj, count_non_finite if is_embedding else None)
    except (OSError, RuntimeError) as exc:
        report.problems.append(f"{obj.name}: unreadable data, checksum or truncation ({el.first_line(exc)})")
        return
    except UnicodeDecodeError:
        report.problems.append(f"{obj.name}: holds text that is not valid UTF-8")
        return
    if actual != recorded:
        report.problems.append(f"{obj.name}: content differs from its recorded SHA-256")
    if non_finite[0]:
        report.problems.append(f"{obj.name}: holds {non_finite[0]} non-finite values (NaN or inf); vectors must be finite")


def _bound_to_its_path(obj: h5py.Dataset, recorded: str, report: VerifyReport) -> bool:
    """Whether the recorded digest is bound to this array's path (format 1.1 and later)."""
    if el.PATH_DIGEST_ATTR not in obj.attrs:
        report.problems.append(f"{obj.name}: array without a path digest ({el.PATH_DIGEST_ATTR})")
        return False
    if el._as_str(obj.attrs[el.PATH_DIGEST_ATTR]) != el.path_digest(obj.name, recorded):
        report.problems.append(
            f"{obj.name}: its digest was recorded for another path (the element was moved, renamed or swapped)"
        )
        return False
    return True
