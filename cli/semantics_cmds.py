"""The semantic analyses: ontology triplets, pre-joint vs joint spaces, UMAP maps."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from cli.analyze_cmds import MAX_SEED
from cli.common import (
    JSON_HELP,
    OVERWRITE_HELP,
    check_analysis_outputs,
    check_input_names,
    console,
    fit_where_option,
    handle_errors,
    items_option,
    open_selected,
    selection_of,
    where_option,
    write_json,
)

commands = typer.Typer()


def _frac(value) -> str:
    """A metric as every table shows it: a fraction with three decimals (docs/metrics.md)."""
    return "—" if value is None else f"{value:.3f}"


@commands.command()
@handle_errors
def triplets(
    store: Path = typer.Argument(..., help="The store file (.h5)."),
    prompts: str = typer.Option(..., "--prompts", help="Prompt set whose text vectors give the terms."),
    space: Optional[str] = typer.Option(
        None, help="Text space to compare in: joint or prejoint (default joint; a text-only store's own space)."),
    ontology: str = typer.Option("hdio", help="Built-in ontology name, or an ontology JSON file."),
    ontology_map: Optional[Path] = typer.Option(
        None, "--ontology-map", help="CSV with columns class,node mapping store classes to ontology nodes."),
    protocol: str = typer.Option(
        "paper", help="paper: the study's definition; reference: the released code's triplets (237 on TinySOL)."),
    scope: str = typer.Option(
        "classes", help="classes: the store's classes; ontology: every ontology node (needs an ontology prompt set)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help=JSON_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Ontology triplets on the text tower: is each term nearer its tree neighbour than a farther term?"""
    from analyses.triplets import run_triplets

    check_input_names([ontology])
    check_analysis_outputs(json_path, inputs=[store, ontology, ontology_map], overwrite=overwrite)

    result = run_triplets(store, prompts, space=space, ontology=ontology,
                          ontology_map=str(ontology_map) if ontology_map else None,
                          protocol=protocol, scope=scope)
    table = Table(title=f"Ontology triplets — {prompts} ({result['space']}), {result['ontology']}, "
                        f"{protocol} protocol, scope {scope}", title_justify="left")
    for col in ("accuracy", "correct", "triplets", "terms"):
        table.add_column(col, justify="right")
    table.add_row(_frac(result["accuracy"]), str(result["n_correct"]), str(result["n_triplets"]),
                  str(len(result["terms"])))
    console.print(table)
    if scope == "classes":
        per_term = Table(title="By anchor", title_justify="left")
        for col, justify in (("class", "left"), ("node", "left"), ("triplets", "right"), ("accuracy", "right")):
            per_term.add_column(col, justify=justify)
        for (term, stats), node in zip(result["per_term"].items(), result["nodes"]):
            per_term.add_row(term, node.rsplit("/", 1)[-1], str(stats["n_triplets"]), _frac(stats["accuracy"]))
        console.print(per_term)
    if json_path:
        write_json(json_path, result)


@commands.command()
@handle_errors
def spaces(
    store: Path = typer.Argument(..., help="The store file (.h5)."),
    prompts: Optional[List[str]] = typer.Option(
        None, "--prompts", help="Prompt set(s) for the triplets (repeatable); default: every class prompt set."),
    ontology: str = typer.Option("hdio", help="Built-in ontology name, or an ontology JSON file."),
    ontology_map: Optional[Path] = typer.Option(
        None, "--ontology-map", help="CSV with columns class,node mapping store classes to ontology nodes."),
    protocol: str = typer.Option("paper", help="Triplet protocol: paper or reference."),
    holdout: str = typer.Option("none", help="Centroids: none (the study's) or loo (leave each clip out)."),
    centroid: str = typer.Option(
        "raw", "--centroid", metavar="raw|unit",
        help="raw: a class centroid is the mean of its stored vectors, then L2-normalised (the study's); "
             "unit: the mean of the L2-normalised vectors."),
    json_path: Optional[Path] = typer.Option(None, "--json", help=JSON_HELP),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the side-by-side figure to this PNG."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    where: List[str] = where_option(),
    items: Optional[Path] = items_option(),
    fit_where: List[str] = fit_where_option(),
) -> None:
    """Pre-joint against joint: audio-only centroid labels and triplet accuracy in each space."""
    from analyses.spaces import plot_spaces, run_spaces

    from analyses.centroids import check_centroid

    check_centroid(centroid)
    check_input_names([ontology])
    check_analysis_outputs(json_path, plot=plot, inputs=[store, ontology, ontology_map, items], overwrite=overwrite)
    with open_selected(store, where, items, fit_where) as st:
        result = run_spaces(st, prompt_set=prompts or None, ontology=ontology,
                            ontology_map=str(ontology_map) if ontology_map else None,
                            protocol=protocol, holdout=holdout, centroid=centroid)
        result["selection"] = selection_of(st)
    cols, audio_cols = result["spaces"], result["audio_spaces"]
    if audio_cols:
        cent = Table(title=f"Audio-only centroid labels ({centroid} centroids, holdout {holdout})",
                     title_justify="left")
        cent.add_column("metric")
        for space in audio_cols:
            cent.add_column(space, justify="right")
        for key in ("top1", "top3", "top5", "f1_weighted", "roc_auc_macro", "pr_auc_macro"):
            if all(key in result["centroids"][s] for s in audio_cols):
                cent.add_row(key, *(_frac(result["centroids"][s][key]) for s in audio_cols))
        console.print(cent)
    else:
        console.print("no audio vectors in the store (text only): centroid labels skipped")
    if result["prompt_sets"]:
        trip = Table(title=f"Triplet accuracy ({protocol} protocol, {result['ontology']})", title_justify="left")
        trip.add_column("prompt set")
        for space in cols:
            trip.add_column(space, justify="right")
        trip.add_column("triplets", justify="right")
        for name in result["prompt_sets"]:
            by_space = result["triplets"][name]
            n = next(iter(by_space.values()))["n_triplets"] if by_space else 0
            trip.add_row(name, *(_frac(by_space[s]["accuracy"]) if s in by_space else "—" for s in cols), str(n))
        console.print(trip)
    else:
        console.print("no class prompt set in the store: triplets skipped")
    if json_path:
        write_json(json_path, result)
    if plot:
        plot_spaces(result, plot)
        console.print(f"wrote {plot}", highlight=False)


@commands.command()
@handle_errors
def umap(
    store: Path = typer.Argument(..., help="The store file (.h5)."),
    space: str = typer.Option("joint", help="Audio space to map."),
    color: str = typer.Option("label", help="Colour items by 'label' or by an item column (family, dynamics...)."),
    prompts: Optional[str] = typer.Option(
        None, "--prompts", help="Also place this prompt set's class vectors (prompt ensembles) on the map."),
    seed: int = typer.Option(0, min=0, max=MAX_SEED, help="UMAP random state; the same seed gives the same map."),
    neighbors: int = typer.Option(15, min=2, max=10_000, help="UMAP neighbourhood size (capped below the point count)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the 2-D coordinates to this JSON file."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write the map to this PNG."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    where: List[str] = where_option(),
    items: Optional[Path] = items_option(),
) -> None:
    """A 2-D UMAP map (cosine metric) of the audio vectors, optionally with the prompts."""
    from analyses.umap_map import plot_umap, run_umap

    check_analysis_outputs(json_path, plot=plot, inputs=[store, items], overwrite=overwrite)
    with open_selected(store, where, items) as st:
        result = run_umap(st, space=space, prompt_set=prompts, color=color, seed=seed, n_neighbors=neighbors)
        result["selection"] = selection_of(st)
    table = Table(title=f"UMAP of {space} audio vectors", title_justify="left")
    for col in ("colour", "items", "prompts", "groups", "neighbours", "seed"):
        table.add_column(col, justify="right")
    table.add_row(color, str(result["n_items"]), str(len(result["prompt_labels"])), str(len(result["categories"])),
                  str(result["n_neighbors"]), str(seed))
    console.print(table)
    if json_path:
        write_json(json_path, result)
    if plot:
        plot_umap(result, plot)
        console.print(f"wrote {plot}", highlight=False)
