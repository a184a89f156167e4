"""Feeding the encoder: decoded clips in, checked and pooled rows out.

Workers
    A torch ``DataLoader`` hands out *groups* of consecutive clips
    (:class:`ClipGroupReader`). A worker decodes a group's clips with
    :func:`embedstore.extract.audio.decode` and writes their windows into one ring of
    shared memory allocated once (:class:`SlabRing`), group ``g`` at slot ``g % count``, so
    the main process receives a row number, not a pickled copy of every window, and maps no
    new memory per group. A group too large for a slot, or whose slot the main process has
    not yet released, travels as its own torch tensor (shared memory too). A long clip comes
    back as a :class:`~embedstore.extract.audio.StreamedClip`, which the main process
    decodes one window at a time as it packs.
Batches
    Windows go, in dataset order, into batches of exactly ``batch_size`` windows, the last
    one zero-padded, so the encoder always sees one shape (:func:`pack_batches`). A batch
    never spans two *blocks* of ``block_items`` rows (rows ``0..G-1``, ``G..2G-1``, ...): a
    block's last batch is zero-padded too, so which windows share a batch, and where,
    depends only on the rows' positions, never on where a run or a shard starts. On the
    CPU a batch whose windows lie contiguous in one array (consecutive full groups of the
    ring) is that array's rows: no copy. Any other batch, and every batch on another
    device, is copied into a reusable host buffer (:class:`BatchStager`; page-locked when
    the device is CUDA). A buffer goes to the device with an asynchronous copy, the
    encoder's forward pass is queued behind it and the vectors are copied back
    asynchronously; the main process meanwhile packs the next batch, and waits for a
    batch's vectors only once the following batch is queued.
Checks
    Every window's vectors are checked as they come back: a non-finite value in any space,
    or a ``joint`` vector whose length is not 1 (within :data:`UNIT_TOLERANCE`), means the
    model overflowed (typically fp16, whose largest number is 65,504). Such a clip is never
    stored: it is recorded as failed with the reason, like an unreadable file.
Rows
    :func:`embed_clips` yields :class:`Chunk` s of contiguous rows, each ending where a
    batch ends on a clip boundary, so a resumed run can restart packing there and send the
    encoder exactly the batches an uninterrupted run would have sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from embedstore.errors import InputError

#: Clips per DataLoader task: one shared-memory tensor and one queue message per group.
CLIPS_PER_GROUP = 16
#: How far a joint vector's length may be from 1 before the clip is refused.
UNIT_TOLERANCE = 1e-3


@dataclass
class Chunk:
    """Rows ``start..stop-1`` ready for :meth:`Journal.append`."""

    start: int
    stop: int
    rows_ok: list[int] = field(default_factory=list)
    vectors: dict[str, list[np.ndarray]] = field(default_factory=dict)
    failed: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class ClipGroup:
    """Consecutive clips as a worker returns them.

    ``counts[i]`` windows of clip ``rows[i]`` follow each other in ``windows``; a clip
    that could not be decoded has count 0 and its reason in ``reasons[i]``. A worker that
    wrote the windows into the shared ring from row ``ring_row`` on sends ``windows=None``;
    the main process fills in ``windows`` and ``home`` (:func:`read_clip_groups`).
    """

    rows: list[int]
    counts: list[int]
    reasons: list[str]
    windows: object  # torch.Tensor (windows of the clips not streamed, window_samples) float32
    ring_row: int | None = None
    #: position in the group -> a sized iterable of the clip's windows, read one at a time in
    #: the main process (a long clip decoded window by window); its windows are not in ``windows``
    streams: dict[int, object] = field(default_factory=dict)
    #: ``(array, row)``: ``windows`` is ``array[row:row + n]``, so the windows of groups that
    #: sit at adjacent rows of one array (the ring) can make one batch without a copy
    home: tuple[np.ndarray, int] | None = None


class SlabRing:
    """One shared-memory tensor that workers decode groups into and the main process reads.

    Group ``g`` owns rows ``(g % count) * group_size ..`` of the ring, so consecutive full
    groups lie next to each other and a batch of their windows can be handed to a CPU
    encoder as a view of the ring, with no copy. Slots are reused under an explicit
    protocol, whatever the DataLoader prefetches: the main process publishes how many
    groups it has released (:meth:`release_before`), and a worker writes group ``g`` into
    the ring only once group ``g - count`` is released (:meth:`is_free`); otherwise (the
    reader is held up by a long run of failed clips) the group travels as its own tensor.
    A worker never waits, so the reader can never wait for a worker that waits for it.
    """

    def __init__(self, count: int, group_size: int, window_samples: int):
        import torch

        self.count, self.group_size = count, group_size
        # created in shared memory at once (share_memory_() would copy a private buffer there)
        storage = torch.UntypedStorage._new_shared(count * group_size * window_samples * 4)
        self.tensor = torch.empty(0, dtype=torch.float32).set_(storage).view(count * group_size, window_samples)
        self.released = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._array = None

    @classmethod
    def for_loader(cls, workers: int, prefetch: int, group_size: int, window_samples: int,
                   batch_size: int):
        """A ring for a DataLoader feeding batches of ``batch_size``, or None when /dev/shm
        has no room for it (a worker writing past a full /dev/shm dies of SIGBUS)."""
        import os

        per_batch = -(-batch_size // group_size)
        count = cls.held_groups(batch_size, group_size) + 1 + workers * prefetch
        if batch_size % group_size == 0:  # a whole number of batches: aligned batches never wrap
            count = -(-count // per_batch) * per_batch
        needed = count * group_size * window_samples * 4
        try:
            stats = os.statvfs("/dev/shm")
            if stats.f_bavail * stats.f_frsize < 2 * needed:
                return None
        except OSError:  # no /dev/shm (macOS): torch's own shared memory still works
            pass
        return cls(count, group_size, window_samples)

    @staticmethod
    def held_groups(batch_size: int, group_size: int) -> int:
        """How many of the latest groups with windows in the ring the packer may still
        read: a batch being filled is a view of at most this many consecutive groups."""
        return -(-batch_size // group_size) + 1

    def __getstate__(self):  # to a spawned worker: the shared tensors, not a copy of the array
        return {**self.__dict__, "_array": None}

    @property
    def array(self) -> np.ndarray:
        """The ring as one numpy array (the same object every time: views are told apart by it)."""
        if self._array is None:
            self._array = self.tensor.numpy()
        return self._array

    def first_row(self, group: int) -> int:
        return (group % self.count) * self.group_size

    def is_free(self, group: int) -> bool:
        """In a worker: whether the slot of ``group`` may be written."""
        return int(self.released.numpy()[0]) > group - self.count

    def release_before(self, group: int) -> None:
        """In the main process: groups before ``group`` will not be read again."""
        released = self.released.numpy()
        if group > released[0]:
            released[0] = group


@dataclass
class PackedBatch:
    """One batch as packed: its host buffer, the clip segments in it, the rows read so far."""

    host: object | None  # torch.Tensor (batch_size, n), rows [0, real) filled; None if real == 0
    real: int
    segments: list[tuple[int, int, bool]]  # (row, windows in this batch, the row's last part)
    failed: list[tuple[int, str]]
    stop: int  # one past the last row read while this batch filled
    boundary: bool  # the batch ends where a clip ends


def groups_from_clips(clips: Iterable[tuple[int, np.ndarray | None, str]]) -> Iterator[ClipGroup]:
    """Per-clip ``(row, windows or None, reason)`` as groups of one clip each."""
    import torch

    for row, windows, reason in clips:
        if windows is None or len(windows) == 0:
            yield ClipGroup([row], [0], [reason or "no audio windows"], None)
        elif not isinstance(windows, (np.ndarray, torch.Tensor)):
            yield ClipGroup([row], [len(windows)], [""], None, streams={0: windows})
        else:
            tensor = windows if isinstance(windows, torch.Tensor) else torch.from_numpy(
                np.ascontiguousarray(windows, dtype=np.float32))
            yield ClipGroup([row], [len(windows)], [""], tensor)


class ClipGroupReader:
    """Map-style dataset for a torch DataLoader: index g -> the :class:`ClipGroup` of clips
    ``g * group_size ..`` (from ``first_row``).

    Decoding errors (unreadable, empty, non-finite, or any exception the decoder or
    resampler raises on one file) give count 0 and their reason, so one bad clip never
    stops the run.
    """

    def __init__(self, paths: list[str], first_row: int, frontend: dict,
                 group_size: int = CLIPS_PER_GROUP, ring: SlabRing | None = None):
        self.paths = paths
        self.first_row = first_row
        self.frontend = frontend
        self.group_size = group_size
        self.ring = ring

    def __len__(self) -> int:
        return -(-len(self.paths) // self.group_size)

    def __getitem__(self, group: int) -> ClipGroup:
        import torch

        start = group * self.group_size
        indices = range(start, min(start + self.group_size, len(self.paths)))
        arrays, counts, reasons, streams = [], [], [], {}
        for position, index in enumerate(indices):
            windows, reason = self._decode(index)
            counts.append(0 if windows is None else len(windows))
            reasons.append(reason)
            if isinstance(windows, np.ndarray):
                arrays.append(windows)
            elif windows is not None:  # a sized iterable, decoded by whoever reads it
                streams[position] = windows
        rows = [self.first_row + i for i in indices]
        total = sum(len(a) for a in arrays)
        if self.ring is not None and 0 < total <= self.ring.group_size and self.ring.is_free(group):
            ring_row = self.ring.first_row(group)
            np.concatenate(arrays, out=self.ring.array[ring_row:ring_row + total])
            return ClipGroup(rows, counts, reasons, None, ring_row, streams)
        # One tensor per group: torch moves it to shared memory on its way to the main process.
        stacked = torch.from_numpy(np.concatenate(arrays)) if arrays else None
        return ClipGroup(rows, counts, reasons, stacked, None, streams)

    def _decode(self, index: int) -> tuple[object, str]:
        return decode_clip(self.paths[index], self.frontend)


def decode_clip(path: str, frontend: dict) -> tuple[object, str]:
    """One clip's windows (an array, or a sized iterable for a long clip) and ``""``, or
    None and the reason it cannot be used: one bad file never stops a run."""
    from embedstore.extract.audio import decode

    try:
        windows = decode(path, **frontend)
    except InputError as exc:
        return None, str(exc)
    except Exception as exc:  # a decoder or resampler failing on one odd file
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return None, f"cannot use audio {path}: {type(exc).__name__} {detail}".rstrip()
    if len(windows) == 0:
        return None, "no audio windows"
    if not isinstance(windows, np.ndarray):
        return windows, ""  # a long clip that decodes window by window where it is read
    return np.ascontiguousarray(windows, dtype=np.float32), ""


def _as_is(sample):
    """DataLoader collate function that leaves a worker's result alone."""
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


def read_clip_groups(paths: list[str], first_row: int, frontend: dict, *, workers: int,
                     window_samples: int, batch_size: int, group_size: int = CLIPS_PER_GROUP,
                     prefetch: int = 2) -> Iterator[ClipGroup]:
    """:class:`ClipGroup` s of ``paths`` in order, each with its windows; ``workers``
    processes decode ahead (0: decode here, when asked). The workers start at once, so
    they decode while the caller does other work (the text tower).

    The groups are meant for :func:`pack_batches` with this ``batch_size``: a group's
    windows stay valid while the packer may still read them (a batch in the making, and the
    batch last yielded until the packer is resumed), and no longer.
    """
    from torch.utils.data import DataLoader

    ring = (SlabRing.for_loader(workers, prefetch, group_size, window_samples, batch_size)
            if workers else None)
    reader = ClipGroupReader(paths, first_row, frontend, group_size, ring)
    loader = DataLoader(reader, batch_size=None, shuffle=False, num_workers=workers,
                        collate_fn=_as_is, prefetch_factor=prefetch if workers else None,
                        worker_init_fn=_die_with_parent if workers else None)
    held = SlabRing.held_groups(batch_size, group_size)
    return _with_windows(iter(loader), ring, held)  # iter() starts the workers decoding now


def _with_windows(groups, ring: SlabRing | None, held: int) -> Iterator[ClipGroup]:
    """The groups with their windows filled in from the ring.

    Each time a group is asked for, the slots before the latest ``held`` groups that had
    windows are released: a batch being filled is a view of consecutive ring groups among
    those (windows from anywhere else end a view; groups without windows, a run of failed
    clips, may hold it open but are not part of it).
    """
    from collections import deque

    latest = deque(maxlen=held)  # indices of the latest groups with windows
    asked = 0
    while True:
        if ring is not None:
            ring.release_before(latest[0] if latest else asked)
        group = next(groups, None)
        if group is None:
            return
        if any(group.counts):
            latest.append(asked)
        if group.ring_row is not None:
            streamed = sum(group.counts[i] for i in group.streams)
            row = group.ring_row
            group.windows = ring.tensor[row:row + sum(group.counts) - streamed]
            group.home = (ring.array, row)
        asked += 1
        yield group


class BatchStager:
    """Reusable host buffers for batches and their trip to the device.

    On CUDA the buffers are page-locked and the copy is asynchronous; two buffers
    alternate, which is safe with one batch in flight (a buffer is refilled only after the
    batch that used it two steps earlier has been waited for). The buffers are allocated
    when first needed: on the CPU a batch whose windows lie contiguous in one array (the
    workers' shared ring) is that array's rows, with no copy (``views``).
    """

    def __init__(self, batch_size: int, window_samples: int, device, slots: int = 2,
                 views: bool | None = None):
        import torch

        self.device = torch.device(device)
        self.pinned = self.device.type == "cuda"
        self.shape = (batch_size, window_samples)
        self.slots = slots
        self.buffers: list = []
        # only where the encoder reads the batch synchronously in this process's memory
        self.views = self.device.type == "cpu" if views is None else views
        # host->device copies run on their own stream, beside the previous batch's compute
        self.copy_stream = torch.cuda.Stream(self.device) if self.pinned else None
        self._next = 0

    def start(self) -> _BatchFill:
        """A new batch to fill."""
        return _BatchFill(self)

    def host_buffer(self):
        """The next buffer, as ``(tensor, numpy view of it)``."""
        import torch

        if len(self.buffers) < self.slots:
            self.buffers.append(torch.empty(self.shape, dtype=torch.float32, pin_memory=self.pinned))
        buffer = self.buffers[self._next]
        self._next = (self._next + 1) % self.slots
        return buffer, buffer.numpy()

    def to_device(self, host):
        """The batch on the device; on CUDA queued on the copy stream, which the compute
        stream waits for (the host does not)."""
        import torch

        if self.device.type == "cpu":
            return host
        if self.copy_stream is None:
            return host.to(self.device)
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self.copy_stream):
            on_device = host.to(self.device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(self.copy_stream)
        compute.wait_event(copied)
        on_device.record_stream(compute)  # allocated on the copy stream, used on compute
        return on_device


#: Alignment (bytes) a batch view must start at: what torch's CPU allocator gives the staging
#: buffers, so an encoder's vectorised kernels see the same layout either way.
VIEW_ALIGNMENT = 64


class _BatchFill:
    """One batch being filled, window rows ``[0, fill)`` in order.

    While every window put so far continues the previous one in the same array, nothing is
    copied; once one does not (another array, a gap left by a failed clip, the end of the
    ring), the rows so far are copied into a staging buffer and the rest follow them there.
    """

    def __init__(self, stager: BatchStager):
        self.stager = stager
        self.base: np.ndarray | None = None  # the array the rows so far lie in, from row ``row``
        self.row = 0
        self.host = self.array = None  # the staging buffer, once the rows are copied

    def put(self, fill: int, windows: np.ndarray, base: np.ndarray | None, row: int) -> None:
        """Windows for rows ``fill..``; they are ``base[row:row + len(windows)]`` (base None:
        an array of their own)."""
        if self.array is None:
            if base is not None and self.stager.views:
                if fill == 0:
                    self.base, self.row = base, row
                    return
                if base is self.base and row == self.row + fill:
                    return
            self._to_staging(fill)
        np.copyto(self.array[fill:fill + len(windows)], windows)

    def finish(self, fill: int):
        """The batch as a ``(batch_size, n)`` tensor; rows past ``fill`` are zeros."""
        import torch

        if self.array is None:
            if fill == self.stager.shape[0] and self.base is not None:
                view = self.base[self.row:self.row + fill]
                if (view.dtype == np.float32 and view.flags.c_contiguous and view.flags.writeable
                        and view.ctypes.data % VIEW_ALIGNMENT == 0):
                    return torch.from_numpy(view)
            self._to_staging(fill)
        if fill < len(self.array):
            self.array[fill:] = 0.0
        return self.host

    def _to_staging(self, fill: int) -> None:
        self.host, self.array = self.stager.host_buffer()
        if fill:
            np.copyto(self.array[:fill], self.base[self.row:self.row + fill])
        self.base = None


def pack_batches(groups: Iterable[ClipGroup], stager: BatchStager, batch_size: int,
                 start_row: int = 0, block_items: int | None = None) -> Iterator[PackedBatch]:
    """The groups' windows, in row order, in batches of exactly ``batch_size``.

    A batch's host tensor is one of ``stager``'s buffers (refilled two batches later) or,
    on the CPU when its windows lie contiguous in one array, a view of that array, valid
    until the generator is resumed. With ``block_items``, a batch ends (zero-padded) before
    each row that is a multiple of it: rows must be counted from a block boundary (a shard
    starts on one).
    """
    batch, fill, segments, failed = None, 0, [], []
    next_row = start_row
    for group in groups:
        offset = 0
        # numpy copies: one memcpy per run of windows (torch's copy_ spreads a copy over
        # its thread pool, which costs far more than it saves on a busy host)
        source = group.windows.numpy() if group.windows is not None else None
        home, home_row = group.home if group.home is not None else (source, 0)
        for position, (row, count, reason) in enumerate(zip(group.rows, group.counts, group.reasons)):
            if row != next_row:
                raise InputError(f"clips out of order: got row {row}, expected {next_row}")
            if fill and block_items and row % block_items == 0:  # a block starts: close its batch
                yield PackedBatch(batch.finish(fill), fill, segments, failed, row, boundary=True)
                batch, fill, segments, failed = None, 0, [], []
            next_row = row + 1
            if count == 0:
                failed.append((row, reason or "no audio windows"))
                continue
            stream = group.streams.get(position)
            runs = (_one_by_one(stream, count) if stream is not None
                    else [source[offset:offset + count]])
            base, base_row = (None, 0) if stream is not None else (home, home_row + offset)
            if stream is None:
                offset += count
            left = count
            for run in runs:
                done = 0
                while done < len(run):
                    if batch is None:
                        batch = stager.start()
                    take = min(batch_size - fill, len(run) - done)
                    batch.put(fill, run[done:done + take], base, base_row + done)
                    done += take
                    fill += take
                    left -= take
                    if segments and segments[-1][0] == row:  # the same clip, same batch
                        segments[-1] = (row, segments[-1][1] + take, left == 0)
                    else:
                        segments.append((row, take, left == 0))
                    if fill == batch_size:
                        yield PackedBatch(batch.finish(fill), fill, segments, failed, next_row,
                                          boundary=left == 0)
                        batch, fill, segments, failed = None, 0, [], []
    if fill:
        yield PackedBatch(batch.finish(fill), fill, segments, failed, next_row, boundary=True)
    elif failed:
        yield PackedBatch(None, 0, [], failed, next_row, boundary=True)


def _one_by_one(stream, count: int):
    """A streamed clip's windows as runs of one window, checking it gives ``count`` of them."""
    given = 0
    for window in stream:
        given += 1
        if given > count:
            break
        yield np.asarray(window, dtype=np.float32)[None]
    if given != count:
        raise InputError(f"a streamed clip gave {given} windows, not the {count} it announced")


@dataclass
class _Flight:
    """A batch whose forward pass and copy back are queued on the device."""

    batch: PackedBatch
    outputs: dict | None  # space -> tensor: host (after .wait) or on the device
    event: object | None  # a CUDA event recorded after the copy back

    def wait(self) -> dict[str, np.ndarray]:
        if self.event is not None:
            self.event.synchronize()
        return {space: vec.cpu().numpy() for space, vec in (self.outputs or {}).items()}


def _launch(forward, stager: BatchStager, batch: PackedBatch) -> _Flight:
    import torch

    if batch.real == 0:
        return _Flight(batch, None, None)
    outputs = forward(stager.to_device(batch.host))
    outputs = {space: vec[:batch.real] for space, vec in outputs.items()}
    if stager.views:  # vectors that alias the input must outlive it (a ring slot is reused)
        memory = batch.host.untyped_storage().data_ptr()
        outputs = {space: vec.clone() if vec.untyped_storage().data_ptr() == memory else vec
                   for space, vec in outputs.items()}
    event = None
    if stager.device.type == "cuda":
        # non_blocking device->host copies land in page-locked memory; the event says when
        outputs = {space: vec.to("cpu", non_blocking=True) for space, vec in outputs.items()}
        event = torch.cuda.Event()
        event.record()
    return _Flight(batch, outputs, event)


def window_problems(vectors: dict[str, np.ndarray], hint: str = "") -> list[str | None]:
    """Per window, why its vectors must not be stored (None when they are fine).

    Non-finite values in any space, or a ``joint`` vector whose length is not 1.
    """
    n = len(next(iter(vectors.values()))) if vectors else 0
    problems: list[str | None] = [None] * n
    for space, vec in sorted(vectors.items()):
        finite = np.isfinite(vec).all(axis=1)
        for i in np.flatnonzero(~finite):
            problems[i] = problems[i] or f"the model gave a non-finite {space} vector{hint}"
        if space == "joint":
            norms = np.linalg.norm(np.where(np.isfinite(vec), vec, 0.0), axis=1)
            for i in np.flatnonzero(finite & (np.abs(norms - 1.0) > UNIT_TOLERANCE)):
                problems[i] = problems[i] or (f"the model gave a joint vector of length "
                                              f"{norms[i]:.3g}, not 1{hint}")
    return problems


class _RowAssembler:
    """Collects window vectors per row as batches come back and builds the chunks."""

    def __init__(self, start_row: int, hint: str):
        self.chunk = Chunk(start_row, start_row)
        self.parts: dict[int, list[dict[str, np.ndarray]]] = {}
        self.problem: dict[int, str] = {}
        self.hint = hint

    def add(self, batch: PackedBatch, vectors: dict[str, np.ndarray]) -> Chunk | None:
        chunk = self.chunk
        chunk.failed.extend(batch.failed)
        problems = window_problems(vectors, self.hint) if vectors else []
        offset = 0
        for row, count, last in batch.segments:
            part = {space: vec[offset:offset + count] for space, vec in vectors.items()}
            bad = next((p for p in problems[offset:offset + count] if p), None)
            offset += count
            if bad and row not in self.problem:
                self.problem[row] = bad
            self.parts.setdefault(row, []).append(part)
            if last:
                self._finish_row(row)
        chunk.stop = batch.stop
        if not batch.boundary:
            return None
        self.chunk = Chunk(chunk.stop, chunk.stop)
        return chunk

    def _finish_row(self, row: int) -> None:
        parts = self.parts.pop(row)
        problem = self.problem.pop(row, None)
        if problem:
            self.chunk.failed.append((row, problem))
            return
        self.chunk.rows_ok.append(row)
        for space, vec in pool_parts(parts).items():
            self.chunk.vectors.setdefault(space, []).append(vec)

    def rest(self) -> Chunk | None:
        return self.chunk if self.chunk.stop > self.chunk.start else None


def embed_clips(
    forward: Callable,
    groups: Iterable[ClipGroup],
    batch_size: int,
    start_row: int = 0,
    *,
    stager: BatchStager | None = None,
    window_samples: int | None = None,
    hint: str = "",
    on_out_of_memory: Callable[[BaseException], BaseException] | None = None,
    block_items: int | None = None,
) -> Iterator[Chunk]:
    """Pack clips' windows into fixed-size batches, run them, check and pool the vectors.

    Parameters
    ----------
    forward : callable
        ``(batch_size, n) float32 tensor on the stager's device -> {space: (batch_size, d)
        float32 tensor}``, one forward pass (``Encoder.forward_audio``).
    groups : iterable of ClipGroup
        In row order from ``start_row`` (:func:`groups_from_clips` makes them from
        per-clip tuples).
    batch_size : int
        Windows per forward pass; the last pass is zero-padded to this size.
    stager : BatchStager, optional
        Host buffers and the device; default: CPU buffers (``window_samples`` needed).
    hint : str
        Appended to the reason of a clip whose vectors fail the checks.
    on_out_of_memory : callable, optional
        Maps torch's out-of-memory error to the error to raise; the batches before the
        failing one are still yielded first.
    block_items : int, optional
        No batch spans two blocks of this many rows (:func:`pack_batches`).

    Yields
    ------
    Chunk
        Contiguous rows, each time a batch ends on a clip boundary (and at the end).
        A clip's vector is the mean of its windows' vectors; ``joint`` means are
        re-normalised to unit length.
    """
    from embedstore.models.device import is_out_of_memory

    groups = iter(groups)
    if stager is None:
        first = next(groups, None)
        if first is None:
            return
        n = window_samples or (first.windows.shape[1] if first.windows is not None else 1)
        stager = BatchStager(batch_size, n, "cpu")
        groups = _chain(first, groups)
    assembler = _RowAssembler(start_row, hint)
    pending: _Flight | None = None
    for batch in pack_batches(groups, stager, batch_size, start_row, block_items):
        try:
            flight = _launch(forward, stager, batch)
        except Exception as exc:
            if on_out_of_memory is None or not is_out_of_memory(exc):
                raise
            if pending is not None:  # keep the rows that did fit
                chunk = assembler.add(pending.batch, pending.wait())
                if chunk is not None:
                    yield chunk
            raise on_out_of_memory(exc) from None
        if pending is not None:
            chunk = assembler.add(pending.batch, pending.wait())
            if chunk is not None:
                yield chunk
        pending = flight
    if pending is not None:
        chunk = assembler.add(pending.batch, pending.wait())
        if chunk is not None:
            yield chunk
    rest = assembler.rest()
    if rest is not None:
        yield rest


def _chain(first, rest):
    yield first
    yield from rest


def pool_parts(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One clip's vector per space from its windows' vectors, given as ``(k_i, d)`` parts."""
    if len(parts) == 1 and len(next(iter(parts[0].values()))) == 1:
        return {space: np.array(vec[0], dtype=np.float32) for space, vec in parts[0].items()}
    return pool_windows([{space: vec[i] for space, vec in part.items()}
                         for part in parts for i in range(len(next(iter(part.values()))))])


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
