"""The one output policy of every command that writes.

Before any computation a command calls :func:`check_outputs` with every path it will
write and every path it reads:

- an existing file is replaced only with ``overwrite=True``;
- a path the command also reads is never a target, even with ``overwrite``;
- two outputs of one command are never the same path;
- a folder output is written into when it is missing or empty; an existing one is replaced
  only with ``overwrite=True`` **and** when it holds nothing but what the same command
  wrote there before (listed in its marker file, :data:`MARKER`); never when it holds
  anything else or one of the command's inputs;
- missing parent folders are created, and every folder written in must be writable.

Writers then use :func:`replace_folder` to clear what their previous run listed, and
:func:`mark_folder` to list what this run wrote.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from embedstore.errors import InputError, WriteFailed

MARKER = ".embedstore-output.json"


def _resolved(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(child: Path, folder: Path) -> bool:
    try:
        child.relative_to(folder)
        return True
    except ValueError:
        return False


def read_marker(folder: Path) -> dict | None:
    """The marker a command left in ``folder``, or None."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("files"), list):
        return None
    return marker


def _real_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _check_folder(folder: Path, command: str, overwrite: bool, resume: bool) -> None:
    if not os.path.lexists(folder):
        return
    if not _real_dir(folder):
        raise InputError(f"{folder} exists and is not a folder")
    # A link is listed like a file: the marker never vouches for what it points to.
    present = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if not _real_dir(p))
    if not present and not any(folder.iterdir()):
        return
    marker = read_marker(folder)
    if marker is None or marker.get("command") != command:
        raise InputError(f"{folder} already holds files that `embedstore {command}` did not write; "
                         f"choose a new or empty folder")
    if not (overwrite or resume):
        raise InputError(f"{folder} holds an earlier `embedstore {command}` output; "
                         f"pass --overwrite to replace it")
    listed = set(marker["files"]) | {MARKER}
    others = [name for name in present if name not in listed]
    if others:
        raise InputError(f"{folder} holds {others[0]!r}, which `embedstore {command}` did not write; "
                         f"it replaces only its own files: move that away or choose another folder")


def check_outputs(files: Iterable[str | os.PathLike | None] = (), *,
                  folders: Iterable[str | os.PathLike | None] = (),
                  inputs: Iterable[str | os.PathLike | None] = (),
                  overwrite: bool = False, resume: bool = False, command: str = "") -> None:
    """Refuse, in one line, any output that would lose something the user owns.

    Parameters
    ----------
    files, folders : paths (None entries are ignored)
        What the command will write: single files, and folders it fills.
    inputs : paths
        What the command reads; never a target.
    overwrite : bool
        The command's ``--overwrite``.
    resume : bool
        The command continues its own earlier folder output (``--resume``): a folder the
        same command made is accepted without ``overwrite``, and is not to be replaced.
    command : str
        The command's name, recorded in folder markers.

    Raises
    ------
    InputError
        The first refused output, before anything is written; missing parents are created
        only once every output passed.
    WriteFailed
        A folder to write in cannot be created or written in (read-only, no permission).
    """
    file_paths = [_resolved(p) for p in files if p is not None]
    folder_paths = [_resolved(p) for p in folders if p is not None]
    input_paths = [_resolved(p) for p in inputs if p is not None]
    seen: list[Path] = []
    for target in file_paths + folder_paths:
        for earlier in seen:
            if _same(target, earlier):
                raise InputError(f"{target} is named as two outputs of one command")
        seen.append(target)
        for source in input_paths:
            if _same(target, source):
                raise InputError(f"{target} is an input of this command; it is never overwritten, "
                                 f"even with --overwrite: write elsewhere")
    links = [Path(p).expanduser() for p in files if p is not None]
    for target, given in zip(file_paths, links):
        if target.is_dir():
            raise InputError(f"{target} is a folder; give a file path")
        if target.exists() and not overwrite:
            raise InputError(f"{target} exists; pass --overwrite to replace it")
        if given.is_symlink() and not target.exists() and not overwrite:  # dangling: the link is yours
            raise InputError(f"{given} exists (a link to the missing {target}); pass --overwrite to replace it")
        if target.exists() and not target.is_file():
            raise InputError(f"{target} exists and is not a regular file")
    for folder in folder_paths:
        for source in input_paths:
            if _inside(source, folder):
                raise InputError(f"{source} is an input of this command and lies inside the output "
                                 f"folder {folder}; write elsewhere")
        _check_folder(folder, command, overwrite, resume)
    for folder in [target.parent for target in file_paths] + folder_paths:
        _writable_folder(folder)


def _writable_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents) and refuse one this process cannot write in,
    so a read-only place fails before the work, not after it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteFailed(f"cannot create the folder {folder}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        read_only = hasattr(os, "statvfs") and bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        raise WriteFailed(f"cannot write in {folder}: {'Read-only file system' if read_only else 'Permission denied'}")


@contextlib.contextmanager
def claimed_outputs(files: Iterable[str | os.PathLike | None] = (), *,
                    folders: Iterable[str | os.PathLike | None] = (),
                    inputs: Iterable[str | os.PathLike | None] = (),
                    overwrite: bool = False, resume: bool = False, command: str = "") -> Iterator[None]:
    """:func:`check_outputs`, then hold the writer lock of every output while the block writes.

    A second command writing the same outputs at the same time (two exports into one
    folder, two trainings) is refused in one line instead of mixing its files with these;
    a folder made for it is removed again when the block fails before writing into it. The outputs are checked again once
    locked: another command may have written them in between.
    """
    from embedstore.store.lock import writer_lock

    files, folders = [p for p in files if p is not None], [p for p in folders if p is not None]
    inputs = [p for p in inputs if p is not None]
    policy = dict(folders=folders, inputs=inputs, overwrite=overwrite, resume=resume, command=command)
    with removing_new_folders([*folders, *(Path(f).parent for f in files)]):
        check_outputs(files, **policy)
        with contextlib.ExitStack() as locks:
            for path in sorted({_resolved(p) for p in [*files, *folders]}):
                locks.enter_context(writer_lock(path))
            check_outputs(files, **policy)
            yield


@contextlib.contextmanager
def removing_new_folders(folders: Iterable[str | os.PathLike]) -> Iterator[None]:
    """Remove again, when the block fails, the folders among ``folders`` and their parents
    that did not exist before it (:func:`check_outputs` creates them), if still empty:
    a command refused or failed before it wrote leaves no empty folder behind."""
    new = []
    for folder in map(_resolved, folders):
        while not os.path.lexists(folder) and folder != folder.parent and folder not in new:
            new.append(folder)
            folder = folder.parent
    try:
        yield
    except BaseException:
        for folder in sorted(new, key=lambda f: len(f.parts), reverse=True):  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def replace_folder(folder: str | os.PathLike) -> None:
    """Remove what the previous run listed in ``folder``'s marker (checked by :func:`check_outputs`)."""
    folder = _resolved(folder)
    marker = read_marker(folder)
    if marker is None:
        return
    for name in marker["files"]:
        path = folder / str(name)
        if path.is_file() and not path.is_symlink() and _inside(path.resolve(), folder):
            path.unlink()
    (folder / MARKER).unlink(missing_ok=True)
    for sub in sorted((p for p in folder.rglob("*") if _real_dir(p)), reverse=True):
        if not any(sub.iterdir()):
            sub.rmdir()


def mark_folder(folder: str | os.PathLike, command: str, files: Sequence[str]) -> None:
    """List the files ``command`` wrote into ``folder`` (names relative to it)."""
    folder = _resolved(folder)
    text = json.dumps({"command": command, "files": sorted(set(files))}, indent=1)
    (folder / MARKER).write_text(text + "\n", encoding="utf-8")
