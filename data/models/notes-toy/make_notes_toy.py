"""Train, evaluate and export ``notes-toy``, the small model bundled with embedstore.

Recipe (deterministic given the seed):

1. The bundled notes (``data/notes``, 14 instruments x 7 pitches x 3 dynamics). Two
   pitches of every instrument (the 2nd and 5th of its 7, so interpolation, not
   extrapolation) are held out, with all their dynamics.
2. Every training note gets ``CAPTIONS_PER_NOTE`` generated captions
   (:mod:`embedstore.captions`); held-out notes get one each, as the validation split.
3. :func:`embedstore.train.fit` trains the audio tower and projections against the frozen
   all-MiniLM-L6-v2 text tower.
4. Held-out notes are embedded through the exported model exactly as ``embedstore
   extract`` does, and scored: zero-shot top-1 with the prompts "A <label> track", and
   nearest audio-only class centroid (centroids of the training notes) in both spaces.

The held-out notes served as the validation split during training and the recipe was
tuned with a handful of runs, so the held-out numbers are an optimistic estimate of
generalisation to new pitches of the same synthesised instruments, nothing more.

Usage::

    python data/models/notes-toy/make_notes_toy.py [--work DIR] [--epochs N] [--seed S]

Writes config.json, model.safetensors and metrics.json beside this script.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from embedstore.audio import prepare  # noqa: E402
from embedstore.captions import note_captions  # noqa: E402
from embedstore.datasets import load_dataset  # noqa: E402
from embedstore.train import TrainConfig, fit, read_captions  # noqa: E402

CAPTIONS_PER_NOTE = 6
HELD_OUT_PITCH_POSITIONS = (1, 4)  # of each instrument's pitches, sorted low to high
PROMPT = "A {} track"


def split_notes(items) -> np.ndarray:
    """(n,) bool: True for notes whose pitch is held out."""
    held_out = np.zeros(len(items), dtype=bool)
    instruments = sorted({item.labels[0] for item in items})
    for instrument in instruments:
        rows = [i for i, item in enumerate(items) if item.labels[0] == instrument]
        pitches = sorted({items[i].metadata["midi_pitch"] for i in rows})
        chosen = {pitches[p] for p in HELD_OUT_PITCH_POSITIONS}
        for i in rows:
            held_out[i] = items[i].metadata["midi_pitch"] in chosen
    return held_out


def write_captions_csv(path: Path, items, held_out: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "caption", "split"])
        for item, is_held_out in zip(items, held_out):
            meta = item.metadata
            count = 1 if is_held_out else CAPTIONS_PER_NOTE
            for caption in note_captions(item.labels[0], meta["family"], meta["pitch"],
                                         meta["dynamics"], count, rng, meta["midi_pitch"]):
                writer.writerow([str(item.path), caption, "val" if is_held_out else "train"])


def evaluate(model_dir: Path, dataset, held_out: np.ndarray) -> dict:
    """Zero-shot and centroid top-1 on the held-out notes, embedded as `extract` does."""
    from embedstore.models.muscall import load_model_dir

    encoder = load_model_dir(model_dir, name="notes-toy")
    audio = {"prejoint": [], "joint": []}
    for item in dataset.items:
        windows = prepare(item.path, sample_rate=encoder.sample_rate,
                          window_seconds=encoder.window_seconds, long_mode="mean", int16=False)
        vectors = encoder.embed_audio(windows)
        for space in audio:
            audio[space].append(vectors[space].mean(axis=0))
    audio = {space: np.stack(rows) for space, rows in audio.items()}
    labels = dataset.labels()
    classes = dataset.classes
    text = encoder.embed_text([PROMPT.format(c) for c in classes])["joint"]

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    results = {"held_out_notes": int(held_out.sum()), "train_notes": int((~held_out).sum()),
               "prompt": PROMPT}
    zero_shot = (unit(audio["joint"]) @ text.T).argmax(axis=1)
    results["zero_shot_top1_held_out"] = float((zero_shot[held_out] == labels[held_out]).mean())
    results["zero_shot_top1_train"] = float((zero_shot[~held_out] == labels[~held_out]).mean())
    for space in ("joint", "prejoint"):
        vectors = unit(audio[space])
        centroids = unit(np.stack([vectors[~held_out & (labels == c)].mean(axis=0)
                                   for c in range(len(classes))]))
        predicted = (vectors[held_out] @ centroids.T).argmax(axis=1)
        results[f"centroid_top1_held_out_{space}"] = float((predicted == labels[held_out]).mean())
    per_class = {c: float((zero_shot[held_out & (labels == i)] == i).mean())
                 for i, c in enumerate(classes)}
    results["zero_shot_top1_held_out_per_class"] = per_class
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (checkpoints)")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--width", type=int, default=TrainConfig.conv_out_channels)
    parser.add_argument("--loss", default="clip", choices=["clip", "weighted_clip"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--pitch-shift", type=float, default=3.0,
                        help="training augmentation: random resampling by +- this many semitones")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)

    dataset = load_dataset("notes")
    held_out = split_notes(dataset.items)
    work = args.work or Path(tempfile.mkdtemp(prefix="notes-toy-"))
    work.mkdir(parents=True, exist_ok=True)
    captions_csv = work / "captions.csv"
    write_captions_csv(captions_csv, dataset.items, held_out, args.seed)
    config = TrainConfig(epochs=args.epochs, seed=args.seed, pitch_shift=args.pitch_shift,
                         conv_out_channels=args.width, loss=args.loss)
    table = read_captions(captions_csv)

    def report(record):
        print(f"epoch {record.epoch:3d}  loss {record.train_loss:.3f}  val {record.val_loss:.3f}  "
              f"R@1 {record.val_r1:.2f}  R@5 {record.val_r5:.2f}  {record.seconds:.1f}s", flush=True)

    started = time.perf_counter()
    fit(table, work / "model", config, resume=(work / "model" / "checkpoint.pt").exists(),
        name="notes-toy", threads=args.threads, on_epoch=report)
    train_seconds = time.perf_counter() - started
    evaluation = evaluate(work / "model", dataset, held_out)
    evaluation["train_seconds"] = round(train_seconds, 1)
    evaluation["held_out_pitch_positions"] = list(HELD_OUT_PITCH_POSITIONS)
    evaluation["captions_per_training_note"] = CAPTIONS_PER_NOTE
    metrics_path = work / "model" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["evaluation"] = evaluation
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({k: v for k, v in evaluation.items() if not isinstance(v, dict)}, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "metrics.json"):
        shutil.copy2(work / "model" / name, args.out / name)


if __name__ == "__main__":
    main()
