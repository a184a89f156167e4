"""Readers while a store is being written: a clear "incomplete", or the old complete store.

Extraction appends to a journal folder beside the store and writes the store itself only
at the end, in one rename. So a reader either gets StoreIncomplete (one line naming the
progress and ``--resume``) or, when an earlier store is being replaced, that earlier store
whole, until the rename; never a half-written file. The writers here are real processes
running beside the readers.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from embedstore.errors import StoreIncomplete
from embedstore.store import create_store, journal_dir, open_store
from embedstore.store.journal import Journal

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
N = 120

WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from embedstore.store.journal import Journal

    out, overwrite, hold_after = sys.argv[1], sys.argv[2] == "1", sys.argv[3] == "1"
    go, done = Path(out + ".go"), Path(out + ".done")
    n = %d
    vectors = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    j = Journal.open(
        out,
        header=dict(model="new", dataset="unit", classes=["a", "b", "c"], provenance={}),
        items=dict(ids=[f"i{i}" for i in range(n)], labels=[i %% 3 for i in range(n)]),
        spaces={"joint": 4},
        overwrite=overwrite,
    )
    for start in range(0, n, 10):
        j.append(start, range(start, start + 10), {"joint": vectors[start:start + 10]})
        print(start + 10, flush=True)
        if start == 50:
            while not go.exists():  # hold mid-run until the readers have looked
                time.sleep(0.02)
    j.finalize()
    print("finished", flush=True)
    while hold_after and not done.exists():  # stay alive until a reader has seen the new store
        time.sleep(0.02)
    """
    % N
)


def start_writer(tmp_path, out, overwrite=False, hold_after=False):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    return subprocess.Popen(
        [sys.executable, str(script), str(out), "1" if overwrite else "0", "1" if hold_after else "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def wait_for_rows(proc, rows):
    for line in proc.stdout:
        if line.strip().isdigit() and int(line) >= rows:
            return
    raise AssertionError(f"writer ended before row {rows} (exit {proc.wait()})")


def one_line(text: str) -> str:
    text = text.strip()
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


def make_old_store(path):
    with create_store(path, model="old", dataset="unit", classes=["a", "b", "c"]) as w:
        w.set_items([f"old{i}" for i in range(6)], labels=np.arange(6) % 3)
        w.add_audio("joint", np.ones((6, 4)))


def test_store_being_extracted_is_incomplete_for_every_reader(tmp_path):
    out = tmp_path / "out.h5"
    proc = start_writer(tmp_path, out)
    try:
        wait_for_rows(proc, 60)
        with pytest.raises(StoreIncomplete) as err:
            open_store(out)
        message = one_line(str(err.value))
        assert "60 of 120 items done" in message and "--resume" in message
        for args in (["info", out], ["verify", out], ["export", out, "--audio", "joint", "--out", tmp_path / "e"]):
            result = runner.invoke(app, [str(a) for a in args])
            assert result.exit_code == 1, result.output
            assert "--resume" in one_line(result.stderr) and "60 of 120" in result.stderr
        done = subprocess.run(
            [sys.executable, "-c", "from cli.main import app; app()", "info", str(out)],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )
        assert done.returncode == 1 and "is incomplete" in one_line(done.stderr)
        assert not (tmp_path / "e.npy").exists()
    finally:
        Path(f"{out}.go").touch()
        proc.communicate(timeout=120)
    assert proc.returncode == 0
    with open_store(out) as st:
        assert st.n_items == N and st.model == "new"
    assert not journal_dir(out).exists()


def test_extraction_killed_midway_still_says_incomplete(tmp_path):
    out = tmp_path / "out.h5"
    proc = start_writer(tmp_path, out)
    wait_for_rows(proc, 60)
    proc.kill()
    proc.wait(timeout=60)
    result = runner.invoke(app, ["verify", str(out)])
    assert result.exit_code == 1 and "interrupted (60 of 120 items done)" in one_line(result.stderr)
    j = Journal.open(
        out,
        header=dict(model="new", dataset="unit", classes=["a", "b", "c"], provenance={}),
        items=dict(ids=[f"i{i}" for i in range(N)], labels=[i % 3 for i in range(N)]),
        spaces={"joint": 4},
        resume=True,
    )
    assert j.next_row == 60


def test_overwrite_serves_the_old_store_until_the_rename(tmp_path):
    out = tmp_path / "out.h5"
    make_old_store(out)
    old_bytes = out.read_bytes()
    proc = start_writer(tmp_path, out, overwrite=True, hold_after=True)
    try:
        wait_for_rows(proc, 60)
        with open_store(out) as st:
            assert st.model == "old" and st.n_items == 6
        result = runner.invoke(app, ["verify", str(out)])
        assert result.exit_code == 0 and "intact" in result.stdout
        assert out.read_bytes() == old_bytes
        held = open_store(out)  # a reader that stays open across the rename
        # Read while the writer finishes, until the new store shows: every read is the old
        # store or the new one, whole. The writer is released only after the first read
        # here, so the reads span the rename (both stores are seen).
        seen = set()
        deadline = time.monotonic() + 120
        while "new" not in seen and proc.poll() is None and time.monotonic() < deadline:
            with open_store(out) as st:
                audio = st.audio("joint")
                if st.model == "old":
                    assert st.n_items == 6 and np.all(audio == 1)
                else:
                    assert st.n_items == N and np.array_equal(audio, np.arange(N * 4, dtype=np.float32).reshape(N, 4))
                seen.add(st.model)
            Path(f"{out}.go").touch()
    finally:
        Path(f"{out}.go").touch()
        Path(f"{out}.done").touch()
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    with open_store(out) as st:
        assert st.model == "new" and st.n_items == N
    # The reader opened before the rename still sees the old store, consistently.
    assert held.model == "old" and np.all(held.audio("joint") == 1) and list(held.item_ids)[0] == "old0"
    held.close()
    assert seen == {"old", "new"}


CREATE_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import numpy as np
    from embedstore.store import create_store

    out = sys.argv[1]
    with create_store(out, model="new", dataset="unit", classes=["a", "b", "c"], overwrite=True) as w:
        w.set_items([f"i{i}" for i in range(30)], labels=np.arange(30) % 3)
        w.add_audio("joint", np.zeros((30, 4)))
        print("inside", flush=True)
        while not Path(out + ".go").exists():
            time.sleep(0.02)
    print("finished", flush=True)
    """
)


def test_create_store_overwrite_is_invisible_until_it_commits(tmp_path):
    out = tmp_path / "out.h5"
    make_old_store(out)
    old_bytes = out.read_bytes()
    script = tmp_path / "create_writer.py"
    script.write_text(CREATE_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == "inside"
        assert out.read_bytes() == old_bytes
        result = runner.invoke(app, ["info", str(out)])
        assert result.exit_code == 0 and "old" in result.stdout
    finally:
        Path(f"{out}.go").touch()
    proc.communicate(timeout=60)
    assert proc.returncode == 0
    with open_store(out) as st:
        assert st.model == "new" and st.n_items == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.h5", "out.h5.go", "create_writer.py"])
