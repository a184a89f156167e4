"""Small, durable file writes: temporary name, fsync, rename."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

from embedstore.errors import WriteFailed


def temp_path(path: Path) -> Path:
    """A hidden sibling of ``path`` that no other writer will pick."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (best effort where directories can't be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, write) -> None:
    """Call ``write(binary_file)`` on a temporary file, then rename it onto ``path``.

    Either the complete new file is at ``path`` or the old one (if any) is untouched.
    """
    write_atomic_many({Path(path): write})


def write_atomic_many(writers: dict[Path, object]) -> None:
    """Write several files as one: all are complete on disk before any is renamed into place.

    ``writers`` maps each path to a ``write(binary_file)`` callable. When any write fails,
    no earlier file at those paths is changed.
    """
    temps = {Path(path): temp_path(Path(path)) for path in writers}
    try:
        for path, write in writers.items():
            with open(temps[Path(path)], "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
        for path, tmp in temps.items():
            os.replace(tmp, path)
    except OSError as exc:
        names = " and ".join(str(p) for p in temps)
        raise WriteFailed(f"cannot write {names}: {exc.strerror or exc}; nothing was replaced") from None
    finally:
        for tmp in temps.values():
            # On a read-only file system even unlinking a missing file fails (EROFS).
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    for folder in {p.parent for p in temps}:
        fsync_dir(folder)
