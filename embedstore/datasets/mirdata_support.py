"""Reading a dataset through mirdata (the optional ``datasets`` extra).

mirdata brings each dataset's index (every file with its MD5), its metadata parser and
its download remotes. Its full indexes live on Zenodo and are fetched into mirdata's
package folder by ``Dataset.download()``; here the index is looked for first in the
dataset's own root (where ``embedstore datasets download`` puts it), so a local tree reads
offline.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from embedstore.datasets.base import Item
from embedstore.errors import InputError


def mirdata_available() -> bool:
    """Whether mirdata can be imported."""
    try:
        import mirdata  # noqa: F401
    except ImportError:
        return False
    return True


def mirdata_module(name: str):
    """The ``mirdata.datasets.<name>`` module, or InputError naming the extra to install."""
    try:
        return importlib.import_module(f"mirdata.datasets.{name}")
    except ImportError as exc:
        raise InputError(f"dataset {name!r} is read through mirdata, which is not installed "
                         f"({exc}); pip install 'embedstore[datasets]'") from None


def index_filename(name: str) -> str:
    """The file name of mirdata's default index of ``name`` (e.g. ``irmas_index_1.0.json``)."""
    module = mirdata_module(name)
    return module.INDEXES[module.INDEXES["default"]].filename


def open_mirdata(name: str, root: Path, index_folders: tuple[Path, ...] = ()):
    """mirdata's Dataset for ``name`` with data home ``root``, reading the index found in
    ``root`` or ``index_folders`` (else mirdata's own copy).

    Raises
    ------
    InputError
        mirdata missing, or no index in any of those places.
    """
    module = mirdata_module(name)
    dataset = module.Dataset(data_home=str(root))
    filename = index_filename(name)
    local = next((folder / filename for folder in (root, *index_folders) if (folder / filename).is_file()), None)
    if local is not None:
        dataset.index_path = str(local)
    elif not Path(dataset.index_path).is_file():
        raise InputError(f"no mirdata index {filename} in {root} (nor in mirdata's folder); "
                         f"`embedstore datasets download {name} --root {root}` fetches it")
    return dataset


def mirdata_tracks(dataset) -> list:
    """Every track of a mirdata dataset, in index order; its parsing errors as InputError."""
    try:
        return [dataset.track(track_id) for track_id in dataset.track_ids]
    except (OSError, KeyError, ValueError, AttributeError) as exc:
        raise InputError(f"mirdata cannot read {dataset.name} at {dataset.data_home}: "
                         f"{type(exc).__name__}: {exc}") from None


def check_present(items: list[Item], name: str, root: Path) -> None:
    """Refuse a tree whose index lists audio that is not there."""
    if not items:
        raise InputError(f"the mirdata index of {name} lists no tracks")
    missing = [item.path for item in items if not item.path.exists()]
    if missing:
        raise InputError(f"{len(missing)} {name} file(s) in the index are missing under {root}, "
                         f"first: {missing[0]}")


def source(name: str, dataset) -> str:
    """What read a dataset, for provenance: mirdata's version and the index file."""
    import mirdata

    return f"mirdata {mirdata.__version__} ({name}, index {Path(dataset.index_path).name})"
