"""Downloading a dataset's published files: checksums verified, resumable, offline-clear.

Each file goes to ``<root>/<folder>/<name>.part`` first, continued with an HTTP ``Range``
request when a previous attempt was cut; the finished file's MD5 must equal the published
one or it is deleted and refused. Verified archives (``.zip``, ``.tar.gz``, ``.tgz``,
``.tar``) are then unpacked beside themselves, members checked so that none lands outside
the root. What it writes follows the output policy (:mod:`embedstore.store.outputs`): a
file already there is replaced only with ``overwrite``; a verified file already there is
kept and not fetched again.
"""

from __future__ import annotations

import hashlib
import http.client
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from embedstore.errors import InputError
from embedstore.store.outputs import check_outputs, removing_new_folders

CHUNK = 1 << 20
TIMEOUT_S = 30
UNPACKED_SUFFIX = ".unpacked"  # marker beside an archive once it is unpacked
_ARCHIVES = (".zip", ".tar.gz", ".tgz", ".tar")


@dataclass(frozen=True)
class Remote:
    """One published file.

    Attributes
    ----------
    filename : str
        Its name on disk.
    url : str
        Where it is published.
    md5 : str
        Its published MD5.
    folder : str
        Sub-folder of the root it goes to ("" for the root).
    unpack_directories : tuple[str, ...]
        Folders inside the archive whose contents move up into ``folder`` (mirdata's
        convention).
    """

    filename: str
    url: str
    md5: str
    folder: str = ""
    unpack_directories: tuple[str, ...] = ()

    def target(self, root: Path) -> Path:
        return root / self.folder / self.filename


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def is_archive(name: str) -> bool:
    return name.lower().endswith(_ARCHIVES)


def fetch(remote: Remote, root: Path, *, overwrite: bool = False, mirror: str | None = None,
          progress: Callable[[str, int, int | None], None] | None = None) -> tuple[Path, bool]:
    """Download one file into ``root``, resuming a ``.part`` left by a cut attempt.

    Returns
    -------
    path, fetched : Path, bool
        The verified file, and whether it was downloaded now (False: it was there).

    Raises
    ------
    InputError
        Offline or the server unreachable (one line, the ``.part`` kept for a resume);
        an HTTP error; a checksum mismatch (the file deleted); a file there that is not
        the published one, without ``overwrite``.
    """
    target = remote.target(root)
    if target.is_file() and md5_of(target) == remote.md5:
        return target, False
    part = target.with_name(target.name + ".part")
    url = f"{mirror.rstrip('/')}/{remote.filename}" if mirror else remote.url
    with removing_new_folders([target.parent]):  # when nothing came (a .part stays for a resume)
        check_outputs([target], overwrite=overwrite, command="datasets download")
        _transfer(url, part, progress)
    actual = md5_of(part)
    if actual != remote.md5:
        part.unlink()
        raise InputError(f"{remote.filename}: checksum mismatch (MD5 {actual}, published {remote.md5}); "
                         f"the download was deleted")
    part.replace(target)
    return target, True


def _transfer(url: str, part: Path, progress) -> None:
    """Fetch ``url`` into ``part``, continuing from its current size when it exists."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "embedstore"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # asked past the end: the part is already whole
            return
        raise InputError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise InputError(f"cannot reach {urllib.parse.urlsplit(url).netloc} (offline? {reason}); "
                         f"nothing was downloaded") from None
    with response:
        resumed = response.status == 206
        total = response.headers.get("Content-Length")
        total = int(total) + (have if resumed else 0) if total is not None else None
        done = have if resumed else 0
        try:
            with open(part, "ab" if resumed else "wb") as fh:
                for block in iter(lambda: response.read(CHUNK), b""):
                    fh.write(block)
                    done += len(block)
                    if progress:
                        progress(part.name[:-5], done, total)
        except (OSError, http.client.HTTPException) as exc:
            raise InputError(f"download of {url} was cut after {done} bytes ({type(exc).__name__}); "
                             f"run the same command again to resume") from None
    if total is not None and done < total:
        raise InputError(f"download of {url} was cut after {done} of {total} bytes; "
                         f"run the same command again to resume")


def unpack(archive: Path, remote: Remote, root: Path, *, overwrite: bool = False) -> list[Path]:
    """Unpack a verified archive beside itself (once: a marker remembers it).

    Members that would land outside ``root`` (absolute paths, ``..``, links) are refused;
    members already present are replaced only with ``overwrite``.
    """
    marker = archive.with_name(archive.name + UNPACKED_SUFFIX)
    if marker.exists():
        return []
    destination = archive.parent
    names = _member_names(archive)
    targets = [_moved(destination, name, remote.unpack_directories) for name in names]
    for target in targets:
        if not target.resolve().is_relative_to(root.resolve()):
            raise InputError(f"{archive.name} holds {target}, outside {root}; not unpacked")
    check_outputs([t for t in targets if t.exists() and t.is_file()], overwrite=overwrite,
                  command="datasets download")
    staging = destination / f".{archive.name}.unpacking"
    shutil.rmtree(staging, ignore_errors=True)
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(staging)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(staging, filter="data")
    written = []
    for name, target in zip(names, targets):
        source = staging / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            source.replace(target)
            written.append(target)
    shutil.rmtree(staging, ignore_errors=True)
    marker.write_text(f"{len(written)} files\n", encoding="utf-8")
    return written


def _member_names(archive: Path) -> list[str]:
    """The regular files an archive holds (its folders are implied, links refused)."""
    if archive.name.lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            return [info.filename for info in zf.infolist() if not info.is_dir()]
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
    links = [m.name for m in members if m.issym() or m.islnk()]
    if links:
        raise InputError(f"{archive.name} holds links ({links[0]}); not unpacked")
    return [m.name for m in members if m.isfile()]


def _moved(destination: Path, name: str, unpack_directories: tuple[str, ...]) -> Path:
    """Where member ``name`` lands: under ``destination``, with an unpack directory's prefix dropped."""
    for folder in unpack_directories:
        prefix = folder.rstrip("/") + "/"
        if name.startswith(prefix):
            return destination / name[len(prefix):]
    return destination / name
