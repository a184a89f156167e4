"""Any folder of audio files with a CSV of ``path,label`` rows."""

from __future__ import annotations

import csv
from pathlib import Path

from embedstore.datasets.base import Dataset, Item, folder_and_csv, path_in_root, reading_csv
from embedstore.errors import InputError
from embedstore.store.names import check_name, check_names, normalise


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
    root, labels_csv = folder_and_csv(root, labels_csv, "labels CSV")
    with reading_csv(labels_csv), open(labels_csv, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise InputError(f"{labels_csv} has no header line (needs path,label)")
    header, *cells = rows
    names, rows = _named_columns(labels_csv, header, cells)
    columns = {name.lower(): name for name in names}
    if len(columns) < len(names):
        raise InputError(f"{labels_csv} names a column twice (names differ only in case): {', '.join(names)}")
    absent = [c for c in ("path", "label") if c not in columns]
    if absent:
        raise InputError(f"{labels_csv} lacks column(s) {', '.join(absent)} "
                         f"(needs path,label)")
    extra = [c for key, c in columns.items() if key not in ("path", "label")]
    if not rows:
        raise InputError(f"{labels_csv} lists no files")

    seen: set[str] = set()
    entries = []
    missing = []
    for line, row in rows:
        rel = normalise(row[columns["path"]])
        cells = [normalise(s) for s in row[columns["label"]].split(";")]
        labels = tuple(dict.fromkeys(s for s in cells if s))  # drop repeats, keep order
        if not rel or not labels:
            raise InputError(f"{labels_csv} line {line} has no {'path' if not rel else 'label'}")
        if not all(cells):
            raise InputError(f"{labels_csv} line {line} has an empty label in {row[columns['label']]!r}")
        check_name(rel, f"path on line {line} of {labels_csv}")
        rel = path_in_root(root, rel, f"line {line} of {labels_csv}")
        check_names(labels, f"label on line {line} of {labels_csv}")
        if rel in seen:
            raise InputError(f"{labels_csv} lists {rel!r} twice")
        seen.add(rel)
        path = root / rel
        if not path.exists():  # a directory or unreadable file is the run's to record as failed
            missing.append(rel)
        entries.append((rel, path, labels, {c: normalise(row[c]) for c in extra}))
    if missing:
        raise InputError(f"{len(missing)} path(s) in {labels_csv} do not exist under {root}, "
                         f"first: {missing[0]}")

    columns_typed = _typed_columns([meta for *_, meta in entries])
    items = [Item(rel, path, labels, {k: columns_typed[k][i] for k in columns_typed})
             for i, (rel, path, labels, _) in enumerate(entries)]
    classes = sorted({label for _, _, labels, _ in entries for label in labels})
    multilabel = any(len(labels) > 1 for _, _, labels, _ in entries)
    return Dataset("folder", root, classes, items, multilabel)


def _named_columns(labels_csv: Path, header: list[str],
                   cells: list[list[str]]) -> tuple[list[str], list[tuple[int, dict]]]:
    """Checked column names and the non-blank rows as (line, dict keyed by them).

    Empty header cells at the end whose columns hold nothing (a spreadsheet's trailing
    comma) are dropped; any other empty, bad or repeated name is refused, as is a row
    with more cells than the header.
    """
    header = list(header)
    while header and not normalise(header[-1]) and all(
            len(row) < len(header) or not normalise(row[len(header) - 1]) for row in cells):
        header.pop()
    names = check_names(header, f"column name in {labels_csv}", object_name=True)
    rows = []
    for line, row in enumerate(cells, start=2):
        if not any(normalise(c) for c in row):
            continue
        if len(row) > len(names) and any(normalise(c) for c in row[len(names):]):
            raise InputError(f"{labels_csv} line {line} has {len(row)} cells, the header names {len(names)}")
        rows.append((line, {name: row[i] if i < len(row) else "" for i, name in enumerate(names)}))
    return names, rows


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
