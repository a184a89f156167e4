"""Feeding the encoder: main-process CPU per window, the pipeline before issue 15 against now.

A model that does nothing (:class:`NullEncoder`: LAION-CLAP's window of 480,000 samples,
10 s at 48 kHz, and vectors that cost nothing) leaves only the host's work: receiving the
decoded windows from the workers, packing batches, bookkeeping, journal writes and the
final store. Both sides embed the same synthesized clips with the same workers, in the same
process, in interleaved rounds:

before (the baseline, the pipeline as of commit 85d4b78, reproduced below)
    a worker returns each clip's windows as a numpy array (pickled through a pipe), the
    main process stacks and pads each batch with numpy, and every batch that ends on a clip
    boundary is appended to the journal (a file written and fsynced);
now
    ``embedstore.extract.run_extract``: workers decode groups of clips into one shared-memory
    ring; on the CPU a batch whose windows lie contiguous there is handed to the encoder as
    a view of the ring (no copy), and the journal is written on its time/size budget;
staged (CPU only)
    the same with the views turned off, so every window is copied once into a staging
    buffer: the host's work on CUDA, where the buffers are page-locked and the copy to the
    device is asynchronous.

The figure is the main process's CPU time (``time.process_time``: every thread of the
process, none of the workers') per window; the goal is at most 0.2 ms, so that one process
can feed 5,000 windows/s. Each round also runs the current pipeline on one batch of clips,
which gives its start-up cost (worker processes, the ring, the store) and the cost per
window beyond it. On CUDA (``--device cuda``) the model still does nothing, but the batches
really go to the device and back, through page-locked buffers.

    python benchmarks/bench_feeding.py                    # 1,024 one-window clips, 2 rounds
    python benchmarks/bench_feeding.py --device cuda --clips 5000 --workers 8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from embedstore.datasets import load_dataset  # noqa: E402
from embedstore.extract import run_extract  # noqa: E402
from embedstore.extract.feeding import BatchStager  # noqa: E402
from embedstore.models.base import Encoder  # noqa: E402

RATE = 48000


class NullEncoder(Encoder):
    """LAION-CLAP's input shape and output widths, and no computation."""

    name = "null"
    sample_rate = RATE
    window_seconds = 10.0
    int16_roundtrip = False
    audio_dims = {"prejoint": 1024, "joint": 512}
    text_dims = {"prejoint": 768, "joint": 512}

    def __init__(self, device: str = "cpu"):
        import torch

        self.device = torch.device(device)
        self._prejoint = torch.zeros(1, 1024, device=self.device)
        self._joint = torch.zeros(1, 512, device=self.device)
        self._joint[0, 0] = 1.0

    def forward_audio(self, windows):
        batch = len(windows)
        return {"prejoint": self._prejoint.expand(batch, 1024), "joint": self._joint.expand(batch, 512)}

    def embed_audio(self, windows):
        return {space: vec.cpu().numpy() for space, vec in self.forward_audio(windows).items()}

    def embed_text(self, texts):
        joint = np.zeros((len(texts), 512), np.float32)
        joint[:, 0] = 1.0
        return {"prejoint": np.zeros((len(texts), 768), np.float32), "joint": joint}

    def provenance(self) -> dict:
        return {"name": self.name, "checkpoint": {"sha256": "0" * 64}, "precision": "fp32",
                "device": str(self.device)}


def synthesize(folder: Path, n: int, seconds: float) -> Path:
    """``n`` noise clips at 48 kHz (no resampling), each shorter than one window."""
    rng = np.random.default_rng(0)
    rows = ["path,label"]
    for i in range(n):
        sf.write(folder / f"c{i:05d}.wav", (0.1 * rng.standard_normal(int(RATE * seconds))).astype(np.float32), RATE)
        rows.append(f"c{i:05d}.wav,class{i % 4}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


# ----------------------------------------------------------------------------- before


def baseline_run(model, dataset, out: Path, batch_size: int, workers: int) -> None:
    """The pipeline as of commit 85d4b78 (before issue 15), host side only."""
    from torch.utils.data import DataLoader

    from embedstore.extract.pipeline import _frontend_args, items_table
    from embedstore.store.journal import Journal

    frontend = _frontend_args(model, "first")
    header = dict(model=model.name, dataset=dataset.name, classes=list(dataset.classes),
                  provenance={"checkpoint_sha256": "0" * 64})
    journal = Journal.open(out, header=header, items=items_table(dataset),
                           spaces=dict(model.audio_dims), overwrite=True)
    loader = DataLoader(_BaselineReader([str(i.path) for i in dataset.items], frontend),
                        batch_size=None, shuffle=False, num_workers=workers,
                        collate_fn=_as_is, prefetch_factor=4 if workers else None)
    for start, stop, rows_ok, vectors, failed in _baseline_embed_clips(model.embed_audio, loader, batch_size):
        stacked = {s: np.stack(v) if v else np.zeros((0, d), np.float32)
                   for s, d in model.audio_dims.items() for v in [vectors.get(s, [])]}
        journal.append(start, rows_ok, stacked, failed, stop=stop)
    journal.finalize([], dtype="float32")


def _as_is(sample):
    return sample


class _BaselineReader:
    def __init__(self, paths, frontend):
        self.paths, self.frontend = paths, frontend

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        from embedstore.extract.audio import prepare

        return index, prepare(self.paths[index], **self.frontend), ""


def _baseline_embed_clips(embed_audio, clips, batch_size):
    """The packing loop of 85d4b78: per-window lists, numpy stack and pad per batch."""
    from embedstore.extract import pool_windows

    start, stop, rows_ok, vectors, failed = 0, 0, [], {}, []
    queue, owners, outputs, expected = [], [], {}, {}

    def run_batch(windows, rows):
        batch = np.stack(windows).astype(np.float32, copy=False)
        real = len(rows)
        if real < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - real, batch.shape[1]), np.float32)])
        result = embed_audio(batch)
        for i, row in enumerate(rows):
            outputs.setdefault(row, []).append({space: vec[i] for space, vec in result.items()})
        for row in sorted(set(rows)):
            if len(outputs[row]) == expected[row]:
                rows_ok.append(row)
                for space, vec in pool_windows(outputs.pop(row)).items():
                    vectors.setdefault(space, []).append(vec)
                del expected[row]

    for row, windows, reason in clips:
        stop = row + 1
        if windows is None:
            failed.append((row, reason))
            continue
        expected[row] = len(windows)
        queue.extend(windows)
        owners.extend([row] * len(windows))
        while len(queue) >= batch_size:
            run_batch(queue[:batch_size], owners[:batch_size])
            del queue[:batch_size], owners[:batch_size]
            if not queue:
                yield start, stop, rows_ok, vectors, failed
                start, rows_ok, vectors, failed = stop, [], {}, []
    if queue:
        run_batch(queue, owners)
    if stop > start:
        yield start, stop, rows_ok, vectors, failed


# ----------------------------------------------------------------------------- now


def current_run(model, dataset, out: Path, batch_size: int, workers: int) -> None:
    run_extract(model, dataset, [], out, batch_size=batch_size, workers=workers, long_mode="first",
                overwrite=True, command=["bench_feeding"])


def staged_run(model, dataset, out: Path, batch_size: int, workers: int) -> None:
    """The current pipeline with every window copied into a staging buffer (as on CUDA)."""
    from unittest import mock

    import embedstore.extract.pipeline as pipeline

    def stager(*args, **kwargs):
        return BatchStager(*args, **kwargs, views=False)

    with mock.patch.object(pipeline, "BatchStager", stager):
        current_run(model, dataset, out, batch_size, workers)


def measure(fn, *args) -> tuple[float, float]:
    """(main-process CPU seconds, wall seconds) of ``fn(*args)``."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn(*args)
    return time.process_time() - cpu, time.perf_counter() - wall


def run(clips: int, rounds: int, batch_size: int, workers: int, device: str, seconds: float) -> dict:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "clips").mkdir()
        dataset = load_dataset("folder", synthesize(tmp / "clips", clips, seconds))
        model = NullEncoder(device)
        sides = {"before": baseline_run, "now": current_run}
        if device == "cpu":
            sides["staged"] = staged_run
        one_batch = dataclasses.replace(dataset, items=dataset.items[:batch_size])
        for fn in sides.values():  # imports, worker start-up code paths, allocator
            fn(model, one_batch, tmp / "warm.h5", batch_size, workers)
        times = {name: [] for name in sides}
        start_up = {name: [] for name in sides if name != "before"}
        for _ in range(rounds):
            for name, fn in sides.items():
                times[name].append(measure(fn, model, dataset, tmp / f"{name}.h5", batch_size, workers))
                if name in start_up:
                    start_up[name].append(measure(fn, model, one_batch, tmp / "one.h5", batch_size, workers))
    cpu = {name: statistics.median(t[0] for t in runs) for name, runs in times.items()}
    wall = {name: statistics.median(t[1] for t in runs) for name, runs in times.items()}
    fixed = {name: statistics.median(t[0] for t in runs) for name, runs in start_up.items()}
    return {
        "device": device if device == "cpu" else torch.cuda.get_device_name(device),
        "clips": clips, "windows": clips, "window_samples": model.window_samples,
        "batch_size": batch_size, "workers": workers, "rounds": rounds,
        "cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0],
        "main_cpu_ms_per_window": {k: 1e3 * v / clips for k, v in cpu.items()},
        "windows_per_s_wall": {k: clips / v for k, v in wall.items()},
        "cpu_ratio": cpu["before"] / cpu["now"],
        # a run of one batch: what a run costs whatever its length
        "start_up_main_cpu_s": fixed,
        "beyond_start_up_ms_per_window": {k: 1e3 * (cpu[k] - v) / (clips - batch_size)
                                          for k, v in fixed.items()} if clips > batch_size else {},
        "rounds_main_cpu_s": {k: [round(t[0], 3) for t in v] for k, v in times.items()},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each clip")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result = run(args.clips, args.rounds, args.batch_size, args.workers, args.device, args.seconds)
    per = result["main_cpu_ms_per_window"]
    print(f"{args.clips} windows of {result['window_samples']} samples, batch {args.batch_size}, "
          f"{args.workers} workers, {result['device']}, median of {args.rounds} rounds, "
          f"load average {result['load_average_1min']:.1f}")
    print(f"  main-process CPU per window: before {per['before']:.3f} ms, now {per['now']:.3f} ms "
          f"({result['cpu_ratio']:.1f}x less); goal <= 0.2 ms")
    if "staged" in per:
        print(f"  staged (a copy per window, as on CUDA): {per['staged']:.3f} ms")
    for name, fixed in result["start_up_main_cpu_s"].items():
        beyond = result["beyond_start_up_ms_per_window"].get(name)
        print(f"  {name}: start-up {1e3 * fixed:.0f} ms of main-process CPU per run"
              + (f", then {beyond:.3f} ms per window" if beyond is not None else ""))
    print("  windows/s (wall): " + ", ".join(f"{k} {v:.0f}" for k, v in result["windows_per_s_wall"].items()))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
