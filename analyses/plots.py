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


def _save(fig, path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    write_atomic(Path(path), lambda fh: fh.write(buffer.getvalue()))


def plot_metrics(results_by_prompt_set: dict, path) -> None:
    """Grouped bars: one group per metric, one bar per prompt set (the study's Figure 2).

    Any results with the zero-shot keys fit, audio centroids (``run_centroids``) too.

    Bootstrap intervals, when the results carry ``ci95``, are drawn as error bars.
    """
    names = list(results_by_prompt_set)
    keys = [k for k in METRIC_LABELS if any(results_by_prompt_set[n].get(k) is not None for n in names)]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(keys) + 0.3 * len(keys) * len(names)), 4.0))
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(keys))
    for i, name in enumerate(names):
        result = results_by_prompt_set[name]
        values = np.array([np.nan if result.get(k) is None else result[k] for k in keys])
        errors = None
        if result.get("ci95"):
            intervals = [result["ci95"].get(k) or [v, v] for k, v in zip(keys, values)]
            errors = np.abs(np.array(intervals).T - values)
        ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, yerr=errors, capsize=2, label=name)
    ax.set_xticks(x, [METRIC_LABELS[k] for k in keys])
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="labels", fontsize="small", ncol=max(1, len(names) // 6))
    first = results_by_prompt_set[names[0]] if names else {}
    ax.set_title(f"Classification by the nearest label ({first.get('space', '')} space, {first.get('n_items', 0)} clips)")
    _save(fig, path)


def plot_histograms(result: dict, path) -> None:
    """Positive vs negative similarity densities, with the overlap figures in the title."""
    edges = np.asarray(result["bin_edges"])
    widths = np.diff(edges)
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for key, label, color in (("positive_counts", "positive (matching label)", "tab:green"),
                              ("negative_counts", "negative (other labels)", "tab:red")):
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
