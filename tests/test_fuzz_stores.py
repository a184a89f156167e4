"""Fuzzed stores: every reader ends in success or one of the project's one-line errors.

Hypothesis picks a valid store (single/multi-label, float16, several prompt sets), a
mutation and its seed from ``benchmarks/fuzz_stores.py``; ``check_store`` then runs
``open_store`` with every accessor, ``verify_store`` and the CLI commands ``info``,
``verify`` and ``export``. Mutations made with h5py (valid HDF5, wrong content) run in this
process; byte-level damage runs in the fuzzer's worker process, so that a crash or hang
inside the HDF5 library fails the test instead of ending pytest. A few cases go through
the real console entry point for true exit codes. Every mutation kind runs on every CI\nrun (4 stores each, about 76);
``python benchmarks/fuzz_stores.py`` runs thousands.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fuzz_stores", ROOT / "benchmarks" / "fuzz_stores.py")
fz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fz)

STRUCTURAL = sorted(set(fz.MUTATIONS) - set(fz.BYTE_LEVEL))
FUZZ = settings(
    max_examples=4,  # per mutation kind: 19 kinds, about 76 stores
    deadline=None,
    derandomize=True,  # the same stores on every run, so CI cannot flake
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    return fz.base_stores(tmp_path_factory.mktemp("bases"))


@pytest.fixture(scope="module")
def worker():
    w = fz.Worker(timeout=30)
    yield w
    w.close()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzzed")


@pytest.mark.parametrize("mutation", STRUCTURAL)  # every kind of damage, every run
@FUZZ
@given(kind=st.sampled_from(fz.KINDS), seed=st.integers(0, 2**31 - 1))
def test_structural_damage_ends_in_a_project_error(bases, scratch, kind, mutation, seed):
    target = scratch / "structural.h5"
    what = fz.mutate(bases[kind], target, mutation, seed)
    result = fz.check_store(target, bases[kind], cli=True)
    assert result["problems"] == [], f"{kind} store, {what}"
    if mutation in ("directory", "empty_file", "text_file"):
        assert result["open"] == "NotAStore"


@pytest.mark.parametrize("mutation", fz.BYTE_LEVEL)
@FUZZ
@given(kind=st.sampled_from(fz.KINDS), seed=st.integers(0, 2**31 - 1))
def test_byte_level_damage_never_crashes_or_hangs(bases, scratch, worker, kind, mutation, seed):
    target = scratch / "bytes.h5"
    what = fz.mutate(bases[kind], target, mutation, seed)
    result = worker.check(target, bases[kind], cli=True)
    assert result["problems"] == [], f"{kind} store, {what}"


def test_a_flipped_embedding_byte_is_caught_by_verify(bases, scratch):
    """The oracle's other side: damage to vector data must not pass as intact."""
    target = scratch / "flip.h5"
    target.write_bytes(bases["single"].read_bytes())
    with h5py.File(target, "r") as f:
        offset = f["audio/joint"].id.get_chunk_info(0).byte_offset
    data = bytearray(target.read_bytes())
    data[offset + 5] ^= 0x10
    target.write_bytes(bytes(data))
    result = fz.check_store(target, bases["single"], cli=False)
    assert result["problems"] == [] and result["verify"] == "damaged"


def cli_process(*args):
    return subprocess.run(
        [sys.executable, "-c", "from cli.main import app; app()", *map(str, args)],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )


def _truncate_half(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _newer_version(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        f.attrs["encoding-version"] = "2.0.0"


def _label_out_of_range(path: Path) -> None:
    with h5py.File(path, "r+") as f:
        f["items/label"][0] = 99


def _mutation(name: str):
    return lambda path: fz.MUTATIONS[name](path, np.random.default_rng(0))


# (damage, command, expected exit code, words of the one error line)
REAL_EXITS = [
    (_mutation("empty_file"), "info", 2, "not an HDF5 file"),
    (_mutation("directory"), "verify", 2, "is a directory"),
    (_mutation("text_file"), "export", 2, "not an HDF5 file"),
    (_truncate_half, "info", 1, "truncated"),
    (_newer_version, "info", 2, "newer than this embedstore reads"),
    (_label_out_of_range, "verify", 1, "outside"),
]


@pytest.mark.parametrize("damage, command, code, words", REAL_EXITS)
def test_real_exit_codes_and_one_line(bases, tmp_path, damage, command, code, words):
    target = tmp_path / "store.h5"
    target.write_bytes(bases["single"].read_bytes())
    damage(target)
    args = [command, target] + (["--audio", "joint", "--out", tmp_path / "e"] if command == "export" else [])
    done = cli_process(*args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0], done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert not (tmp_path / "e.npy").exists()


def test_verify_flags_an_array_whose_digest_was_removed(bases, scratch):
    target = scratch / "nodigest.h5"
    target.write_bytes(bases["single"].read_bytes())
    with h5py.File(target, "r+") as f:
        del f["items/label"].attrs["sha256"]
    result = fz.check_store(target, bases["single"], cli=False)
    assert result["verify"] == "damaged" and result["problems"] == []


def test_oracle_detects_a_changed_array(bases, scratch):
    """compare_arrays, the fuzzer's ground truth, is itself able to fail."""
    target = scratch / "changed.h5"
    target.write_bytes(bases["single"].read_bytes())
    with h5py.File(target, "r+") as f:
        f["audio/joint"][0, 0] += np.float32(1)
    elements = fz.spec_elements(bases["single"])
    found, original = fz.digested_arrays(target, elements), fz.digested_arrays(bases["single"], elements)
    assert fz.compare_arrays(found, original) == "differs"
    del found["/audio/joint"]
    assert fz.compare_arrays(found, original) == "missing"
    assert fz.compare_arrays(original, original) == "same"


def test_oracle_judges_by_the_spec_not_by_the_attributes_present(bases, scratch):
    """A mutation that deletes an array's digest attribute must not hide the array from the oracle."""
    target = scratch / "hidden.h5"
    target.write_bytes(bases["single"].read_bytes())
    with h5py.File(target, "r+") as f:
        f["audio/joint"][0, 0] += np.float32(1)
        del f["audio/joint"].attrs["sha256"]
    elements = fz.spec_elements(bases["single"])
    assert "/audio/joint" in elements and "/items/label" in elements
    found, original = fz.digested_arrays(target, elements), fz.digested_arrays(bases["single"], elements)
    assert fz.compare_arrays(found, original) == "differs"


def _loop_the_global_heap(path: Path) -> None:
    """Make the first object of the first global heap collection a free-space entry of size 0."""
    data = bytearray(path.read_bytes())
    collection = data.find(b"GCOL")  # holds the variable-length strings of the root's attributes
    first = collection + 16  # after signature, version, reserved and collection size
    data[first : first + 2] = b"\0\0"  # heap object index 0: free space
    data[first + 8 : first + 16] = b"\0" * 8  # of size 0, so the decoder never advances
    path.write_bytes(bytes(data))


def test_a_global_heap_that_would_hang_hdf5_is_refused(bases, tmp_path):
    """HDF5 2.0.0 loops forever on this heap (the fuzzer's only hang); the reader refuses it first."""
    target = tmp_path / "heap.h5"
    target.write_bytes(bases["single"].read_bytes())
    _loop_the_global_heap(target)
    done = cli_process("info", target)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "damaged HDF5 global heap" in lines[0], done.stderr


@pytest.mark.parametrize("change", ["rename", "delete"])
def test_verify_catches_a_renamed_or_deleted_prompt_set(bases, scratch, change):
    """Digests cover contents, not names: a bit flip in a link name once passed as intact."""
    target = scratch / f"{change}.h5"
    target.write_bytes(bases["prompts"].read_bytes())
    with h5py.File(target, "r+") as f:
        if change == "rename":
            f.move("text/track", "text/t2ack")
        else:
            del f["audio/prejoint"]
    result = fz.check_store(target, bases["prompts"], cli=False)
    assert result["open"] == "ok" and result["verify"] == "damaged" and result["problems"] == []
