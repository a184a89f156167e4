"""``embedstore report``: every experiment for every store, side by side, as HTML, Markdown and JSON."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table
from rich.text import Text

from cli.common import (
    check_input_names,
    console,
    err_console,
    fit_where_option,
    handle_errors,
    items_option,
    styled,
    where_option,
)

commands = typer.Typer()


@commands.command()
@handle_errors
def report(
    stores: List[Path] = typer.Argument(..., help="Store files (.h5), one per model; their columns sit side by side."),
    out: Path = typer.Option(..., "--out", help="Report folder: results/, figures/, report.json, .md and .html."),
    prompts: Optional[List[str]] = typer.Option(
        None, "--prompts", help="Prompt set(s) to evaluate (repeatable); default: every class prompt set."),
    space: str = typer.Option("joint", help="Space of the zero-shot, histogram and margin experiments."),
    ontology: str = typer.Option("hdio", help="Ontology for the triplets: a built-in name or a JSON file."),
    ontology_map: Optional[Path] = typer.Option(
        None, "--ontology-map", help="CSV with columns class,node mapping store classes to ontology nodes."),
    holdout: str = typer.Option("none", help="Audio-only centroids: none (the study's) or loo."),
    centroid: str = typer.Option("raw", "--centroid", metavar="raw|unit",
                                 help="Audio-only centroids: raw (mean of the stored vectors, then normalised: "
                                      "the study's) or unit (mean of the normalised vectors)."),
    umap: bool = typer.Option(
        False, "--umap/--no-umap", help="Also draw the UMAP maps (umap-learn compiles its code in every run: 10-25 s)."),
    seed: int = typer.Option(0, min=0, max=2**32 - 1, help="UMAP random state and bootstrap seed."),
    bootstrap: int = typer.Option(
        0, "--bootstrap", metavar="N", min=0, max=100_000,
        help="Resample the clips N times for 95% intervals of the zero-shot and centroid metrics (0: none)."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an earlier report in --out; never files the report did not write."),
    where: List[str] = where_option(),
    items: Optional[Path] = items_option(),
    fit_where: List[str] = fit_where_option(),
) -> None:
    """Run every experiment on every store and write one report: tables, figures and every number.

    The study's figures: metrics per prompt set (Figure 2), positive vs negative
    similarities (3), confidence margins (4), triplet accuracy in both spaces (5), plus
    audio-only centroid labels, retrieval for caption sets and (--umap) UMAP maps; what
    each prompt set is and each store's caveats; --bootstrap N for 95% intervals.
    Per-experiment JSON files go to
    OUT/results/<model>__<dataset>__<experiment>__<prompt set>__<space>.json (a name with
    characters other than lower-case letters, digits, '.', '_' and '-' gets a short hash, so
    distinct names never share a file). --overwrite replaces only an earlier report's files.
    """
    from analyses.report import ReportOptions, build_report
    from analyses.selection import Selection

    check_input_names([ontology])
    options = ReportOptions(prompt_sets=prompts or None, space=space, ontology=ontology,
                            ontology_map=str(ontology_map) if ontology_map else None,
                            holdout=holdout, centroid=centroid, umap=umap, seed=seed, bootstrap=bootstrap,
                            selection=Selection.parse(where, items, fit_where=fit_where))
    start = time.perf_counter()

    def progress(line: str) -> None:  # one line per step on stderr: visible in logs and pipes too
        err_console.print(Text(f"{time.perf_counter() - start:6.1f} s {line}"), highlight=False)

    result = build_report(stores, out, options, overwrite=overwrite, progress=progress)
    table = Table(title=f"Report in {out}", title_justify="left")
    for col in ("column", "model", "dataset", "items", "results", "skipped"):
        table.add_column(col)
    for store in result["stores"]:
        key = store["key"]
        n_results = sum(len(by) for by_set in result["results"].get(key, {}).values() for by in by_set.values())
        n_skipped = sum(1 for s in result["skipped"] if s["store"] == key)
        table.add_row(key, store["model"], store["dataset"], str(store["n_items"]), str(n_results), str(n_skipped))
    console.print(table)
    for s in result["skipped"]:
        console.print(styled(("skipped", "yellow"),
                             f" {s['store']} {s['experiment']} {s['prompt_set']} ({s['space']}): {s['reason']}"),
                      highlight=False)
    console.print(f"wrote {out / 'report.html'}, {out / 'report.md'}, {out / 'report.json'} "
                  f"and {len(result['figures'])} figures in {time.perf_counter() - start:.1f} s", highlight=False)
