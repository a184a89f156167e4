"""The architecture, enforced: the store wing stands alone, analyses never touch the model
stack, and the project's modules import one another without circles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("embedstore", "analyses", "cli")


def _modules() -> dict[str, Path]:
    mods = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


def _imports(path: Path) -> set[str]:
    """Every absolute module name a file imports, at top level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


MODULES = _modules()


def _offenders(wing: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{module} imports {name}" for module, path in MODULES.items()
                  if _within(module, (wing,)) for name in _imports(path) if _within(name, forbidden))


def test_the_store_wing_imports_nothing_from_extraction_datasets_models_or_training():
    assert _offenders("embedstore.store", ("embedstore.extract", "embedstore.datasets",
                                           "embedstore.models", "embedstore.train")) == []


def test_analyses_import_neither_the_model_stack_nor_the_extraction_side():
    assert _offenders("analyses", ("torch", "transformers", "embedstore.extract",
                                   "embedstore.models", "embedstore.datasets", "embedstore.train")) == []


def test_importing_every_analysis_loads_no_torch():
    analyses = sorted(m for m in MODULES if _within(m, ("analyses",)))
    code = ("import sys\n" + "".join(f"import {m}\n" for m in analyses)
            + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))\n"
            + "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for name in _imports(path):
            hit = max((k for k in MODULES if name == k or name.startswith(k + ".")), key=len, default=None)
            # a package and its own modules (``embedstore.store`` re-exporting ``.core``) are one unit
            if hit and hit != module and not (hit.startswith(module + ".") or module.startswith(hit + ".")):
                edges[module].add(hit)
    return edges


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Cycles met by a depth-first walk (one per back edge)."""
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif not state.get(nxt):
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(edges):
        if not state.get(node):
            visit(node, [node])
    return cycles


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_the_project_modules():
    assert [" -> ".join(c) for c in find_cycles(_edges())] == []


@pytest.mark.parametrize("entry", [
    "from embedstore.store import open_store, create_store, edit_store",
    "from embedstore.store.verify import verify_store",
    "from embedstore.store.interchange import import_store, export_space",
    "from embedstore.models import MODELS, load_model, list_models",
    "from embedstore.datasets import load_dataset, DATASETS",
    "from embedstore.extract import run_extract, add_prompt_sets",
    "from analyses.zeroshot import run_zeroshot",
    "from analyses.centroids import run_centroids",
    "from analyses.triplets import run_triplets",
])
def test_documented_entry_points_import(entry):
    exec(entry, {})
