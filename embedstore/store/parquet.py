"""A store as Parquet: one row per item, and one row per prompt, for pyarrow, pandas and HF datasets.

``export_parquet(store, "x.parquet")`` writes two files:

``x.parquet`` (items)
    ``id``, ``path``, ``labels`` (list of class names; one for a single-label store), in a
    partially labelled store (one with a label mask) ``labels_unknown`` (the classes whose
    label the item lacks: neither present nor absent), the metadata columns, and one
    ``audio_<space>`` column per audio space: a fixed-size list of ``dim`` float32
    (float16 stores are widened exactly).
``x.prompts.parquet`` (prompt sets)
    ``set``, ``index`` (the prompt's position in its set), ``prompt``, ``class`` (class name,
    null for a prompt of no class), ``term`` (null when the set has no terms), ``item`` (in
    a caption set the id of the item the caption describes, else null) and one
    ``text_<space>`` column per space of any set (null where a set lacks that space).

Both files carry the store's model, dataset, classes, format version, provenance, whether
it has a label mask and each prompt set's ``source`` and kind as JSON under the schema
metadata key ``embedstore``. Rows are written in blocks, so memory is one block whatever
the store's size.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from embedstore.errors import InputError
from embedstore.store.core import Store, open_store
from embedstore.store.fileio import write_atomic_many
from embedstore.store.outputs import claimed_outputs

#: Schema metadata key holding the store's description (JSON).
METADATA_KEY = b"embedstore"
#: Rows per Parquet row group.
BLOCK_ROWS = 65536
PARQUET_HINT = "Parquet export needs pyarrow: pip install 'embedstore[parquet]'"


def prompts_path(out: str | os.PathLike) -> Path:
    """The prompt-set file written beside ``out``: ``x.parquet`` -> ``x.prompts.parquet``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.prompts{out.suffix or '.parquet'}")


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise InputError(PARQUET_HINT) from None
    return pyarrow


def export_parquet(store: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``store``'s items to ``out`` and its prompt sets to :func:`prompts_path` (out).

    Returns
    -------
    (Path, Path)
        The items file and the prompt-set file.
    """
    pa = _pyarrow()
    out = Path(out)
    if out.suffix.lower() != ".parquet":
        raise InputError(f"--out must end in .parquet, not {out.name!r}")
    prompts_out = prompts_path(out)
    with claimed_outputs([out, prompts_out], inputs=[store], overwrite=overwrite, command="export"), \
            open_store(store) as st:
        meta = {METADATA_KEY: json.dumps(_description(st), default=str).encode("utf-8")}
        items_schema = _items_schema(pa, st).with_metadata(meta)
        prompt_schema = _prompts_schema(pa, st).with_metadata(meta)
        write_atomic_many({
            out: lambda fh: _write(pa, fh, items_schema, _item_blocks(pa, st, items_schema)),
            prompts_out: lambda fh: _write(pa, fh, prompt_schema, _prompt_blocks(pa, st, prompt_schema)),
        })
    return out, prompts_out


def _description(st: Store) -> dict:
    sets = {}
    for name in st.prompt_sets:
        ps = st.prompt_set(name)
        sets[name] = {"source": ps.source, "caption_set": ps.is_caption_set}
    return {"format_version": st.format_version, "model": st.model, "dataset": st.dataset,
            "classes": list(st.classes), "multilabel": st.multilabel, "label_mask": st.label_mask is not None,
            "prompt_sets": sets, "provenance": st.provenance}


def _write(pa, fh, schema, batches) -> None:
    import pyarrow.parquet as pq

    with pq.ParquetWriter(fh, schema) as writer:
        for batch in batches:
            writer.write_batch(batch, row_group_size=BLOCK_ROWS)


def _vector_type(pa, dim: int):
    return pa.list_(pa.float32(), int(dim))


def _items_schema(pa, st: Store):
    fields = [pa.field("id", pa.string()), pa.field("path", pa.string()),
              pa.field("labels", pa.list_(pa.string()))]
    if st.label_mask is not None:
        fields.append(pa.field("labels_unknown", pa.list_(pa.string())))
    metadata = st.metadata
    for col in st.metadata_columns:
        values = metadata[col]
        fields.append(pa.field(col, pa.string() if values.dtype.kind in "US" else pa.from_numpy_dtype(values.dtype)))
    for space in st.audio_spaces:
        fields.append(pa.field(f"audio_{space}", _vector_type(pa, st.audio(space, lazy=True).shape[1])))
    _check_unique([f.name for f in fields], "item")
    return pa.schema(fields)


def _item_blocks(pa, st: Store, schema):
    classes = np.asarray(st.classes, dtype=object)
    items = st._file["items"]
    matrix_ds = items["label_matrix"] if st.multilabel else None
    mask_ds = items["label_mask"] if "label_mask" in items else None
    labels = None if st.multilabel else st.labels
    metadata = st.metadata
    for start in range(0, max(st.n_items, 1), BLOCK_ROWS):
        stop = min(start + BLOCK_ROWS, st.n_items)
        if st.multilabel:
            rows = matrix_ds[start:stop].astype(bool)
            names = [classes[row].tolist() for row in rows]
        else:
            names = [[c] for c in classes[labels[start:stop]].tolist()]
        columns = [st.item_ids[start:stop].tolist(), st.item_paths[start:stop].tolist(), names]
        if mask_ds is not None:
            columns.append([classes[~row].tolist() for row in mask_ds[start:stop].astype(bool)])
        columns += [metadata[col][start:stop].tolist() for col in st.metadata_columns]
        columns += [_vectors(pa, st.audio(space, lazy=True)[start:stop]) for space in st.audio_spaces]
        yield pa.record_batch([pa.array(c, type=f.type) if not isinstance(c, pa.Array) else c
                               for c, f in zip(columns, schema)], schema=schema)


def _vectors(pa, block: np.ndarray):
    block = np.ascontiguousarray(block, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(block.reshape(-1)), block.shape[1])


def _prompt_spaces(st: Store) -> dict[str, int]:
    dims = {}
    for name in st.prompt_sets:
        for space in st.prompt_set(name).spaces:
            dims.setdefault(space, st.text(name, space, lazy=True).shape[1])
    return dict(sorted(dims.items()))


def _prompts_schema(pa, st: Store):
    fields = [pa.field("set", pa.string()), pa.field("index", pa.int32()), pa.field("prompt", pa.string()),
              pa.field("class", pa.string()), pa.field("term", pa.string()), pa.field("item", pa.string())]
    fields += [pa.field(f"text_{space}", _vector_type(pa, dim)) for space, dim in _prompt_spaces(st).items()]
    _check_unique([f.name for f in fields], "prompt")
    return pa.schema(fields)


def _prompt_blocks(pa, st: Store, schema):
    spaces = _prompt_spaces(st)
    for name in st.prompt_sets:
        ps = st.prompt_set(name)
        n = len(ps.prompts)
        columns = [[name] * n, list(range(n)), list(ps.prompts),
                   [st.classes[c] if c >= 0 else None for c in ps.classes.tolist()],
                   list(ps.terms) if ps.terms is not None else [None] * n,
                   st.item_ids[ps.items].tolist() if ps.is_caption_set else [None] * n]
        for space, dim in spaces.items():
            if space in ps.spaces:
                columns.append(_vectors(pa, st.text(name, space, lazy=True)[()]))
            else:
                columns.append(pa.nulls(n, _vector_type(pa, dim)))
        yield pa.record_batch([c if isinstance(c, pa.Array) else pa.array(c, type=f.type)
                               for c, f in zip(columns, schema)], schema=schema)


def _check_unique(names: list[str], what: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise InputError(f"the {what} table would have two columns named {name!r} "
                             "(a metadata column named like a fixed or vector column)")
        seen.add(name)
