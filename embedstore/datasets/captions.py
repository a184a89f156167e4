"""Captioned audio for retrieval: a folder of clips and a CSV of their captions.

One format covers what Clotho, MusicCaps and Song Describer export to: a CSV with a
file column and either

- a ``caption`` column, one row per caption, several rows per file (long form:
  MusicCaps, Song Describer), or
- ``caption_1`` .. ``caption_N`` columns, one row per file (wide form: Clotho's
  ``clotho_captions_<split>.csv``).

The file column is the first of ``file``, ``file_name``, ``filename``, ``path``,
``audio`` the header has (case-insensitive). An optional ``label`` column (``;`` between
several labels) gives classes; without one every clip has the single class
:data:`CAPTIONED` (stores need a class vocabulary; classification on one class means
nothing, retrieval is what such a dataset is for).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from embedstore.datasets.base import Dataset, Item, folder_and_csv, path_in_root, reading_csv
from embedstore.errors import InputError

FILE_COLUMNS = ("file", "file_name", "filename", "path", "audio")
#: The one class of a caption dataset without a label column.
CAPTIONED = "captioned"


def load_captions(root: str | Path, captions_csv: str | Path | None = None) -> Dataset:
    """Read a folder of clips and their captions.

    Parameters
    ----------
    root : path
        The folder the CSV's file names are relative to.
    captions_csv : path, optional
        The captions CSV (default ``<root>/captions.csv``).

    Returns
    -------
    Dataset
        One item per file, in order of first appearance; id = the file as written;
        ``captions`` = its captions in CSV order (repeats dropped); metadata: ``n_captions``.

    Raises
    ------
    InputError
        Missing root or CSV; no file column or no caption column; a row without a file;
        a file without any caption; files that do not exist.
    """
    root, captions_csv = folder_and_csv(
        root, Path(root) / "captions.csv" if captions_csv is None else captions_csv, "captions CSV")
    with reading_csv(captions_csv), open(captions_csv, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = {c.strip().lower(): c for c in reader.fieldnames or []}
        file_column = next((header[c] for c in FILE_COLUMNS if c in header), None)
        caption_columns = _caption_columns(header)
        if file_column is None or not caption_columns:
            raise InputError(f"{captions_csv} needs a file column ({', '.join(FILE_COLUMNS)}) and "
                             f"a caption column (caption, or caption_1..caption_N)")
        label_column = header.get("label")
        captions: dict[str, list[str]] = {}
        labels: dict[str, list[str]] = {}
        for line, row in enumerate(reader, start=2):
            name = (row[file_column] or "").strip()
            if not name:
                raise InputError(f"{captions_csv} line {line} has no file")
            name = path_in_root(root, name, f"line {line} of {captions_csv}")
            texts = [" ".join((row[c] or "").split()) for c in caption_columns]
            captions.setdefault(name, []).extend(t for t in texts if t)
            if label_column:
                labels.setdefault(name, []).extend(
                    s.strip() for s in (row[label_column] or "").split(";") if s.strip())
    return _dataset(root, captions_csv, captions, labels if label_column else None)


def _caption_columns(header: dict[str, str]) -> list[str]:
    """``caption``, or the wide ``caption_<k>`` columns in the order of k."""
    if "caption" in header:
        return [header["caption"]]
    wide = sorted((int(m.group(1)), col) for key, col in header.items()
                  if (m := re.fullmatch(r"caption_(\d+)", key)))
    return [col for _, col in wide]


def _dataset(root: Path, csv_path: Path, captions: dict[str, list[str]],
             labels: dict[str, list[str]] | None) -> Dataset:
    if not captions:
        raise InputError(f"{csv_path} lists no files")
    bare = [name for name, texts in captions.items() if not texts]
    if bare:
        raise InputError(f"{len(bare)} file(s) in {csv_path} have no caption, first: {bare[0]}")
    missing = [name for name in captions if not (root / name).exists()]
    if missing:
        raise InputError(f"{len(missing)} file(s) in {csv_path} do not exist under {root}, first: {missing[0]}")
    if labels is not None:
        unlabelled = [name for name in captions if not labels[name]]
        if unlabelled:
            raise InputError(f"{len(unlabelled)} file(s) in {csv_path} have no label, first: {unlabelled[0]}")
    items = []
    for name, texts in captions.items():
        item_labels = tuple(dict.fromkeys(labels[name])) if labels is not None else (CAPTIONED,)
        texts = tuple(dict.fromkeys(texts))
        items.append(Item(name, root / name, item_labels, {"n_captions": len(texts)}, captions=texts))
    classes = sorted({label for item in items for label in item.labels})
    multilabel = any(len(item.labels) > 1 for item in items)
    return Dataset("captions", root, classes, items, multilabel)
