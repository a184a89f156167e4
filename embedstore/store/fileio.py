"""Small, durable file writes: temporary name, fsync, rename."""

from __future__ import annotations

import contextlib
import errno
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


class GuardedFile:
    """A file for h5py's ``fileobj`` driver that never reports a write error to HDF5.

    HDF5 does not survive a failed write: on a full disk it swallowed the first error and
    then crashed the process in its next flush. Through this object HDF5 writes to the file
    descriptor ``fd``; when the operating system refuses a write (no space, file too large,
    I/O error), the error is kept in :attr:`error`, and that write and every later one go
    to an in-memory overlay instead, which reads see. HDF5 therefore always sees a
    consistent file; the writer checks :attr:`error` after each step and abandons the
    file. The overlay holds only what is written between the failure and that check.
    """

    def __init__(self, fd: int):
        self._fd = fd
        self._pos = 0
        self._size = os.fstat(fd).st_size
        self.error: OSError | None = None
        self._overlay: list[tuple[int, bytes]] = []

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        length = len(view)
        if self.error is None:
            try:
                done = 0
                while done < length:
                    written = os.pwrite(self._fd, view[done:], self._pos + done)
                    if written <= 0:
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    done += written
            except OSError as exc:
                self.error = exc
        if self.error is not None:
            self._overlay.append((self._pos, bytes(view)))
        self._pos += length
        self._size = max(self._size, self._pos)
        return length

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        length = min(len(view), max(0, self._size - self._pos))
        data = os.pread(self._fd, length, self._pos) if length else b""
        view[: len(data)] = data
        view[len(data) : length] = bytes(length - len(data))  # a hole the failure left
        for start, chunk in self._overlay:
            lo, hi = max(start, self._pos), min(start + len(chunk), self._pos + length)
            if lo < hi:
                view[lo - self._pos : hi - self._pos] = chunk[lo - start : hi - start]
        self._pos += length
        return length

    def read(self, size: int = -1) -> bytes:
        buffer = bytearray(max(0, self._size - self._pos) if size < 0 else size)
        return bytes(buffer[: self.readinto(buffer)])

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        if self.error is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as exc:
                self.error = exc
        self._size = size
        return size

    def flush(self) -> None:
        """Nothing to flush: every write went to the descriptor (the writer fsyncs it)."""
