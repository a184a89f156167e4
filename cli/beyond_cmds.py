"""``embedstore analyze``: the analyses beyond the study (why zero-shot fails, and what repairs it).

modality-gap, probe, text-map, hierarchy, confusion and compare; :mod:`cli.main` puts them in
the ``analyze`` group beside the study's analyses.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from cli.analyze_cmds import CENTROID_HELP, MAX_BOOTSTRAP, MAX_SEED
from cli.common import (
    JSON_HELP,
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
from embedstore.errors import InputError

commands = typer.Typer()

STORE_HELP = "The store file (.h5)."
SPACE_HELP = "Embedding space: joint (after the projection head) or prejoint (before it)."
OVERWRITE_HELP = "Replace existing --json / --plot files."
PROMPTS_HELP = "Prompt set; repeatable (default: every set whose prompts all name classes)."


def _num(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _prompt_sets(st, prompts: list[str]) -> list[str]:
    from analyses.embeddings import class_prompt_sets

    names = list(dict.fromkeys(prompts)) or class_prompt_sets(st)
    if not names:
        raise InputError(f"{st.path} has no prompt set whose prompts all name classes; pass --prompts SET")
    return names


def _header(st, store: Path) -> dict:
    return {"store": str(store), "model": st.model, "dataset": st.dataset, "selection": selection_of(st)}


def _title(st, text: str) -> str:
    shown = f", {st.n_items} clips" + (f" ({st.selection.describe()})" if selection_of(st) else "")
    return str(f"{text} — {st.model} on {st.dataset}{shown}")


@commands.command("modality-gap")
@handle_errors
def modality_gap(
    store: Path = typer.Argument(..., help=STORE_HELP),
    prompts: List[str] = typer.Option([], "--prompts", metavar="SET", help=PROMPTS_HELP),
    space: str = typer.Option("joint", "--space", metavar="SPACE", help=SPACE_HELP),
    lambdas: List[float] = typer.Option(
        [], "--lambda", metavar="X", help="Shift factor; repeatable (default: -1 to 1.5 by 0.25)."),
    json_path: Optional[Path] = typer.Option(None, "--json", metavar="PATH", help=JSON_HELP),
    plot: Optional[Path] = typer.Option(None, "--plot", metavar="PATH.png",
                                        help="Write top-1 against lambda, one line per prompt set (.png)."),
    where: List[str] = where_option(),
    items: Optional[Path] = items_option(),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """The modality gap (Liang et al. 2022): distance between the audio and text centres, and
    zero-shot top-1 as both modalities are shifted along it."""
    from analyses.modality_gap import DEFAULT_LAMBDAS, run_modality_gap

    check_analysis_outputs(json_path, plot=plot, inputs=[store, items], overwrite=overwrite)
    with open_selected(store, where, items) as st:
        names = _prompt_sets(st, prompts)
        results = {name: run_modality_gap(st, name, space=space, lambdas=lambdas or DEFAULT_LAMBDAS)
                   for name in names}
        header = _header(st, store)
        title = _title(st, f"Modality gap, {space} space")
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for name in results:
        table.add_column(str(name), justify="right")
    table.add_row("gap distance", *(_num(r["gap_distance"]) for r in results.values()))
    for i, point in enumerate(next(iter(results.values()))["shift"]):
        table.add_row(f"top-1 at λ = {point['lambda']:g}", *(_num(r["shift"][i]["top1"]) for r in results.values()))
    console.print(table)
    if json_path:
        write_json(json_path, {**header, "space": space, "results": results})
    if plot:
        from analyses.plots import plot_gap_shift

        plot_gap_shift(results, plot)
        console.print(f"wrote {plot}")


@commands.command()
@handle_errors
def probe(
    store: Path = typer.Argument(..., help=STORE_HELP),
    space: str = typer.Option("joint", "--space", metavar="SPACE", help=SPACE_HELP),
    folds: int = typer.Option(5, "--folds", min=2, max=1000, help="Stratified cross-validation folds."),
    seed: int = typer.Option(0, "--seed", min=0, max=MAX_SEED, help="Seed of the fold shuffle."),
    json_path: Optional[Path] = typer.Option(None, "--json", metavar="PATH", help=JSON_HELP),
    where: List[str] = where_option(),
    items: Optional[Path] = items_option(),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """The linear-probe ceiling (logistic regression, stratified k-fold) and leave-one-out kNN top-1."""
    from analyses.probe import run_probe

    check_analysis_outputs(json_path, inputs=[store, items], overwrite=overwrite)
    with open_selected(store, where, items) as st:
        result = run_probe(st, space=space, folds=folds, seed=seed)
        header = _header(st, store)
        title = _title(st, f"Labels given: probe and kNN, {space} space")
    table = Table(title=title, title_justify="left")
    for col in ("classifier", "top-1", "sd", "F1 w.", "sd"):
        table.add_column(col, justify="left" if col == "classifier" else "right")
    table.add_row(f"logistic probe ({folds}-fold)", _num(result["top1"]), _num(result["top1_sd"]),
                  _num(result["f1_weighted"]), _num(result["f1_weighted_sd"]))
    for k in (1, 5):
        table.add_row(f"{k}-NN, leave one out", _num(result[f"knn{k}_top1"]), "", "", "")
    console.print(table)
    if json_path:
        write_json(json_path, {**header, **result})


@commands.command("text-map")
@handle_errors
def text_map(
    store: Path = typer.Argument(..., help=STORE_HELP),
    prompts: List[str] = typer.Option([], "--prompts", metavar="SET", help=PROMPTS_HELP),
    space: str = typer.Option("joint", "--space", metavar="SPACE", help=SPACE_HELP),
    method: str = typer.Option("procrustes", "--map", metavar="procrustes|ridge",
                               help="procrustes: a rotation (orthogonal); ridge: any linear map."),
    alpha: float = typer.Option(1.0, "--alpha", help="Ridge penalty."),
    centroid: str = typer.Option("raw", "--centroid", metavar="raw|unit", help=CENTROID_HELP),
    folds: int = typer.Option(5, "--folds", min=2, max=1000, help="Folds over the classes."),
    seed: int = typer.Option(0, "--seed", min=0, max=MAX_SEED, help="Seed of the class shuffle."),
    json_path: Optional[Path] = typer.Option(None, "--json", metavar="PATH", help=JSON_HELP),
    where: List[str] = where_option(),
    items: Optional[Path] = items_option(),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Fit a linear map from class prompts to audio class centroids on some classes; zero-shot on
    the held-out classes, mapped against unmapped."""
    from analyses.text_map import run_text_map

    check_analysis_outputs(json_path, inputs=[store, items], overwrite=overwrite)
    with open_selected(store, where, items) as st:
        names = _prompt_sets(st, prompts)
        results = {name: run_text_map(st, name, space=space, method=method, folds=folds, seed=seed, alpha=alpha,
                                   centroid=centroid)
                   for name in names}
        header = _header(st, store)
        title = _title(st, f"Text-to-audio map ({method}, {folds} folds over classes), {space} space")
    table = Table(title=title, title_justify="left")
    for col in ("prompt set", "mapped top-1", "unmapped top-1", "chance"):
        table.add_column(col, justify="left" if col == "prompt set" else "right")
    for name, result in results.items():
        table.add_row(str(name), _num(result["top1_mapped"]), _num(result["top1_unmapped"]), _num(result["chance"]))
    console.print(table)
    if json_path:
        write_json(json_path, {**header, "space": space, "results": results})


def _labels(prompts: list[str], centroids: bool) -> list[tuple[str | None, bool]]:
    if not prompts and not centroids:
        raise InputError("give --prompts SET (repeatable) and/or --centroids")
    return [(name, False) for name in dict.fromkeys(prompts)] + ([(None, True)] if centroids else [])


@commands.command()
@handle_errors
def hierarchy(
    store: Path = typer.Argument(..., help=STORE_HELP),
    prompts: List[str] = typer.Option([], "--prompts", metavar="SET", help="Prompt set giving the labels; repeatable."),
    centroids: bool = typer.Option(False, "--centroids", help="Also (or only) the audio class centroids as labels."),
    space: str = typer.Option("joint", "--space", metavar="SPACE", help=SPACE_HELP),
    holdout: str = typer.Option("none", "--holdout", metavar="none|loo", help="Centroids: none (the study's) or loo."),
    centroid: str = typer.Option("raw", "--centroid", metavar="raw|unit", help=CENTROID_HELP),
    ontology: str = typer.Option("hdio", "--ontology", help="Built-in ontology name, or an ontology JSON file."),
    ontology_map: Optional[Path] = typer.Option(
        None, "--ontology-map", help="CSV with columns class,node mapping store classes to ontology nodes."),
    family_depth: Optional[int] = typer.Option(
        None, "--family-depth", help="Depth of the ancestor naming a family (1: the root's children); "
                                     "default: each class's parent node."),
    json_path: Optional[Path] = typer.Option(None, "--json", metavar="PATH", help=JSON_HELP),
    where: List[str] = where_option(),
    items: Optional[Path] = items_option(),
    fit_where: List[str] = fit_where_option(),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Hierarchy-aware scores: top-1 within the true family, and the tree distance of the errors."""
    from analyses.hierarchy import run_hierarchy

    sides = _labels(prompts, centroids)
    check_input_names([ontology])
    check_analysis_outputs(json_path, inputs=[store, items, ontology, ontology_map], overwrite=overwrite)
    with open_selected(store, where, items, fit_where) as st:
        results = {}
        for name, is_centroids in sides:
            result = run_hierarchy(st, prompt_set=name, centroids=is_centroids, space=space, holdout=holdout,
                                   ontology=ontology, ontology_map=str(ontology_map) if ontology_map else None,
                                   family_depth=family_depth, centroid=centroid)
            results[result["labels"]] = result
        header = _header(st, store)
        title = _title(st, f"Hierarchy-aware scores ({next(iter(results.values()))['ontology']}), {space} space")
    table = Table(title=title, title_justify="left")
    for col in ("labels", "top-1", "family top-1", "errors", "in family", "mean error distance"):
        table.add_column(col, justify="left" if col == "labels" else "right")
    for name, r in results.items():
        table.add_row(str(name), _num(r["top1"]), _num(r["family_top1"]), str(r["n_errors"]),
                      str(r["family_errors"]), _num(r["error_distance_mean"], 2))
    console.print(table)
    if json_path:
        write_json(json_path, {**header, "space": space, "results": results})


@commands.command()
@handle_errors
def confusion(
    store: Path = typer.Argument(..., help=STORE_HELP),
    prompts: Optional[str] = typer.Option(None, "--prompts", metavar="SET", help="Prompt set giving the labels."),
    centroids: bool = typer.Option(False, "--centroids", help="Use the audio class centroids as labels instead."),
    space: str = typer.Option("joint", "--space", metavar="SPACE", help=SPACE_HELP),
    holdout: str = typer.Option("none", "--holdout", metavar="none|loo", help="Centroids: none (the study's) or loo."),
    centroid: str = typer.Option("raw", "--centroid", metavar="raw|unit", help=CENTROID_HELP),
    json_path: Optional[Path] = typer.Option(None, "--json", metavar="PATH", help=JSON_HELP),
    plot: Optional[Path] = typer.Option(None, "--plot", metavar="PATH.png", help="Write the confusion matrix here (.png)."),
    where: List[str] = where_option(),
    items: Optional[Path] = items_option(),
    fit_where: List[str] = fit_where_option(),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Per-class results and the confusion matrix (rows true, columns predicted) of zero-shot or centroid labels."""
    from analyses.confusion import run_confusion

    if (prompts is None) == (not centroids):
        raise InputError("give exactly one of --prompts SET and --centroids")
    check_analysis_outputs(json_path, plot=plot, inputs=[store, items], overwrite=overwrite)
    with open_selected(store, where, items, fit_where) as st:
        result = run_confusion(st, prompt_set=prompts, centroids=centroids, space=space, holdout=holdout,
                               centroid=centroid)
        header = _header(st, store)
        title = _title(st, f"Per class — {result['labels']}, {space} space, top-1 {result['top1']:.3f}")
    table = Table(title=title, title_justify="left")
    for col in ("class", "clips", "right", "recall", "precision", "F1", "most confused with"):
        table.add_column(col, justify="left" if col in ("class", "most confused with") else "right")
    for name, row in result["per_class"].items():
        confused = "—" if row["most_confused_with"] is None else f"{row['most_confused_with']} ({row['n_confused']})"
        table.add_row(str(name), str(row["support"]), str(row["correct"]), _num(row["recall"]),
                      _num(row["precision"]), _num(row["f1"]), str(confused))
    console.print(table)
    if json_path:
        write_json(json_path, {**header, **result})
    if plot:
        from analyses.plots import plot_confusion

        plot_confusion(result, plot)
        console.print(f"wrote {plot}")


@commands.command()
@handle_errors
def compare(
    stores: List[Path] = typer.Argument(..., help="One store (two prompt sets) or two stores (same items)."),
    prompts: List[str] = typer.Option(
        [], "--prompts", metavar="SET",
        help="Prompt set of side A, then of side B (one set with two stores: the same set on both)."),
    centroids: bool = typer.Option(False, "--centroids", help="Side B uses the audio class centroids as labels."),
    space: str = typer.Option("joint", "--space", metavar="SPACE", help=SPACE_HELP),
    holdout: str = typer.Option("none", "--holdout", metavar="none|loo", help="Centroids: none (the study's) or loo."),
    centroid: str = typer.Option("raw", "--centroid", metavar="raw|unit", help=CENTROID_HELP),
    resamples: int = typer.Option(1000, "--resamples", metavar="N", min=1, max=MAX_BOOTSTRAP,
                                  help="Paired bootstrap resamples."),
    seed: int = typer.Option(0, "--seed", min=0, max=MAX_SEED, help="Seed of the resampling."),
    json_path: Optional[Path] = typer.Option(None, "--json", metavar="PATH", help=JSON_HELP),
    where: List[str] = where_option(),
    items: Optional[Path] = items_option(),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """A against B on the same items: difference in top-1 and weighted F1, paired-bootstrap 95%
    interval and two-sided p-value."""
    from analyses.compare import run_compare
    from analyses.selection import Selection

    if len(stores) > 2:
        raise InputError(f"compare takes one or two stores, got {len(stores)}")
    wanted = 1 if centroids else 2
    if not (len(prompts) == wanted or (len(stores) == 2 and len(prompts) == 1)):
        raise InputError("give --prompts A --prompts B (one store), --prompts SET (two stores), "
                         "or --prompts A --centroids")
    check_analysis_outputs(json_path, inputs=[*stores, items], overwrite=overwrite)
    prompts_b = None if centroids else prompts[-1]
    selection = Selection.parse(where, items)
    result = run_compare(stores[0], stores[-1] if len(stores) == 2 else None, prompts_a=prompts[0],
                         prompts_b=prompts_b, centroids_b=centroids, space=space, holdout=holdout, centroid=centroid,
                         resamples=resamples, seed=seed, selection=selection)
    a, b = result["a"], result["b"]
    shown = "" if selection is None else f", {selection.describe()}"
    table = Table(title=str(f"A = {a['labels']} ({a['model']}), B = {b['labels']} ({b['model']}), "
                               f"{result['n_items']} clips, {resamples} paired resamples{shown}"),
                  title_justify="left")
    for col in ("metric", "A", "B", "A - B", "95% interval", "p"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for key, label in (("top1", "top-1"), ("f1_weighted", "F1 w.")):
        r = result[key]
        table.add_row(label, _num(r["a"]), _num(r["b"]), f"{r['diff']:+.3f}",
                      f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]", _num(r["p_value"], 4))
    console.print(table)
    if json_path:
        write_json(json_path, {"stores": [str(s) for s in stores], "selection": a["selection"], **result})
