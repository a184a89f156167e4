"""Extraction on Ray Data: decoding in CPU tasks, the encoder in an actor pool, shards, merge.

The items become a Ray Dataset in dataset order (``preserve_order``); ``map`` decodes each
clip in a CPU task (the same decoder and failure reasons as the plain run); ``map_batches``
runs the encoder in a pool of actors (``concurrency`` actors, ``num_gpus`` each), packing a
batch's clips into fixed-size forward passes as the plain run does
(:func:`~embedstore.extract.pipeline.embed_clips`). The driver receives the rows in order
and appends them to one journal per shard (``OUT.shard-K-of-N.h5``, resumable as any run),
finalizes the shards and merges them into ``OUT`` with
:func:`~embedstore.store.merge.merge_shards`.

Ray is an optional extra (``pip install 'embedstore[ray]'``). The encoder is built in each
actor by ``load_encoder``, a picklable zero-argument callable (for example
``functools.partial(embedstore.models.load_model, "clap-music", device="cuda")``).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable

import numpy as np

from embedstore.errors import InputError
from embedstore.extract.fingerprint import settings_fingerprint
from embedstore.extract.feeding import BatchStager, decode_clip, groups_from_clips
from embedstore.extract.pipeline import (
    ExtractSummary,
    _frontend_args,
    check_run_inputs,
    check_same_run,
    check_settings,
    embed_clips,
    embed_prompt_sets,
    extraction_provenance,
    items_table,
    private_reason,
    run_settings,
    with_captions,
)
from embedstore.extract.shards import Shard, select_shard
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


class _Decode:
    """A CPU task's work: one item -> its windows (flattened) or the reason it failed."""

    def __init__(self, frontend: dict):
        self.frontend = frontend

    def __call__(self, item: dict) -> dict:
        row = int(item["row"])
        windows, reason = decode_clip(item["path"], self.frontend)
        windows = np.zeros((0, 0), np.float32) if windows is None else np.asarray(
            windows if isinstance(windows, np.ndarray) else list(windows), dtype=np.float32)
        return {"row": row, "count": len(windows), "samples": windows.reshape(-1), "reason": reason}


class _Embed:
    """An actor holding the encoder: a batch of decoded clips -> one vector per clip and space."""

    def __init__(self, load_encoder: Callable, batch_size: int):
        from embedstore.extract.pipeline import _seed_torch

        _seed_torch()
        self.model = load_encoder()
        self.batch_size = batch_size

    def __call__(self, batch: dict) -> dict:
        rows = np.asarray(batch["row"], dtype=np.int64)
        n = self.model.item_size
        clips = [(int(r), s.reshape(int(c), n) if c else None, str(why))
                 for r, c, s, why in zip(rows, batch["count"], batch["samples"], batch["reason"])]
        out = {"row": rows, "ok": np.zeros(len(rows), bool), "reason": np.array([c[2] for c in clips], dtype=object)}
        for space, dim in self.model.audio_dims.items():
            out[f"vec:{space}"] = np.zeros((len(rows), dim), np.float32)
        position = {int(r): i for i, r in enumerate(rows)}
        for run in _contiguous(clips):
            stager = BatchStager(self.batch_size, n, getattr(self.model, "device", "cpu"))
            for chunk in embed_clips(self.model.forward_audio, groups_from_clips(run), self.batch_size, run[0][0],
                                     stager=stager):
                for j, row in enumerate(chunk.rows_ok):
                    out["ok"][position[row]] = True
                    for space, vectors in chunk.vectors.items():
                        out[f"vec:{space}"][position[row]] = vectors[j]
                for row, reason in chunk.failed:
                    out["reason"][position[row]] = reason
        return out


def _contiguous(clips: list) -> list[list]:
    """Split clips into runs of consecutive rows (a resumed run skips finished rows)."""
    runs: list[list] = []
    for clip in clips:
        if runs and clip[0] == runs[-1][-1][0] + 1:
            runs[-1].append(clip)
        else:
            runs.append([clip])
    return runs


def run_extract_ray(
    load_encoder: Callable,
    dataset,
    prompt_specs,
    out: str | Path,
    *,
    shards: int = 1,
    batch_size: int = 32,
    clips_per_task: int = 64,
    num_gpus: float = 0,
    concurrency: int = 1,
    long_mode: str = "first",
    dtype: str = "float32",
    resume: bool = False,
    overwrite: bool = False,
    command: list[str] | None = None,
    model=None,
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
    clips_per_task : int
        Clips per ``map_batches`` batch sent to an actor.
    num_gpus, concurrency : float, int
        GPUs per encoder actor, and the number of actors.
    long_mode, dtype, resume, overwrite, command
        As :func:`~embedstore.extract.pipeline.run_extract`.
    model : Encoder, optional
        The encoder already loaded in the driver (else ``load_encoder()`` is called here).
    """
    ray = _ray()
    start_time = time.perf_counter()
    check_settings(batch_size=batch_size, long_mode=long_mode, dtype=dtype)
    if clips_per_task < 1 or concurrency < 1 or num_gpus < 0:
        raise InputError("clips per task and actors must be at least 1, GPUs per actor at least 0")
    prompt_specs = with_captions(dataset, prompt_specs)[0]  # as a plain run: the items' captions too
    check_run_inputs(dataset, prompt_specs)
    check_outputs([out], overwrite=overwrite or resume, command="extract")
    model = model if model is not None else load_encoder()
    provenance = extraction_provenance(model, dataset, batch_size=batch_size, long_mode=long_mode, command=command)
    provenance["extraction"]["engine"] = {"name": "ray", "version": ray.__version__, "actors": concurrency,
                                          "gpus_per_actor": num_gpus, "clips_per_task": clips_per_task}
    provenance["settings_fingerprint"] = settings_fingerprint(
        run_settings(model, dataset, items_table(dataset), prompt_specs, dtype=dtype, long_mode=long_mode))
    parts = [select_shard(dataset, out, Shard(k, shards, "ray")) for k in range(shards)]
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
        todo = [{"row": record["start"] + row, "path": str(dataset.items[record["start"] + row].path)}
                for (_, _, record), journal in zip(parts, journals) if not journal.already_done
                for row in range(journal.next_row, journal.n_items)]
        if todo:
            _stream(ray, todo, parts, journals, load_encoder, model, batch_size=batch_size, long_mode=long_mode,
                    clips_per_task=clips_per_task, num_gpus=num_gpus, concurrency=concurrency,
                    root=dataset.root)
        total = len(dataset.items)
        for (_, _, record), journal in zip(parts, journals):
            if not journal.already_done:  # a shard's caption sets hold its own items' captions
                rows = np.arange(record["start"], record["stop"])
                journal.finalize([captions_of_rows(ps, rows, total) for ps in prompt_sets], dtype=dtype)
    merge_shards([path for _, path, _ in parts], out, overwrite=overwrite or resume, command=command)
    with open_store(out) as st:
        return ExtractSummary(Path(out), st.n_items, list(st.failed), st.audio_spaces, st.prompt_sets,
                              0, time.perf_counter() - start_time)


def _stream(ray, todo, parts, journals, load_encoder, model, *, batch_size, long_mode, clips_per_task,
            num_gpus, concurrency, root) -> None:
    """Run the Ray pipeline over ``todo`` and append its rows, in order, to the shards' journals."""
    from ray.data import DataContext

    DataContext.get_current().execution_options.preserve_order = True
    items = ray.data.from_items(todo)
    decoded = items.map(_Decode(_frontend_args(model, long_mode)))
    embedded = decoded.map_batches(_Embed, fn_constructor_args=(load_encoder, batch_size),
                                   batch_size=clips_per_task, batch_format="numpy",
                                   num_gpus=num_gpus, concurrency=concurrency)
    starts = [record["start"] for _, _, record in parts]
    spaces = list(model.audio_dims)
    for batch in embedded.iter_batches(batch_size=None, batch_format="numpy"):
        rows = np.asarray(batch["row"], dtype=np.int64)
        shard_of = np.searchsorted(starts, rows, side="right") - 1
        for k in np.unique(shard_of):
            mine = np.flatnonzero(shard_of == k)
            local = rows[mine] - starts[k]
            ok = batch["ok"][mine]
            journals[k].append(int(local[0]), local[ok].tolist(),
                               {s: np.asarray(batch[f"vec:{s}"][mine][ok], np.float32) for s in spaces},
                               [(int(r), private_reason(str(why), root))
                                for r, why in zip(local[~ok], batch["reason"][mine][~ok])],
                               stop=int(local[-1]) + 1)
