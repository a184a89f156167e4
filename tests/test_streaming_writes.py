"""Writing a store streams to disk: memory is bounded by a batch, never by the store's size.

Each case runs in a child process (a fresh peak-RSS counter) that writes a store several
times larger than the memory it is allowed to grow by, then reports its peak resident
memory (``ru_maxrss``) before and after. Libraries are imported and a small store written
first, so the growth measured is the big write's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MIB = 1 << 20
ROWS, DIM, BATCH = 24576, 2048, 512  # 192 MiB of float32 vectors, in 48 batches of 4 MiB
STORE_BYTES = ROWS * DIM * 4
CAP = STORE_BYTES // 4  # the store is four times what the writer may grow by

CHILD = r"""
import json, resource, sys
from pathlib import Path
import numpy as np
from embedstore.store import create_store, edit_store, open_store
from embedstore.store.journal import Journal
from embedstore.store.verify import verify_store
from embedstore.store.interchange import import_store

folder, rows, dim, batch, step = Path(sys.argv[1]), *map(int, sys.argv[2:5]), sys.argv[5]

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux

def batch_rows(start):
    return np.random.default_rng(start).standard_normal((min(batch, rows - start), dim)).astype(np.float32)

def warm_up():
    # Import everything the writers use and write a small store, so the peak that follows is the big write's.
    with create_store(folder / "warm.h5", model="m", dataset="d", classes=["a"], overwrite=True) as w:
        w.set_items(["x"], labels=[0])
        w.add_audio("joint", np.ones((1, dim)))
    verify_store(folder / "warm.h5")

ids = [f"item-{i}" for i in range(rows)]
header = dict(model="m", dataset="d", classes=["a", "b"], provenance={})
items = dict(ids=ids, paths=[f"clips/{i}.wav" for i in ids], labels=[i % 2 for i in range(rows)])
if step == "finalize":
    j = Journal.open(folder / "s.h5", header=header, items=items, spaces={"joint": dim})
    for start in range(0, rows, batch):
        j.append(start, range(start, start + len(batch_rows(start))), {"joint": batch_rows(start)})
    warm_up()
    before = peak()
    j.finalize()
elif step == "import":
    with open(folder / "items.csv", "w") as fh:
        fh.write("id,label\n" + "".join(f"{i},{'ab'[n % 2]}\n" for n, i in enumerate(ids)))
    with open(folder / "joint.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
        for start in range(0, rows, batch):
            fh.write(batch_rows(start).tobytes())
    warm_up()
    before = peak()
    import_store(folder / "s.h5", items_csv=folder / "items.csv", id_column="id", label_column="label",
                 audio=[f"joint={folder / 'joint.npy'}"])
else:
    warm_up()
    before = peak()
    if step == "edit":
        with edit_store(folder / "s.h5") as w:
            w.add_audio("prejoint", np.ones((rows, 4)))
    else:
        assert verify_store(folder / "s.h5").ok
with open_store(folder / "s.h5") as st:
    first = st.audio("joint", lazy=True)[:batch]
print(json.dumps({"before": before, "after": peak(), "size": (folder / "s.h5").stat().st_size,
                  "first_ok": bool(np.array_equal(first, batch_rows(0)))}))
"""


def run_child(folder: Path, step: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), str(ROWS), str(DIM), str(BATCH), step],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def big_store(tmp_path_factory):
    """A 192 MiB store finalized from a journal of 48 batches: (folder, child report)."""
    folder = tmp_path_factory.mktemp("big")
    return folder, run_child(folder, "finalize")


def check(report: dict) -> None:
    growth = report["after"] - report["before"]
    assert report["size"] >= STORE_BYTES and report["first_ok"]
    assert growth < CAP, f"peak memory grew by {growth / MIB:.0f} MiB writing a {report['size'] / MIB:.0f} MiB store"


def test_journal_finalize_streams_a_store_four_times_larger_than_its_memory_growth(big_store):
    check(big_store[1])


def test_edit_store_copies_on_disk_and_verify_reads_in_blocks(big_store):
    folder, _ = big_store
    check(run_child(folder, "edit"))
    check(run_child(folder, "verify"))


def test_import_streams_a_large_npy(tmp_path):
    check(run_child(tmp_path, "import"))
