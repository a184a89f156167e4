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
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise WriteFailed(f"cannot write {path}: {exc.strerror or exc}; nothing was replaced") from None
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
