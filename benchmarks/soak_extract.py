"""Soak test: ``embedstore extract`` killed with SIGKILL again and again, resumed each time.

A corpus of short synthesized clips (a few of them unreadable, so failure records must
survive resumes too) is embedded once without interruption, by the real CLI in a child
process with the small torch test encoder (``tests/extract_encoder.py``). Then:

1. **Finalize kills.** For each moment of the final write (a journal batch fsynced but not
   renamed, the store's flush, just before and just after the store's rename, halfway
   through removing the journal) a run kills itself with SIGKILL exactly there, and is
   resumed to the end.
2. **Random kills.** Runs are started with ``--resume`` and their process group is sent
   SIGKILL after a random delay: every other run anywhere up to the uninterrupted run's
   wall time, the others within the span the uninterrupted run spent on batches, counted
   from the moment the run journals its first new rows. This goes on until ``--kills``
   kills have landed; a run that finishes first completes its round, and a new one starts.

Every finished store must equal the uninterrupted one bit for bit (items, failures, audio
and text vectors), pass ``verify_store``, and leave no journal folder behind. After every
kill, the output path must hold nothing, or a store that opens (never a damaged one).

Usage::

    python benchmarks/soak_extract.py --kills 20 --seed 0 --clips 24

prints one summary line and exits non-zero on any mismatch.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
CHILD = "child"

#: Moments of a run's final write at which the child kills itself (see ``_install_kill_hook``).
FINALIZE_PHASES = ("batch-before-rename", "store-flush", "store-before-rename",
                   "store-after-rename", "journal-removal")
KILL_ENV = "SOAK_KILL_AT"


# ----------------------------------------------------------------------------- the child


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install_kill_hook(phase: str, out: Path) -> None:
    """Make this process SIGKILL itself at ``phase`` of the run writing ``out``."""
    import embedstore.store.core

    real_replace, real_rmtree = os.replace, shutil.rmtree
    real_finish = embedstore.store.core.StoreWriter._finish
    batches_renamed = 0

    def replace(src, dst, *args, **kwargs):
        nonlocal batches_renamed
        dst = Path(dst)
        if phase == "batch-before-rename" and dst.name.startswith("batch-"):
            batches_renamed += 1
            if batches_renamed == 2:  # the second batch: fsynced under its temp name
                _kill_self()
        if dst == out and phase == "store-before-rename":
            _kill_self()
        real_replace(src, dst, *args, **kwargs)
        if dst == out and phase == "store-after-rename":
            _kill_self()

    def finish(writer):
        # Every vector is on disk in the temporary file (written straight to its descriptor),
        # HDF5's metadata not yet flushed: the store's file is half written when the kill lands.
        if phase == "store-flush":
            _kill_self()
        return real_finish(writer)

    def rmtree(path, *args, **kwargs):
        path = Path(path)
        # The journal, under its own name or whatever name it is moved to for deletion.
        journal = path.parent == out.parent and path.name.startswith(out.name + ".partial")
        if phase == "journal-removal" and journal and path.is_dir():
            # Halfway, header first: the worst order a directory listing can give.
            files = sorted(path.iterdir(), key=lambda p: p.name != "header.json")
            for victim in files[: max(1, len(files) // 2)]:
                victim.unlink()
            _kill_self()
        return real_rmtree(path, *args, **kwargs)

    os.replace, shutil.rmtree = replace, rmtree
    embedstore.store.core.StoreWriter._finish = finish


def run_child(argv: list[str]) -> None:
    """``embedstore <argv>`` with the test encoder registered and the kill hook armed."""
    sys.path[:0] = [str(REPO), str(TESTS)]
    import extract_encoder

    extract_encoder.register()
    if os.environ.get(KILL_ENV):
        out = Path(argv[argv.index("--out") + 1]).resolve()
        _install_kill_hook(os.environ[KILL_ENV], out)
    from cli.main import app

    sys.argv = ["embedstore", *argv]
    app()


# ----------------------------------------------------------------------------- the soak


def write_corpus(root: Path, n_clips: int, seed: int) -> None:
    """``n_clips`` seeded tones of 0.1-1.6 s (some span several windows) and a labels CSV;
    every seventh file is unreadable (empty or text)."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = ["path,label"]
    for i in range(n_clips):
        name = f"clip{i:04d}.wav"
        if i % 7 == 6:
            (root / name).write_bytes(b"" if i % 14 == 6 else b"not audio at all\n" * 8)
        else:
            rate = int(rng.choice([8000, 16000, 22050]))
            t = np.arange(int(rate * rng.uniform(0.1, 1.6))) / rate
            audio = 0.4 * np.sin(2 * np.pi * rng.uniform(100, 2000) * t) + 0.02 * rng.standard_normal(len(t))
            sf.write(root / name, audio.astype(np.float32), rate)
        lines.append(f"{name},{('low', 'mid', 'high')[i % 3]}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


def extract_args(root: Path, out: Path) -> list[str]:
    return ["extract", "--model", "test-tiny", "--dataset", "folder", "--root", str(root),
            "--out", str(out), "--batch-size", "3", "--workers", "1", "--long", "mean",
            "--prompts", "track", "--prompts", "ontology", "--resume"]


def start(args: list[str], log: Path, phase: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop(KILL_ENV, None)
    if phase:
        env[KILL_ENV] = phase
    # Its own process group, so that one SIGKILL takes the decoding worker down with it;
    # stderr to a file, which an orphaned worker cannot hold open the way it holds a pipe.
    with open(log, "wb") as err:
        return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), CHILD, *args],
                                env=env, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)


def kill_group(proc: subprocess.Popen) -> int:
    """SIGKILL the run's process group (what is left of it); return the main process's status."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.wait()


def finish(proc: subprocess.Popen, log: Path, what: str) -> None:
    proc.wait()
    kill_group(proc)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip()[-400:]
        raise SoakFailure(f"{what} exited {proc.returncode}: {tail}")


class SoakFailure(Exception):
    """A killed-and-resumed run did not end as the uninterrupted one."""


def read_store(path: Path) -> dict:
    """Everything that must survive, as bytes where it is numbers."""
    from embedstore.store import open_store

    with open_store(path) as st:
        return {
            "ids": list(st.item_ids), "paths": list(st.item_paths), "failed": list(st.failed),
            "labels": st.label_matrix.tobytes(),
            "audio": {space: st.audio(space).tobytes() for space in st.audio_spaces},
            "text": {(name, space): st.text(name, space).tobytes()
                     for name in st.prompt_sets for space in st.prompt_set(name).spaces},
        }


def check_after_kill(out: Path) -> None:
    """The output path holds nothing, or a store that opens: never a damaged file."""
    from embedstore.errors import StoreIncomplete
    from embedstore.store import open_store

    if not out.exists():
        return
    try:
        open_store(out).close()
    except StoreIncomplete:
        pass
    except Exception as exc:
        raise SoakFailure(f"after a kill, {out.name} does not open: {exc}") from None


def check_finished(out: Path, reference: dict) -> None:
    from embedstore.store.verify import verify_store

    report = verify_store(out)
    if not report.ok:
        raise SoakFailure(f"{out.name} fails verify: {report.problems[0]}")
    got = read_store(out)
    for key in reference:
        if got[key] != reference[key]:
            raise SoakFailure(f"{out.name}: {key} differ from the uninterrupted run")
    journal = out.with_name(out.name + ".partial")
    if journal.exists():
        raise SoakFailure(f"{journal.name} was left behind after the run finished")


def soak(kills: int, seed: int, clips: int, workdir: Path, figures: dict,
         phases: tuple[str, ...] = FINALIZE_PHASES, say=print) -> dict:
    """Run the soak in ``workdir``, counting in ``figures``; raise SoakFailure on a mismatch."""
    rng = random.Random(seed)
    root = workdir / "clips"
    write_corpus(root, clips, seed)

    log = workdir / "child-stderr.log"
    began = time.monotonic()
    proc = start(extract_args(root, workdir / "reference.h5"), log)
    wait_for_new_rows(proc, workdir / "reference.h5", 0, timeout=None)
    startup_wall = time.monotonic() - began  # start-up, text prompts, the first batch
    finish(proc, log, "the uninterrupted run")
    full_wall = time.monotonic() - began
    rows_wall = max(full_wall - startup_wall, 0.05)
    reference = read_store(workdir / "reference.h5")
    figures.update(clips=clips, items=len(reference["ids"]), failed=len(reference["failed"]),
                   finalize_kills=0, random_kills=0, rounds=0, starts=1,
                   uninterrupted_s=round(full_wall, 1))

    for phase in phases:
        out = workdir / f"phase-{phase}.h5"
        proc = start(extract_args(root, out), log, phase)
        proc.wait()
        kill_group(proc)
        figures["starts"] += 1
        if proc.returncode != -signal.SIGKILL:
            raise SoakFailure(f"the run meant to die at {phase} exited {proc.returncode}")
        figures["finalize_kills"] += 1
        check_after_kill(out)
        finish(start(extract_args(root, out), log), log, f"the resume after a kill at {phase}")
        figures["starts"] += 1
        check_finished(out, reference)
        figures["rounds"] += 1
        say(f"kill at {phase}: resumed, identical")

    round_no, out = 0, workdir / "round-0.h5"
    figures["kills_after_new_rows"] = 0
    while figures["random_kills"] < kills:
        journaled = _batches(out)
        proc = start(extract_args(root, out), log)
        figures["starts"] += 1
        # Every other kill lands anywhere in the run's life; the others once it has
        # journaled new rows, so that many fall among the batches and not in start-up.
        while_writing = figures["starts"] % 2 == 0
        try:
            if while_writing:
                wait_for_new_rows(proc, out, journaled, timeout=full_wall * 2)
            proc.wait(timeout=rng.uniform(0.0, rows_wall if while_writing else full_wall))
        except subprocess.TimeoutExpired:
            kill_group(proc)
            figures["random_kills"] += 1
            figures["kills_after_new_rows"] += _batches(out) > journaled
            check_after_kill(out)
            continue
        finish(proc, log, f"round {round_no}")  # it finished before its kill: round complete
        check_finished(out, reference)
        figures["rounds"] += 1
        say(f"round {round_no} finished; {figures['random_kills']} random kills so far, identical")
        round_no += 1
        out = workdir / f"round-{round_no}.h5"
    finish(start(extract_args(root, out), log), log, f"round {round_no}")
    figures["starts"] += 1
    check_finished(out, reference)
    figures["rounds"] += 1
    figures["stale_temp_files"] = len([p for p in workdir.iterdir() if p.name.endswith(".tmp")])
    return figures


def wait_for_new_rows(proc: subprocess.Popen, out: Path, journaled: int, timeout: float | None) -> None:
    """Return once ``out``'s journal holds more than ``journaled`` batches or the run ended;
    raise ``subprocess.TimeoutExpired`` after ``timeout`` seconds."""
    began = time.monotonic()
    while proc.poll() is None and _batches(out) <= journaled:
        if timeout is not None and time.monotonic() - began > timeout:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(0.01)


def _batches(out: Path) -> int:
    """Batches journaled so far for ``out``."""
    return len(list(out.with_name(out.name + ".partial").glob("batch-*.npz")))


def summary_line(figures: dict, ok: bool) -> str:
    return (f"soak_extract: {figures.get('random_kills', 0)} random SIGKILLs "
            f"({figures.get('kills_after_new_rows', 0)} after the run had journaled new rows) + "
            f"{figures.get('finalize_kills', 0)} during the final write survived; "
            f"{figures.get('rounds', 0)} rounds, {figures.get('starts', 0)} process starts, "
            f"{figures.get('clips', 0)} clips ({figures.get('failed', 0)} unreadable); "
            f"bit-identical to the uninterrupted run and verify ok: {'yes' if ok else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20, help="random SIGKILLs to land (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="corpus and kill-time seed")
    parser.add_argument("--clips", type=int, default=24, help="clips in the corpus (default 24)")
    parser.add_argument("--phases", default=",".join(FINALIZE_PHASES),
                        help="moments of the final write to kill at, comma-separated "
                             f"(default all: {','.join(FINALIZE_PHASES)}; '' for none)")
    parser.add_argument("--workdir", type=Path, help="keep the corpus and stores here")
    args = parser.parse_args(argv)
    phases = tuple(p for p in args.phases.split(",") if p)
    if args.kills < 0 or args.clips < 1:
        parser.error("--kills must be >= 0 and --clips >= 1")
    if set(phases) - set(FINALIZE_PHASES):
        parser.error(f"unknown phase(s): {', '.join(sorted(set(phases) - set(FINALIZE_PHASES)))}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="soak_extract_"))
    figures: dict = {}
    try:
        soak(args.kills, args.seed, args.clips, workdir, figures, phases)
        ok = True
    except SoakFailure as exc:
        print(f"soak_extract: MISMATCH: {exc}", file=sys.stderr)
        ok = False
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(summary_line(figures, ok) + (f"; stale temp files {figures['stale_temp_files']}"
                                       if "stale_temp_files" in figures else ""))
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        run_child(sys.argv[2:])
    else:
        sys.exit(main())
