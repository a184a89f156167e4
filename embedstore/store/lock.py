"""The writer lock: one writer of a store at a time.

Every store writer (a new store, an edit, an extraction run) holds an advisory lock on
``<store>.lock`` beside the store for as long as it writes. The operating system releases
it when the process dies, so a killed writer never leaves a store locked. A second writer
does not wait silently and never interleaves: it is refused with one line naming the
store. Readers take no lock; they see the old store or the new one (writes are atomic
renames).

The holder deletes the lock file before it unlocks; a process that locked a file which
was meanwhile deleted sees that its inode is no longer the path's and tries again. So the
lock file exists only while a writer runs (or after one was killed, until the next).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from embedstore.errors import InputError, WriteFailed

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

LOCK_SUFFIX = ".lock"
_held: dict[Path, list[int]] = {}  # lock path -> [fd, depth], for re-entry in one process
_guard = threading.Lock()


def _forget_inherited_locks() -> None:
    # A forked child (a DataLoader worker, say) inherits the lock's file descriptor and with
    # it the flock, which would then outlive a killed parent until the child exits. Closing
    # the child's copy keeps the lock with the parent (flock is released only when every
    # descriptor of it is closed, or by the holder).
    for fd, _ in _held.values():
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_inherited_locks)


class StoreLocked(InputError):
    """Another process is writing this store."""


def lock_path(store: str | os.PathLike) -> Path:
    """The lock file of ``store``."""
    store = Path(store)
    return store.with_name(store.name + LOCK_SUFFIX)


def _try_lock(fd: int) -> bool:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        else:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        return True
    except OSError:
        return False


def _acquire(path: Path, store) -> int:
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise WriteFailed(f"cannot write beside {store}: {exc.strerror or exc} ({path})") from None
        if not _try_lock(fd):
            os.close(fd)
            raise StoreLocked(f"another process is writing {store} (lock {path.name}); "
                              f"wait for it to finish, then run this again")
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder deleted it as we locked it: take the new one


@contextlib.contextmanager
def writer_lock(store: str | os.PathLike) -> Iterator[None]:
    """Hold the writer lock of ``store``; re-entrant within one process.

    Raises
    ------
    StoreLocked
        Another process holds it.
    WriteFailed
        The lock file cannot be made (a read-only folder, say).
    """
    path = lock_path(Path(store).expanduser().resolve())
    with _guard:
        entry = _held.get(path)
        if entry is None:
            entry = _held[path] = [_acquire(path, store), 0]
        entry[1] += 1
    try:
        yield
    finally:
        with _guard:
            entry[1] -= 1
            if entry[1] == 0:
                del _held[path]
                with contextlib.suppress(OSError):
                    path.unlink()  # before unlocking: see the module docstring
                os.close(entry[0])
