"""Where the bundled data lives: the notes, ontologies, prompt sets and the toy model.

In a checkout (and an editable install) that is ``data/`` at the root of the repository;
an installed wheel carries the same tree as ``embedstore/data`` (see pyproject.toml).
"""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
DATA_DIR = _PACKAGE / "data" if (_PACKAGE / "data").is_dir() else _PACKAGE.parent / "data"
