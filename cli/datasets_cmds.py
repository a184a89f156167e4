"""``embedstore datasets list`` and ``embedstore datasets download``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cli.common import JSON_HELP, console, err_console, handle_errors, write_json

commands = typer.Typer()
datasets_app = typer.Typer(help="The datasets embedstore reads: list them, download them.",
                           no_args_is_help=True)


@datasets_app.command("list")
@handle_errors
def list_datasets(
    json_path: Optional[Path] = typer.Option(None, "--json", metavar="PATH", help=JSON_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --json file."),
):
    """Every dataset: classes, items, labels kind, licence, size, how to get it."""
    from embedstore.datasets import DATASETS
    from embedstore.store.outputs import check_outputs

    check_outputs([json_path], overwrite=overwrite, command="datasets list")
    table = Table(show_lines=False)
    for column in ("name", "classes", "items", "labels", "licence", "size", "get it"):
        table.add_column(column)
    rows = []
    for info in DATASETS.values():
        classes = "-" if info.classes is None else str(info.classes)
        table.add_row(info.name, classes, info.items, info.labels, info.licence, info.size, info.get)
        rows.append({"name": info.name, "title": info.title, "classes": info.classes, "items": info.items,
                     "labels": info.labels, "licence": info.licence, "size": info.size, "get": info.get,
                     "prompts": list(info.prompts), "downloadable": info.remotes is not None})
    console.print(table)
    if json_path is not None:
        write_json(json_path, {"datasets": rows})


@datasets_app.command("download")
@handle_errors
def download(
    name: str = typer.Argument(..., help="A dataset of `embedstore datasets list`."),
    root: Path = typer.Option(..., "--root", help="Folder to download into (then: --dataset NAME --root DIR)."),
    mirror: Optional[str] = typer.Option(None, "--mirror", metavar="URL", help="Fetch every file from URL/<file name> instead of its published address."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace files in --root that are not the published ones."),
):
    """Download a dataset's published files, verify their checksums and unpack them.

    A cut download resumes where it stopped when the command runs again; a file whose
    checksum differs from the published one is deleted and refused.
    """
    from embedstore.datasets import DATASETS
    from embedstore.datasets.download import fetch, is_archive, unpack
    from embedstore.errors import InputError

    if name not in DATASETS:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    info = DATASETS[name]
    if info.remotes is None:
        raise InputError(f"{name} is not downloadable: {info.get}")
    remotes = info.remotes()
    root = root.expanduser().resolve()

    def progress(filename: str, done: int, total: int | None) -> None:
        if total and done == total:
            err_console.print(f"  {filename}: {done / 2**20:.1f} MiB", highlight=False)

    for remote in remotes:
        path, fetched = fetch(remote, root, overwrite=overwrite, mirror=mirror, progress=progress)
        state = "downloaded, MD5 verified" if fetched else "already there, MD5 verified"
        console.print(f"{path}: {state}", highlight=False)
        if is_archive(remote.filename):
            written = unpack(path, remote, root, overwrite=overwrite)
            if written:
                console.print(f"  unpacked {len(written)} files", highlight=False)
    console.print(f"done: embedstore extract --dataset {name} --root {root} ...", highlight=False)


commands.add_typer(datasets_app, name="datasets")
