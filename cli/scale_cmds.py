"""Commands for stores made at scale: ``merge`` (the shards of one run into one store)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List

import typer
from rich.markup import escape

from cli.common import console, handle_errors

commands = typer.Typer()


@commands.command()
@handle_errors
def merge(
    shards: List[Path] = typer.Argument(..., help="Every shard store of one run (OUT.shard-K-of-N.h5), any order."),
    out: Path = typer.Option(..., "--out", "-o", help="The merged store to write (.h5)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store at --out."),
) -> None:
    """Merge the shards of one `extract --shard` run into the store one process would have written.

    The shards must share one settings fingerprint and cover the dataset with disjoint,
    contiguous ranges (a missing shard is named). The merged store is verified.
    """
    from embedstore.store.merge import merge_shards

    summary = merge_shards(shards, out, overwrite=overwrite, command=["embedstore", *sys.argv[1:]])
    console.print(f"merged {summary.shards} shards into {escape(str(summary.path))}: {summary.items} items, "
                  f"{summary.failed} failed; verified ({summary.arrays_checked} arrays)", highlight=False)
