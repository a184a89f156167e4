"""The extraction pipeline: batching, pooling, bad clips, determinism, resume, extract-text."""

import numpy as np
import pytest

pytest.importorskip("torch")

from embedstore.errors import InputError  # noqa: E402
from embedstore.extract import embed_clips, pool_windows  # noqa: E402


class RecordingModel:
    """Row-wise 'model' that keeps every batch it was given."""

    def __init__(self):
        self.batches = []

    def __call__(self, batch):
        self.batches.append(batch.copy())
        pre = np.stack([batch.sum(1), batch.max(1), batch.min(1)], axis=1)
        joint = pre / np.maximum(np.linalg.norm(pre, axis=1, keepdims=True), 1e-12)
        return {"prejoint": pre.astype(np.float32), "joint": joint.astype(np.float32)}


def fake_clips(window_counts, start=0, n=8, failed=()):
    """Clip r has window_counts[r] windows filled with distinct values (None for failed rows)."""
    clips = []
    for row in range(start, len(window_counts)):
        if row in failed:
            clips.append((row, None, f"broken {row}"))
            continue
        k = window_counts[row]
        windows = (np.arange(k * n, dtype=np.float32).reshape(k, n) + 100 * row) / 1000
        clips.append((row, windows, ""))
    return clips


def run(window_counts, batch_size, start=0, failed=()):
    model = RecordingModel()
    chunks = list(embed_clips(model, fake_clips(window_counts, start, failed=failed), batch_size, start))
    return model, chunks


def test_every_forward_pass_has_exactly_batch_size_windows():
    model, _ = run([1, 3, 2, 5, 1, 1, 4], batch_size=4)
    assert sum(map(len, model.batches)) == 20  # 17 windows, the last batch padded by 3
    assert all(b.shape == (4, 8) for b in model.batches)
    np.testing.assert_array_equal(model.batches[-1][1:], 0)


def test_chunks_are_contiguous_and_end_on_clip_boundaries():
    counts = [1, 3, 2, 5, 1, 1, 4, 2, 2]
    _, chunks = run(counts, batch_size=4, failed={2, 5})
    assert chunks[0].start == 0 and chunks[-1].stop == len(counts)
    for before, after in zip(chunks, chunks[1:]):
        assert before.stop == after.start
    rows_ok = [r for c in chunks for r in c.rows_ok]
    failed = [r for c in chunks for r, _ in c.failed]
    assert rows_ok == [0, 1, 3, 4, 6, 7, 8]
    assert failed == [2, 5]
    assert [reason for c in chunks for _, reason in c.failed] == ["broken 2", "broken 5"]
    # Cumulative windows at each chunk end are whole batches (the last chunk excepted).
    ends = np.cumsum([0 if r in (2, 5) else counts[r] for r in range(len(counts))])
    for chunk in chunks[:-1]:
        assert ends[chunk.stop - 1] % 4 == 0


def test_pooled_vectors_are_window_means_with_joint_renormalised():
    counts = [3, 1, 2]
    model, chunks = run(counts, batch_size=2)
    vectors = {space: np.concatenate([np.stack(c.vectors[space]) for c in chunks]) for space in ("prejoint", "joint")}
    for row, windows, _ in fake_clips(counts):
        direct = model(windows)
        np.testing.assert_allclose(vectors["prejoint"][row], direct["prejoint"].mean(0), rtol=1e-6)
        mean_joint = direct["joint"].mean(0)
        np.testing.assert_allclose(vectors["joint"][row], mean_joint / np.linalg.norm(mean_joint), rtol=1e-6)
        assert np.linalg.norm(vectors["joint"][row]) == pytest.approx(1.0, abs=1e-6)


def test_a_single_window_is_kept_exactly():
    window = {"joint": np.array([0.6, 0.8], np.float32), "prejoint": np.array([3.0, -1.0], np.float32)}
    pooled = pool_windows([window])
    for space in window:
        np.testing.assert_array_equal(pooled[space], window[space])


def test_restarting_at_a_chunk_boundary_sends_the_same_batches():
    counts = [2, 1, 3, 1, 1, 2, 4, 1, 3, 2, 1]
    full_model, full = run(counts, batch_size=3, failed={4})
    assert len(full) > 3
    for chunk in full[1:]:
        resumed_model, resumed = run(counts, batch_size=3, start=chunk.start, failed={4})
        windows_before = sum(counts[r] for r in range(chunk.start) if r != 4)
        assert windows_before % 3 == 0
        tail = full_model.batches[windows_before // 3:]
        assert len(tail) == len(resumed_model.batches)
        for a, b in zip(tail, resumed_model.batches):
            np.testing.assert_array_equal(a, b)
        assert [(c.start, c.stop, c.rows_ok) for c in resumed] == [
            (c.start, c.stop, c.rows_ok) for c in full if c.start >= chunk.start]


def test_clips_out_of_order_are_refused():
    clips = fake_clips([1, 1, 1])
    with pytest.raises(InputError, match="out of order"):
        list(embed_clips(RecordingModel(), [clips[0], clips[2]], 2))
