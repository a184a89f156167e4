"""Which part of a dataset this process embeds: ``--shard K/N``, or the cluster's variables.

The items are cut, by their position in dataset order, into *blocks* of ``G`` items
(``--block-items``, default :data:`BLOCK_ITEMS`; the last block may be shorter). An audio
batch never spans two blocks (:func:`embedstore.extract.feeding.pack_batches` zero-pads a
block's last batch), and shard ``K`` of ``N`` (``K`` counted from 0) takes the contiguous
blocks ``b*K//N .. b*(K+1)//N - 1`` of the ``b`` blocks. So every window sits at the same
position of the same batch, among the same batch mates, whatever the sharding: shards,
merged, equal a single run bit for bit (a row's result can depend on its position in a
batch: BLAS treats the rows of a batch in panels). Shard sizes differ by at most one
block; every item is in exactly one shard, and no item is repeated (torch's
``DistributedSampler`` pads by repeating items, so it is not used). Without ``--shard``,
the shard comes from

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

#: Items per block: no batch spans two blocks, shards are cut on block boundaries. A block
#: costs at most one padded batch, so the extra forward passes are at most batch_size / G
#: of a run (3% at batch size 32; none when every clip is one window, nothing fails and G
#: is a multiple of the batch size); shards differ by at most G items.
BLOCK_ITEMS = 1024


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``, and where that was decided (for the run's message)."""

    index: int
    count: int
    source: str = "--shard"

    def range(self, n_items: int, block_items: int = 1) -> tuple[int, int]:
        """``(start, stop)``: this shard's contiguous items among ``n_items``, whole blocks
        of ``block_items`` (the last block of the dataset may be shorter)."""
        blocks = -(-n_items // block_items)
        first, last = blocks * self.index // self.count, blocks * (self.index + 1) // self.count
        return min(first * block_items, n_items), min(last * block_items, n_items)


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


def check_block_items(block_items: int) -> None:
    """Refuse a block size below one item."""
    if block_items < 1:
        raise InputError(f"--block-items must be at least 1, got {block_items}")


def select_shard(dataset, out, shard: Shard, block_items: int = BLOCK_ITEMS):
    """This shard's part of a run: the dataset cut to its blocks, its store, its record.

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
    blocks = -(-total // block_items)
    if shard.count > blocks:
        raise InputError(f"{shard.count} shards for {total} items in {blocks} block(s) of {block_items}: "
                         f"every shard needs at least one block; give --block-items {max(1, total // shard.count)} "
                         "or less (the same for every shard)")
    start, stop = shard.range(total, block_items)
    record = {"index": shard.index, "count": shard.count, "start": start, "stop": stop, "items_total": total,
              "block_items": block_items}
    return replace(dataset, items=dataset.items[start:stop]), shard_path(out, shard.index, shard.count), record
