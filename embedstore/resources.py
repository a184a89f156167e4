"""Where the bundled data lives: ``data/`` at the root of the checkout.

embedstore installs from its checkout (``pip install -e .``), so the bundled notes,
ontologies, prompt definitions and the toy model are read in place, never copied.
"""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
