"""The report's figures: per store, the study's figures in kind; across stores, the triplets.

Every figure is drawn for the page width (:data:`analyses.plots.PAGE_WIDTH_IN`) with the
colour-blind-safe palette of :mod:`analyses.plots`, so it reads at the size the page
shows it; the page links each to its full-size PNG.
"""

from __future__ import annotations

from pathlib import Path

from analyses.spaces import ordered_spaces
from analyses.triplets import PROTOCOLS



def plot_triplets_by_store(report: dict, protocol: str, path) -> None:
    """Grouped bars: triplet accuracy per store and space, one group per prompt set (Figure 5)."""
    from analyses import plots

    merged = report["results"]
    keys = [s["key"] for s in report["stores"]]
    experiment = f"triplets-{protocol}"
    sets = list(dict.fromkeys(ps for k in keys for ps in merged.get(k, {}).get(experiment, {})))
    series = {}
    for k in keys:
        by_set = merged.get(k, {}).get(experiment, {})
        for space in ordered_spaces({s for by in by_set.values() for s in by}):
            series[f"{k} ({space})"] = [(by_set.get(ps, {}).get(space) or {}).get("accuracy") for ps in sets]
    fig, ax = plots.plt.subplots(figsize=(plots.PAGE_WIDTH_IN, 4.0))
    plots.grouped_bars(ax, sets, series)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("triplet accuracy")
    ax.set_title(f"Ontology triplets, {protocol} protocol (dotted: chance)", fontsize="medium")
    plots.legend_beside(ax, "store (space)")
    plots._save(fig, path)


def spaces_result(report: dict, key: str) -> dict | None:
    """The merged centroid and paper-triplet results of one store in :func:`analyses.spaces.run_spaces`'s shape."""
    results = report["results"].get(key, {})
    centroids = results.get("centroids", {}).get("audio", {})
    if not centroids:
        return None
    triplets = results.get("triplets-paper", {})
    sets = [ps for ps in triplets if ps != "ontology"]
    spaces = ordered_spaces(set(centroids) | {s for ps in sets for s in triplets[ps]})
    return {"spaces": spaces, "audio_spaces": ordered_spaces(centroids), "centroids": centroids,
            "prompt_sets": sets, "protocol": "paper", "holdout": report["options"]["holdout"],
            "centroid": report["options"].get("centroid", "raw"),
            "triplets": {ps: triplets[ps] for ps in sets}}


def draw_figures(report: dict, full_result, stem, figures_dir: Path, say) -> dict:
    """Draw every figure; returns {(store, kind, prompt set or protocol): path relative to the report}.

    ``full_result(store_summary, experiment, prompt_set)`` reads a result with its per-clip
    lists (margins, coordinates), which the merged report leaves out; ``stem(key)`` makes a
    store key safe in a file name.
    """
    from analyses import plots
    from analyses.spaces import plot_spaces
    from analyses.umap_map import plot_umap

    merged = report["results"]
    space = report["options"]["space"]
    figures_dir.mkdir(parents=True, exist_ok=True)
    made = {}

    def draw(key, filename, plot, *args):
        say(f"figure {filename}")
        plot(*args, figures_dir / filename)
        made[key] = f"figures/{filename}"

    for store in report["stores"]:
        k = store["key"]
        name = stem(k)
        results = merged.get(k, {})
        zeroshot = {ps: by[space] for ps, by in results.get("zeroshot", {}).items() if space in by}
        if zeroshot:
            draw((k, "metrics", ""), f"{name}__metrics.png", plots.plot_metrics, zeroshot)
        histograms = {ps: by[space] for ps, by in results.get("histograms", {}).items() if space in by}
        if histograms:
            draw((k, "histograms", ""), f"{name}__histograms.png", plots.plot_histogram_grid, histograms)
        confidence = {ps: full_result(store, "confidence", ps)
                      for ps, by in results.get("confidence", {}).items() if space in by}
        if confidence:
            draw((k, "confidence", ""), f"{name}__margins.png", plots.plot_margin_boxes, confidence)
        spaces = spaces_result(report, k)
        if spaces:
            draw((k, "spaces", ""), f"{name}__spaces.png", plot_spaces, spaces)
        for ps, by in results.get("umap", {}).items():
            if space in by:
                draw((k, "umap", ""), f"{name}__umap.png", plot_umap, full_result(store, "umap", ps))
    for protocol in PROTOCOLS:
        if any(f"triplets-{protocol}" in merged.get(s["key"], {}) for s in report["stores"]):
            draw(("", "triplets", protocol), f"triplets__{protocol}.png", plot_triplets_by_store, report, protocol)
    from analyses.report_beyond import beyond_figures

    beyond_figures(report, draw)
    return made
