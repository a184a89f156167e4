"""Figures of the metric analyses, one function per figure, written as PNG.

Each function takes the plain dict an ``analyses.run_*`` function returned and writes
the figure atomically (a complete PNG or nothing).
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from embedstore.store.fileio import write_atomic

METRIC_LABELS = {
    "top1": "top-1",
    "top3": "top-3",
    "top5": "top-5",
    "f1_weighted": "F1 (weighted)",
    "roc_auc_macro": "ROC-AUC (macro)",
    "pr_auc_macro": "PR-AUC (macro)",
}


#: Okabe & Ito's colour-blind-safe palette (Color Universal Design), yellow last: faint on white.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#000000", "#F0E442")
#: Beyond 8 categories the colour repeats with another marker (scatter) or hatch (bars),
#: so 14 instruments (or 32 categories) stay apart without telling hues apart.
MARKERS = ("o", "^", "s", "D")
HATCHES = ("", "///", "...", "xxx")
#: Every figure is drawn for the report's page width: 9 in at 120 dpi = 1080 px, shown 1:1.
PAGE_WIDTH_IN = 9.0
DPI = 120


def category_style(index: int) -> dict:
    """Colour, marker and hatch of category ``index`` (0-based)."""
    turn = index // len(PALETTE)
    return {"color": PALETTE[index % len(PALETTE)], "marker": MARKERS[turn % len(MARKERS)],
            "hatch": HATCHES[turn % len(HATCHES)]}


def _save(fig, path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    write_atomic(Path(path), lambda fh: fh.write(buffer.getvalue()))


def grouped_bars(ax, groups: list[str], series: dict[str, list], errors: dict[str, list] | None = None) -> None:
    """Bars of ``series`` (name -> one value per group) side by side within each group.

    ``errors`` (name -> per group ``[low, high]`` or None) become error bars.
    """
    names = list(series)
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(groups))
    for i, name in enumerate(names):
        values = np.array([np.nan if v is None else v for v in series[name]], dtype=np.float64)
        yerr = None
        if errors and any(errors.get(name) or []):
            bounds = [b if b else [v, v] for b, v in zip(errors[name], values)]
            yerr = np.abs(np.array(bounds, dtype=np.float64).T - values)
        style = category_style(i)
        ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, yerr=yerr, capsize=2, label=name,
               color=style["color"], hatch=style["hatch"], edgecolor="white", linewidth=0.5,
               error_kw={"elinewidth": 0.8})
    long_labels = max((len(g) for g in groups), default=0) > 10
    ax.set_xticks(x, groups, rotation=25 if long_labels else 0, ha="right" if long_labels else "center")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def legend_beside(ax, title: str | None = None) -> None:
    """A legend right of the axes: it never covers bars or tick labels."""
    ax.legend(title=title, fontsize="small", title_fontsize="small", loc="center left",
              bbox_to_anchor=(1.01, 0.5), frameon=False)


def plot_metrics(results_by_prompt_set: dict, path) -> None:
    """Grouped bars: one group per metric, one bar per prompt set (the study's Figure 2).

    Any results with the zero-shot keys fit, audio centroids (``run_centroids``) too.
    Bootstrap intervals, when the results carry ``ci95``, are drawn as error bars.
    """
    names = list(results_by_prompt_set)
    keys = [k for k in METRIC_LABELS if any(results_by_prompt_set[n].get(k) is not None for n in names)]
    series = {n: [results_by_prompt_set[n].get(k) for k in keys] for n in names}
    errors = {n: [(results_by_prompt_set[n].get("ci95") or {}).get(k) for k in keys] for n in names}
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN, 4.0))
    grouped_bars(ax, [METRIC_LABELS[k] for k in keys], series, errors)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    legend_beside(ax, "labels")
    first = results_by_prompt_set[names[0]] if names else {}
    ax.set_title(f"Classification by the nearest label ({first.get('space', '')} space, "
                 f"{first.get('n_items', 0)} clips)", fontsize="medium")
    _save(fig, path)


def plot_histogram_grid(results_by_labels: dict, path, columns: int = 3) -> None:
    """Small multiples of :func:`plot_histograms`: one panel per label set, one shared legend."""
    names = list(results_by_labels)
    rows = max(1, -(-len(names) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(PAGE_WIDTH_IN, 2.3 * rows), squeeze=False,
                             sharex=True, constrained_layout=True)
    for ax, name in zip(axes.flat, names):
        _histogram_panel(ax, results_by_labels[name])
        auc, bc = results_by_labels[name].get("auc"), results_by_labels[name].get("bhattacharyya")
        overlap = "" if auc is None else f"\nAUC {auc:.2f}, overlap {bc:.2f}"
        ax.set_title(f"{name}{overlap}", fontsize="small")
        ax.tick_params(labelsize="small")
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("density", fontsize="small")
    for ax in axes[-1]:
        ax.set_xlabel("cosine similarity", fontsize="small")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, ["positive (matching label)", "negative (other labels)"], loc="outside lower center",
               ncol=2, fontsize="small", frameon=False)
    _save(fig, path)


def _histogram_panel(ax, result: dict) -> None:
    edges = np.asarray(result["bin_edges"])
    widths = np.diff(edges)
    for key, label, color in (("positive_counts", "positive", PALETTE[2]),
                              ("negative_counts", "negative", PALETTE[3])):
        counts = np.asarray(result[key], dtype=np.float64)
        density = counts / max(counts.sum(), 1.0) / widths
        ax.stairs(density, edges, fill=True, alpha=0.5, color=color, label=label)


def plot_margin_boxes(results_by_labels: dict, path) -> None:
    """Top-2 margins per prompt set, correct and wrong predictions side by side (Figure 4)."""
    names = list(results_by_labels)
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH_IN, 3.8))
    for side, (part, offset) in enumerate((("correct", -0.2), ("wrong", 0.2))):
        data, positions = [], []
        for i, name in enumerate(names):
            result = results_by_labels[name]
            margins = np.array([np.nan if m is None else m for m in result["margins"]], dtype=np.float64)
            correct = np.asarray(result["is_correct"], dtype=bool)
            values = margins[correct if part == "correct" else ~correct]
            values = values[np.isfinite(values)]
            if values.size:
                data.append(values)
                positions.append(i + offset)
        if data:
            style = category_style(side)
            parts = ax.boxplot(data, positions=positions, widths=0.35, showfliers=False, patch_artist=True,
                               medianprops={"color": "black"})
            for box in parts["boxes"]:
                box.set(facecolor=style["color"], alpha=0.75)
            ax.plot([], [], "s", color=style["color"], label=part)
    long_labels = max((len(n) for n in names), default=0) > 10
    ax.set_xticks(np.arange(len(names)), names, rotation=25 if long_labels else 0,
                  ha="right" if long_labels else "center")
    ax.set_ylabel("top-1 minus top-2 cosine")
    ax.grid(axis="y", alpha=0.3)
    legend_beside(ax)
    ax.set_title("Confidence margins of correct and wrong predictions", fontsize="medium")
    _save(fig, path)


def plot_histograms(result: dict, path) -> None:
    """Positive vs negative similarity densities, with the overlap figures in the title."""
    edges = np.asarray(result["bin_edges"])
    widths = np.diff(edges)
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for key, label, color in (("positive_counts", "positive (matching label)", PALETTE[2]),
                              ("negative_counts", "negative (other labels)", PALETTE[3])):
        counts = np.asarray(result[key], dtype=np.float64)
        density = counts / max(counts.sum(), 1.0) / widths
        ax.stairs(density, edges, fill=True, alpha=0.45, color=color, label=f"{label}, n={int(counts.sum())}")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    auc = result.get("auc")
    bc = result.get("bhattacharyya")
    overlap = "" if auc is None else f" — AUC {auc:.3f}, Bhattacharyya {bc:.3f}"
    ax.set_title(f"{result.get('labels', '')} ({result.get('space', '')}){overlap}", fontsize="medium")
    ax.legend(fontsize="small")
    _save(fig, path)


def plot_confidence(result: dict, path) -> None:
    """Box plots of top-2 margins: all clips, correct predictions, wrong predictions."""
    margins = np.array([np.nan if m is None else m for m in result["margins"]], dtype=np.float64)
    correct = np.asarray(result["is_correct"], dtype=bool)
    groups = [("all", margins), ("correct", margins[correct]), ("wrong", margins[~correct])]
    groups = [(name, values[np.isfinite(values)]) for name, values in groups if values.size]
    fig, ax = plt.subplots(figsize=(5.0, 4.0))
    ax.boxplot([values for _, values in groups], showfliers=False)
    ax.set_xticks(np.arange(1, len(groups) + 1), [f"{name}\nn={values.size}" for name, values in groups])
    ax.set_ylabel("top-1 minus top-2 cosine similarity")
    ax.set_title(f"Confidence margins — {result.get('prompt_set', '')} ({result.get('space', '')})", fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_gap_shift(results_by_prompt_set: dict, path) -> None:
    """Zero-shot top-1 against the gap-shift factor lambda, one line per prompt set."""
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for name, result in results_by_prompt_set.items():
        lambdas = [point["lambda"] for point in result["shift"]]
        top1 = [np.nan if point["top1"] is None else point["top1"] for point in result["shift"]]
        ax.plot(lambdas, top1, marker="o", markersize=3, label=f"{name} (gap {result['gap_distance']:.2f})")
    ax.axvline(0.0, color="grey", linestyle=":", linewidth=1)
    ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("λ (0: as embedded, 1: centres moved together)")
    ax.set_ylabel("zero-shot top-1")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: no line hidden
    first = next(iter(results_by_prompt_set.values()), {})
    ax.set_title(f"Modality gap shift ({first.get('space', '')} space, {first.get('n_items', 0)} clips)",
                 fontsize="medium")
    _save(fig, path)


def plot_confusion(result: dict, path) -> None:
    """The confusion matrix as a heat map of row shares (each true class's items), counts in the cells."""
    matrix = np.asarray(result["matrix"], dtype=np.float64)
    classes = result["classes"]
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1.0)
    size = max(4.0, 0.45 * len(classes) + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    if len(classes) <= 30:
        for i, j in zip(*np.nonzero(matrix)):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                    color="white" if shares[i, j] > 0.6 else "black")
    ax.set_xticks(np.arange(len(classes)), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(np.arange(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's clips")
    ax.set_title(f"Confusion — {result.get('labels', '')} ({result.get('space', '')}), "
                 f"top-1 {result.get('top1', 0):.2f}", fontsize="medium")
    _save(fig, path)


def plot_ladder(rows: dict, path) -> None:
    """Grouped bars of top-1 per space: zero-shot, centroids, kNN, probe (labels from none to all).

    ``rows`` maps a space to ``{step name: top-1 or None}``, steps in display order.
    """
    spaces = list(rows)
    steps = list(dict.fromkeys(step for by in rows.values() for step in by))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(steps) + 1.0), 4.0))
    width = 0.8 / max(len(spaces), 1)
    x = np.arange(len(steps))
    for i, space in enumerate(spaces):
        values = [np.nan if rows[space].get(step) is None else rows[space][step] for step in steps]
        ax.bar(x + (i - (len(spaces) - 1) / 2) * width, values, width, label=space)
    ax.set_xticks(x, steps, rotation=15, ha="right", fontsize="small")
    ax.set_ylim(0, 1)
    ax.set_ylabel("top-1")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="space", fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("From reading to listening: top-1 with more and more labels", fontsize="medium")
    _save(fig, path)
