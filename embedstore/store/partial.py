"""The folder an unfinished extraction keeps beside its store: names and progress.

``OUT.h5.partial/`` holds ``header.json`` and one ``batch-<start>.npz`` per appended batch
(see :mod:`embedstore.store.journal`). Readers only need to tell that such a folder
exists and how far it got, so this module knows the names and nothing else.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

JOURNAL_SUFFIX = ".partial"
HEADER = "header.json"


def journal_dir(path: str | os.PathLike) -> Path:
    """Where an unfinished extraction of ``path`` keeps its batches."""
    path = Path(path)
    return path.with_name(path.name + JOURNAL_SUFFIX)


def batch_name(start: int) -> str:
    """File name of the batch whose first row is ``start``."""
    return f"batch-{start:012d}.npz"


def scan_batches(jdir: Path) -> tuple[int, list[Path]]:
    """The contiguous run of batch files from row 0, and the first row after it."""
    starts = {}
    for p in jdir.glob("batch-*.npz"):
        try:
            starts[int(p.stem.split("-")[1])] = p
        except (IndexError, ValueError):
            continue
    row, batches = 0, []
    while row in starts:
        with np.load(starts[row], allow_pickle=False) as z:
            stop = int(z["stop"])
        batches.append(starts[row])
        row = stop
    return row, batches


def describe_unfinished(out: str | os.PathLike) -> str:
    """One line saying how far an unfinished extraction of ``out`` got."""
    jdir = journal_dir(out)
    try:
        header = json.loads((jdir / HEADER).read_text())
        total = len(header["items"]["ids"])
        done = scan_batches(jdir)[0]
        progress = f"{done} of {total} items done"
    except (OSError, ValueError, KeyError):
        progress = "progress unknown"
    return (
        f"{out} is incomplete: an extraction is writing it or was interrupted ({progress}); "
        f"finish it with `embedstore extract ... --resume`"
    )
