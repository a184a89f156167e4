"""Writes that fail (disk full, file size limit, read-only directory) leave earlier files intact.

Each case checks the same three things: the error is WriteFailed (one line; exit 1 from the
CLI), the store that was there before is byte-identical, and no temporary file is left.
A full disk is a small tmpfs and a read-only directory a read-only bind mount (both need
root, as CI has; the tests skip with the reason otherwise); the file size limit is
RLIMIT_FSIZE in a child process, and the monkeypatched cases need nothing.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from embedstore.errors import WriteFailed
from embedstore.store import create_store, edit_store, journal_dir, open_store
from embedstore.store.interchange import export_space
from embedstore.store.journal import Journal

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["violin", "flute", "oboe"]
runner = CliRunner()


def make_store(path, n=6, dim=4, seed=0, overwrite=False):
    rng = np.random.default_rng(seed)
    with create_store(path, model="toy", dataset="unit", classes=CLASSES, overwrite=overwrite) as w:
        w.set_items([f"id{i}" for i in range(n)], [f"a/{i}.wav" for i in range(n)], labels=np.arange(n) % 3)
        w.add_audio("joint", rng.standard_normal((n, dim)))


def one_line(message: str) -> str:
    message = message.strip()
    assert message and "\n" not in message and "Traceback" not in message, message
    return message


def leftovers(folder: Path) -> list[str]:
    """Temporary files a writer could leave behind (hidden ``.NAME.XXXX.tmp``)."""
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def cli_process(*args, **kwargs):
    """The real entry point in a child process: true exit codes and stderr."""
    return subprocess.run(
        [sys.executable, "-c", "from cli.main import app; app()", *map(str, args)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, **kwargs,
    )


def release_files(folder: Path, n: int, dim: int) -> list[str]:
    """An items CSV and an audio .npy for ``embedstore import``; returns its arguments."""
    (folder / "items.csv").write_text("clip,label\n" + "".join(f"c{i},{CLASSES[i % 3]}\n" for i in range(n)))
    np.save(folder / "joint.npy", np.random.default_rng(1).standard_normal((n, dim)).astype(np.float32))
    return ["--items", folder / "items.csv", "--id-column", "clip", "--label-column", "label", "--audio", f"joint={folder / 'joint.npy'}"]


# -- mounts: a small disk and a read-only folder ------------------------------------------


def _mount(args: list[str]) -> None:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) for a tmpfs or a read-only bind mount")
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount not permitted here: {done.stderr.strip()}")


def _umount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 512 KiB tmpfs: room for small stores, not for large ones."""
    disk = tmp_path / "disk"
    disk.mkdir()
    _mount(["-t", "tmpfs", "-o", "size=512k", "tmpfs", str(disk)])
    yield disk
    _umount(disk)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` with a ballast file until about ``leave`` bytes are free."""
    st = os.statvfs(disk)
    free = st.f_bavail * st.f_frsize
    ballast = disk / "ballast"
    with open(ballast, "ab") as fh:
        fh.write(b"\0" * max(0, free - leave))
    return ballast


@pytest.fixture
def readonly_dir(tmp_path):
    """(writable view, read-only view) of one folder, through a read-only bind mount."""
    src, view = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    view.mkdir()
    _mount(["--bind", str(src), str(view)])
    done = subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True, text=True)
    if done.returncode != 0:
        _umount(view)
        pytest.skip(f"read-only remount not permitted here: {done.stderr.strip()}")
    yield src, view
    _umount(view)


# -- disk full ----------------------------------------------------------------------------


def test_create_store_on_a_full_disk_keeps_the_earlier_store(small_disk):
    path = small_disk / "s.h5"
    make_store(path)
    before = path.read_bytes()
    fill(small_disk, leave=64 * 1024)
    with pytest.raises(WriteFailed) as err:
        make_store(path, n=300, dim=128, overwrite=True)  # about 150 KiB of vectors
    assert "No space left" in one_line(str(err.value)) and "nothing was replaced" in str(err.value)
    assert path.read_bytes() == before
    assert leftovers(small_disk) == []
    open_store(path).close()


def test_new_store_on_a_full_disk_leaves_nothing(small_disk):
    fill(small_disk, leave=16 * 1024)
    with pytest.raises(WriteFailed):
        make_store(small_disk / "new.h5", n=300, dim=128)
    assert sorted(p.name for p in small_disk.iterdir()) == ["ballast"]


def test_edit_store_on_a_full_disk_keeps_the_store(small_disk):
    path = small_disk / "s.h5"
    make_store(path)
    before = path.read_bytes()
    fill(small_disk, leave=32 * 1024)
    with pytest.raises(WriteFailed):
        with edit_store(path) as w:
            w.add_audio("prejoint", np.ones((6, 20000)))
    assert path.read_bytes() == before and leftovers(small_disk) == []
    with open_store(path) as st:
        assert st.audio_spaces == ["joint"]


def journal_args(n=40, dim=256):
    header = dict(model="toy", dataset="unit", classes=CLASSES, provenance={"checkpoint_sha256": "ab"})
    items = dict(ids=[f"i{i}" for i in range(n)], paths=[f"p{i}.wav" for i in range(n)], labels=[i % 3 for i in range(n)])
    return dict(header=header, items=items, spaces={"joint": dim})


def test_journal_append_and_finalize_on_a_full_disk_resume_after_space_is_freed(small_disk):
    out = small_disk / "out.h5"
    vectors = np.random.default_rng(2).standard_normal((40, 256)).astype(np.float32)  # 40 KiB
    j = Journal.open(out, **journal_args())
    j.append(0, range(10), {"joint": vectors[:10]})
    ballast = fill(small_disk, leave=8 * 1024)
    with pytest.raises(WriteFailed) as err:
        j.append(10, range(10, 40), {"joint": vectors[10:40]})
    one_line(str(err.value))
    assert j.next_row == 10 and leftovers(small_disk) == []
    ballast.unlink()

    # A new run resumes from the last durable batch.
    j = Journal.open(out, resume=True, **journal_args())
    assert j.next_row == 10
    j.append(10, range(10, 40), {"joint": vectors[10:40]})
    ballast = fill(small_disk, leave=8 * 1024)
    with pytest.raises(WriteFailed):
        j.finalize()
    assert not out.exists() and journal_dir(out).is_dir() and leftovers(small_disk) == []
    ballast.unlink()
    j.finalize()
    with open_store(out) as st:
        np.testing.assert_array_equal(st.audio("joint"), vectors)
    assert not journal_dir(out).exists()


def test_cli_import_on_a_full_disk(small_disk, tmp_path):
    path = small_disk / "s.h5"
    make_store(path)
    before = path.read_bytes()
    args = release_files(tmp_path, n=300, dim=128)
    fill(small_disk, leave=64 * 1024)
    result = cli("import", path, *args, "--overwrite")
    assert result.exit_code == 1
    assert "No space left" in one_line(result.stderr)
    done = cli_process("import", path, *args, "--overwrite")
    assert done.returncode == 1 and "No space left" in one_line(done.stderr)
    assert path.read_bytes() == before and leftovers(small_disk) == []


def test_cli_export_on_a_full_disk_keeps_the_earlier_export(small_disk, tmp_path):
    store = tmp_path / "big.h5"
    make_store(store, n=300, dim=128)
    prefix = small_disk / "joint"
    (small_disk / "joint.npy").write_bytes(b"earlier npy")
    (small_disk / "joint.csv").write_text("earlier csv\n")
    fill(small_disk, leave=32 * 1024)
    result = cli("export", store, "--audio", "joint", "--out", prefix, "--overwrite")
    # numpy reports a short write ("38400 requested and 8160 written") rather than ENOSPC.
    assert result.exit_code == 1 and "nothing was replaced" in one_line(result.stderr)
    assert (small_disk / "joint.npy").read_bytes() == b"earlier npy"
    assert (small_disk / "joint.csv").read_text() == "earlier csv\n"
    assert leftovers(small_disk) == []


def test_export_whose_second_file_fails_keeps_both_earlier_files(tmp_path, monkeypatch):
    """The .npy fits, the .csv does not: neither earlier file may change."""
    store = tmp_path / "s.h5"
    make_store(store)
    (tmp_path / "e.npy").write_bytes(b"earlier npy")
    (tmp_path / "e.csv").write_text("earlier csv\n")
    real_open = open

    def open_failing_csv(file, mode="r", *args, **kwargs):
        if "w" in mode and str(file).endswith(".tmp") and ".e.csv." in str(file):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", open_failing_csv)
    with pytest.raises(WriteFailed):
        export_space(store, tmp_path / "e", audio="joint", overwrite=True)
    monkeypatch.undo()
    assert (tmp_path / "e.npy").read_bytes() == b"earlier npy"
    assert (tmp_path / "e.csv").read_text() == "earlier csv\n"
    assert leftovers(tmp_path) == []


# -- file size limit ----------------------------------------------------------------------


def _limit_file_size():
    # Ignored SIGXFSZ makes an over-limit write fail with EFBIG instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (128 * 1024, 128 * 1024))


LIMITED_CREATE = """
import sys, numpy as np
from embedstore.errors import WriteFailed
from embedstore.store import create_store
try:
    with create_store(sys.argv[1], model="toy", dataset="unit", classes=["a"], overwrite=True) as w:
        w.set_items([f"i{i}" for i in range(400)], labels=np.zeros(400, int))
        w.add_audio("joint", np.ones((400, 128)))
except WriteFailed as exc:
    print(exc)
    sys.exit(3)
"""


def test_file_size_limit_library_and_cli(tmp_path):
    path = tmp_path / "s.h5"
    make_store(path)
    before = path.read_bytes()
    done = subprocess.run(
        [sys.executable, "-c", LIMITED_CREATE, str(path)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, preexec_fn=_limit_file_size,
    )
    assert done.returncode == 3, done.stderr
    assert "File too large" in one_line(done.stdout)
    args = release_files(tmp_path, n=400, dim=128)
    done = cli_process("import", path, *args, "--overwrite", preexec_fn=_limit_file_size)
    assert done.returncode == 1 and "File too large" in one_line(done.stderr)
    assert path.read_bytes() == before and leftovers(tmp_path) == []


# -- read-only directory ------------------------------------------------------------------


def test_read_only_directory(readonly_dir, tmp_path):
    src, view = readonly_dir
    make_store(src / "s.h5")
    before = (src / "s.h5").read_bytes()
    path = view / "s.h5"
    with pytest.raises(WriteFailed, match="Read-only file system"):
        make_store(path, overwrite=True)
    with pytest.raises(WriteFailed, match="Read-only file system"):
        with edit_store(path) as w:
            w.add_audio("prejoint", np.ones((6, 3)))
    with pytest.raises(WriteFailed, match="Read-only file system"):
        Journal.open(view / "new.h5", **journal_args())
    args = release_files(tmp_path, n=6, dim=4)
    result = cli("import", path, *args, "--overwrite")
    assert result.exit_code == 1 and "Read-only file system" in one_line(result.stderr)
    result = cli("export", path, "--audio", "joint", "--out", view / "e")
    assert result.exit_code == 1 and "Read-only file system" in one_line(result.stderr)
    done = cli_process("import", path, *args, "--overwrite")
    assert done.returncode == 1 and "Read-only file system" in one_line(done.stderr)
    assert (src / "s.h5").read_bytes() == before
    assert sorted(p.name for p in src.iterdir()) == ["s.h5"]


def test_outputs_in_a_read_only_folder_are_refused_before_any_work(readonly_dir, tmp_path):
    src, view = readonly_dir
    make_store(tmp_path / "s.h5")
    runs = {"analysis --json": ("analyze", "centroids", tmp_path / "s.h5", "--json", view / "c.json"),
            "analysis --plot": ("analyze", "umap", tmp_path / "s.h5", "--plot", view / "u.png"),
            "report, a new folder": ("report", tmp_path / "s.h5", "--out", view / "rep"),
            "report, the folder itself": ("report", tmp_path / "s.h5", "--out", view),
            "a missing parent": ("analyze", "centroids", tmp_path / "s.h5", "--json", view / "sub" / "c.json")}
    for what, args in runs.items():
        result = cli(*args)
        assert result.exit_code == 1, what
        assert "Read-only file system" in one_line(result.stderr), what
        assert result.stdout == "", f"{what}: work was done before the refusal: {result.stdout[:200]}"
    assert list(src.iterdir()) == []


# -- failures injected at the last steps (no root needed) ---------------------------------


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_failure_at_fsync_or_rename_keeps_the_earlier_store(tmp_path, monkeypatch, step):
    path = tmp_path / "s.h5"
    make_store(path)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(errno.EIO if step == "fsync" else errno.ENOSPC, "injected failure")

    monkeypatch.setattr(os, step, fail)
    with pytest.raises(WriteFailed, match="injected failure") as err:
        make_store(path, seed=1, overwrite=True)
    one_line(str(err.value))
    with pytest.raises(WriteFailed):
        with edit_store(path) as w:
            w.add_audio("prejoint", np.ones((6, 3)))
    monkeypatch.undo()
    assert path.read_bytes() == before and leftovers(tmp_path) == []
