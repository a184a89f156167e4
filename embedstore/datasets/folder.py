"""Any folder of audio files with a CSV of ``path,label`` rows."""

from __future__ import annotations

import csv
from pathlib import Path

from embedstore.datasets.base import Dataset, Item
from embedstore.errors import InputError


def load_folder(root: str | Path, labels_csv: str | Path) -> Dataset:
    """Read a folder of audio files labelled by a CSV.

    Parameters
    ----------
    root : path
        The folder the CSV's paths are relative to.
    labels_csv : path
        CSV with columns ``path`` and ``label``; several labels in one cell separated by
        ``;`` make the dataset multi-label. Other columns become metadata (int or float when
        every value of the column parses as one, else str).

    Returns
    -------
    Dataset
        Items in CSV order, id = the CSV path; classes sorted.

    Raises
    ------
    InputError
        Missing root or CSV, a CSV without ``path``/``label`` columns, no rows, a row
        without a label, a repeated path, or paths that do not exist.
    """
    root = Path(root).expanduser().resolve()
    labels_csv = Path(labels_csv).expanduser()
    if not root.is_dir():
        raise InputError(f"dataset folder {root} does not exist")
    if not labels_csv.is_file():
        raise InputError(f"labels CSV {labels_csv} does not exist")
    with open(labels_csv, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        absent = [c for c in ("path", "label") if c not in columns]
        if absent:
            raise InputError(f"{labels_csv} lacks column(s) {', '.join(absent)} "
                             f"(needs path,label)")
        extra = [c for key, c in columns.items() if key not in ("path", "label")]
        rows = list(reader)
    if not rows:
        raise InputError(f"{labels_csv} lists no files")

    seen: set[str] = set()
    entries = []
    missing = []
    for line, row in enumerate(rows, start=2):
        rel = (row[columns["path"]] or "").strip()
        labels = tuple(dict.fromkeys(  # drop repeats, keep order
            s.strip() for s in (row[columns["label"]] or "").split(";") if s.strip()))
        if not rel or not labels:
            raise InputError(f"{labels_csv} line {line} has no {'path' if not rel else 'label'}")
        if rel in seen:
            raise InputError(f"{labels_csv} lists {rel!r} twice")
        seen.add(rel)
        path = root / rel
        if not path.exists():  # a directory or unreadable file is the run's to record as failed
            missing.append(rel)
        entries.append((rel, path, labels, {c.strip(): (row[c] or "").strip() for c in extra}))
    if missing:
        raise InputError(f"{len(missing)} path(s) in {labels_csv} do not exist under {root}, "
                         f"first: {missing[0]}")

    columns_typed = _typed_columns([meta for *_, meta in entries])
    items = [Item(rel, path, labels, {k: columns_typed[k][i] for k in columns_typed})
             for i, (rel, path, labels, _) in enumerate(entries)]
    classes = sorted({label for _, _, labels, _ in entries for label in labels})
    multilabel = any(len(labels) > 1 for _, _, labels, _ in entries)
    return Dataset("folder", root, classes, items, multilabel)


def _typed_columns(rows: list[dict[str, str]]) -> dict[str, list]:
    """Each column as ints if every value parses as one, else floats, else the strings."""
    typed = {}
    for key in rows[0] if rows else []:
        values = [row[key] for row in rows]
        for parse in (int, float):
            try:
                typed[key] = [parse(v) for v in values]
                break
            except ValueError:
                continue
        else:
            typed[key] = values
    return typed
