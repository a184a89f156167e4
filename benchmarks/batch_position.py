"""Does a window's vector depend on its position in a batch, or on its batch mates?

For each model and batch size B: B random windows, then the first of them placed at every
position of another batch of B random windows; reports the largest absolute change of its
vectors (any space) across positions, and with other batch mates at the same position.
Nonzero across positions is why extraction never lets a batch span two blocks of items
(docs/scale.md): shards then put every window at the single run's position.

    python benchmarks/batch_position.py                 # notes-toy and the tests' tiny encoder
    python benchmarks/batch_position.py --clap          # + LAION-CLAP HTSAT-tiny, random weights
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent.parent / "tests"


def position_changes(model, batch_size: int, seed: int = 0) -> tuple[float, float]:
    """(largest change across positions, largest change with other mates at position 0)."""
    import torch

    rng = np.random.default_rng(seed)
    windows = (0.3 * rng.standard_normal((2 * batch_size, model.window_samples))).astype(np.float32)

    def run(batch):
        with torch.inference_mode():
            return {s: v.cpu().numpy() for s, v in model.forward_audio(torch.from_numpy(batch)).items()}

    base = run(windows[:batch_size].copy())
    worst = 0.0
    for position in range(batch_size):
        batch = windows[batch_size:].copy()
        batch[position] = windows[0]
        out = run(batch)
        worst = max(worst, max(float(np.abs(base[s][0] - out[s][position]).max()) for s in base))
    batch = windows[batch_size:].copy()
    batch[0] = windows[0]
    out = run(batch)
    mates = max(float(np.abs(base[s][0] - out[s][0]).max()) for s in base)
    return worst, mates


def models(clap: bool):
    from embedstore.models import load_model

    sys.path.insert(0, str(TESTS))
    import extract_encoder

    yield "notes-toy", load_model("notes-toy", device="cpu")
    yield "tests' tiny encoder", extract_encoder.TinyEncoder()
    if clap:
        from clap_fixtures import build_laion_clap, write_clap_checkpoint, write_tokenizer

        folder = Path(tempfile.mkdtemp())
        tokenizer = write_tokenizer(folder / "tokenizer")
        checkpoint = write_clap_checkpoint(build_laion_clap("HTSAT-tiny", tokenizer), folder / "tiny.pt")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield "LAION-CLAP HTSAT-tiny (random)", load_model("clap-general", checkpoint=checkpoint,
                                                                tokenizer=tokenizer, device="cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clap", action="store_true", help="also LAION-CLAP HTSAT-tiny (slow on CPU)")
    parser.add_argument("--batch-sizes", default="3,4,5,7,8,16,32")
    args = parser.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| model | batch | max change across positions | max change, other mates |")
    print("|---|---|---|---|")
    for name, model in models(args.clap):
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            worst, mates = position_changes(model, batch_size)
            print(f"| {name} | {batch_size} | {worst:.2g} | {mates:.2g} |", flush=True)


if __name__ == "__main__":
    main()
