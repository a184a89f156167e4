"""``embedstore analyze``: the metric analyses (zero-shot, audio centroids, histograms, margins).

The semantic analyses (triplets, spaces, umap) are in :mod:`cli.semantics_cmds`;
:mod:`cli.main` puts both modules' commands in one ``analyze`` group.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from cli.common import (
    JSON_HELP,
    OVERWRITE_HELP,
    check_analysis_outputs,
    console,
    fit_where_option,
    handle_errors,
    items_option,
    open_selected,
    selection_of,
    where_option,
    styled,
    write_json,
)
from embedstore.errors import InputError

commands = typer.Typer()

STORE_HELP = "The store file (.h5)."
SPACE_HELP = "Embedding space: joint (after the projection head) or prejoint (before it)."
MAX_SEED = 2**32 - 1  # numpy's and UMAP's seeds
MAX_BOOTSTRAP = 100_000
MAX_BINS = 1_000_000
BOOTSTRAP_HELP = "Resample the clips N times for 95% confidence intervals (0: none)."
CENTROID_HELP = ("raw: a class centroid is the mean of its stored vectors, then L2-normalised (the study's); "
                 "unit: the mean of the L2-normalised vectors.")
METRIC_COLUMNS = (
    ("top1", "top-1"),
    ("top3", "top-3"),
    ("top5", "top-5"),
    ("f1_weighted", "F1 w."),
    ("roc_auc_macro", "ROC-AUC"),
    ("pr_auc_macro", "PR-AUC"),
)


def _frac(value) -> str:
    """A metric as every table shows it: a fraction with three decimals (docs/metrics.md)."""
    return "—" if value is None else f"{value:.3f}"


def _num(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _metrics_table(title: str, rows: dict, with_ci: bool) -> Table:
    multilabel = all(r.get("top1") is None for r in rows.values())
    columns = [(k, label) for k, label in METRIC_COLUMNS if not multilabel or k in ("roc_auc_macro", "pr_auc_macro")]
    table = Table(title=title, title_justify="left")
    table.add_column("labels")
    for _, label in columns:
        table.add_column(label, justify="right", overflow="fold")
    for name, result in rows.items():
        mark = " *" if result.get("tied_classes") else ""
        table.add_row(name + mark, *(_frac(result.get(key)) for key, _ in columns))
        if with_ci:
            intervals = [(result.get("ci95") or {}).get(key) for key, _ in columns]
            table.add_row(styled(("  95% CI", "dim")), *(
                styled((f"{_frac(ci[0])}–{_frac(ci[1])}", "dim")) if ci else "—" for ci in intervals
            ))
    return table


def _per_class_table(title: str, result: dict) -> Table:
    table = Table(title=title, title_justify="left")
    keys = [k for k in ("f1", "roc_auc", "pr_auc") if any(k in v for v in result["per_class"].values())]
    table.add_column("class")
    table.add_column("items", justify="right")
    for key in keys:
        table.add_column(key.replace("_", "-").upper(), justify="right")
    for name, values in result["per_class"].items():
        table.add_row(name, str(values["support"]), *(_frac(values.get(k)) for k in keys))
    return table


def print_ties(results: dict) -> None:
    """One line per prompt set whose classes tie (identical prompt vectors): their top-1 is the tie-break's."""
    for name, result in results.items():
        for group in result.get("tied_classes") or []:
            console.print(styled((f"* {name}:", "yellow"), f" classes {' = '.join(group)} have identical prompt "
                                 "vectors: among them top-1 is the tie-break's choice and the margin is 0"),
                          highlight=False, soft_wrap=True)


@commands.command()
@handle_errors
def zeroshot(
    store: Path = typer.Argument(..., help=STORE_HELP),
    prompts: list[str] = typer.Option(
        [], "--prompts", metavar="SET", help="Prompt set to evaluate; repeatable (default: every set whose prompts all name classes)."
    ),
    space: str = typer.Option("joint", "--space", metavar="SPACE", help=SPACE_HELP),
    bootstrap: int = typer.Option(0, "--bootstrap", metavar="N", min=0, max=MAX_BOOTSTRAP, help=BOOTSTRAP_HELP),
    seed: int = typer.Option(0, "--seed", min=0, max=MAX_SEED, help="Seed of the bootstrap resampling."),
    per_class: bool = typer.Option(False, "--per-class", help="Also print F1, ROC-AUC and PR-AUC for every class."),
    json_path: Path | None = typer.Option(None, "--json", metavar="PATH", help=JSON_HELP),
    plot: Path | None = typer.Option(None, "--plot", metavar="PATH.png", help="Write the metrics bar chart (one bar per prompt set) here (.png)."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    where: list[str] = where_option(),
    items: Path | None = items_option(),
) -> None:
    """Zero-shot classification of every clip by its nearest class prompt (ensemble), per prompt set."""
    from analyses.embeddings import class_prompt_sets
    from analyses.zeroshot import run_zeroshot

    check_analysis_outputs(json_path, plot=plot, inputs=[store, items], overwrite=overwrite)
    with open_selected(store, where, items) as st:
        names = list(dict.fromkeys(prompts)) or class_prompt_sets(st)
        if not names:
            raise InputError(f"{store} has no prompt set whose prompts all name classes; pass --prompts SET")
        results = {name: run_zeroshot(st, name, space=space, bootstrap=bootstrap, seed=seed) for name in names}
        model, dataset, n_items = st.model, st.dataset, st.n_items
        selection = selection_of(st)
    title = f"Zero-shot — {model} on {dataset}, {space} space, {n_items} clips"
    console.print(_metrics_table(title, results, with_ci=bootstrap > 0))
    print_ties(results)
    if per_class:
        for name, result in results.items():
            console.print(_per_class_table(f"Per class — {name}", result))
    if json_path:
        write_json(json_path, {"store": str(store), "model": model, "dataset": dataset, "space": space,
                                "selection": selection, "results": results})
    if plot:
        from analyses.plots import plot_metrics

        plot_metrics(results, plot)
        console.print(f"wrote {plot}", highlight=False)


@commands.command()
@handle_errors
def centroids(
    store: Path = typer.Argument(..., help=STORE_HELP),
    space: str = typer.Option("joint", "--space", metavar="SPACE", help=SPACE_HELP),
    holdout: str = typer.Option(
        "none", "--holdout", metavar="none|loo",
        help="none: each clip counts in its own class mean, as in the study; loo: leave it out (the fair variant).",
    ),
    centroid: str = typer.Option("raw", "--centroid", metavar="raw|unit", help=CENTROID_HELP),
    bootstrap: int = typer.Option(0, "--bootstrap", metavar="N", min=0, max=MAX_BOOTSTRAP, help=BOOTSTRAP_HELP),
    seed: int = typer.Option(0, "--seed", min=0, max=MAX_SEED, help="Seed of the bootstrap resampling."),
    per_class: bool = typer.Option(False, "--per-class", help="Also print F1, ROC-AUC and PR-AUC for every class."),
    json_path: Path | None = typer.Option(None, "--json", metavar="PATH", help=JSON_HELP),
    plot: Path | None = typer.Option(None, "--plot", metavar="PATH.png", help="Write the metrics bar chart here (.png)."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    where: list[str] = where_option(),
    items: Path | None = items_option(),
    fit_where: list[str] = fit_where_option(),
) -> None:
    """Audio-only labels: classify each clip by the nearest class mean of the audio vectors."""
    from analyses.centroids import check_centroid, run_centroids

    check_centroid(centroid)
    check_analysis_outputs(json_path, plot=plot, inputs=[store, items], overwrite=overwrite)
    with open_selected(store, where, items, fit_where) as st:
        result = run_centroids(st, space=space, holdout=holdout, bootstrap=bootstrap, seed=seed, centroid=centroid)
        model, dataset = st.model, st.dataset
        selection = selection_of(st)
    fit = result["fit_selection"]
    fitted = "" if fit is None else f", fitted on {fit['n_items']} others ({st.selection.fit.describe()})"
    title = (f"Audio-only labels — {model} on {dataset}, {space} space, {result['n_items']} clips, "
             f"{centroid} centroids{fitted}")
    console.print(_metrics_table(title, {f"centroids ({holdout})": result}, with_ci=bootstrap > 0))
    if per_class:
        console.print(_per_class_table("Per class", result))
    if json_path:
        write_json(json_path, {"store": str(store), "model": model, "dataset": dataset, "selection": selection,
                                **result})
    if plot:
        from analyses.plots import plot_metrics

        plot_metrics({f"centroids ({holdout})": result}, plot)
        console.print(f"wrote {plot}", highlight=False)


@commands.command()
@handle_errors
def histograms(
    store: Path = typer.Argument(..., help=STORE_HELP),
    prompts: str | None = typer.Option(None, "--prompts", metavar="SET", help="Prompt set giving the labels."),
    centroids: bool = typer.Option(False, "--centroids", help="Use the audio class centroids as labels instead."),
    centroid: str = typer.Option("raw", "--centroid", metavar="raw|unit", help="With --centroids: " + CENTROID_HELP),
    space: str = typer.Option("joint", "--space", metavar="SPACE", help=SPACE_HELP),
    bins: int = typer.Option(100, "--bins", min=1, max=MAX_BINS, help="Equal-width bins over cosine similarity -1..1."),
    json_path: Path | None = typer.Option(None, "--json", metavar="PATH", help=JSON_HELP),
    plot: Path | None = typer.Option(None, "--plot", metavar="PATH.png", help="Write the two histograms here (.png)."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    where: list[str] = where_option(),
    items: Path | None = items_option(),
    fit_where: list[str] = fit_where_option(),
) -> None:
    """Positive vs negative clip-label similarities: histograms, their overlap AUC and Bhattacharyya coefficient."""
    from analyses.histograms import run_histograms

    if (prompts is None) == (not centroids):
        raise InputError("give exactly one of --prompts SET and --centroids")
    from analyses.centroids import check_centroid

    check_centroid(centroid)
    check_analysis_outputs(json_path, plot=plot, inputs=[store, items], overwrite=overwrite)
    with open_selected(store, where, items, fit_where) as st:
        result = run_histograms(st, prompt_set=prompts, centroids=centroids, space=space, bins=bins,
                                centroid=centroid)
        model, dataset = st.model, st.dataset
        selection = selection_of(st)
    labels = f"{centroid} centroids" if centroids else result["labels"]
    table = Table(title=f"Similarity histograms — {model} on {dataset}, {labels} ({space})",
                  title_justify="left")
    for col in ("pairs", "count", "mean", "std"):
        table.add_column(col, justify="left" if col == "pairs" else "right")
    for side in ("positive", "negative"):
        table.add_row(side, str(result[f"n_{side}"]), _num(result[f"{side}_mean"]), _num(result[f"{side}_std"]))
    console.print(table)
    console.print(f"overlap: AUC {_num(result['auc'], 4)} (chance that a positive pair outscores a negative one), "
                  f"Bhattacharyya coefficient {_num(result['bhattacharyya'], 4)}", highlight=False)
    print_ties({result["labels"]: result})
    if json_path:
        write_json(json_path, {"store": str(store), "model": model, "dataset": dataset, "selection": selection,
                                **result})
    if plot:
        from analyses.plots import plot_histograms

        plot_histograms(result, plot)
        console.print(f"wrote {plot}", highlight=False)


@commands.command()
@handle_errors
def confidence(
    store: Path = typer.Argument(..., help=STORE_HELP),
    prompts: str = typer.Option(..., "--prompts", metavar="SET", help="Prompt set giving the class vectors."),
    space: str = typer.Option("joint", "--space", metavar="SPACE", help=SPACE_HELP),
    json_path: Path | None = typer.Option(None, "--json", metavar="PATH", help=JSON_HELP),
    plot: Path | None = typer.Option(None, "--plot", metavar="PATH.png", help="Write box plots of the margins here (.png)."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    where: list[str] = where_option(),
    items: Path | None = items_option(),
) -> None:
    """Confidence margins: each clip's top-1 minus top-2 class similarity, split by correct and wrong."""
    from analyses.confidence import run_confidence

    check_analysis_outputs(json_path, plot=plot, inputs=[store, items], overwrite=overwrite)
    with open_selected(store, where, items) as st:
        result = run_confidence(st, prompts, space=space)
        model, dataset = st.model, st.dataset
        selection = selection_of(st)
    table = Table(title=f"Top-2 margins — {model} on {dataset}, {prompts} ({space})",
                  title_justify="left")
    for col in ("predictions", "clips", "median", "q1", "q3"):
        table.add_column(col, justify="left" if col == "predictions" else "right")
    table.add_row("all", str(result["n_items"]), _num(result["median"], 4), _num(result["q1"], 4), _num(result["q3"], 4))
    for side in ("correct", "wrong"):
        part = result[side]
        table.add_row(side, str(part["n"]), _num(part["median"], 4), _num(part["q1"], 4), _num(part["q3"], 4))
    console.print(table)
    print_ties({prompts: result})
    if json_path:
        write_json(json_path, {"store": str(store), "model": model, "dataset": dataset, "selection": selection,
                                **result})
    if plot:
        from analyses.plots import plot_confidence

        plot_confidence(result, plot)
        console.print(f"wrote {plot}", highlight=False)


RETRIEVAL_ROWS = (("R@1", "r1"), ("R@5", "r5"), ("R@10", "r10"), ("median rank", "median_rank"),
                  ("mean rank", "mean_rank"), ("mAP@10", "map10"))


@commands.command()
@handle_errors
def retrieval(
    store: Path = typer.Argument(..., help=STORE_HELP),
    captions: str | None = typer.Option(
        None, "--captions", metavar="SET", help="Caption set (captions tied to items); default: the store's only one."),
    space: str = typer.Option("joint", "--space", metavar="SPACE", help=SPACE_HELP),
    json_path: Path | None = typer.Option(None, "--json", metavar="PATH", help=JSON_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Audio-to-text and text-to-audio retrieval: recall at 1/5/10, median rank, mAP@10.

    As the CLAP papers compute them: a clip with several captions counts its best-ranked
    caption; items without captions are left out (docs/metrics.md).
    """
    from analyses.retrieval import run_retrieval
    from embedstore.store import open_store

    check_analysis_outputs(json_path, inputs=[store], overwrite=overwrite)
    with open_store(store) as st:
        result = run_retrieval(st, captions, space=space)
        model, dataset = st.model, st.dataset
    table = Table(title=f"Retrieval — {model} on {dataset}, {result['caption_set']} ({space} space): "
                        f"{result['n_items']} clips, {result['n_captions']} captions", title_justify="left")
    for col in ("metric", "audio → text", "text → audio"):
        table.add_column(col, justify="right")
    for label, key in RETRIEVAL_ROWS:
        values = [result.get(f"{d}_{key}") for d in ("a2t", "t2a")]
        table.add_row(label, *(_num(v, 1) if "rank" in key else _frac(v) for v in values))
    console.print(table)
    if json_path:
        write_json(json_path, {"store": str(store), "model": model, "dataset": dataset, **result})
