"""The precision policy's error against fp32, for each model family, on the CPU.

For each family the same inputs go through the same weights in fp32, bf16 and fp16 (the
policy of ``embedstore.models.device``: autocast over fp32 weights, front ends and outputs
in float32). Reported per precision and tower: the smallest cosine between a joint vector
and its fp32 twin, the largest absolute joint difference, and the pre-joint error relative
to the fp32 vector's length (largest and median).

- ``laion-clap``: LAION-CLAP's architecture (HTSAT-tiny, RoBERTa-shaped text tower with
  ``--text-layers`` layers) with seeded random weights, on bundled notes at 48 kHz;
- ``muscall``: the bundled ``notes-toy`` model (trained weights), on bundled notes at 16 kHz.

    python benchmarks/precision_error.py --notes 16 --json precision.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).resolve().parent)]

PROMPTS = ["A violin track", "A flute track", "A trumpet track", "A cello track", "An accordion track"]


def measure(encoder, windows: np.ndarray) -> dict:
    from gpu_check import _compare as compare

    out = {}
    vectors = {}
    for precision in ("fp32", "bf16", "fp16"):
        encoder.precision = precision
        vectors[precision] = (encoder.embed_audio(windows), encoder.embed_text(PROMPTS))
    for precision in ("bf16", "fp16"):
        out[precision] = {"audio": compare(vectors[precision][0], vectors["fp32"][0]),
                          "text": compare(vectors[precision][1], vectors["fp32"][1])}
    encoder.precision = "fp32"
    return out


def note_windows(encoder, n: int) -> np.ndarray:
    from embedstore.datasets import load_dataset
    from embedstore.extract.audio import prepare

    notes = load_dataset("notes", None).items[:: max(1, 252 // n)][:n]
    return np.concatenate([prepare(item.path, sample_rate=encoder.sample_rate,
                                   window_seconds=encoder.window_seconds, long_mode="first",
                                   int16=encoder.int16_roundtrip) for item in notes])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notes", type=int, default=16)
    parser.add_argument("--text-layers", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import torch

    from embedstore.models import load_model
    from gpu_check import random_clap

    torch.manual_seed(0)
    report = {"torch": torch.__version__, "device": "cpu", "notes": args.notes}
    with tempfile.TemporaryDirectory() as tmp:
        clap = random_clap("tiny", "cpu", "fp32", Path(tmp), text_layers=args.text_layers)
        report["laion-clap (HTSAT-tiny, random weights)"] = measure(clap, note_windows(clap, args.notes))
    toy = load_model("notes-toy", device="cpu")
    report["muscall (notes-toy)"] = measure(toy, note_windows(toy, args.notes))
    for family, by_precision in report.items():
        if not isinstance(by_precision, dict):
            continue
        for precision, towers in by_precision.items():
            for tower, e in towers.items():
                print(f"{family:40s} {precision} {tower:5s} joint cos min {e['joint_cos_min']:.6f}  "
                      f"joint max|d| {e['joint_max_abs']:.2e}  prejoint rel max {e['prejoint_rel_err_max']:.2e} "
                      f"(median {e['prejoint_rel_err_median']:.2e})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
