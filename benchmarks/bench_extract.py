"""Extraction throughput: our pipeline against the released scripts' approach.

Both sides embed the same synthesized 3-second clips (44.1 kHz WAV) with the same
LAION-CLAP encoder (:class:`embedstore.models.clap.ClapEncoder`), built with random
weights in the real architecture: HTSAT-base audio tower and a RoBERTa-shaped text tower
(12 layers, 768 wide; not timed). The checkpoint is written in the published layout by
``tests/clap_fixtures.py`` (needs the ``laion_clap`` package) and read by our loader.

Released scripts' approach (the baseline)
    One file at a time in one process: decode, resample and cut with the same front end
    (``embedstore.extract.audio.prepare``), then one forward pass for the joint vector and a second
    forward pass for the pre-joint vector, as the study's scripts did (laion_clap's
    ``get_audio_embedding_from_data`` for joint, a second call with a hook for pre-joint).
Ours
    ``embedstore.extract.run_extract``: DataLoader workers decode ahead, fixed-size batches,
    one forward pass for both spaces, journal writes and the final store included.

Both run in the same process after a warm-up on two clips, in interleaved rounds
(baseline, ours, baseline, ours...) so that other load on the machine hits both alike;
each side reports its median round. Besides wall-clock clips/s, CPU seconds per clip
(this process and the decoding workers) are reported: they are less sensitive to a busy
machine. The vectors of the two are compared (they must agree to floating-point noise).

    python benchmarks/bench_extract.py                       # CPU, 12 clips, 2 rounds
    python benchmarks/bench_extract.py --device cuda --precision bf16 --clips 256
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from embedstore.datasets import load_dataset  # noqa: E402
from embedstore.extract import pool_windows, run_extract  # noqa: E402
from embedstore.extract.audio import prepare  # noqa: E402
from embedstore.store import open_store  # noqa: E402

CLIP_SECONDS = 3.0
CLIP_RATE = 44100


def synthesize_clips(folder: Path, n: int, seed: int = 0) -> Path:
    """``n`` distinct 3-s notes (decaying partials plus noise) and their labels.csv."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(CLIP_SECONDS * CLIP_RATE)) / CLIP_RATE
    rows = ["path,label"]
    for i in range(n):
        f0 = rng.uniform(60, 1200)
        note = sum(rng.uniform(0.1, 0.5) / k * np.sin(2 * np.pi * f0 * k * t) for k in range(1, 7))
        note = note * np.exp(-t * rng.uniform(0.3, 2.0)) + 0.01 * rng.standard_normal(t.size)
        sf.write(folder / f"clip{i:04d}.wav", (0.8 * note / np.abs(note).max()).astype(np.float32), CLIP_RATE)
        rows.append(f"clip{i:04d}.wav,class{i % 4}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def random_clap(folder: Path, device: str, precision: str):
    """Our encoder over a random-weight HTSAT-base + RoBERTa-shaped checkpoint."""
    import clap_fixtures
    import torch

    from embedstore.models import load_model

    clap_fixtures.TEXT_LAYERS, clap_fixtures.TEXT_INTERMEDIATE = 12, 3072  # roberta-base's shape
    tokenizer = clap_fixtures.write_tokenizer(folder / "tokenizer")
    clap = clap_fixtures.build_laion_clap("HTSAT-base", tokenizer)
    checkpoint = clap_fixtures.write_clap_checkpoint(clap, folder / "random-htsat-base.pt")
    del clap
    torch.manual_seed(0)
    return load_model("clap-music", checkpoint=checkpoint, device=device, precision=precision,
                      tokenizer=tokenizer)


def released_scripts_approach(model, paths: list[Path]) -> dict[str, np.ndarray]:
    """One file at a time; a forward pass for joint, another for pre-joint."""
    frontend = dict(sample_rate=model.sample_rate, window_seconds=model.window_seconds,
                    long_mode="mean", int16=model.int16_roundtrip)
    joint, prejoint = [], []
    for path in paths:
        windows = prepare(path, **frontend)
        joint_pass = model.embed_audio(windows)
        prejoint_pass = model.embed_audio(windows)
        joint.append(pool_windows([{"joint": v} for v in joint_pass["joint"]])["joint"])
        prejoint.append(pool_windows([{"prejoint": v} for v in prejoint_pass["prejoint"]])["prejoint"])
    return {"joint": np.stack(joint), "prejoint": np.stack(prejoint)}


def our_pipeline(model, dataset, out: Path, batch_size: int, workers: int) -> dict[str, np.ndarray]:
    run_extract(model, dataset, [], out, batch_size=batch_size, workers=workers, long_mode="mean",
                overwrite=True, command=["bench_extract"])
    with open_store(out) as st:
        return {space: st.audio(space) for space in st.audio_spaces}


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the DataLoader workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn, *args):
    """``(wall seconds, cpu seconds, result)`` of ``fn(*args)``."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    result = fn(*args)
    return time.perf_counter() - wall, cpu_seconds() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", help="ours; the baseline always runs fp32")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import torch

    warnings.filterwarnings("ignore")  # the random checkpoint is not the published one, on purpose
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        dataset = load_dataset("folder", synthesize_clips(tmp, args.clips))
        paths = [item.path for item in dataset.items]
        baseline_model = random_clap(tmp, args.device, "fp32")
        ours_model = (baseline_model if args.precision == "fp32"
                      else random_clap(tmp, args.device, args.precision))
        # Warm-up: first calls allocate and pick kernels; neither side should pay for that.
        released_scripts_approach(baseline_model, paths[:2])
        our_pipeline(ours_model, dataclasses.replace(dataset, items=dataset.items[:2]), tmp / "warm.h5",
                     args.batch_size, 0)
        rounds = {"baseline": [], "ours": []}
        for _ in range(args.rounds):
            *base_times, base = timed(released_scripts_approach, baseline_model, paths)
            *ours_times, ours = timed(our_pipeline, ours_model, dataset, tmp / "ours.h5",
                                      args.batch_size, args.workers)
            rounds["baseline"].append(base_times)
            rounds["ours"].append(ours_times)

    n = args.clips
    base_wall, base_cpu = (statistics.median(t[i] for t in rounds["baseline"]) for i in (0, 1))
    ours_wall, ours_cpu = (statistics.median(t[i] for t in rounds["ours"]) for i in (0, 1))
    result = {
        "device": args.device if args.device == "cpu" else torch.cuda.get_device_name(args.device),
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "clips": n, "clip_seconds": CLIP_SECONDS, "rounds": args.rounds,
        "batch_size": args.batch_size, "workers": args.workers,
        "precision_ours": args.precision, "precision_baseline": "fp32",
        "baseline_clips_per_s": n / base_wall, "ours_clips_per_s": n / ours_wall,
        "speedup": base_wall / ours_wall,
        "baseline_cpu_s_per_clip": base_cpu / n, "ours_cpu_s_per_clip": ours_cpu / n,
        "cpu_ratio": base_cpu / ours_cpu,
        "rounds_wall_s": {k: [round(t[0], 2) for t in v] for k, v in rounds.items()},
        "max_abs_diff": {s: float(np.abs(base[s] - ours[s]).max()) for s in ("joint", "prejoint")},
        "max_relative_error": {s: relative_error(ours[s], base[s]) for s in ("joint", "prejoint")},
    }
    print(f"{n} clips of {CLIP_SECONDS:.0f} s, HTSAT-base + RoBERTa-shaped CLAP (random weights), "
          f"{result['device']}, {result['torch_threads']} torch threads, "
          f"median of {args.rounds} rounds, load average {result['load_average_1min']:.1f}")
    print(f"  released scripts' approach (1 file, 2 passes, fp32): {result['baseline_clips_per_s']:7.3f} clips/s, "
          f"{result['baseline_cpu_s_per_clip']:6.2f} CPU s/clip")
    print(f"  embedstore extract (batch {args.batch_size}, {args.workers} workers, {args.precision}):"
          f"    {result['ours_clips_per_s']:7.3f} clips/s, {result['ours_cpu_s_per_clip']:6.2f} CPU s/clip")
    print(f"  speed-up: {result['speedup']:.2f}x wall, {result['cpu_ratio']:.2f}x CPU; max |difference| "
          f"joint {result['max_abs_diff']['joint']:.2e}, prejoint {result['max_abs_diff']['prejoint']:.2e}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    bound = AGREEMENT[args.precision]
    worst = max(result["max_relative_error"].values())
    if worst > bound:
        raise SystemExit(f"bench_extract: the two sides disagree: error {worst:.2e} of the spread "
                         f"between clips, over the {args.precision} bound {bound:.0e}")
    print(f"  vectors agree: max error {worst:.2e} of the spread between clips (bound {bound:.0e})")


#: How far our vectors may be from the baseline's, as error over the median distance between
#: clips (the measure of tests/test_models_clap.py): fp32 float noise; bf16 its 3 digits.
AGREEMENT = {"fp32": 1e-3, "bf16": 0.25, "fp16": 0.25}


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    """Largest per-clip distance to the reference over the median distance between reference clips."""
    pairs = np.linalg.norm(reference[:, None] - reference[None], axis=-1)
    typical = float(np.median(pairs[np.triu_indices(len(reference), 1)]))
    return float((np.linalg.norm(ours - reference, axis=1) / typical).max())


if __name__ == "__main__":
    main()
