"""Feeding the encoder without copies: batches as views of the workers' shared ring, the
ring's slot protocol, and the same batches and vectors whichever way a batch is made."""

import numpy as np
import pytest

pytest.importorskip("torch")

import soundfile as sf  # noqa: E402
import torch  # noqa: E402

from embedstore.extract.feeding import (  # noqa: E402
    BatchStager,
    ClipGroup,
    SlabRing,
    embed_clips,
    pack_batches,
)

N = 16  # samples per window: 64-byte rows, so every batch view is aligned as staging buffers are


def new_ring(windows):
    return torch.zeros(windows, N).numpy()  # torch's allocator: 64-byte aligned


def ring_groups(ring_array, group_counts, group_size, failed_every=0, failed=()):
    """Groups as a ring reader hands them out: group g's windows at rows (g % slots) * G of
    ``ring_array``, written when the group is asked for. Every ``failed_every``-th clip
    fails, and the clips of rows ``failed``."""
    slots = len(ring_array) // group_size
    row = 0
    for g, clips in enumerate(group_counts):
        rows, counts, reasons = [], [], []
        for _ in range(clips):
            bad = (failed_every and row % failed_every == failed_every - 1) or row in failed
            rows.append(row)
            counts.append(0 if bad else 1)
            reasons.append("broken" if bad else "")
            row += 1
        first = (g % slots) * group_size
        total = sum(counts)
        ring_array[first:first + total] = window_values(rows, counts)
        yield ClipGroup(rows, counts, reasons, torch.from_numpy(ring_array[first:first + total]),
                        first, home=(ring_array, first))


def window_values(rows, counts):
    return np.concatenate([np.full((c, N), r + 1, np.float32) for r, c in zip(rows, counts) if c]
                          or [np.zeros((0, N), np.float32)])


def packed(groups, batch_size, views):
    stager = BatchStager(batch_size, N, "cpu", views=views)
    out = [(b.host.numpy().copy(), b.real, list(b.segments), list(b.failed), b.stop, b.boundary,
            b.host.numpy()) for b in pack_batches(groups, stager, batch_size)]
    return out, stager


def test_a_batch_contiguous_in_the_ring_is_a_view_of_it_with_no_staging_buffer():
    ring = new_ring(16)
    batches, stager = packed(ring_groups(ring, [4, 4, 4, 4], 4), batch_size=8, views=True)
    assert len(batches) == 2
    for content, real, *_, host in batches:
        assert real == 8 and np.shares_memory(host, ring)
    assert stager.buffers == []  # nothing was copied
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches])[:, 0], np.arange(1, 17))


@pytest.mark.parametrize("batch_size", [1, 3, 4, 5, 8, 13])
@pytest.mark.parametrize("failed_every", [0, 3, 7])
def test_views_and_staging_give_the_same_batches(batch_size, failed_every):
    """Gaps left by failed clips, a ring that wraps, a last batch padded: the content and the
    bookkeeping of every batch are what copying every window gives."""
    counts = [4, 4, 3, 4, 4, 4, 2, 4, 4, 4, 4]
    results = {}
    slots = SlabRing.held_groups(batch_size, 4) + 1  # the smallest ring for this batch size
    for views in (True, False):
        ring = new_ring(slots * 4)
        batches, _ = packed(ring_groups(ring, counts, 4, failed_every), batch_size, views)
        results[views] = [b[:-1] for b in batches]
    assert len(results[True]) == len(results[False])
    for with_views, copied in zip(results[True], results[False]):
        np.testing.assert_array_equal(with_views[0], copied[0])
        assert with_views[1:] == copied[1:]


def test_a_gap_or_the_ring_end_makes_a_staged_copy():
    ring = new_ring(8)
    batches, stager = packed(ring_groups(ring, [4, 4, 4], 4, failed_every=6), batch_size=4, views=True)
    shared = [np.shares_memory(b[-1], ring) for b in batches]
    assert shared[0] and not all(shared)  # the batch across the gap is staged
    assert len(stager.buffers) >= 1


def eager_workers(ring, group_counts, failed):
    """What DataLoader workers hand the reader, written as early as the ring protocol
    allows: every slot the reader has released is overwritten (NaN) at once, and a group
    whose slot is not yet free travels as its own tensor."""
    occupant = {}
    row = 0
    for g, clips in enumerate(group_counts):
        for slot, group in list(occupant.items()):
            if group < int(ring.released[0]):  # released: a worker may reuse it now
                ring.array[slot * ring.group_size:(slot + 1) * ring.group_size] = np.nan
                del occupant[slot]
        rows = list(range(row, row + clips))
        row += clips
        counts = [0 if r in failed else 1 for r in rows]
        reasons = ["broken" if r in failed else "" for r in rows]
        windows = window_values(rows, counts)
        if 0 < len(windows) and ring.is_free(g):
            first = ring.first_row(g)
            ring.array[first:first + len(windows)] = windows
            occupant[g % ring.count] = g
            yield ClipGroup(rows, counts, reasons, None, first)
        else:
            yield ClipGroup(rows, counts, reasons, torch.from_numpy(windows) if len(windows) else None)


@pytest.mark.parametrize("batch_size, failed", [(6, range(10, 60, 11)), (4, range(4, 24)), (5, range(7, 30)),
                                                (8, range(9, 45)), (3, [0, 1, 2, 3, 40])])
def test_the_packer_never_reads_a_group_the_reader_has_released(batch_size, failed):
    """Workers that overwrite each slot (NaN) as soon as the reader releases it, a ring of
    the smallest size, and a model whose vectors are views of its input (read after the
    next batch is packed, perhaps many failed groups later): every clip is still embedded
    from its own windows."""
    from embedstore.extract.feeding import _with_windows

    group_size = 4
    held = SlabRing.held_groups(batch_size, group_size)
    ring = SlabRing(count=held + 1, group_size=group_size, window_samples=N)
    counts = [4] * 9 + [3] + [4] * 6
    groups = _with_windows(eager_workers(ring, counts, set(failed)), ring, held)

    def forward(batch):  # vectors that alias the input
        return {"prejoint": batch[:, :3], "joint": torch.nn.functional.normalize(batch[:, :2] + 0, dim=1)}

    chunks = list(embed_clips(forward, groups, batch_size, stager=BatchStager(batch_size, N, "cpu")))
    rows = [r for c in chunks for r in c.rows_ok]
    prejoint = np.concatenate([np.stack(c.vectors["prejoint"]) for c in chunks if c.rows_ok])
    assert [r for c in chunks for r, _ in c.failed] == list(failed)
    assert sorted(rows + list(failed)) == list(range(sum(counts)))
    np.testing.assert_array_equal(prejoint, np.repeat(np.array(rows, np.float32)[:, None] + 1, 3, 1))


def test_a_slot_is_free_once_the_group_before_it_is_released():
    ring = SlabRing(count=2, group_size=1, window_samples=N)
    assert ring.is_free(0) and ring.is_free(1) and not ring.is_free(2)
    ring.release_before(1)
    assert ring.is_free(2) and not ring.is_free(3)
    ring.release_before(0)  # never backwards
    assert ring.is_free(2)
    assert ring.first_row(2) == ring.first_row(0) == 0


def test_a_ring_holds_whole_batches_and_reaches_spawned_workers_as_shared_memory():
    import pickle

    ring = SlabRing.for_loader(workers=2, prefetch=2, group_size=16, window_samples=N, batch_size=64)
    assert ring is not None and len(ring.tensor) % 64 == 0
    assert ring.count >= SlabRing.held_groups(64, 16) + 1 + 2 * 2
    assert ring.tensor.is_shared() and ring.released.is_shared()
    ring.array  # noqa: B018  (cached in this process)
    assert pickle.loads(pickle.dumps(ring))._array is None


def test_extraction_with_workers_views_and_copies_gives_identical_vectors(tmp_path, monkeypatch):
    """run_extract with decoding workers (ring views), without (copies of the windows into
    staging buffers, as on CUDA), and with no workers: the same stores, bit for bit."""
    from extract_encoder import TinyEncoder

    import embedstore.extract.pipeline as pipeline
    from embedstore.datasets import load_dataset
    from embedstore.extract import run_extract
    from embedstore.store import open_store

    rng = np.random.default_rng(0)
    rows = ["path,label"]
    for i in range(45):
        name = f"c{i:02d}.wav"
        if i in (9, 30, 31):
            (tmp_path / name).write_bytes(b"not audio")
        else:
            sf.write(tmp_path / name, (0.2 * rng.standard_normal(4000 + 100 * i)).astype(np.float32), 16000)
        rows.append(f"{name},k{i % 2}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    dataset = load_dataset("folder", tmp_path)
    staged = []
    host_buffer = BatchStager.host_buffer

    def counting(self):
        staged.append(self.views)
        return host_buffer(self)

    monkeypatch.setattr(BatchStager, "host_buffer", counting)

    def extract(name, workers, views=None):
        def stager(*args, **kwargs):
            return BatchStager(*args, **kwargs, views=views)

        monkeypatch.setattr(pipeline, "BatchStager", stager)
        out = tmp_path / name
        run_extract(TinyEncoder(), dataset, [], out, batch_size=8, workers=workers, command=["t"])
        with open_store(out) as st:
            return {s: np.asarray(st.audio(s)) for s in st.audio_spaces}, list(st.failed)

    with_views = extract("views.h5", workers=2)
    views_staged = len(staged)
    copied = extract("copied.h5", workers=2, views=False)
    in_process = extract("alone.h5", workers=0)
    assert views_staged < 6  # of 6 batches: only those across a failed clip or the end are staged
    for other in (copied, in_process):
        assert other[1] == with_views[1]
        for space, vectors in with_views[0].items():
            assert vectors.tobytes() == other[0][space].tobytes()
