"""Speed and memory of the metric analyses against the reference approach.

Reference: what a study script does with scikit-learn and numpy on arrays in memory:
``cosine_similarity`` for the full (items, classes) score matrix, then
``top_k_accuracy_score`` (k = 1..5), ``f1_score(average="weighted")``,
``roc_auc_score`` and ``average_precision_score`` (macro, on the one-hot matrix),
``np.histogram`` of positive and negative scores with ``roc_auc_score`` for their
overlap, and ``np.partition`` for the top-2 margins.

Ours: ``analyses.metrics`` as the three commands ``analyze zeroshot``, ``analyze
histograms`` and ``analyze confidence`` run it (each makes its own passes over the data).

Both sides run in their own subprocess on the same synthetic data (fixed seed) and
report wall time of the work (data generation excluded) and peak RSS (including the
input arrays both sides hold). Then a whole ``embedstore analyze zeroshot`` call on a
study-sized store is timed in a fresh process with an empty numba cache (cold) and again
(warm), for this checkout and for a baseline commit (``--baseline``, extracted with
``git archive``) in the same run, warm runs interleaved.

The zero-shot suite alone (``analyze zeroshot``'s metrics: top-1..5, weighted F1,
per-class and macro ROC-AUC and PR-AUC) at 100,000 x 500 x 512 is measured against the
floor any exact method pays, the float32 matrix product of the same shapes, in the same
process: as one sgemm (``audio @ text.T``, the whole 100,000 x 500 matrix) and in our
blocks and orientation (``text @ audio[block].T``), floor and suite interleaved over a
few rounds; scikit-learn's suite on the same data runs once in its own process.

    python benchmarks/bench_analyses.py              # both scales + suite + CLI, several minutes
    python benchmarks/bench_analyses.py --quick      # study scale + CLI only
    python benchmarks/bench_analyses.py --cli-only   # the whole CLI call only
    python benchmarks/bench_analyses.py --suite      # the zero-shot suite against its floor only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STUDY = (2913, 14, 512)
LARGE = (200_000, 1000, 512)
# The reference at LARGE needs the full score matrix plus sort buffers: it passed 11.7 GB
# of RSS (and 15 minutes) on the 24 GB benchmark machine before we stopped it. It is
# measured at a tenth of the classes instead and scaled by 10; its costs grow at least
# linearly in the classes (top-k and the overlap AUC sort, n log n), so the scaled time
# is a lower bound and the speed-up derived from it conservative.
LARGE_SUBSET = (200_000, 100, 512)
NOISE = 4.0  # audio and text scatter around the class centres: top-1 about 0.4 at study scale
PREJOINT_DIM = 1024
# The CLI's baseline: main before zero-shot runs stopped loading numba at start-up.
CLI_BASELINE = "175c2dc"


def synthetic(n_items: int, n_classes: int, dim: int, seed: int = 0):
    """Audio vectors around class centres, text vectors near the centres, labels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim), dtype=np.float32)
    labels = rng.integers(0, n_classes, n_items).astype(np.int32)
    audio = np.empty((n_items, dim), np.float32)
    for start in range(0, n_items, 8192):
        stop = min(n_items, start + 8192)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
        audio[start:stop] = centres[labels[start:stop]] + NOISE * noise
    text = centres + NOISE * rng.standard_normal((n_classes, dim), dtype=np.float32)
    return audio, text, labels


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds(who=resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def run_reference(audio, text, labels) -> dict:
    from sklearn.metrics import (
        average_precision_score,
        f1_score,
        roc_auc_score,
        top_k_accuracy_score,
    )
    from sklearn.metrics.pairwise import cosine_similarity

    n_classes = text.shape[0]
    stages = {}
    t = time.perf_counter()
    scores = cosine_similarity(audio, text)
    stages["scores"] = time.perf_counter() - t
    t = time.perf_counter()
    out = {f"top{k}": top_k_accuracy_score(labels, scores, k=k, labels=np.arange(n_classes)) for k in range(1, 6)}
    stages["top-k"] = time.perf_counter() - t
    t = time.perf_counter()
    out["f1_weighted"] = f1_score(labels, scores.argmax(axis=1), average="weighted")
    onehot = np.zeros(scores.shape, bool)
    onehot[np.arange(len(labels)), labels] = True
    out["roc_auc_macro"] = roc_auc_score(onehot, scores, average="macro")
    out["pr_auc_macro"] = average_precision_score(onehot, scores, average="macro")
    stages["f1, roc-auc, ap"] = time.perf_counter() - t
    t = time.perf_counter()
    positives, negatives = scores[onehot], scores[~onehot]
    np.histogram(positives, bins=100, range=(-1, 1))
    np.histogram(negatives, bins=100, range=(-1, 1))
    truth = np.zeros(positives.size + negatives.size, bool)
    truth[: positives.size] = True
    out["overlap_auc"] = roc_auc_score(truth, np.concatenate([positives, negatives]))
    stages["histograms"] = time.perf_counter() - t
    t = time.perf_counter()
    top2 = np.partition(scores, -2, axis=1)[:, -2:]
    out["margin_median"] = float(np.median(top2[:, 1] - top2[:, 0]))
    stages["margins"] = time.perf_counter() - t
    return {"metrics": {k: float(v) for k, v in out.items()}, "stages": stages}


def run_ours(audio, text, labels) -> dict:
    from analyses import embeddings, metrics

    n_classes = text.shape[0]
    stages = {}
    t = time.perf_counter()
    scorer = metrics.CosineScorer(embeddings.unit_rows(audio), embeddings.l2_normalize(text))
    targets = metrics.Targets.single(labels, n_classes)
    result = metrics.classification_metrics(scorer, targets, [str(c) for c in range(n_classes)])
    stages["zeroshot"] = time.perf_counter() - t
    t = time.perf_counter()
    histograms = metrics.similarity_histograms(scorer, targets, bins=100)
    stages["histograms"] = time.perf_counter() - t
    t = time.perf_counter()
    ranked = metrics.rank_pass(scorer, targets)
    margins = metrics.margin_summary(ranked["margins"], ranked["correct"])
    stages["margins"] = time.perf_counter() - t
    keys = [f"top{k}" for k in range(1, 6)] + ["f1_weighted", "roc_auc_macro", "pr_auc_macro"]
    out = {k: result[k] for k in keys}
    out["overlap_auc"] = histograms["auc"]
    out["margin_median"] = margins["median"]
    return {"metrics": out, "stages": stages}


SUITE = (100_000, 500, 512)
SUITE_KEYS = [f"top{k}" for k in range(1, 6)] + ["f1_weighted", "roc_auc_macro", "pr_auc_macro"]


def timed(func) -> tuple[float, float]:
    """Wall and CPU seconds of ``func()``."""
    t, cpu = time.perf_counter(), cpu_seconds()
    func()
    return time.perf_counter() - t, cpu_seconds() - cpu


def run_suite(n_items: int, n_classes: int, dim: int, rounds: int = 3) -> dict:
    """The BLAS floor and our zero-shot suite, interleaved in one process; medians of ``rounds``."""
    from analyses import embeddings, metrics

    def suite(unit_audio, unit_text, labels):
        return metrics.classification_metrics(
            metrics.CosineScorer(unit_audio, unit_text), metrics.Targets.single(labels, unit_text.shape[0]),
            [str(c) for c in range(unit_text.shape[0])],
        )

    def blocks(unit_audio, unit_text):
        for start, stop in metrics._item_blocks(unit_audio.shape[0], unit_text.shape[0]):
            unit_text @ unit_audio[start:stop].T

    audio, text, labels = synthetic(300, 8, 8, seed=1)  # imports, numba cache
    suite(embeddings.unit_rows(audio), embeddings.l2_normalize(text), labels)
    audio, text, labels = synthetic(n_items, n_classes, dim)
    unit_audio, unit_text = embeddings.unit_rows(audio), embeddings.l2_normalize(text)
    del audio
    times = {"one sgemm": [], "blocks": [], "ours": []}
    result = {}
    for _ in range(rounds):
        times["one sgemm"].append(timed(lambda: unit_audio @ unit_text.T))
        times["blocks"].append(timed(lambda: blocks(unit_audio, unit_text)))
        times["ours"].append(timed(lambda: result.update(suite(unit_audio, unit_text, labels))))

    def median(pairs):  # wall and CPU each
        return [sorted(values)[len(values) // 2] for values in zip(*pairs)]

    return {"rounds": times, "median": {k: median(v) for k, v in times.items()},
            "metrics": {k: result[k] for k in SUITE_KEYS}, "peak_rss_mb": peak_rss_mb(),
            "blocks": len(list(metrics._item_blocks(n_items, n_classes)))}


def run_suite_reference(n_items: int, n_classes: int, dim: int) -> dict:
    """scikit-learn's zero-shot suite, as a study script runs it, once."""
    from sklearn.metrics import (
        average_precision_score,
        f1_score,
        roc_auc_score,
        top_k_accuracy_score,
    )
    from sklearn.metrics.pairwise import cosine_similarity

    audio, text, labels = synthetic(n_items, n_classes, dim)
    out = {}

    def suite():
        scores = cosine_similarity(audio, text)
        for k in range(1, 6):
            out[f"top{k}"] = top_k_accuracy_score(labels, scores, k=k, labels=np.arange(n_classes))
        out["f1_weighted"] = f1_score(labels, scores.argmax(axis=1), average="weighted")
        onehot = np.zeros(scores.shape, bool)
        onehot[np.arange(n_items), labels] = True
        out["roc_auc_macro"] = roc_auc_score(onehot, scores, average="macro")
        out["pr_auc_macro"] = average_precision_score(onehot, scores, average="macro")

    seconds, cpu = timed(suite)
    return {"seconds": seconds, "cpu_seconds": cpu, "metrics": {k: float(v) for k, v in out.items()},
            "peak_rss_mb": peak_rss_mb()}


def compare_suite(shape: tuple = SUITE) -> dict:
    ours = measure("suite-ours", shape)
    reference = measure("suite-reference", shape)
    floor = min(ours["median"]["one sgemm"][0], ours["median"]["blocks"][0])
    seconds, cpu = ours["median"]["ours"]
    return {"shape": shape, "ours": ours, "reference": reference, "floor_s": floor,
            "ours_over_floor": seconds / floor,
            "cpu_ours_over_floor": cpu / min(ours["median"]["one sgemm"][1], ours["median"]["blocks"][1]),
            "reference_over_ours": reference["seconds"] / seconds,
            "cpu_reference_over_ours": reference["cpu_seconds"] / cpu,
            "max_metric_difference": max(abs(ours["metrics"][k] - reference["metrics"][k]) for k in SUITE_KEYS)}


def suite_lines(result: dict) -> list[str]:
    n, c, d = result["shape"]
    ours, ref = result["ours"], result["reference"]
    cell = lambda pair: f"{pair[0]:.2f} s ({pair[1]:.2f} s CPU)"
    return [
        (f"| {n:,} x {c:,} x {d} | {cell(ours['median']['one sgemm'])} | {cell(ours['median']['blocks'])} "
         f"| {cell(ours['median']['ours'])} | **{result['ours_over_floor']:.2f}x** "
         f"({result['cpu_ours_over_floor']:.2f}x CPU) | {ref['seconds']:.1f} s ({ref['cpu_seconds']:.1f} s CPU) "
         f"| **{result['reference_over_ours']:.0f}x** ({result['cpu_reference_over_ours']:.0f}x CPU) "
         f"| {ours['peak_rss_mb']:.0f} / {ref['peak_rss_mb']:.0f} MB | {result['max_metric_difference']:.1e} |"),
        "",
        "Rounds (wall, CPU seconds): " + "; ".join(
            f"{k}: " + ", ".join(f"{w:.2f}/{cpu:.2f}" for w, cpu in v) for k, v in ours["rounds"].items()),
    ]


def child(side: str, n_items: int, n_classes: int, dim: int) -> None:
    if side.startswith("suite"):
        run = run_suite if side == "suite-ours" else run_suite_reference
        print(json.dumps(run(n_items, n_classes, dim)))
        return
    run = run_ours if side == "ours" else run_reference
    # Imports and (ours) numba cache loading stay outside the timed region, by a run on
    # tiny data; the CLI timing below covers a whole process, cold and warm.
    run(*synthetic(300, 8, 8, seed=1))
    audio, text, labels = synthetic(n_items, n_classes, dim)
    t, cpu = time.perf_counter(), cpu_seconds()
    result = run(audio, text, labels)
    result["seconds"] = time.perf_counter() - t
    result["cpu_seconds"] = cpu_seconds() - cpu
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result))


def measure(side: str, shape: tuple) -> dict:
    cmd = [sys.executable, __file__, "--child", side, *map(str, shape)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{side} at {shape} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare(shape: tuple, ours: dict | None = None) -> dict:
    ours = ours or measure("ours", shape)
    reference = measure("reference", shape)
    # float32 (ours) vs float64 (reference) cosines: values agree to rounding
    difference = max(abs(ours["metrics"][k] - reference["metrics"][k]) for k in reference["metrics"])
    return {"shape": shape, "ours": ours, "reference": reference, "max_metric_difference": difference,
            "speedup": reference["seconds"] / ours["seconds"],
            "cpu_speedup": reference["cpu_seconds"] / ours["cpu_seconds"]}


def study_store(path: Path, n_prompt_sets: int = 5) -> None:
    """The study's TinySOL run in size: 2,913 clips, 14 classes, 512-d joint, 1024-d pre-joint."""
    from embedstore.store import create_store

    audio, text, labels = synthetic(*STUDY)
    rng = np.random.default_rng(2)
    prejoint = rng.standard_normal((STUDY[0], PREJOINT_DIM), dtype=np.float32)
    with create_store(path, model="synthetic", dataset="tinysol-shaped", classes=[f"class{c}" for c in range(STUDY[1])]) as w:
        w.set_items([f"clip{i}" for i in range(STUDY[0])], labels=labels)
        w.add_audio("joint", audio)
        w.add_audio("prejoint", prejoint)
        for s in range(n_prompt_sets):
            prompts = text + 0.5 * rng.standard_normal(text.shape, dtype=np.float32)
            w.add_prompt_set(f"style{s}", [f"prompt {c}" for c in range(STUDY[1])], np.arange(STUDY[1]),
                             embeddings={"joint": prompts,
                                         "prejoint": rng.standard_normal((STUDY[1], PREJOINT_DIM), dtype=np.float32)})


def checkout(rev: str, folder: Path) -> Path:
    """The tree of commit ``rev`` of this repository, extracted into ``folder`` (git archive)."""
    folder.mkdir()
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


# What any typer command that reads HDF5 and prints a table imports before it does anything
# (typer 0.2x checks option values with pydantic): the floor of a CLI call.
FLOOR_IMPORTS = "import numpy, h5py, typer, typer._adapters, rich.console, rich.table"


def time_process(root: Path, code: str, args: list[str], tmp: Path) -> tuple[float, float]:
    """Wall and CPU seconds (user + system) of ``python -c code args`` run from checkout ``root``.

    Each checkout keeps its own numba cache and, as an installed package does, its own
    bytecode cache (``PYTHONPYCACHEPREFIX``: this project's environment sets
    ``PYTHONDONTWRITEBYTECODE``, which would recompile every module in every run).
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(root), NUMBA_CACHE_DIR=str(tmp / f"numba-{root.name}"),
               PYTHONPYCACHEPREFIX=str(tmp / f"pycache-{root.name}"))
    t, cpu = time.perf_counter(), cpu_seconds(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, env=env, cwd=root)
    return time.perf_counter() - t, cpu_seconds(resource.RUSAGE_CHILDREN) - cpu


def cli_times(baseline: str | None, runs: int = 5) -> dict:
    """Cold and warm (median of ``runs``) times of ``embedstore analyze zeroshot`` from this
    checkout and from commit ``baseline``, and of the floor's imports alone; warm runs interleaved."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store = tmp / "study.h5"
        study_store(store)
        zeroshot = ("from cli.main import app; app()", ["analyze", "zeroshot", str(store)])
        sides = {"ours": (ROOT, *zeroshot)}
        if baseline:
            sides["baseline"] = (checkout(baseline, tmp / "baseline"), *zeroshot)
        sides["floor"] = (ROOT, FLOOR_IMPORTS, [])
        load_before = os.getloadavg()
        cold = {side: time_process(*how, tmp) for side, how in sides.items()}
        warm = {side: [] for side in sides}
        for _ in range(runs):  # interleaved, so that a change in the machine's load hits every side
            for side, how in sides.items():
                warm[side].append(time_process(*how, tmp))
    out = {"prompt_sets": 5, "runs": runs, "baseline_rev": baseline, "loadavg_before": load_before,
           "loadavg_after": os.getloadavg()}
    for side in sides:
        walls, cpus = sorted(w for w, _ in warm[side]), sorted(c for _, c in warm[side])
        out[side] = {"cold_s": cold[side][0], "cold_cpu_s": cold[side][1], "warm_s": walls[runs // 2],
                     "warm_cpu_s": cpus[runs // 2], "warm_runs_s": walls, "warm_runs_cpu_s": cpus}
    return out


def row(result: dict) -> str:
    n, c, d = result["shape"]
    ours, ref = result["ours"], result["reference"]
    return (
        f"| {n:,} x {c:,} x {d} | {ref['seconds']:.2f} s ({ref['cpu_seconds']:.1f} s CPU) "
        f"| {ours['seconds']:.2f} s ({ours['cpu_seconds']:.1f} s CPU) "
        f"| **{result['speedup']:.1f}x** ({result['cpu_speedup']:.1f}x CPU) "
        f"| {ref['peak_rss_mb']:.0f} MB | {ours['peak_rss_mb']:.0f} MB | {result['max_metric_difference']:.1e} |"
    )


def stages(result: dict) -> str:
    n, c, _d = result["shape"]
    line = lambda side: ", ".join(f"{k} {v:.2f} s" for k, v in result[side]["stages"].items())
    return f"- {n:,} x {c:,}: reference: {line('reference')}; ours: {line('ours')}"


def cli_lines(cli: dict) -> list[str]:
    """The whole-CLI-call figures, ours against the baseline commit."""
    lines = [f"`embedstore analyze zeroshot` on a study-sized store (2,913 x 14, 512-d joint, 1024-d pre-joint, "
             f"5 prompt sets), fresh process each, {cli['runs']} warm runs per side interleaved, medians; "
             f"load average {cli['loadavg_before'][0]:.1f} before, {cli['loadavg_after'][0]:.1f} after:", ""]
    lines.append("| side | cold (empty numba and bytecode caches): wall (CPU) | warm: wall (CPU) | warm runs, wall (s) |")
    lines.append("|---|---|---|---|")
    names = {"ours": "ours", "baseline": f"baseline {cli['baseline_rev']}", "floor": f"floor: `{FLOOR_IMPORTS}`"}
    for side, name in names.items():
        if side in cli:
            t = cli[side]
            lines.append(f"| {name} | {t['cold_s']:.2f} s ({t['cold_cpu_s']:.2f} s) | **{t['warm_s']:.2f} s** "
                         f"({t['warm_cpu_s']:.2f} s) | {', '.join(f'{w:.2f}' for w in t['warm_runs_s'])} |")
    if "baseline" in cli:
        ours, base = cli["ours"], cli["baseline"]
        lines += ["", f"Warm speed-up: {base['warm_s'] / ours['warm_s']:.1f}x wall, "
                      f"{base['warm_cpu_s'] / ours['warm_cpu_s']:.1f}x CPU."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="study scale and CLI only")
    parser.add_argument("--cli-only", action="store_true", help="the whole CLI call only")
    parser.add_argument("--baseline", default=CLI_BASELINE, metavar="REV",
                        help=f"commit whose CLI call is timed beside ours (default {CLI_BASELINE}; '' for none)")
    parser.add_argument("--runs", type=int, default=5, help="warm CLI runs per side")
    parser.add_argument("--suite", action="store_true", help="the zero-shot suite against its BLAS floor only")
    parser.add_argument("--child", nargs=4, metavar=("SIDE", "N", "C", "D"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        side, *shape = args.child
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            child(side, *map(int, shape))
        return
    suite = None
    if not (args.quick or args.cli_only):
        print(f"measuring the zero-shot suite at {SUITE[0]:,} x {SUITE[1]} x {SUITE[2]} (floor, ours, reference) ...",
              flush=True)
        suite = compare_suite()
        print(json.dumps({"suite": suite}), flush=True)
    if args.suite:
        print_suite(suite)
        return
    results, large = [], None
    if not args.cli_only:
        print("measuring the study scale ...", flush=True)
        results.append(compare(STUDY))
    if not (args.quick or args.cli_only):
        print("measuring 200,000 x 100 (both sides) and 200,000 x 1,000 (ours) ...", flush=True)
        results.append(compare(LARGE_SUBSET))
        large = measure("ours", LARGE)
        print(json.dumps({"large_ours": large}), flush=True)
    print("timing the CLI ...", flush=True)
    cli = cli_times(args.baseline or None, args.runs)
    load = os.getloadavg()
    print(f"\n## Analyses ({time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, numpy {np.__version__})\n")
    if results:
        print("| items x classes x dim | reference | ours | speed-up | reference peak RSS | ours peak RSS "
              "| max metric diff |")
        print("|---|---|---|---|---|---|---|")
        for result in results:
            print(row(result))
    if large:
        scaled = results[-1]["reference"]
        factor = LARGE[1] / LARGE_SUBSET[1]
        print(f"| {LARGE[0]:,} x {LARGE[1]:,} x {LARGE[2]} | ≥ {factor * scaled['seconds']:.0f} s "
              f"(≥ {factor * scaled['cpu_seconds']:.0f} s CPU), *scaled from 100 classes* "
              f"| {large['seconds']:.2f} s ({large['cpu_seconds']:.1f} s CPU) "
              f"| **≥ {factor * scaled['seconds'] / large['seconds']:.1f}x** "
              f"(≥ {factor * scaled['cpu_seconds'] / large['cpu_seconds']:.1f}x CPU) "
              f"| > 11.7 GB (stopped) | {large['peak_rss_mb']:.0f} MB | — |")
    if results:
        print("\nStages (seconds):\n")
        for result in results:
            print(stages(result))
    if large:
        print(f"- {LARGE[0]:,} x {LARGE[1]:,}: ours: " + ", ".join(f"{k} {v:.2f} s" for k, v in large["stages"].items()))
    print("\n" + "\n".join(cli_lines(cli)))
    if suite:
        print_suite(suite)
    print(f"\nLoad average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min).")
    print("\n```json\n" + json.dumps({"results": results, "large_ours": large, "cli": cli, "loadavg": load})
          + "\n```")


def print_suite(suite: dict) -> None:
    load = os.getloadavg()
    print(f"\n### Zero-shot suite against the BLAS floor ({time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, "
          f"{os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f})\n")
    print("| items x classes x dim | floor: one sgemm | floor: our blocks | ours | ours / floor "
          "| scikit-learn | scikit-learn / ours | peak RSS ours / sklearn | max metric diff |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(suite_lines(suite)))


if __name__ == "__main__":
    main()
