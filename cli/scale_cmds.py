"""Commands for stores made at scale: ``merge`` (the shards of one run into one store) and
``neighbors`` (nearest items, exact or from an approximate index)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from cli.common import JSON_HELP, OVERWRITE_HELP, check_analysis_outputs, console, handle_errors, styled, write_json

commands = typer.Typer()


@commands.command()
@handle_errors
def merge(
    shards: List[Path] = typer.Argument(..., help="Every shard store of one run (OUT.shard-K-of-N.h5), any order."),
    out: Path = typer.Option(..., "--out", "-o", help="The merged store to write (.h5)."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Merge the shards of one `extract --shard` run into the store one process would have written.

    The shards must share one settings fingerprint and cover the dataset with disjoint,
    contiguous ranges (a missing shard is named). The merged store is verified.
    """
    from embedstore.store.merge import merge_shards

    summary = merge_shards(shards, out, overwrite=overwrite, command=["embedstore", *sys.argv[1:]])
    console.print(styled(("merged", "green"), f" {summary.shards} shards into {summary.path}: {summary.items} items, "
                         f"{summary.failed} failed; verified ({summary.arrays_checked} arrays)"), highlight=False)


@commands.command()
@handle_errors
def neighbors(
    store: Path = typer.Argument(..., help="The store file (.h5)."),
    space: str = typer.Option("joint", "--space", help="Audio space to search (prompt queries use the same space)."),
    item: Optional[str] = typer.Option(None, "--item", help="Query: this item's audio vector (the item itself is left out)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Query: SET:INDEX, prompt INDEX (from 0) of a prompt set."),
    k: int = typer.Option(10, "-k", help="How many neighbours."),
    approx: bool = typer.Option(False, "--approx", help="Search the approximate index built with --build-index."),
    build_index: bool = typer.Option(False, "--build-index", help="Build the approximate index (usearch) beside the store and report its recall@k."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP + " (the index, the --json file)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help=JSON_HELP),
) -> None:
    """The k items nearest to an item or a prompt by cosine: exact (BLAS blocks) or from an index.

    For stores of a million items and more, build the index once (--build-index: recall@k
    against exact search is measured and printed), then query with --approx.
    """
    from analyses.neighbors import build_index as build, neighbors as search

    check_analysis_outputs(json_out, inputs=[store], overwrite=overwrite)
    if build_index:
        record = build(store, space, k=k, overwrite=overwrite)
        console.print(f"built the {space} index of {record['rows']} items beside {store}: "
                      f"recall@{k} {record[f'recall_at_{k}']:.3f} on {record['recall_sample']} items", highlight=False)
        if item is None and prompt is None:
            return
    result = search(store, space, item=item, prompt=prompt, k=k, approximate=approx)
    table = Table(title=f"{result.query}: {len(result.rows)} nearest in {space} ({result.method})",
                  title_justify="left")
    for col in ("rank", "item", "cosine", "labels"):
        table.add_column(col)
    for rank, (item_id, score, labels) in enumerate(zip(result.ids, result.scores, result.labels), 1):
        table.add_row(str(rank), item_id, f"{score:.4f}", ", ".join(labels))
    console.print(table)
    if json_out is not None:
        write_json(json_out, {"query": result.query, "space": space, "method": result.method,
                              "neighbors": [{"rank": r, "row": int(row), "id": i, "cosine": float(s), "labels": lab}
                                            for r, (row, i, s, lab) in enumerate(
                                                zip(result.rows, result.ids, result.scores, result.labels), 1)]})
