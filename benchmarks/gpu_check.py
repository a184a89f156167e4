"""The GPU check of issue 15: extraction on a real accelerator, right, recorded and fed.

Run by ``benchmarks/gpu_check.sh`` on a machine with a CUDA GPU (about 8 minutes on one
H200); every figure goes to ``OUT/gpu_check.json`` and a readable ``OUT/gpu_check.md``.
With ``--device cpu`` and tiny sizes it dry-runs end to end on any machine.

The model is LAION-CLAP's architecture with random weights (``--arch base``: HTSAT-base and
a RoBERTa-base-shaped text tower, as ``clap-music``), built from a transformers config so
that no ``laion_clap`` package is needed; its weights are float32 in every precision, so
one model serves fp32, bf16 and fp16 (the precision policy of ``embedstore.models.device``).

Parts (``--parts``, default all):

``numerics``  the policy's flags as a run records them, and TF32's effect on the STFT
              log-mel (cuDNN convolution) against the same log-mel in float32 on the CPU
``notes``     the bundled notes through ``run_extract`` in fp32, bf16, fp16: clips/s, GPU
              utilisation, failures, error against fp32, and fp32 on the GPU against fp32
              on the CPU (a subset)
``folder``    a synthetic folder of ``--clips`` clips, the same three precisions
``study``     the study scripts' approach (one file at a time, two passes, fp32) against
              ``run_extract`` in bf16, on the same clips
``feeding``   ``bench_feeding.py`` on the device: main-process CPU per window
``resume``    ``embedstore extract`` killed with SIGKILL mid-run and resumed (same batch
              size: must be bit-identical), then resumed at a smaller batch size; an
              out-of-memory run (memory capped) giving its one-line error
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(BENCH)]

PRECISIONS = ("fp32", "bf16", "fp16")
MODEL_NAME = "gpu-random-clap"
PARTS = ("numerics", "notes", "folder", "study", "feeding", "resume")

ARCHS = {  # laion_clap's HTSAT-tiny and HTSAT-base audio towers
    "tiny": dict(patch_embeds_hidden_size=96, depths=[2, 2, 6, 2], hidden_size=768),
    "base": dict(patch_embeds_hidden_size=128, depths=[2, 2, 12, 2], hidden_size=1024),
}


# ----------------------------------------------------------------------------- the model


def random_clap(arch: str, device: str, precision: str, workdir: Path, text_layers: int = 12):
    """A ClapEncoder with LAION-CLAP's architecture and seeded random weights."""
    import torch
    from clap_fixtures import write_tokenizer
    from transformers import ClapConfig, ClapModel

    from embedstore.models.clap import ClapEncoder, MelConfig, load_tokenizer

    tokenizer_dir = workdir / "tokenizer"
    if not tokenizer_dir.is_dir():
        write_tokenizer(tokenizer_dir)
    tokenizer, source = load_tokenizer(tokenizer_dir)
    audio = dict(ARCHS[arch], num_attention_heads=[4, 8, 16, 32], window_size=8, spec_size=256,
                 patch_size=4, patch_stride=[4, 4], num_mel_bins=64, enable_fusion=False)
    text = dict(vocab_size=len(tokenizer), hidden_size=768, num_hidden_layers=text_layers,
                num_attention_heads=12, intermediate_size=3072, max_position_embeddings=514,
                type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
                eos_token_id=2)
    torch.manual_seed(0)
    model = ClapModel(ClapConfig(audio_config=audio, text_config=text, projection_dim=512)).eval()
    info = {"file": f"random-htsat-{arch}", "sha256": f"random-seed-0-{arch}", "source": "random"}
    return ClapEncoder("clap-music", model, tokenizer, MelConfig(), device, precision, info, source)


def child(argv: list[str]) -> None:
    """``embedstore <argv>`` with the random CLAP registered (for the kill -9 part)."""
    arch, workdir, fraction = os.environ["GPU_CHECK_ARCH"], Path(os.environ["GPU_CHECK_DIR"]), \
        float(os.environ.get("GPU_CHECK_MEMORY_FRACTION", "0"))

    def load(checkpoint=None, device="auto", precision="fp32", cache_dir=None, **_):
        import torch

        if fraction and torch.cuda.is_available():
            torch.cuda.set_per_process_memory_fraction(fraction)
        return random_clap(arch, device, precision, workdir)

    from embedstore.models import MODELS

    MODELS[MODEL_NAME] = load
    from cli.main import app

    sys.argv = ["embedstore", *argv]
    app()


# ----------------------------------------------------------------------------- utilisation


class Utilisation:
    """Samples GPU utilisation and memory every ``period`` s (NVML, else nvidia-smi)."""

    def __init__(self, period: float = 0.1):
        self.period, self.samples, self._stop = period, [], threading.Event()
        self._read = self._reader()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _reader():
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            return lambda: (pynvml.nvmlDeviceGetUtilizationRates(handle).gpu,
                            pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20)
        except Exception:  # no NVML: nvidia-smi, or nothing
            pass

        def smi():
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                  "--format=csv,noheader,nounits", "-i", "0"],
                                 capture_output=True, text=True, timeout=5).stdout
            gpu, memory = out.strip().split(",")
            return float(gpu), float(memory)
        try:
            smi()
            return smi
        except Exception:
            return None

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), *self._read()))
            except Exception:
                pass
            self._stop.wait(self.period)

    def __enter__(self):
        if self._read is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_util_mean": None, "gpu_util_p50": None, "memory_mib_max": None, "samples": 0}
        util = np.array([s[1] for s in self.samples], float)
        return {"gpu_util_mean": float(util.mean()), "gpu_util_p50": float(np.median(util)),
                "memory_mib_max": float(max(s[2] for s in self.samples)), "samples": len(util)}


# ----------------------------------------------------------------------------- parts


def part_numerics(args, encoder, report: dict) -> None:
    """The flags as recorded, and TF32's effect on the log-mel (the reason for the policy)."""
    import torch

    from embedstore.models.device import device_identity, run_numerics

    report["identity"] = device_identity(encoder.device)
    report["flags_fp32"] = run_numerics("fp32")
    import copy

    rng = np.random.default_rng(0)
    waves = (0.3 * rng.standard_normal((8, encoder.window_samples))).astype(np.float32)
    with torch.inference_mode():  # IEEE float32 on the CPU, which has no TF32
        reference = copy.deepcopy(encoder.front_end).cpu()(torch.from_numpy(waves)).double().numpy()
    results = {}
    for label, tf32 in (("ieee", False), ("tf32", True)):
        if encoder.device.type == "cuda":
            torch.backends.cudnn.conv.fp32_precision = "tf32" if tf32 else "ieee"
            torch.backends.cuda.matmul.fp32_precision = "tf32" if tf32 else "ieee"
        with torch.inference_mode():
            ours = encoder.front_end(torch.from_numpy(waves).to(encoder.device)).cpu().double().numpy()
        diff = np.abs(ours - reference)
        results[label] = {"max_db": float(diff.max()), "p99_db": float(np.quantile(diff, 0.99))}
    run_numerics("fp32")
    report["logmel_vs_cpu_float32"] = results


def _extract(encoder, dataset, out: Path, batch_size: int, workers: int, precision: str) -> dict:
    from embedstore.extract import run_extract
    from embedstore.store import open_store

    encoder.precision = precision
    with Utilisation() as use:
        started = time.perf_counter()
        summary = run_extract(encoder, dataset, [], out, batch_size=batch_size, workers=workers,
                              long_mode="mean", overwrite=True, command=["gpu_check"])
        seconds = time.perf_counter() - started
    with open_store(out) as st:
        vectors = {space: st.audio(space) for space in st.audio_spaces}
        flags = st.provenance["numerics"]
    return {"seconds": seconds, "clips_per_s": len(dataset.items) / seconds, "items": summary.items,
            "failed": len(summary.failed), **use.summary(), "numerics": flags, "_vectors": vectors}


def _compare(ours: dict, reference: dict) -> dict:
    """Joint cosines and pre-joint errors relative to the reference vectors' lengths."""
    joint_cos = np.sum(ours["joint"] * reference["joint"], axis=1)
    pre_err = (np.linalg.norm(ours["prejoint"] - reference["prejoint"], axis=1)
               / np.maximum(np.linalg.norm(reference["prejoint"], axis=1), 1e-12))
    return {"joint_cos_min": float(joint_cos.min()), "joint_max_abs": float(np.abs(ours["joint"] - reference["joint"]).max()),
            "prejoint_rel_err_max": float(pre_err.max()), "prejoint_rel_err_median": float(np.median(pre_err))}


def part_precisions(args, encoder, dataset, label: str, report: dict, cpu_subset: int = 0) -> None:
    runs = {}
    for precision in PRECISIONS:
        runs[precision] = _extract(encoder, dataset, args.workdir / f"{label}-{precision}.h5",
                                   args.batch_size, args.workers, precision)
        print(f"  {label} {precision}: {runs[precision]['clips_per_s']:.1f} clips/s, "
              f"util {runs[precision]['gpu_util_mean']}, failed {runs[precision]['failed']}", flush=True)
    fp32 = runs["fp32"]["_vectors"]
    for precision in ("bf16", "fp16"):
        if runs[precision]["items"] == runs["fp32"]["items"]:
            runs[precision]["vs_fp32"] = _compare(runs[precision]["_vectors"], fp32)
    if cpu_subset and encoder.device.type != "cpu":
        subset = dataclasses.replace(dataset, items=dataset.items[:cpu_subset])
        device = encoder.device
        encoder.model.cpu(), encoder.front_end.cpu()
        encoder.device = __import__("torch").device("cpu")
        cpu = _extract(encoder, subset, args.workdir / f"{label}-cpu.h5", 8, args.workers, "fp32")
        encoder.model.to(device), encoder.front_end.to(device)
        encoder.device = device
        runs["fp32"]["gpu_vs_cpu_fp32"] = _compare({k: v[:cpu_subset] for k, v in fp32.items()},
                                                   cpu["_vectors"])
    report[label] = {p: {k: v for k, v in r.items() if k != "_vectors"} for p, r in runs.items()}


def write_clips(folder: Path, n: int, seconds: float, rate: int = 44100) -> Path:
    """``n`` distinct notes at 44.1 kHz (resampled to 48 kHz by the workers), in parallel."""
    from concurrent.futures import ProcessPoolExecutor

    folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(_write_clip, [(folder, i, seconds, rate) for i in range(n)], chunksize=64))
    rows = ["path,label"] + [f"clip{i:05d}.wav,class{i % 8}" for i in range(n)]
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def _write_clip(job) -> None:
    import soundfile as sf

    folder, i, seconds, rate = job
    rng = np.random.default_rng(i)
    t = np.arange(int(seconds * rate)) / rate
    f0 = rng.uniform(60, 1200)
    note = sum(rng.uniform(0.1, 0.5) / k * np.sin(2 * np.pi * f0 * k * t) for k in range(1, 6))
    note = note * np.exp(-t * rng.uniform(0.3, 2.0)) + 0.01 * rng.standard_normal(t.size)
    sf.write(folder / f"clip{i:05d}.wav", (0.8 * note / np.abs(note).max()).astype(np.float32), rate)


def part_study(args, encoder, dataset, report: dict) -> None:
    """The study scripts' approach against run_extract in bf16, on the same clips."""
    from bench_extract import released_scripts_approach

    subset = dataclasses.replace(dataset, items=dataset.items[:args.study_clips])
    encoder.precision = "fp32"
    released_scripts_approach(encoder, [i.path for i in subset.items[:2]])  # warm-up
    started = time.perf_counter()
    base = released_scripts_approach(encoder, [i.path for i in subset.items])
    base_s = time.perf_counter() - started
    ours = _extract(encoder, subset, args.workdir / "study-bf16.h5", args.batch_size, args.workers, "bf16")
    report["study"] = {"clips": len(subset.items), "baseline_clips_per_s": len(subset.items) / base_s,
                       "ours_bf16_clips_per_s": ours["clips_per_s"],
                       "speedup": ours["clips_per_s"] * base_s / len(subset.items),
                       "ours_gpu_util_mean": ours["gpu_util_mean"],
                       "ours_vs_baseline": _compare(ours["_vectors"], base)}


def part_feeding(args, report: dict) -> None:
    import bench_feeding

    report["feeding"] = bench_feeding.run(args.feeding_clips, 1, 64, args.workers, str(args.device), 1.0)


def _cli(args, argv, env_extra=None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), str(BENCH),
                                                        os.environ.get("PYTHONPATH", "")]),
           "GPU_CHECK_ARCH": args.arch, "GPU_CHECK_DIR": str(args.workdir), **(env_extra or {})}
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "child", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def part_resume(args, folder: Path, report: dict) -> None:
    """kill -9 mid-run and --resume (bit-identical), a smaller --batch-size, and out of memory."""
    from embedstore.store import open_store

    def argv(out, *extra):
        return ["extract", "--model", MODEL_NAME, "--dataset", "folder", "--root", str(folder),
                "--out", str(out), "--device", str(args.device), "--precision", "bf16",
                "--batch-size", str(args.batch_size), "--workers", str(args.workers),
                "--prompts", "track", "--long", "mean", *extra]

    def finish(proc):
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"embedstore exited {proc.returncode}: {err.decode()[-500:]}")

    def audio(path):
        with open_store(path) as st:
            return {space: st.audio(space) for space in st.audio_spaces}, st.provenance

    work = args.workdir
    started = time.perf_counter()
    finish(_cli(args, argv(work / "straight.h5")))
    straight_s = time.perf_counter() - started
    out, journal = work / "killed.h5", work / "killed.h5.partial"
    proc = _cli(args, argv(out))
    deadline = time.monotonic() + straight_s * 3 + 60
    while len(list(journal.glob("batch-*.npz"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    killed_mid_run = proc.poll() is None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    batches_at_kill = len(list(journal.glob("batch-*.npz")))
    import shutil

    shutil.copytree(journal, work / "smaller.h5.partial")
    finish(_cli(args, argv(out, "--resume")))
    finish(_cli(args, argv(work / "smaller.h5", "--resume", "--batch-size", str(max(1, args.batch_size // 4)))))
    reference, _ = audio(work / "straight.h5")
    resumed, prov = audio(out)
    smaller, smaller_prov = audio(work / "smaller.h5")
    report["resume"] = {
        "straight_seconds": straight_s, "killed_mid_run": killed_mid_run,
        "batches_at_kill": batches_at_kill, "resumed_at_row": prov.get("resumed"),
        "bit_identical": all(np.array_equal(reference[s], resumed[s]) for s in reference),
        "max_abs_diff_same_batch": {s: float(np.abs(reference[s] - resumed[s]).max()) for s in reference},
        "smaller_batch_changes": smaller_prov["extraction"].get("batch_size_changes"),
        "vs_smaller_batch": _compare(smaller, reference),
    }
    if args.device.type == "cuda":
        proc = _cli(args, argv(work / "oom.h5", "--batch-size", "1024"), {"GPU_CHECK_MEMORY_FRACTION": "0.01"})
        _, err = proc.communicate()
        lines = [line for line in err.decode().splitlines() if line.strip()]
        report["resume"]["out_of_memory"] = {"exit_code": proc.returncode, "last_line": lines[-1] if lines else "",
                                             "traceback": any("Traceback" in line for line in lines)}


# ----------------------------------------------------------------------------- main


def write_markdown(report: dict, path: Path) -> None:
    lines = [f"# GPU check ({report['device']})", "", "```json", json.dumps(report, indent=1)[:20000], "```"]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json / .md")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--arch", choices=sorted(ARCHS), default="base")
    parser.add_argument("--clips", type=int, default=5000, help="synthetic folder size")
    parser.add_argument("--clip-seconds", type=float, default=2.0)
    parser.add_argument("--notes", type=int, default=0, help="use only this many bundled notes (0: all)")
    parser.add_argument("--study-clips", type=int, default=256)
    parser.add_argument("--feeding-clips", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    parser.add_argument("--parts", default=",".join(PARTS))
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]

    import torch

    from embedstore.datasets import load_dataset
    from embedstore.models.device import resolve_device

    args.device = resolve_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    report = {"device": torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else str(args.device),
              "torch": torch.__version__, "arch": args.arch, "batch_size": args.batch_size,
              "workers": args.workers, "cpu_count": os.cpu_count(), "parts": parts, "timings_s": {}}

    def save():
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        write_markdown(report, args.out / "gpu_check.md")

    encoder = random_clap(args.arch, str(args.device), "fp32", args.workdir)
    notes = load_dataset("notes", None)
    if args.notes:
        notes = dataclasses.replace(notes, items=notes.items[:args.notes])
    folder = None
    for part in parts:
        began = time.perf_counter()
        print(f"[{part}]", flush=True)
        try:
            if part == "numerics":
                part_numerics(args, encoder, report)
            elif part == "notes":
                part_precisions(args, encoder, notes, "notes", report, cpu_subset=8)
            elif part in ("folder", "study", "resume"):
                if folder is None:
                    folder = write_clips(args.workdir / "clips", args.clips, args.clip_seconds)
                    synthetic = load_dataset("folder", folder)
                if part == "folder":
                    part_precisions(args, encoder, synthetic, "folder", report)
                elif part == "study":
                    part_study(args, encoder, synthetic, report)
                else:
                    part_resume(args, folder, report)
            elif part == "feeding":
                part_feeding(args, report)
        except Exception as exc:  # keep the other parts' figures
            report.setdefault("errors", {})[part] = f"{type(exc).__name__}: {exc}"
            print(f"  {part} failed: {exc}", flush=True)
        report["timings_s"][part] = round(time.perf_counter() - began, 1)
        save()
    print(json.dumps(report, indent=1, default=str)[:6000])
    return 1 if report.get("errors") else 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child(sys.argv[2:])
    else:
        sys.exit(main())
