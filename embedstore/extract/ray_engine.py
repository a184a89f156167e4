"""Extraction on Ray Data: decoding in CPU tasks, the encoder in an actor pool, shards, merge.

The items, cut into the blocks of the plain run (:mod:`embedstore.extract.shards`), become a
Ray Dataset with one row per block (or the part of a block a resumed shard still needs), in
dataset order (``preserve_order``). ``flat_map`` decodes a block's clips in a CPU task (the
same decoder and failure reasons as the plain run) and packs their windows into fixed-size
batches exactly as the plain run does (:func:`~embedstore.extract.feeding.pack_batches`):
one Ray row per batch. ``map_batches`` runs the encoder on those batches in a pool of actors
(``concurrency`` actors, ``num_gpus`` each); how Ray groups the rows cannot change a batch.
The driver receives the batches in order, checks and pools the windows' vectors per clip as
the plain run does, and appends the rows to one journal per shard (``OUT.shard-K-of-N.h5``,
resumable as any run), finalizes the shards and merges them into ``OUT`` with
:func:`~embedstore.store.merge.merge_shards`. The vectors are a plain run's bit for bit (same
batch size and ``block_items``).

Ray is an optional extra (``pip install 'embedstore[ray]'``). The encoder is built in each
actor by ``load_encoder``, a picklable zero-argument callable (for example
``functools.partial(embedstore.models.load_model, "clap-music", device="cuda")``).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np

from embedstore.errors import InputError
from embedstore.extract.feeding import (
    BatchStager,
    Chunk,
    PackedBatch,
    _launch,
    _RowAssembler,
    decode_clip,
    groups_from_clips,
    pack_batches,
)
from embedstore.extract.fingerprint import settings_fingerprint
from embedstore.extract.pipeline import (
    JOURNAL_ROWS,
    JOURNAL_SECONDS,
    ExtractSummary,
    _BudgetedWriter,
    _frontend_args,
    _precision_hint,
    check_run_inputs,
    check_same_run,
    check_settings,
    embed_prompt_sets,
    extraction_provenance,
    items_table,
    private_reason,
    run_settings,
    with_captions,
)
from embedstore.extract.shards import BLOCK_ITEMS, Shard, check_block_items, select_shard
from embedstore.store.core import open_store
from embedstore.store.journal import Journal, captions_of_rows
from embedstore.store.lock import writer_lock
from embedstore.store.merge import merge_shards
from embedstore.store.outputs import check_outputs

RAY_HINT = "the Ray engine needs Ray Data: pip install 'embedstore[ray]'"


def _ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise InputError(RAY_HINT) from None
    return ray


class _DecodeAndPack:
    """A CPU task's work: one block's clips -> their batches, one Ray row per batch.

    A row holds the batch as the encoder takes it (``windows``, zero-padded), how many of
    its windows are real, and as JSON the clip segments and failed clips the driver needs.
    """

    def __init__(self, frontend: dict, window_samples: int, batch_size: int, block_items: int):
        self.frontend, self.window_samples = frontend, window_samples
        self.batch_size, self.block_items = batch_size, block_items

    def __call__(self, piece: dict):
        start = int(piece["start"])
        clips = ((start + i, *decode_clip(str(path), self.frontend)) for i, path in enumerate(piece["paths"]))
        stager = BatchStager(self.batch_size, self.window_samples, "cpu")
        for batch in pack_batches(groups_from_clips(clips), stager, self.batch_size, start, self.block_items):
            windows = (batch.host.numpy().copy() if batch.host is not None  # the stager reuses its buffers
                       else np.zeros((self.batch_size, self.window_samples), np.float32))
            yield {"piece": int(piece["piece"]), "windows": windows, "real": batch.real,
                   "segments": json.dumps(batch.segments), "failed": json.dumps(batch.failed),
                   "stop": batch.stop, "boundary": batch.boundary}


class _Embed:
    """An actor holding the encoder: packed batches -> their windows' vectors, one forward pass each."""

    def __init__(self, load_encoder: Callable, batch_size: int):
        from embedstore.extract.pipeline import _seed_torch

        _seed_torch()
        self.model = load_encoder()
        self.stager = BatchStager(batch_size, self.model.item_size, getattr(self.model, "device", "cpu"))

    def __call__(self, batch: dict) -> dict:
        real = np.asarray(batch["real"], dtype=np.int64)
        out = {key: batch[key] for key in ("piece", "real", "segments", "failed", "stop", "boundary")}
        size = self.stager.shape[0]
        for space, dim in self.model.audio_dims.items():
            out[f"vec:{space}"] = np.zeros((len(real), size, dim), np.float32)
        for i, windows in enumerate(batch["windows"]):
            if real[i] == 0:
                continue
            host, array = self.stager.host_buffer()
            array[:] = windows
            flight = _launch(self.model.forward_audio, self.stager, PackedBatch(host, int(real[i]), [], [], 0, True))
            for space, vectors in flight.wait().items():
                out[f"vec:{space}"][i, :real[i]] = vectors
        return out


def block_pieces(dataset, parts, journals, block_items: int) -> list[dict]:
    """The items still to embed as Ray rows: one per block, cut where a shard starts or resumes."""
    pieces = []
    for (_, _, record), journal in zip(parts, journals):
        if journal.already_done:
            continue
        start, stop = record["start"] + journal.next_row, record["stop"]
        while start < stop:
            end = min(stop, (start // block_items + 1) * block_items)
            pieces.append({"piece": len(pieces), "start": start,
                           "paths": [str(item.path) for item in dataset.items[start:end]]})
            start = end
    return pieces


def run_extract_ray(
    load_encoder: Callable,
    dataset,
    prompt_specs,
    out: str | Path,
    *,
    shards: int = 1,
    batch_size: int = 32,
    batches_per_call: int = 4,
    num_gpus: float = 0,
    concurrency: int = 1,
    long_mode: str = "first",
    dtype: str = "float32",
    resume: bool = False,
    overwrite: bool = False,
    command: list[str] | None = None,
    model=None,
    block_items: int = BLOCK_ITEMS,
) -> ExtractSummary:
    """Embed ``dataset`` on Ray into ``shards`` shard stores, then merge them into ``out``.

    Parameters
    ----------
    load_encoder : callable
        Picklable, no arguments: returns the encoder (called once in the driver, for the
        prompt sets and the provenance, and once in each actor).
    shards : int
        Shard stores written (each resumable: rerun with ``resume=True`` after a failure).
    batch_size : int
        Audio windows per forward pass.
    batches_per_call : int
        Forward passes per ``map_batches`` call of an actor.
    num_gpus, concurrency : float, int
        GPUs per encoder actor, and the number of actors.
    long_mode, dtype, resume, overwrite, command, block_items
        As :func:`~embedstore.extract.pipeline.run_extract`.
    model : Encoder, optional
        The encoder already loaded in the driver (else ``load_encoder()`` is called here).
    """
    ray = _ray()
    start_time = time.perf_counter()
    check_settings(batch_size=batch_size, long_mode=long_mode, dtype=dtype)
    check_block_items(block_items)
    if batches_per_call < 1 or concurrency < 1 or num_gpus < 0:
        raise InputError("batches per call and actors must be at least 1, GPUs per actor at least 0")
    prompt_specs = with_captions(dataset, prompt_specs)[0]  # as a plain run: the items' captions too
    check_run_inputs(dataset, prompt_specs)
    check_outputs([out], overwrite=overwrite or resume, command="extract")
    model = model if model is not None else load_encoder()
    provenance = extraction_provenance(model, dataset, batch_size=batch_size, long_mode=long_mode, command=command,
                                       block_items=block_items)
    provenance["extraction"]["engine"] = {"name": "ray", "version": ray.__version__, "actors": concurrency,
                                          "gpus_per_actor": num_gpus, "batches_per_call": batches_per_call}
    provenance["settings_fingerprint"] = settings_fingerprint(
        run_settings(model, dataset, items_table(dataset), prompt_specs, dtype=dtype, long_mode=long_mode,
                     block_items=block_items))
    parts = [select_shard(dataset, out, Shard(k, shards, "ray"), block_items) for k in range(shards)]
    with contextlib.ExitStack() as stack:
        journals = []
        for part, path, record in parts:
            stack.enter_context(writer_lock(path))
            shard_provenance = {**provenance, "shard": record}
            if resume:
                check_same_run(path, shard_provenance, overwrite=overwrite)
            header = dict(model=model.name, dataset=dataset.name, classes=list(dataset.classes),
                          provenance=shard_provenance)
            journals.append(Journal.open(path, header=header, items=items_table(part),
                                         spaces=dict(model.audio_dims), resume=resume, overwrite=overwrite))
        prompt_sets = embed_prompt_sets(model, prompt_specs, batch_size)
        pieces = block_pieces(dataset, parts, journals, block_items)
        if pieces:
            writers = [_BudgetedWriter(journal, model.audio_dims, JOURNAL_SECONDS, JOURNAL_ROWS)
                       for journal in journals]
            try:
                _stream(ray, pieces, [record["start"] for _, _, record in parts], writers, load_encoder, model,
                        batch_size=batch_size, long_mode=long_mode, batches_per_call=batches_per_call,
                        num_gpus=num_gpus, concurrency=concurrency, root=dataset.root, block_items=block_items)
            finally:
                for writer in writers:  # the rows done before an error stay for --resume
                    writer.flush()
        total = len(dataset.items)
        for (_, _, record), journal in zip(parts, journals):
            if not journal.already_done:  # a shard's caption sets hold its own items' captions
                rows = np.arange(record["start"], record["stop"])
                journal.finalize([captions_of_rows(ps, rows, total) for ps in prompt_sets], dtype=dtype)
    merge_shards([path for _, path, _ in parts], out, overwrite=overwrite or resume, command=command)
    with open_store(out) as st:
        return ExtractSummary(Path(out), st.n_items, list(st.failed), st.audio_spaces, st.prompt_sets,
                              0, time.perf_counter() - start_time)


def _stream(ray, pieces, shard_starts, writers, load_encoder, model, *, batch_size, long_mode, batches_per_call,
            num_gpus, concurrency, root, block_items) -> None:
    """Run the Ray pipeline over ``pieces``; pool, check and write its rows, in order, to the shards."""
    from ray.data import DataContext

    DataContext.get_current().execution_options.preserve_order = True
    packed = ray.data.from_items(pieces).flat_map(
        _DecodeAndPack(_frontend_args(model, long_mode), model.item_size, batch_size, block_items))
    embedded = packed.map_batches(_Embed, fn_constructor_args=(load_encoder, batch_size),
                                  batch_size=batches_per_call, batch_format="numpy",
                                  num_gpus=num_gpus, concurrency=concurrency)
    spaces, hint = list(model.audio_dims), _precision_hint(model)
    assembler, piece = None, None

    def write(chunk: Chunk | None) -> None:
        if chunk is None:
            return
        k = int(np.searchsorted(shard_starts, chunk.start, side="right")) - 1
        offset = shard_starts[k]
        writers[k].add(Chunk(chunk.start - offset, chunk.stop - offset, [r - offset for r in chunk.rows_ok],
                             chunk.vectors, [(r - offset, private_reason(why, root)) for r, why in chunk.failed]))

    for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
        for i in range(len(batch["piece"])):
            if batch["piece"][i] != piece:  # a block starts: its rows are pooled on their own
                write(assembler.rest() if assembler is not None else None)
                piece = batch["piece"][i]
                assembler = _RowAssembler(pieces[piece]["start"], hint)
            real = int(batch["real"][i])
            packed_batch = PackedBatch(None, real, [tuple(s) for s in json.loads(batch["segments"][i])],
                                       [tuple(f) for f in json.loads(batch["failed"][i])],
                                       int(batch["stop"][i]), bool(batch["boundary"][i]))
            write(assembler.add(packed_batch, {s: batch[f"vec:{s}"][i][:real] for s in spaces} if real else {}))
    write(assembler.rest() if assembler is not None else None)
