"""Which part of a dataset this process embeds: ``--shard K/N``, or the cluster's variables.

Shard ``K`` of ``N`` (``K`` counted from 0) takes the contiguous items
``n*K//N .. n*(K+1)//N - 1`` in dataset order: sizes differ by at most one, every item is
in exactly one shard, and no item is repeated (torch's ``DistributedSampler`` pads by
repeating items, so it is not used). Without ``--shard``, the shard comes from

- a SLURM job array: ``SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN`` of ``SLURM_ARRAY_TASK_COUNT``
  (an array with step 1, e.g. ``--array=0-7``);
- torchrun (or any launcher that sets them): ``RANK`` of ``WORLD_SIZE``; ``LOCAL_RANK`` picks
  the GPU (``cuda:<LOCAL_RANK>``) when the device is ``cuda`` or ``auto``.

A count of 1 from the environment means no sharding: one plain store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from embedstore.errors import InputError


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``, and where that was decided (for the run's message)."""

    index: int
    count: int
    source: str = "--shard"

    def range(self, n_items: int) -> tuple[int, int]:
        """``(start, stop)``: this shard's contiguous items among ``n_items``."""
        return n_items * self.index // self.count, n_items * (self.index + 1) // self.count


def parse_shard(text: str) -> Shard:
    """``"K/N"`` -> Shard(K, N); K counts from 0."""
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise InputError(f"--shard takes K/N (shard K of N, K from 0), got {text!r}") from None
    return _checked(index, count, "--shard")


def shard_from_env(environ: Mapping[str, str] | None = None) -> Shard | None:
    """The shard a SLURM job array or torchrun gives this process, or None."""
    env = os.environ if environ is None else environ
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        names = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT")
        task, first, count = (_int(env, name, default=0) for name in names)
        return _checked(task - first, count, "SLURM job array") if count > 1 else None
    if "WORLD_SIZE" in env:
        count = _int(env, "WORLD_SIZE")
        return _checked(_int(env, "RANK", default=0), count, "RANK/WORLD_SIZE") if count > 1 else None
    return None


def resolve_shard(option: str | None, environ: Mapping[str, str] | None = None) -> Shard | None:
    """``--shard`` when given, else the environment's shard, else None (one plain store)."""
    return parse_shard(option) if option else shard_from_env(environ)


def local_device(device: str, environ: Mapping[str, str] | None = None,
                 cuda_available: bool | None = None) -> str:
    """``cuda:<LOCAL_RANK>`` for a ``cuda`` device, or an ``auto`` one on a machine with
    CUDA, under a launcher that sets ``LOCAL_RANK``; any other device (cpu, cuda:1, mps, and
    ``auto`` without CUDA) as given."""
    env = os.environ if environ is None else environ
    if "LOCAL_RANK" not in env or device not in ("cuda", "auto"):
        return device
    if device == "auto":
        if cuda_available is None:
            import torch

            cuda_available = torch.cuda.is_available()
        if not cuda_available:
            return device
    return f"cuda:{_int(env, 'LOCAL_RANK')}"


def _checked(index: int, count: int, source: str) -> Shard:
    if count < 1 or not 0 <= index < count:
        raise InputError(f"{source}: shard {index} of {count} does not exist (need 0 <= K < N)")
    return Shard(index, count, source)


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = env.get(name)
    if value is None and default is not None:
        return default
    try:
        return int(str(value).strip())
    except ValueError:
        raise InputError(f"environment variable {name}={value!r} is not an integer") from None


def select_shard(dataset, out, shard: Shard):
    """This shard's part of a run: the dataset cut to its items, its store, its record.

    Returns
    -------
    (Dataset, Path, dict)
        The dataset holding items ``start..stop-1`` only, ``OUT.shard-K-of-N.h5`` beside
        ``out``, and the ``shard`` record its provenance keeps (what ``embedstore merge``
        checks).
    """
    from dataclasses import replace

    from embedstore.store.merge import shard_path

    total = len(dataset.items)
    if shard.count > total:
        raise InputError(f"{shard.count} shards for {total} items: every shard needs at least one item")
    start, stop = shard.range(total)
    record = {"index": shard.index, "count": shard.count, "start": start, "stop": stop, "items_total": total}
    return replace(dataset, items=dataset.items[start:stop]), shard_path(out, shard.index, shard.count), record
