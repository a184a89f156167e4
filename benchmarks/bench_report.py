"""Wall time of the full report on a study-sized store, warm caches.

A synthetic store the size of the study's TinySOL run (2,913 clips, 14 classes, 512-d joint
and 1024-d pre-joint audio, the nine built-in prompt sets with the ontology terms, vectors
scattered around class centres with a fixed seed) goes through ``embedstore report``
in a fresh process, three times: the first run fills the numba cache (and the OS file
cache); the next two are the warm runs reported. The same is done with ``--umap``
(umap-learn compiles its own numba code in every process, which no cache keeps).

Baseline (``--baseline CHECKOUT``): the report of another checkout (the one before the
report was rebuilt, commit 85d4b78), run the same way on the same store in the same run.
Wall time on a shared machine depends on its load, so the CPU time of the report process
(user + system) is given too.

    python benchmarks/bench_report.py [--runs 3] [--umap] [--baseline /path/to/old/checkout]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STUDY = (2913, 14, 512, 1024)
NOISE = 4.0


def study_store(path: Path, seed: int = 0) -> Path:
    """A synthetic study-sized store with the bundled classes and the built-in prompt sets."""
    from embedstore.datasets import load_dataset
    from embedstore.extract.prompts import default_prompt_specs
    from embedstore.store import create_store

    n, _, d_joint, d_prejoint = STUDY
    classes = load_dataset("notes", None, None).classes
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(classes), n).astype(np.int32)
    centres = {"joint": rng.standard_normal((len(classes), d_joint)),
               "prejoint": rng.standard_normal((len(classes), d_prejoint))}
    with create_store(path, model="study-sized", dataset="synthetic", classes=classes, overwrite=True) as w:
        w.set_items([f"clip{i}" for i in range(n)], labels=labels)
        for space, centre in centres.items():
            w.add_audio(space, centre[labels] + NOISE * rng.standard_normal((n, centre.shape[1])))
        for spec in default_prompt_specs(classes):
            rows = np.where(spec.classes >= 0, spec.classes, 0)
            vectors = {space: centre[rows] + 2.0 * rng.standard_normal((len(rows), centre.shape[1]))
                       for space, centre in centres.items()}
            w.add_prompt_set(spec.name, spec.prompts, spec.classes, vectors, terms=spec.terms, source=spec.source)
    return path


def time_report(root: Path, store: Path, out: Path, umap: bool) -> tuple[float, float]:
    """Wall and CPU seconds of one ``embedstore report`` process of the checkout ``root``."""
    command = [sys.executable, "-c", "from cli.main import app; app()", "report", str(store), "--out", str(out),
               "--overwrite", "--umap" if umap else "--no-umap"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=root, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--umap", action="store_true", help="also time the report with the UMAP maps")
    parser.add_argument("--baseline", type=Path, help="a checkout whose report is timed the same way")
    args = parser.parse_args()
    roots = [("ours", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    with tempfile.TemporaryDirectory() as tmp:
        store = study_store(Path(tmp) / "study.h5")
        for umap in (False, True) if args.umap else (False,):
            for name, root in roots:
                times = [time_report(root, store, Path(tmp) / f"report-{name}", umap) for _ in range(args.runs)]
                warm = times[1:] or times
                print(f"{name} report {'with' if umap else 'without'} UMAP: first {times[0][0]:.1f} s "
                      f"(CPU {times[0][1]:.1f} s); warm median {np.median([w for w, _ in warm]):.1f} s "
                      f"(CPU {np.median([c for _, c in warm]):.1f} s); load average {os.getloadavg()[0]:.1f}",
                      flush=True)


if __name__ == "__main__":
    main()
