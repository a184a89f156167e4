"""What is known about each dataset before reading it: labels, size, licence, where to
get it, which prompt sets fit. ``embedstore datasets list`` prints it; ``embedstore
datasets download`` fetches :attr:`DatasetInfo.remotes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from embedstore.datasets.download import Remote


@dataclass(frozen=True)
class DatasetInfo:
    """One registered dataset.

    Attributes
    ----------
    name : str
        Registry name (``load_dataset(name, ...)``, ``--dataset name``).
    reader : callable
        ``(root, labels_csv) -> Dataset``.
    needs_root : bool
        Whether a root folder must be given.
    title : str
        Its published name and reference.
    labels : str
        ``single``, ``multi``, ``multi (partial)`` or ``captions``.
    classes : int or None
        Number of classes (None: read from the data).
    items : str
        Published item count.
    size : str
        Clips and their length.
    licence : str
    get : str
        How to obtain it.
    prompts : tuple[str, ...]
        Built-in prompt sets that fit its classes.
    remotes : callable or None
        ``() -> list[Remote]`` of its published files; None where nothing can be
        downloaded with a checksum (``get`` says why).
    """

    name: str
    reader: Callable
    needs_root: bool
    title: str
    labels: str
    classes: int | None
    items: str
    size: str
    licence: str
    get: str
    prompts: tuple[str, ...] = field(default=())
    remotes: Callable[[], list[Remote]] | None = None


def mirdata_remotes(name: str) -> Callable[[], list[Remote]]:
    """mirdata's remotes for ``name`` plus its index file, as :class:`Remote` s."""

    def remotes() -> list[Remote]:
        from embedstore.datasets.mirdata_support import mirdata_module

        module = mirdata_module(name)
        index = module.INDEXES[module.INDEXES["default"]]
        found = [Remote(index.filename, index.remote.url, index.remote.checksum)]
        for remote in module.REMOTES.values():
            found.append(Remote(remote.filename, remote.url, remote.checksum, remote.destination_dir or "",
                                tuple(remote.unpack_directories or ())))
        return found

    return remotes


def esc50_remotes() -> list[Remote]:
    # The GitHub archive of the repository's master branch, with the MD5 soundata publishes
    # for it; it unpacks to ESC-50-master/, which load_esc50 finds.
    return [Remote("ESC-50-master.zip", "https://github.com/karoldvl/ESC-50/archive/master.zip",
                   "7771e4b9d86d0945acce719c7a59305a")]
