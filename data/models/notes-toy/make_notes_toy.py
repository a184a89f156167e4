"""Train, evaluate and export ``notes-toy``, the small model bundled with embedstore.

Recipe (deterministic given the seed):

1. The bundled notes (``data/notes``, 14 instruments x 6 pitches x 3 dynamics). Two
   pitches of every instrument (the 2nd and 5th of its 6, so interpolation, not
   extrapolation) are the test split, with all their dynamics. They are used once, to
   score the final model, and for nothing else: no validation, no choice of settings.
2. Settings were chosen with ``--validate-on 3`` and ``--validate-on 2``: that training
   pitch of every instrument becomes a validation split, the model trains on the other
   three training pitches, and the same scores are computed on the validation notes. The
   test notes are not read. The runs and the rule are in ``selection.json``.
3. The final model trains on all four training pitches. Every training note gets
   ``CAPTIONS_PER_NOTE`` generated captions (:mod:`embedstore.extract.captions`) and resampled
   copies at +-1..``--shifts`` semitones captioned with their new pitch, and
   :func:`embedstore.train.fit` trains the audio tower and projections against the frozen
   all-MiniLM-L6-v2 text tower.
4. Evaluated notes are embedded through the exported model exactly as ``embedstore
   extract`` does, and scored: zero-shot top-1 with the prompts "A <label> track", and
   nearest audio-only class centroid (centroids of the training notes) in both spaces.

Usage::

    python data/models/notes-toy/make_notes_toy.py [--validate-on 3] [--seed S] [--work DIR]

Without ``--validate-on``, writes config.json, model.safetensors and metrics.json beside
this script; with it, prints the validation scores and writes them to ``--work``.
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

from embedstore.datasets import load_dataset, pitch_name  # noqa: E402
from embedstore.datasets.notes import TEST_PITCH_POSITIONS, pitch_positions  # noqa: E402
from embedstore.extract.audio import load_audio, prepare, to_mono  # noqa: E402
from embedstore.extract.captions import note_captions  # noqa: E402
from embedstore.train import TrainConfig, fit, read_captions, resample_pitch  # noqa: E402

CAPTIONS_PER_NOTE = 6
PROMPT = "A {} track"


def splits(items, validate_on: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, scored) boolean masks over ``items``.

    The test notes (:data:`TEST_PITCH_POSITIONS`) are scored when ``validate_on`` is None
    and left out entirely otherwise; then the notes at training pitch position
    ``validate_on`` are the validation split, and the ones scored.
    """
    positions = pitch_positions(items)
    test = np.isin(positions, TEST_PITCH_POSITIONS)
    if validate_on is None:
        return ~test, np.zeros_like(test), test
    if validate_on in TEST_PITCH_POSITIONS or not 0 <= validate_on <= positions.max():
        raise ValueError(f"--validate-on must be a training pitch position, not one of the "
                         f"test positions {TEST_PITCH_POSITIONS}")
    val = positions == validate_on
    return ~test & ~val, val, val


def shifted_copies(item, shifts, folder: Path) -> list[tuple[Path, int]]:
    """Write the note resampled by each of ``shifts`` semitones; (path, shift) pairs.

    Resampling is how a sample-based synthesiser such as FluidSynth plays pitches between
    its recorded ones, so the copies are plausible notes at the shifted pitches.
    """
    import soundfile as sf

    samples, rate = load_audio(item.path)
    mono = to_mono(samples)
    copies = []
    for shift in shifts:
        path = folder / f"{Path(item.path).stem}{shift:+d}.flac"
        if not path.is_file():
            sf.write(path, resample_pitch(mono, shift), rate)
        copies.append((path, shift))
    return copies


def write_captions_csv(path: Path, items, train: np.ndarray, val: np.ndarray, seed: int,
                       shifts=()) -> None:
    """Captions for the training notes (several each) and validation notes (one each).

    Every training note also gets a copy resampled by each of ``shifts`` semitones,
    captioned with its new pitch.
    """
    rng = np.random.default_rng(seed)
    shifted = path.parent / "shifted"
    shifted.mkdir(exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "caption", "split"])
        for item, is_train, is_val in zip(items, train, val):
            if not (is_train or is_val):
                continue
            meta = item.metadata
            versions = [(Path(item.path), 0)]
            if is_train:
                versions += shifted_copies(item, shifts, shifted)
            for audio_path, shift in versions:
                midi = meta["midi_pitch"] + shift
                captions = note_captions(item.labels[0], meta["family"], pitch_name(midi),
                                         meta["dynamics"], CAPTIONS_PER_NOTE if is_train else 1,
                                         rng, midi)
                for caption in captions:
                    writer.writerow([str(audio_path), caption, "train" if is_train else "val"])


def evaluate(model_dir: Path, dataset, train: np.ndarray, scored: np.ndarray) -> dict:
    """Zero-shot and centroid top-1 on the ``scored`` notes, embedded as `extract` does.

    Class centroids are the means of the ``train`` notes' unit vectors.
    """
    from embedstore.models.muscall import load_model_dir

    encoder = load_model_dir(model_dir, name="notes-toy")
    used = train | scored
    audio = {"prejoint": [], "joint": []}
    for item in np.asarray(dataset.items, dtype=object)[used]:
        windows = prepare(item.path, sample_rate=encoder.sample_rate,
                          window_seconds=encoder.window_seconds, long_mode="mean", int16=False)
        vectors = encoder.embed_audio(windows)
        for space in audio:
            audio[space].append(vectors[space].mean(axis=0))
    audio = {space: np.stack(rows) for space, rows in audio.items()}
    labels = dataset.labels()[used]
    train, scored = train[used], scored[used]
    classes = dataset.classes
    text = encoder.embed_text([PROMPT.format(c) for c in classes])["joint"]

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    results = {"scored_notes": int(scored.sum()), "train_notes": int(train.sum()),
               "prompt": PROMPT}
    zero_shot = (unit(audio["joint"]) @ text.T).argmax(axis=1)
    results["zero_shot_top1"] = float((zero_shot[scored] == labels[scored]).mean())
    results["zero_shot_top1_train"] = float((zero_shot[train] == labels[train]).mean())
    for space in ("joint", "prejoint"):
        vectors = unit(audio[space])
        centroids = unit(np.stack([vectors[train & (labels == c)].mean(axis=0)
                                   for c in range(len(classes))]))
        predicted = (vectors[scored] @ centroids.T).argmax(axis=1)
        results[f"centroid_top1_{space}"] = float((predicted == labels[scored]).mean())
    results["zero_shot_top1_per_class"] = {
        c: float((zero_shot[scored & (labels == i)] == i).mean()) for i, c in enumerate(classes)}
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (checkpoints)")
    parser.add_argument("--validate-on", type=int, default=None, metavar="POSITION",
                        help="tune: hold out this training pitch position as validation, "
                             "score on it, leave the test notes unread and export nothing")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--width", type=int, default=TrainConfig.conv_out_channels)
    parser.add_argument("--loss", default="clip", choices=["clip", "weighted_clip"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--pitch-shift", type=float, default=0.5,
                        help="training augmentation: random resampling by +- this many semitones")
    parser.add_argument("--shifts", type=int, default=12, metavar="N",
                        help="give every training note resampled copies at +-1..N semitones")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)

    dataset = load_dataset("notes")
    try:
        train, val, scored = splits(dataset.items, args.validate_on)
    except ValueError as exc:
        parser.error(str(exc))
    work = args.work or Path(tempfile.mkdtemp(prefix="notes-toy-"))
    work.mkdir(parents=True, exist_ok=True)
    captions_csv = work / "captions.csv"
    shifts = [s for s in range(-args.shifts, args.shifts + 1) if s != 0]
    write_captions_csv(captions_csv, dataset.items, train, val, args.seed, shifts)
    config = TrainConfig(epochs=args.epochs, seed=args.seed, pitch_shift=args.pitch_shift,
                         conv_out_channels=args.width, loss=args.loss)
    table = read_captions(captions_csv)

    def report(record):
        validation = ("" if record.val_loss is None else
                      f"  val {record.val_loss:.3f}  R@1 {record.val_r1:.2f}  R@5 {record.val_r5:.2f}")
        print(f"epoch {record.epoch:3d}  loss {record.train_loss:.3f}{validation}  "
              f"{record.seconds:.1f}s", flush=True)

    started = time.perf_counter()
    fit(table, work / "model", config, resume=(work / "model" / "checkpoint.pt").exists(),
        name="notes-toy", threads=args.threads, on_epoch=report)
    train_seconds = time.perf_counter() - started
    evaluation = evaluate(work / "model", dataset, train, scored)
    evaluation["split"] = "test" if args.validate_on is None else "validation"
    evaluation["scored_pitch_positions"] = (list(TEST_PITCH_POSITIONS) if args.validate_on is None
                                            else [args.validate_on])
    evaluation["train_seconds"] = round(train_seconds, 1)
    evaluation["captions_per_training_note"] = CAPTIONS_PER_NOTE
    evaluation["shifted_copies_semitones"] = args.shifts
    print(json.dumps({k: v for k, v in evaluation.items() if not isinstance(v, dict)}, indent=2))
    if args.validate_on is not None:
        (work / "validation.json").write_text(json.dumps(
            {"settings": vars(args) | {"work": str(work), "out": None}, "evaluation": evaluation},
            indent=2) + "\n")
        return
    metrics_path = work / "model" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    metrics["evaluation"] = evaluation
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors", "metrics.json"):
        shutil.copy2(work / "model" / name, args.out / name)


if __name__ == "__main__":
    main()
