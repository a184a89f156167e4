"""The extraction pipeline: a dataset and prompt sets, through an encoder, into a store.

Audio
    Decoding workers, fixed-size batches in page-locked buffers, asynchronous copies and
    the per-batch checks of the vectors: :mod:`embedstore.extract.feeding`. Workers decode
    with :func:`embedstore.extract.audio.decode`; a long clip arrives as a
    :class:`~embedstore.extract.audio.StreamedClip` and is decoded here one window at a time,
    so a clip costs a few windows of memory whatever its length. A clip's windows may span
    several batches; with ``long_mode="mean"`` its vectors are averaged per space (``joint``
    re-normalised).
Batches and shards
    No batch spans two blocks of ``block_items`` items in dataset order, and shards are
    cut on block boundaries (:mod:`embedstore.extract.shards`), so the shards of a run,
    merged, hold a single run's vectors bit for bit.
Durability
    Rows go to a :class:`~embedstore.store.journal.Journal` on a budget: the first rows at
    once, then whenever ``journal_seconds`` have passed or ``journal_rows`` rows wait, and
    at the end; always at a point where a batch ends on a clip boundary. A resumed run
    restarts packing from such a boundary, so with the same batch size it sends the
    encoder exactly the batches an uninterrupted run would have sent, and ends with the
    same vectors bit for bit. A kill loses at most the budget's rows.
Bad clips
    A clip that cannot be read, is empty or holds non-finite samples, or whose vectors
    fail the checks (non-finite, or joint not unit length), is recorded in the store with
    its reason and skipped.
Text
    Every prompt set is embedded while the workers decode the first clips, before any
    audio batch (a missing tokenizer fails before the long audio pass), in chunks of
    ``batch_size`` prompts.
Devices
    The policy of :mod:`embedstore.models.device`: TF32 off, autocast for fp16/bf16, the
    numeric flags and the device's identity in the provenance; running out of device
    memory stops the run with one line naming the batch size, and ``--resume`` may then
    continue with a smaller one.

torch is imported only when a run starts, so ``import embedstore.extract`` stays cheap.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from embedstore.errors import InputError, ModelUnavailable, StoreExists
from embedstore.extract.feeding import (  # noqa: F401  (embed_clips, pool_windows: public)
    BatchStager,
    Chunk,
    embed_clips,
    pool_windows,
    read_clip_groups,
)
from embedstore.extract.fingerprint import fingerprint_mismatch, settings_fingerprint
from embedstore.extract.prompts import PromptSpec, caption_prompt_set
from embedstore.extract.shards import BLOCK_ITEMS, check_block_items, select_shard
from embedstore.store.core import edit_store, open_store
from embedstore.store.journal import Journal
from embedstore.store.lock import writer_lock
from embedstore.store.names import check_name, check_names
from embedstore.store.partial import HEADER, journal_dir

EXTRA_HINT = "install the extract extra: pip install 'embedstore[extract]'"
LONG_MODES = ("first", "center", "mean")
STORAGE_DTYPES = ("float32", "float16")
#: Journal budget: rows are made durable when this many seconds have passed or rows wait.
JOURNAL_SECONDS = 2.0
JOURNAL_ROWS = 4096


@dataclass
class ExtractSummary:
    """What a run wrote.

    Attributes
    ----------
    path : Path
        The store.
    items : int
        Clips embedded (rows of the store).
    failed : list[tuple[str, str]]
        ``(path, reason)`` of each clip that was skipped.
    audio_spaces, prompt_sets : list[str]
        What the store holds.
    resumed_from : int
        First row this run embedded (0 for a fresh run).
    seconds : float
        Wall time of this run.
    already_complete : bool
        ``--resume`` found the run already finished with the same settings: nothing done.
    """

    path: Path
    items: int
    failed: list[tuple[str, str]]
    audio_spaces: list[str]
    prompt_sets: list[str]
    resumed_from: int = 0
    seconds: float = 0.0
    already_complete: bool = False


def require_torch() -> None:
    """Raise ModelUnavailable with the install hint when torch is missing."""
    if importlib.util.find_spec("torch") is None:
        raise ModelUnavailable(EXTRA_HINT)


def run_extract(
    model,
    dataset,
    prompt_specs: list[PromptSpec],
    out: str | Path,
    *,
    batch_size: int = 32,
    workers: int = 0,
    long_mode: str = "first",
    resume: bool = False,
    overwrite: bool = False,
    dtype: str = "float32",
    command: list[str] | None = None,
    progress: Callable[[int, int, int], None] | None = None,
    journal_seconds: float = JOURNAL_SECONDS,
    journal_rows: int = JOURNAL_ROWS,
    shard=None,
    record_host: bool = False,
    block_items: int = BLOCK_ITEMS,
) -> ExtractSummary:
    """Embed every clip of ``dataset`` and every prompt set into the store ``out``.

    Parameters
    ----------
    model : embedstore.models.base.Encoder
        A loaded encoder (its device and precision were chosen when it was loaded).
    dataset : embedstore.datasets.Dataset
        Classes and items (id, path, labels, metadata).
    prompt_specs : list of PromptSpec
        Prompt sets to embed with the text tower.
    out : path-like
        The store to write; its journal ``<out>.partial/`` holds the progress.
    batch_size : int
        Audio windows per forward pass (and prompts per text pass).
    workers : int
        DataLoader worker processes decoding audio (0: decode in this process).
    long_mode : {"first", "center", "mean"}
        Which window of a clip longer than the model's window to embed; ``mean``
        embeds them all and averages.
    resume : bool
        Continue the unfinished run of ``out``. Every setting that shapes the vectors
        (:func:`run_settings`) must be the one it started with, or the run is refused
        naming the setting; a finished store made with the same settings is left as it
        is (``already_complete``), one made with other settings is refused.
        The batch size may differ (the change is recorded); the device is compared by
        identity, not by name (another kind of device or accelerator model is refused).
    overwrite : bool
        Replace an existing store at ``out``.
    dtype : {"float32", "float16"}
        Storage precision of the vectors.
    command : list of str, optional
        The command line, recorded in the provenance (absolute paths as their last part).
    progress : callable, optional
        Called as ``progress(rows_done, rows_total, failed_so_far)``.
    journal_seconds, journal_rows : float, int
        The journal budget: embedded rows are made durable once this many seconds have
        passed since the last write, or this many rows wait (0: after every batch).
    shard : embedstore.extract.shards.Shard, optional
        Embed only this shard's contiguous items into ``OUT.shard-K-of-N.h5`` beside
        ``out``; its provenance records the range and the whole run's fingerprint, for
        ``embedstore merge``.
    record_host : bool
        Record host and user names and the dataset root's absolute path (off by default:
        stores are shared; by default the provenance names only the root folder).
    block_items : int
        Items per block: no audio batch spans two blocks (in dataset order) and shards are
        cut on block boundaries, so any sharding gives a single run's vectors bit for bit.
        Part of the settings fingerprint (a resumed run and every shard use the same).

    Returns
    -------
    ExtractSummary

    Raises
    ------
    DeviceOutOfMemory
        A batch did not fit on the device; the rows before it are kept for ``--resume``.
    """
    require_torch()
    from embedstore.models.device import run_numerics

    start_time = time.perf_counter()
    check_settings(batch_size=batch_size, workers=workers, long_mode=long_mode, dtype=dtype)
    check_block_items(block_items)
    prompt_specs, captions = with_captions(dataset, prompt_specs)
    check_run_inputs(dataset, prompt_specs)
    items = items_table(dataset)
    numerics = run_numerics(getattr(model, "precision", "fp32"))
    provenance = extraction_provenance(model, dataset, batch_size=batch_size, long_mode=long_mode,
                                       command=command, numerics=numerics, record_host=record_host,
                                       block_items=block_items)
    provenance["settings_fingerprint"] = settings_fingerprint(
        run_settings(model, dataset, items, prompt_specs, dtype=dtype, long_mode=long_mode,
                     block_items=block_items))
    if shard is not None:  # the fingerprint above is the whole run's, shared by every shard
        dataset, out, provenance["shard"] = select_shard(dataset, out, shard, block_items)
        items = items_table(dataset)
        # A shard's caption set holds the captions of its own items, tied to its own rows;
        # `embedstore merge` joins them back.
        prompt_specs = [_shard_captions(dataset, spec) if spec is captions else spec for spec in prompt_specs]
    header = dict(model=model.name, dataset=dataset.name, classes=list(dataset.classes),
                  provenance=provenance)
    # One writer per store: a second run on the same --out is refused, never interleaved.
    with writer_lock(out):
        if resume:
            check_same_run(out, provenance, overwrite=overwrite)
        journal = Journal.open(out, header=header, items=items, spaces=dict(model.audio_dims),
                               resume=resume, overwrite=overwrite)
        first_row = journal.next_row
        if journal.already_done:
            return _summary(journal.out, first_row, start_time, already_complete=True)
        if resume:
            _check_same_device(journal.header["provenance"], provenance, out)
            _record_batch_size(journal, first_row, batch_size)
        _seed_torch()

        # Workers start decoding while the text tower runs.
        groups = iter(read_clips(dataset, first_row, model, long_mode=long_mode, workers=workers,
                                 batch_size=batch_size))
        prompt_sets = embed_prompt_sets(model, prompt_specs, batch_size)
        writer = _BudgetedWriter(journal, model.audio_dims, journal_seconds, journal_rows)
        if progress:
            progress(first_row, journal.n_items, 0)
        stager = BatchStager(batch_size, model.item_size, getattr(model, "device", "cpu"))
        chunks = embed_clips(model.forward_audio, groups, batch_size, first_row, stager=stager,
                             hint=_precision_hint(model),
                             on_out_of_memory=lambda exc: _audio_out_of_memory(model, batch_size),
                             block_items=block_items)
        try:
            for chunk in chunks:
                chunk.failed = [(row, private_reason(reason, dataset.root)) for row, reason in chunk.failed]
                writer.add(chunk)
                if progress:
                    progress(chunk.stop, journal.n_items, writer.failed)
        finally:
            writer.flush()  # the rows done before an error (out of memory) stay for --resume
        if not journal.complete:
            raise InputError(f"the dataset gave {journal.next_row} of {journal.n_items} clips")
        journal.finalize(prompt_sets, dtype=dtype, provenance={"resumed": first_row} if first_row else None,
                         record_host=record_host)
        return _summary(journal.out, first_row, start_time)


def private_reason(reason: str, root) -> str:
    """A failure reason with the dataset root taken out of the paths it names: a decoder's
    message names the file by its absolute path, which a shared store must not carry."""
    return reason.replace(f"{Path(root)}{os.sep}", "")


class _BudgetedWriter:
    """Merges consecutive chunks and appends them to the journal on a time or size budget.

    The first chunk is written at once (a run shows durable progress early); after that,
    when ``seconds`` have passed since the last write or ``rows`` rows wait.
    """

    def __init__(self, journal: Journal, dims: dict[str, int], seconds: float, rows: int):
        self.journal, self.dims = journal, dict(dims)
        self.seconds, self.rows = seconds, rows
        self.pending: Chunk | None = None
        self.last_write: float | None = None
        self.failed = 0

    def add(self, chunk: Chunk) -> None:
        self.failed += len(chunk.failed)
        if self.pending is None:
            self.pending = Chunk(chunk.start, chunk.start)
        pending = self.pending
        pending.stop = chunk.stop
        pending.rows_ok += chunk.rows_ok
        pending.failed += chunk.failed
        for space in self.dims:
            pending.vectors.setdefault(space, []).extend(chunk.vectors.get(space, []))
        waiting = pending.stop - pending.start
        if (self.last_write is None or waiting >= self.rows
                or time.monotonic() - self.last_write >= self.seconds):
            self.flush()

    def flush(self) -> None:
        chunk, self.pending = self.pending, None
        if chunk is None or chunk.stop == chunk.start:
            return
        vectors = {space: _stack(chunk.vectors.get(space, []), dim) for space, dim in self.dims.items()}
        self.journal.append(chunk.start, chunk.rows_ok, vectors, chunk.failed, stop=chunk.stop)
        self.last_write = time.monotonic()


def _precision_hint(model) -> str:
    precision = getattr(model, "precision", "fp32")
    if precision == "fp16":
        return " (fp16 overflow? try --precision bf16 or fp32)"
    if precision == "bf16":
        return " (bf16; try --precision fp32)"
    return ""


def _audio_out_of_memory(model, batch_size: int):
    from embedstore.models.device import out_of_memory

    return out_of_memory(getattr(model, "device", "cpu"), batch_size,
                         resume_hint=" with --resume (the rows done so far are kept)")


def check_settings(*, batch_size: int, workers: int = 0, long_mode: str = "first",
                   dtype: str = "float32") -> None:
    """Refuse run settings that cannot work, before any model is loaded."""
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    if workers < 0:
        raise InputError(f"--workers must be 0 or more, got {workers}")
    if long_mode not in LONG_MODES:
        raise InputError(f"--long must be one of {', '.join(LONG_MODES)}, got {long_mode!r}")
    if dtype not in STORAGE_DTYPES:
        raise InputError(f"--dtype must be one of {', '.join(STORAGE_DTYPES)}, got {dtype!r}")


def add_prompt_sets(store_path: str | Path, model, prompt_specs: list[PromptSpec], *,
                    batch_size: int = 32, replace: bool = False) -> list[str]:
    """Embed prompt sets with the model that made a store, and add them to it.

    The model must be the store's: same registry name and same checkpoint SHA-256 as
    its provenance records. The vectors are stored in the precision of the store's audio
    vectors; the store is replaced atomically.

    Returns
    -------
    list[str]
        The store's prompt sets afterwards.
    """
    # Held from the first read to the rename, so two runs never lose each other's sets.
    with writer_lock(store_path):
        _check_prompt_names(prompt_specs)
        with open_store(store_path) as st:
            made_with = (st.provenance or {}).get("checkpoint_sha256")
            if st.model != model.name:
                raise InputError(f"{store_path} was made by model {st.model!r}, not {model.name!r}")
            if made_with is None:
                raise InputError(f"{store_path} records no checkpoint digest, so its text tower "
                                 "cannot be matched; re-extract it with `embedstore extract`")
            digest = checkpoint_digest(model.provenance())
            if digest != made_with:
                raise InputError(f"{store_path} was made with checkpoint sha256 {made_with[:12]}..., "
                                 f"this model's is {str(digest)[:12]}...; load the same weights")
            taken = [spec.name for spec in prompt_specs if spec.name in st.prompt_sets]
            if taken and not replace:
                raise StoreExists(f"{store_path} already has prompt set(s) {', '.join(taken)}; "
                                  "pass --replace to overwrite them")
            dtype = st.audio(st.audio_spaces[0], lazy=True).dtype.name if st.audio_spaces else "float32"
        embedded = embed_prompt_sets(model, prompt_specs, batch_size)
        with edit_store(store_path) as writer:
            for ps in embedded:
                writer.add_prompt_set(ps["name"], ps["prompts"], ps["classes"], ps["embeddings"],
                                      terms=ps["terms"], items=ps["items"], source=ps["source"], dtype=dtype,
                                      replace=replace)
        with open_store(store_path) as st:
            return st.prompt_sets


def make_text_store(model, dataset, prompt_specs: list[PromptSpec], out: str | Path, *,
                    batch_size: int = 32, overwrite: bool = False, dtype: str = "float32",
                    command: list[str] | None = None) -> ExtractSummary:
    """Write a text-only store: the dataset's classes and prompt sets, no items, no audio.

    ``model`` needs only ``name``, ``text_dims``, ``embed_text`` and ``provenance``: a
    sentence encoder (:mod:`embedstore.models.sentence`) or the text tower of an
    audio-text model. The triplet and spaces analyses read such a store like any other.
    """
    from embedstore.store.core import create_store

    start_time = time.perf_counter()
    check_settings(batch_size=batch_size, dtype=dtype)
    if not prompt_specs:
        raise InputError("a text-only store needs at least one prompt set (--prompts)")
    check_run_inputs(dataset, prompt_specs)
    encoder = model.provenance()
    provenance = {
        "encoder": encoder,
        "checkpoint_sha256": checkpoint_digest(encoder),
        "dataset": {"name": dataset.name, "root": str(dataset.root), "classes": len(dataset.classes)},
        "extraction": {"batch_size": batch_size, "text_only": True, "precision": encoder.get("precision"),
                       "device": encoder.get("device")},
        "library_versions": extraction_library_versions(),
        "command": list(sys.argv if command is None else command),
    }
    embedded = embed_prompt_sets(model, prompt_specs, batch_size)
    with create_store(out, model=model.name, dataset=dataset.name, classes=list(dataset.classes),
                      provenance=provenance, overwrite=overwrite) as writer:
        writer.set_items([], labels=np.zeros(0, dtype=np.int32))
        for ps in embedded:
            writer.add_prompt_set(ps["name"], ps["prompts"], ps["classes"], ps["embeddings"],
                                  terms=ps["terms"], source=ps["source"], dtype=dtype)
    return _summary(Path(out), 0, start_time)


def _summary(path: Path, first_row: int, start_time: float, already_complete: bool = False) -> ExtractSummary:
    with open_store(path) as st:
        return ExtractSummary(Path(path), st.n_items, list(st.failed), st.audio_spaces,
                              st.prompt_sets, first_row, time.perf_counter() - start_time, already_complete)


def with_captions(dataset, prompt_specs: list[PromptSpec]) -> tuple[list[PromptSpec], PromptSpec | None]:
    """A run's prompt sets: ``prompt_specs`` and, when the dataset's items have captions and no
    given set takes its name, the caption set (returned second, else None)."""
    captions = caption_prompt_set(dataset)
    if captions is not None and all(spec.name != captions.name for spec in prompt_specs):
        return [*prompt_specs, captions], captions
    return list(prompt_specs), None


def _shard_captions(dataset, whole: PromptSpec) -> PromptSpec:
    """The captions of a shard's own items (``dataset`` holds the shard's items only), tied to
    its rows; an empty caption set of the same name when none of its items has one."""
    from dataclasses import replace

    own = caption_prompt_set(dataset, whole.name)
    if own is not None:
        return own
    return replace(whole, prompts=[], classes=np.zeros(0, np.int32), items=np.zeros(0, np.int64))


def embed_prompt_sets(model, specs: list[PromptSpec], batch_size: int) -> list[dict]:
    """Embed each prompt set in chunks of ``batch_size`` prompts.

    Returns
    -------
    list of dict
        ``name``, ``prompts``, ``classes``, ``terms`` and ``embeddings`` (space -> array),
        as :meth:`Journal.finalize` and :meth:`StoreWriter.add_prompt_set` take them.
    """
    from embedstore.models.device import is_out_of_memory, out_of_memory

    embedded = []
    for spec in specs:
        try:
            parts = [model.embed_text(spec.prompts[i:i + batch_size])
                     for i in range(0, len(spec.prompts), batch_size)]
        except Exception as exc:
            if is_out_of_memory(exc):
                raise out_of_memory(getattr(model, "device", "cpu"), batch_size) from None
            raise
        embeddings = {space: np.concatenate([p[space] for p in parts]).astype(np.float32) if parts
                      else np.zeros((0, dim), np.float32)  # an empty set (a shard's captions, say)
                      for space, dim in model.text_dims.items()}
        embedded.append(dict(name=spec.name, prompts=list(spec.prompts), classes=spec.classes,
                             terms=spec.terms, items=spec.items, source=spec.source, embeddings=embeddings))
    return embedded


def read_clips(dataset, first_row: int, model, *, long_mode: str, workers: int, batch_size: int):
    """Groups of decoded clips from ``first_row`` on, in row order (``workers`` decode ahead),
    for batches of ``batch_size`` windows."""
    paths = [str(item.path) for item in dataset.items[first_row:]]
    return read_clip_groups(paths, first_row, _frontend_args(model, long_mode), workers=workers,
                            window_samples=model.item_size, batch_size=batch_size)


def _frontend_args(model, long_mode: str) -> dict:
    args = dict(sample_rate=model.sample_rate, window_seconds=model.window_seconds,
                long_mode=long_mode, int16=model.int16_roundtrip,
                padding=getattr(model, "padding", "repeatpad"))
    if getattr(model, "clip_front_end", None) is not None:  # one item per whole clip
        args["clip_front_end"] = model.clip_front_end
    return args


def effective_long_mode(model, long_mode: str) -> str:
    """``long_mode``, or ``"whole clip"`` for a model with a clip front end (``--long`` does
    not apply to it), as the provenance and the settings fingerprint record it."""
    return long_mode if getattr(model, "clip_front_end", None) is None else "whole clip"


def items_table(dataset) -> dict:
    """The dataset's items as the Journal takes them: ids, paths, labels, metadata.

    Paths are relative to the dataset root (``../`` for a file outside it), so a store
    neither depends on where the data sat nor tells where that was; the provenance names
    only the root folder.
    """
    if not dataset.items:
        raise InputError(f"dataset {dataset.name!r} has no items")
    table = dict(ids=[str(item.id) for item in dataset.items],
                 paths=[_relative(item.path, dataset.root) for item in dataset.items])
    if dataset.multilabel:
        table["label_matrix"] = dataset.label_matrix()
        mask = dataset.label_mask()
        if mask is not None:
            table["label_mask"] = mask
    else:
        table["labels"] = dataset.labels()
    table["metadata"] = dataset.metadata_columns()
    return table


def _relative(path, root) -> str:
    path = Path(path)
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return Path(os.path.relpath(path, root)).as_posix()


# An absolute path, alone or after a prefix such as ``--root=`` or ``hf:``.
_ABSOLUTE = re.compile(r"^(?P<prefix>-[-\w]*=|[a-z]+:)?(?P<path>/(?!/).*)$")


def _private_paths_removed(value):
    """``value`` (JSON-like) with each absolute path shortened to its last part.

    ``/home/me/data/TinySOL`` becomes ``TinySOL`` and ``hf:/home/me/clap`` becomes
    ``hf:clap``: a store is shared, the folders it was made from are private.
    """
    if isinstance(value, dict):
        return {k: _private_paths_removed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_private_paths_removed(v) for v in value]
    if isinstance(value, str):
        match = _ABSOLUTE.match(value)
        if match:
            return (match["prefix"] or "") + PurePosixPath(match["path"]).name
    return value


def extraction_provenance(model, dataset, *, batch_size: int, long_mode: str,
                          command: list[str] | None = None, numerics: dict | None = None,
                          record_host: bool = False, block_items: int = BLOCK_ITEMS) -> dict:
    """What made the vectors: encoder, front end, dataset, run settings, the device and its
    numeric settings, library versions.

    Nothing private unless ``record_host``: the dataset root by its folder name only and
    absolute paths (command line, checkpoint and tokenizer folders) shortened to their
    last part; ``record_host`` adds the root's absolute path (and the store the host).
    """
    from embedstore.extract.audio import frontend_config
    from embedstore.models.device import device_identity, numerics_flags

    encoder = model.provenance()
    record = {
        "encoder": _private_paths_removed(encoder),
        "checkpoint_sha256": checkpoint_digest(encoder),
        "frontend": frontend_config(**_frontend_args(model, long_mode)),
        "dataset": {"name": dataset.name, "root": Path(dataset.root).name, "items": len(dataset.items),
                    "source": getattr(dataset, "source", "embedstore"), "subset": getattr(dataset, "subset", "")},
        "extraction": {
            "batch_size": batch_size,
            "long_mode": effective_long_mode(model, long_mode),
            "precision": encoder.get("precision"),
            "device": encoder.get("device"),
            "pooling": "mean of window vectors per space; joint re-normalised",
            "block_items": block_items,
            "padding": "a block's last audio batch zero-padded to batch_size",
        },
        "device": device_identity(getattr(model, "device", "cpu")),
        "numerics": numerics or numerics_flags(encoder.get("precision")),
        "library_versions": extraction_library_versions(),
        "command": _private_paths_removed(list(sys.argv if command is None else command)),
    }
    record["dataset"].update({"root_path": str(dataset.root)} if record_host else {})
    return record


def checkpoint_digest(encoder_provenance: dict) -> str | None:
    """The checkpoint SHA-256 recorded in an encoder's provenance, wherever it nests."""
    for key in ("checkpoint_sha256", "sha256"):
        if isinstance(encoder_provenance.get(key), str):
            return encoder_provenance[key]
    checkpoint = encoder_provenance.get("checkpoint")
    if isinstance(checkpoint, dict):
        return checkpoint_digest(checkpoint)
    return None


def extraction_library_versions() -> dict[str, str | None]:
    """Installed versions of the extraction stack (the store records the core libraries itself)."""
    versions = {}
    for package in ("torch", "transformers", "tokenizers", "safetensors", "soundfile", "soxr"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def run_settings(model, dataset, items: dict, prompt_specs: list[PromptSpec], *, dtype: str,
                 long_mode: str, block_items: int = BLOCK_ITEMS) -> dict:
    """Every setting that shapes a run's result, for :func:`settings_fingerprint`.

    Model and checkpoint digest, dataset name and root, the items table (ids, paths,
    labels, metadata), the prompt sets, storage dtype, model precision, long-clip mode,
    the audio front end, and the items per block (it says where shards are cut, so shards
    made with another are not parts of one run). Batch size, device and workers are left
    out: they change how a run goes, not what it computes (the provenance records them).
    """
    from embedstore.extract.audio import frontend_config

    encoder = model.provenance()
    return {
        "model": model.name,
        "checkpoint": checkpoint_digest(encoder) or encoder.get("checkpoint"),
        "dataset": dataset.name,
        "root": str(Path(dataset.root).expanduser().resolve()),
        "items": {key: (np.asarray(value).tolist() if key != "metadata"
                        else {k: np.asarray(v).tolist() for k, v in value.items()})
                  for key, value in items.items()},
        "prompts": [{"name": spec.name, "prompts": list(spec.prompts),
                     "classes": np.asarray(spec.classes).tolist(), "terms": spec.terms,
                     **({} if spec.items is None else {"items": np.asarray(spec.items).tolist()})}
                    for spec in prompt_specs],
        "dtype": dtype,
        "precision": encoder.get("precision"),
        "long_mode": effective_long_mode(model, long_mode),
        "frontend": frontend_config(**_frontend_args(model, long_mode)),
        "block_items": block_items,
    }


_SETTING_NAMES = {"model": "--model", "checkpoint": "checkpoint (weights)", "dataset": "--dataset",
                  "root": "dataset --root", "items": "items (the dataset's files, labels or metadata)",
                  "prompts": "--prompts", "dtype": "--dtype", "precision": "--precision",
                  "long_mode": "--long", "frontend": "audio front end",
                  "block_items": "--block-items"}


def check_same_run(out, provenance: dict, *, overwrite: bool = False) -> None:
    """Refuse ``--resume`` unless ``out``'s journal or finished store is this very run.

    Compares the saved settings fingerprint with ``provenance["settings_fingerprint"]``
    and names the first setting that differs. A finished store is only checked when it
    would be kept (not ``overwrite``).
    """
    out = Path(out)
    header = journal_dir(out) / HEADER
    if header.is_file():
        import json

        try:
            saved = json.loads(header.read_text()).get("provenance") or {}
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot resume {out}: its journal header is unreadable ({exc})") from None
        where = f"cannot resume {out}: the unfinished run"
        fix = f"run the same command, or delete {journal_dir(out)} to start again"
    elif out.exists() and not overwrite:
        with open_store(out) as st:
            saved = st.provenance or {}
        where = f"{out} is a finished store; it"
        fix = "--resume only continues the same run: give another --out, or --overwrite to replace it"
    else:
        return
    before = saved.get("settings_fingerprint")
    if not isinstance(before, dict):
        raise InputError(f"{where} records no settings fingerprint (an older embedstore made it), so it "
                         f"cannot be told to be the same run; {fix}")
    setting = fingerprint_mismatch(before, provenance["settings_fingerprint"])
    if setting is not None:
        raise InputError(f"{where} was made with another {_SETTING_NAMES.get(setting, setting)}; {fix}")


def check_run_inputs(dataset, prompt_specs: list[PromptSpec]) -> None:
    """Every name the store will hold passes the name policy, before the first clip is decoded.

    Classes, item ids, metadata columns and text values (:meth:`Dataset.check_names`),
    prompt set names, prompts and ontology terms: a name the store would refuse fails
    here in a second, not after the long audio pass.
    """
    dataset.check_names()
    _check_prompt_names(prompt_specs)


def _check_same_device(saved: dict, current: dict, out) -> None:
    """Refuse another kind of device or accelerator model; warn on rounding-only changes."""
    from embedstore.models.device import same_hardware

    if "device" not in saved:  # a journal from before device identities were recorded
        return
    refused, warned = same_hardware(saved["device"], current["device"])
    if refused:
        raise InputError(f"cannot resume {out}: it was started on {refused[0]}; resume on the "
                         "same kind of device, or start again")
    if warned:
        warnings.warn(f"resuming {out} with {', '.join(warned)}: vectors may differ from an "
                      "uninterrupted run by rounding", stacklevel=3)


def _record_batch_size(journal: Journal, first_row: int, batch_size: int) -> None:
    """Note in the run's provenance that the rows from ``first_row`` on use ``batch_size``."""
    extraction = dict(journal.header["provenance"].get("extraction", {}))
    changes = list(extraction.get("batch_size_changes", []))
    current = changes[-1]["to"] if changes else extraction.get("batch_size")
    if current == batch_size:
        return
    changes.append({"row": first_row, "from": current, "to": batch_size})
    journal.update_provenance({"extraction": {**extraction, "batch_size_changes": changes}})


def _check_prompt_names(specs: list[PromptSpec]) -> None:
    check_names([spec.name for spec in specs], "prompt set name", object_name=True)
    for spec in specs:
        for prompt in spec.prompts:
            check_name(prompt, f"prompt of set {spec.name!r}")
        for term in spec.terms or []:
            check_name(term, f"term of set {spec.name!r}")


def _seed_torch() -> None:
    import torch

    torch.manual_seed(0)


def _stack(rows: list[np.ndarray], dim: int) -> np.ndarray:
    return np.stack(rows) if rows else np.zeros((0, dim), dtype=np.float32)
