"""The extraction pipeline: a dataset and prompt sets, through an encoder, into a store.

Audio
    A torch ``DataLoader`` decodes and resamples clips in worker processes
    (:func:`embedstore.extract.audio.decode`), in dataset order. The main process packs their
    windows into batches of exactly ``batch_size`` windows (the last one zero-padded), so
    the encoder always sees one shape. A clip's windows may span several batches; with
    ``long_mode="mean"`` its vectors are averaged per space (``joint`` re-normalised).
    A long clip arrives as a :class:`~embedstore.extract.audio.StreamedClip` and is
    decoded here one window at a time, so a clip costs a few windows of memory whatever
    its length.
Durability
    Rows go to a :class:`~embedstore.store.journal.Journal` whenever a batch ends on a clip
    boundary. A resumed run restarts packing from such a boundary, so it sends the
    encoder exactly the batches an uninterrupted run would have sent, and ends with the
    same vectors bit for bit.
Bad clips
    A clip that cannot be read, is empty or holds non-finite samples is recorded in the
    store with its reason and skipped.
Text
    Every prompt set is embedded first (a missing tokenizer fails before the long audio
    pass), in chunks of ``batch_size`` prompts.

torch is imported only when a run starts, so ``import embedstore.extract`` stays cheap.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from embedstore.errors import InputError, ModelUnavailable, StoreExists
from embedstore.extract.fingerprint import fingerprint_mismatch, settings_fingerprint
from embedstore.extract.prompts import PromptSpec, caption_prompt_set
from embedstore.store.core import edit_store, open_store
from embedstore.store.journal import Journal
from embedstore.store.lock import writer_lock
from embedstore.store.names import check_name, check_names
from embedstore.store.partial import HEADER, journal_dir

EXTRA_HINT = "install the extract extra: pip install 'embedstore[extract]'"
LONG_MODES = ("first", "center", "mean")
STORAGE_DTYPES = ("float32", "float16")


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


@dataclass
class Chunk:
    """Rows ``start..stop-1`` ready for :meth:`Journal.append`."""

    start: int
    stop: int
    rows_ok: list[int] = field(default_factory=list)
    vectors: dict[str, list[np.ndarray]] = field(default_factory=dict)
    failed: list[tuple[int, str]] = field(default_factory=list)


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
    overwrite : bool
        Replace an existing store at ``out``.
    dtype : {"float32", "float16"}
        Storage precision of the vectors.
    command : list of str, optional
        The command line, recorded in the provenance.
    progress : callable, optional
        Called as ``progress(rows_done, rows_total, failed_so_far)``.

    Returns
    -------
    ExtractSummary
    """
    require_torch()
    start_time = time.perf_counter()
    check_settings(batch_size=batch_size, workers=workers, long_mode=long_mode, dtype=dtype)
    captions = caption_prompt_set(dataset)
    if captions is not None and all(spec.name != captions.name for spec in prompt_specs):
        prompt_specs = [*prompt_specs, captions]
    check_run_inputs(dataset, prompt_specs)
    items = items_table(dataset)
    provenance = extraction_provenance(model, dataset, batch_size=batch_size, long_mode=long_mode,
                                       command=command)
    provenance["settings_fingerprint"] = settings_fingerprint(
        run_settings(model, dataset, items, prompt_specs, dtype=dtype, long_mode=long_mode))
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
        _seed_torch()

        prompt_sets = embed_prompt_sets(model, prompt_specs, batch_size)
        n_rows = journal.n_items
        failed_count = 0
        if progress:
            progress(first_row, n_rows, failed_count)
        clips = read_clips(dataset, first_row, model, long_mode=long_mode, workers=workers)
        for chunk in embed_clips(model.embed_audio, clips, batch_size, first_row):
            vectors = {space: _stack(chunk.vectors.get(space, []), dim)
                       for space, dim in model.audio_dims.items()}
            journal.append(chunk.start, chunk.rows_ok, vectors, chunk.failed, stop=chunk.stop)
            failed_count += len(chunk.failed)
            if progress:
                progress(chunk.stop, n_rows, failed_count)
        if not journal.complete:
            raise InputError(f"the dataset gave {journal.next_row} of {n_rows} clips")
        journal.finalize(prompt_sets, dtype=dtype, provenance={"resumed": first_row} if first_row else None)
        return _summary(journal.out, first_row, start_time)


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


def embed_clips(
    embed_audio: Callable[[np.ndarray], dict[str, np.ndarray]],
    clips: Iterable[tuple[int, np.ndarray | None, str]],
    batch_size: int,
    start_row: int = 0,
) -> Iterator[Chunk]:
    """Pack clips' windows into fixed-size batches and yield finished rows.

    Parameters
    ----------
    embed_audio : callable
        ``(batch_size, n) float32 -> {space: (batch_size, d)}``, one forward pass.
    clips : iterable of (row, windows, reason)
        In row order, starting at ``start_row``: ``windows`` is ``(k, n)`` float32 or
        any sized iterable of ``k`` windows of ``n`` samples (a
        :class:`~embedstore.extract.audio.StreamedClip`, read one window at a time), or
        ``None`` for a clip that failed with ``reason``.
    batch_size : int
        Windows per call of ``embed_audio``; the last call is zero-padded to this size.
    start_row : int
        The first row ``clips`` yields.

    Yields
    ------
    Chunk
        Contiguous rows, each time a batch ends on a clip boundary (and at the end).
        A clip's vector is the mean of its windows' vectors; ``joint`` means are
        re-normalised to unit length.
    """
    chunk = Chunk(start_row, start_row)
    queue: list[np.ndarray] = []          # windows waiting for a batch
    owners: list[int] = []                # the row of each queued window
    outputs: dict[int, list[dict]] = {}   # row -> per-window vectors received so far
    expected: dict[int, int] = {}         # row -> number of windows it sent

    def run_batch(windows: list[np.ndarray], rows: list[int]) -> None:
        batch = np.stack(windows).astype(np.float32, copy=False)
        real = len(rows)
        if real < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - real, batch.shape[1]), np.float32)])
        result = embed_audio(batch)
        for i, row in enumerate(rows):
            outputs.setdefault(row, []).append({space: vec[i] for space, vec in result.items()})
        for row in sorted(set(rows)):
            if len(outputs[row]) == expected[row]:
                chunk.rows_ok.append(row)
                for space, vec in pool_windows(outputs.pop(row)).items():
                    chunk.vectors.setdefault(space, []).append(vec)
                del expected[row]

    for row, windows, reason in clips:
        if row != chunk.stop:
            raise InputError(f"clips out of order: got row {row}, expected {chunk.stop}")
        chunk.stop = row + 1
        if windows is None or len(windows) == 0:
            chunk.failed.append((row, reason or "no audio windows"))
            continue
        expected[row] = count = len(windows)
        for index, window in enumerate(windows):  # a streamed clip decodes as it goes
            queue.append(window)
            owners.append(row)
            if len(queue) < batch_size:
                continue
            run_batch(queue, owners)
            queue, owners = [], []
            if index == count - 1:  # the batch ended on a clip boundary: these rows are final
                yield chunk
                chunk = Chunk(chunk.stop, chunk.stop)
    if queue:
        run_batch(queue, owners)
    if chunk.stop > chunk.start:
        yield chunk


def pool_windows(window_vectors: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One clip's vector per space from its windows' vectors.

    The mean in float64; the ``joint`` mean is scaled back to unit length, as each
    window's joint vector was. A single window's vectors come back unchanged.
    """
    if len(window_vectors) == 1:
        return {space: np.asarray(vec, dtype=np.float32) for space, vec in window_vectors[0].items()}
    pooled = {}
    for space in window_vectors[0]:
        mean = np.mean([np.asarray(w[space], dtype=np.float64) for w in window_vectors], axis=0)
        if space == "joint":
            mean /= max(np.linalg.norm(mean), np.finfo(np.float64).tiny)
        pooled[space] = mean.astype(np.float32)
    return pooled


def embed_prompt_sets(model, specs: list[PromptSpec], batch_size: int) -> list[dict]:
    """Embed each prompt set in chunks of ``batch_size`` prompts.

    Returns
    -------
    list of dict
        ``name``, ``prompts``, ``classes``, ``terms`` and ``embeddings`` (space -> array),
        as :meth:`Journal.finalize` and :meth:`StoreWriter.add_prompt_set` take them.
    """
    embedded = []
    for spec in specs:
        parts = [model.embed_text(spec.prompts[i:i + batch_size])
                 for i in range(0, len(spec.prompts), batch_size)]
        embeddings = {space: np.concatenate([p[space] for p in parts]).astype(np.float32)
                      for space in model.text_dims}
        embedded.append(dict(name=spec.name, prompts=list(spec.prompts), classes=spec.classes,
                             terms=spec.terms, items=spec.items, source=spec.source, embeddings=embeddings))
    return embedded


class ClipReader:
    """Map-style dataset for a torch DataLoader: index i -> ``(row, windows, reason)``.

    Decoding errors (unreadable, empty, non-finite, or any exception the decoder or
    resampler raises on one file) come back as ``windows=None`` and their reason, so one
    bad clip never stops the run.
    """

    def __init__(self, paths: list[str], first_row: int, frontend: dict):
        self.paths = paths
        self.first_row = first_row
        self.frontend = frontend

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        from embedstore.extract.audio import decode

        row = self.first_row + index
        try:
            return row, decode(self.paths[index], **self.frontend), ""
        except InputError as exc:
            return row, None, str(exc)
        except Exception as exc:  # a decoder or resampler failing on one odd file
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return row, None, f"cannot use audio {self.paths[index]}: {type(exc).__name__} {detail}".rstrip()


def _as_is(sample):
    """DataLoader collate function that leaves numpy arrays alone."""
    return sample


def _die_with_parent(worker_id: int) -> None:
    """DataLoader worker init: on Linux, ask the kernel to kill this worker with its parent.

    Without it a worker blocked on a full queue can outlive a ``kill -9`` of the run.
    """
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def read_clips(dataset, first_row: int, model, *, long_mode: str, workers: int):
    """Decoded windows of every clip from ``first_row`` on, in row order.

    Yields ``(row, windows or None, reason)``; ``workers`` processes decode ahead.
    """
    from torch.utils.data import DataLoader

    paths = [str(item.path) for item in dataset.items[first_row:]]
    reader = ClipReader(paths, first_row, _frontend_args(model, long_mode))
    return DataLoader(reader, batch_size=None, shuffle=False, num_workers=workers,
                      collate_fn=_as_is, prefetch_factor=4 if workers else None,
                      worker_init_fn=_die_with_parent if workers else None)


def _frontend_args(model, long_mode: str) -> dict:
    return dict(sample_rate=model.sample_rate, window_seconds=model.window_seconds,
                long_mode=long_mode, int16=model.int16_roundtrip)


def items_table(dataset) -> dict:
    """The dataset's items as the Journal takes them: ids, paths, labels, metadata.

    Paths are kept relative to the dataset root when they lie under it, so a store does
    not depend on where the data sat; the root is in the provenance.
    """
    if not dataset.items:
        raise InputError(f"dataset {dataset.name!r} has no items")
    table = dict(ids=[str(item.id) for item in dataset.items],
                 paths=[_relative(item.path, dataset.root) for item in dataset.items])
    if dataset.multilabel:
        table["label_matrix"] = dataset.label_matrix()
    else:
        table["labels"] = dataset.labels()
    table["metadata"] = dataset.metadata_columns()
    return table


def _relative(path, root) -> str:
    path = Path(path)
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def extraction_provenance(model, dataset, *, batch_size: int, long_mode: str,
                          command: list[str] | None = None) -> dict:
    """What made the vectors: encoder, front end, dataset, run settings, library versions."""
    from embedstore.extract.audio import frontend_config

    encoder = model.provenance()
    return {
        "encoder": encoder,
        "checkpoint_sha256": checkpoint_digest(encoder),
        "frontend": frontend_config(**_frontend_args(model, long_mode)),
        "dataset": {"name": dataset.name, "root": str(dataset.root), "items": len(dataset.items)},
        "extraction": {
            "batch_size": batch_size,
            "long_mode": long_mode,
            "precision": encoder.get("precision"),
            "device": encoder.get("device"),
            "pooling": "mean of window vectors per space; joint re-normalised",
            "padding": "last audio batch zero-padded to batch_size",
        },
        "library_versions": extraction_library_versions(),
        "command": list(sys.argv if command is None else command),
    }


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
                 long_mode: str) -> dict:
    """Every setting that shapes a run's result, for :func:`settings_fingerprint`.

    Model and checkpoint digest, dataset name and root, the items table (ids, paths,
    labels, metadata), the prompt sets, storage dtype, model precision, long-clip mode
    and the audio front end. Batch size, device and workers are left out: they change
    how a run goes, not what it computes (the provenance records them).
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
        "long_mode": long_mode,
        "frontend": frontend_config(**_frontend_args(model, long_mode)),
    }


_SETTING_NAMES = {"model": "--model", "checkpoint": "checkpoint (weights)", "dataset": "--dataset",
                  "root": "dataset --root", "items": "items (the dataset's files, labels or metadata)",
                  "prompts": "--prompts", "dtype": "--dtype", "precision": "--precision",
                  "long_mode": "--long", "frontend": "audio front end"}


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
        _check_batch_size(saved, provenance, out)
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


def _check_batch_size(saved: dict, current: dict, out) -> None:
    # Batches must match for a resumed run to send the encoder the batches an
    # uninterrupted run would have (kept out of the fingerprint: see issue 15).
    before = (saved.get("extraction") or {}).get("batch_size")
    now = current["extraction"]["batch_size"]
    if before is not None and before != now:
        raise InputError(f"cannot resume {out}: it was started with batch_size {before!r}, "
                         f"now {now!r}; use the same settings")


def check_run_inputs(dataset, prompt_specs: list[PromptSpec]) -> None:
    """Every name the store will hold passes the name policy, before the first clip is decoded.

    Classes, item ids, metadata columns and text values (:meth:`Dataset.check_names`),
    prompt set names, prompts and ontology terms: a name the store would refuse fails
    here in a second, not after the long audio pass.
    """
    dataset.check_names()
    _check_prompt_names(prompt_specs)


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
