"""The bundled data travels with an installed package, not only with a checkout."""

import fnmatch
import importlib.util
import subprocess
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _package_data_globs() -> list[str]:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"]["embedstore.data"] == "data"
    assert "embedstore.data" in setuptools["packages"]
    return setuptools["package-data"]["embedstore.data"]


def test_every_tracked_data_file_is_package_data():
    tracked = subprocess.run(["git", "ls-files", "data"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    assert len(tracked) > 250  # the notes, their metadata, ontologies, prompts, the model
    globs = _package_data_globs()
    # setuptools' "**/*.ext" also matches files at the top of the package
    uncovered = [path for path in tracked
                 if not any(fnmatch.fnmatch(path.removeprefix("data/"), pattern)
                            or fnmatch.fnmatch(path.removeprefix("data/"), pattern.removeprefix("**/"))
                            for pattern in globs)]
    assert uncovered == []


def _load_resources(package_dir: Path):
    spec = importlib.util.spec_from_file_location("resources_copy", package_dir / "resources.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_data_dir_is_the_installed_copy_when_present(tmp_path):
    source = (ROOT / "embedstore" / "resources.py").read_text()
    installed = tmp_path / "site-packages" / "embedstore"
    (installed / "data").mkdir(parents=True)
    (installed / "resources.py").write_text(source)
    assert _load_resources(installed).DATA_DIR == installed / "data"

    checkout = tmp_path / "checkout"
    (checkout / "embedstore").mkdir(parents=True)
    (checkout / "data").mkdir()
    (checkout / "embedstore" / "resources.py").write_text(source)
    assert _load_resources(checkout / "embedstore").DATA_DIR == checkout / "data"
