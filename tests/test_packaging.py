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


def test_a_built_wheel_carries_every_module_and_data_file_and_runs_from_elsewhere(tmp_path):
    """Build the wheel, install it into a bare folder, and use it from another directory."""
    import sys
    import zipfile

    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist), str(ROOT)], check=True, capture_output=True)
    (wheel,) = dist.glob("embedstore-*.whl")
    assert 15e6 < wheel.stat().st_size < 19e6  # the README says "about 17 MB"
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(["git", "ls-files", "embedstore", "analyses", "cli", "data"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    expected = {("embedstore/" + p) if p.startswith("data/") else p for p in tracked
                if p.endswith(".py") or p.startswith("data/")}
    assert sorted(expected - names) == []

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
                    str(wheel)], check=True, capture_output=True)
    probe = ("import embedstore.store, embedstore.extract, embedstore.datasets, analyses.zeroshot, cli.main\n"
             "from embedstore.datasets import load_dataset\n"
             "from embedstore.resources import DATA_DIR\n"
             "print(DATA_DIR)\nprint(len(load_dataset('notes').items))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    data_dir, items = done.stdout.split()
    assert Path(data_dir) == site / "embedstore" / "data" and int(items) == 252


def test_the_bundled_model_is_about_4_mb():
    """README and bundled-model.md call notes-toy "a 4 MB" model."""
    size = (ROOT / "data" / "models" / "notes-toy" / "model.safetensors").stat().st_size
    assert 3.5e6 < size < 4.5e6
