"""The full report: every experiment for every store, one store per model, side by side.

Three steps, as CLIP_benchmark does it: :func:`run_experiments` writes one JSON per
(model, dataset, experiment, prompt set, space) under ``results/``; :func:`merge_results`
reads them back into one dict; :func:`write_report` turns that dict into ``report.json``,
``report.md``, ``report.html`` and the PNG figures under ``figures/``. :func:`build_report`
runs all three into a temporary folder and renames it into place only when everything is
written, so a failed run leaves no half-made report.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from analyses.embeddings import class_prompt_sets, opened
from analyses.selection import selection_record
from analyses.spaces import ordered_spaces
from embedstore.errors import InputError, WriteFailed
from embedstore.store.fileio import write_atomic
from embedstore.store.outputs import check_outputs, mark_folder, replace_folder

ZEROSHOT_COLUMNS = ("top1", "top3", "top5", "f1_weighted", "roc_auc_macro", "pr_auc_macro")
CENTROID_COLUMNS = ZEROSHOT_COLUMNS
PROTOCOLS = ("paper", "reference")
PLAIN_STEM = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
REPORT_COMMAND = "report"  # the name in the output folder's marker
# Bulky per-item lists that the merged report leaves in the results/ files.
PER_ITEM_KEYS = ("margins", "is_correct", "coords", "values", "prompt_coords")


@dataclass
class ReportOptions:
    """What :func:`build_report` runs.

    Attributes
    ----------
    prompt_sets : list of str or None
        Prompt sets to evaluate; None: every set whose prompts all stand for a class.
    space : str
        Space of the zero-shot, histogram and margin experiments (the joint space).
    ontology, ontology_map
        For the triplets (scope ``classes``, both protocols).
    holdout : str
        Centroid holdout, ``none`` (the study's) or ``loo``.
    centroid : str
        Centroid definition, ``raw`` (the study's: mean of the stored vectors, then
        normalised) or ``unit`` (mean of the normalised vectors).
    umap : bool
        Whether to compute the UMAP maps (seconds per store).
    bins, seed
        Histogram bins; UMAP seed.
    selection : analyses.selection.Selection or None
        Items every experiment reads (``--where`` / ``--items``); None: all.
    """

    prompt_sets: list[str] | None = None
    space: str = "joint"
    ontology: str = "hdio"
    ontology_map: str | None = None
    holdout: str = "none"
    centroid: str = "raw"
    umap: bool = True
    bins: int = 100
    seed: int = 0
    selection: object = None


def file_stem(name: str) -> str:
    """A file-name part for a store, dataset, prompt set or space name; distinct names give distinct stems.

    A plain name (lower-case letters and digits, single ``.``, ``_`` or ``-`` between
    them) is its own stem. Any other gets a slug and a hash of the name: ``a b`` and
    ``a-b``, ``M`` and ``m`` (one file on a case-insensitive disk), ``x__y`` (which would
    blur the ``__`` between parts) never share a file. Stems stay under 52 characters.
    """
    name = str(name)
    if PLAIN_STEM.fullmatch(name) and len(name) <= 40:  # five parts stay far below 255 bytes
        return name
    slug = re.sub(r"[^a-z0-9.-]+", "-", name.lower()).strip("-.")[:40]
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{slug}-{digest}" if slug else digest


def result_name(model: str, dataset: str, experiment: str, prompt_set: str, space: str) -> str:
    """``<model>__<dataset>__<experiment>__<prompt_set>__<space>.json``, each part a :func:`file_stem`."""
    return "__".join(file_stem(p) for p in (model, dataset, experiment, prompt_set, space)) + ".json"


def _write_json(path: Path, data) -> None:
    text = json.dumps(data, indent=1)
    write_atomic(path, lambda fh: fh.write(text.encode("utf-8") + b"\n"))


def store_summary(st, key: str) -> dict:
    """Who made a store's vectors: model, dataset, sizes and the checkpoint it came from."""
    prov = st.provenance or {}
    encoder = prov.get("encoder") if isinstance(prov.get("encoder"), dict) else {}
    checkpoint = encoder.get("checkpoint", prov.get("checkpoint"))
    if isinstance(checkpoint, dict):
        checkpoint = checkpoint.get("name") or checkpoint.get("path") or checkpoint.get("id")
    return {
        "key": key,
        "model": st.model,
        "dataset": st.dataset,
        "path": str(getattr(st, "path", "")),
        "n_items": int(st.n_items),
        "n_classes": len(st.classes),
        "multilabel": bool(st.multilabel),
        "audio_spaces": ordered_spaces(st.audio_spaces),
        "prompt_sets": list(st.prompt_sets),
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "checkpoint_sha256": prov.get("checkpoint_sha256"),
        "selection": selection_record(st),
    }


def plan_experiments(st, prompt_sets: list[str], options: ReportOptions):
    """Every experiment for one open store, in report order.

    Yields
    ------
    (experiment, prompt_set, space, function, keyword arguments)
        ``function(st, **kwargs)`` computes the result.
    """
    from analyses.centroids import run_centroids
    from analyses.confidence import run_confidence
    from analyses.histograms import run_histograms
    from analyses.triplets import run_triplets
    from analyses.zeroshot import run_zeroshot

    space = options.space
    for name in prompt_sets:
        yield "zeroshot", name, space, run_zeroshot, {"prompt_set": name, "space": space}
        yield "histograms", name, space, run_histograms, {"prompt_set": name, "space": space, "bins": options.bins}
        yield "confidence", name, space, run_confidence, {"prompt_set": name, "space": space}
        for text_space in ordered_spaces(st.prompt_set(name).spaces):
            for protocol in PROTOCOLS:
                yield f"triplets-{protocol}", name, text_space, run_triplets, {
                    "prompt_set": name, "space": text_space, "ontology": options.ontology,
                    "ontology_map": options.ontology_map, "protocol": protocol}
    # A prompt set with per-prompt ontology terms: every ontology node is a term.
    for name in [s for s in st.prompt_sets if st.prompt_set(s).terms]:
        for text_space in ordered_spaces(st.prompt_set(name).spaces):
            for protocol in PROTOCOLS:
                yield f"triplets-{protocol}", name, text_space, run_triplets, {
                    "prompt_set": name, "space": text_space, "ontology": options.ontology,
                    "protocol": protocol, "scope": "ontology"}
    for audio_space in ordered_spaces(st.audio_spaces):
        yield "centroids", "audio", audio_space, run_centroids, {"space": audio_space, "holdout": options.holdout,
                                                                 "centroid": options.centroid}
    yield "histograms", "centroids", space, run_histograms, {"centroids": True, "space": space, "bins": options.bins,
                                                             "centroid": options.centroid}
    from analyses.report_beyond import plan_beyond

    yield from plan_beyond(st, prompt_sets, options)
    if options.umap:
        from analyses.umap_map import run_umap

        shown = prompt_sets[0] if prompt_sets else None
        yield "umap", shown or "audio", space, run_umap, {"space": space, "prompt_set": shown, "seed": options.seed}


def run_experiments(stores, results_dir: Path, options: ReportOptions | None = None,
                    progress: Callable[[str], None] | None = None) -> tuple[list[dict], list[dict]]:
    """Run every experiment on every store; one JSON file per result in ``results_dir``.

    An experiment a store cannot support (a class without an ontology node, a prompt set
    without a class's prompt...) is listed as skipped with the reason, not dropped
    silently; a store that cannot be opened stops the run.

    Returns
    -------
    summaries : list of dict
        The store summaries (:func:`store_summary`), in the order given.
    skipped : list of dict
        {store, experiment, prompt_set, space, reason} per experiment left out.
    """
    options = options or ReportOptions()
    say = progress or (lambda message: None)
    results_dir.mkdir(parents=True, exist_ok=True)
    summaries, skipped, keys = [], [], set()
    for store in stores:
        with opened(store, options.selection) as st:
            # Two stores of one model (other datasets, other checkpoints) keep their columns apart.
            key = st.model if st.model not in keys else f"{st.model}@{st.dataset}"
            base, copy = key, 1
            while key in keys:
                copy += 1
                key = f"{base}#{copy}"
            keys.add(key)
            summary = store_summary(st, key)
            summaries.append(summary)
            sets = class_prompt_sets(st) if options.prompt_sets is None else list(options.prompt_sets)
            missing = [s for s in sets if s not in st.prompt_sets]
            if missing:
                raise InputError(f"{summary['path']} has no prompt set {missing[0]!r}")
            for experiment, prompt_set, space, run, kwargs in plan_experiments(st, sets, options):
                say(f"{key}: {experiment} {prompt_set} ({space})")
                meta = {"store": key, "model": st.model, "dataset": st.dataset, "experiment": experiment,
                        "prompt_set": prompt_set, "space": space}
                try:
                    result = run(st, **kwargs)
                except InputError as exc:
                    skipped.append({**meta, "reason": str(exc)})
                    continue
                _write_json(results_dir / result_name(key, st.dataset, experiment, prompt_set, space),
                            {"meta": meta, "result": result})
    return summaries, skipped


def merge_results(results_dir: Path) -> dict:
    """Read every result file back: ``{store: {experiment: {prompt_set: {space: result}}}}``."""
    merged: dict = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            meta, result = doc["meta"], doc["result"]
            slot = merged.setdefault(meta["store"], {}).setdefault(meta["experiment"], {})
            slot.setdefault(meta["prompt_set"], {})[meta["space"]] = result
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{path} is not a result file: {exc}") from None
    return merged


# -- rendering ---------------------------------------------------------------------------


@dataclass
class Section:
    """One part of the report: a heading, a sentence, tables and figures (paths relative to the report)."""

    title: str
    text: str = ""
    tables: list = field(default_factory=list)  # (caption, header, rows)
    figures: list = field(default_factory=list)  # (caption, relative path)


def _fmt(value) -> str:
    """Metrics as fractions with three decimals, the one display unit (docs/metrics.md)."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _get(merged, key, experiment, prompt_set, space):
    return merged.get(key, {}).get(experiment, {}).get(prompt_set, {}).get(space)


def _tied_classes(merged, keys, sets, space) -> list[str]:
    """``"<store> <set>: a = b"`` for every group of tied classes (identical prompt vectors)."""
    return [f"{k} {ps}: {' = '.join(group)}" for ps in sets for k in keys
            for group in (_get(merged, k, "zeroshot", ps, space) or {}).get("tied_classes") or []]


def _tie_mark(merged, keys, prompt_set, space) -> str:
    """The prompt set's name, with `` *`` when any store's zero-shot result has tied classes."""
    tied = any((_get(merged, k, "zeroshot", prompt_set, space) or {}).get("tied_classes") for k in keys)
    return f"{prompt_set} *" if tied else prompt_set


def _sections(report: dict, figures: dict) -> list[Section]:
    merged, stores = report["results"], report["stores"]
    keys = [s["key"] for s in stores]
    space = report["options"]["space"]
    sets = list(dict.fromkeys(ps for k in keys for ps in merged.get(k, {}).get("zeroshot", {})))
    out = []

    prov = Section("Stores", "One store per model; the checkpoint digest says exactly which weights made the vectors.")
    prov.tables.append(("", ["column", "model", "dataset", "items", "classes", "spaces", "checkpoint", "sha256"],
                        [[s["key"], s["model"], s["dataset"], s["n_items"], s["n_classes"],
                          ", ".join(s["audio_spaces"]), s["checkpoint"] or "—",
                          (s["checkpoint_sha256"] or "—")[:16]] for s in stores]))
    out.append(prov)

    ties = _tied_classes(merged, keys, sets, space)
    zs = Section("Zero-shot classification (Figure 2)",
                 f"Each clip takes the class whose prompt ensemble is nearest ({space} space)."
                 + ("" if not ties else " * marks a prompt set in which several classes have identical prompt "
                    "vectors; among them top-1 is the tie-break's choice and the margin is 0: "
                    + "; ".join(ties) + "."))
    for metric in ZEROSHOT_COLUMNS:
        values = [[(_get(merged, k, "zeroshot", ps, space) or {}).get(metric) for k in keys] for ps in sets]
        if any(v is not None for row in values for v in row):  # multi-label stores have no top-k or F1
            zs.tables.append((metric, ["prompt set", *keys], [[_tie_mark(merged, keys, ps, space), *map(_fmt, row)]
                                                              for ps, row in zip(sets, values)]))
    zs.figures += [(f"{k}: metrics per prompt set", figures[k, "metrics", ""]) for k in keys if (k, "metrics", "") in figures]
    out.append(zs)

    hist = Section("Positive vs negative similarities (Figure 3)",
                   "Overlap of matching and non-matching clip-label cosines: the AUC between the two "
                   "distributions (1 = fully apart) and the Bhattacharyya coefficient (1 = identical).")
    labels = sets + ["centroids"]
    hist.tables.append(("", ["labels", *(f"{k} {m}" for k in keys for m in ("AUC", "BC", "pos mean", "neg mean"))],
                        [[ps] + [_fmt(r.get(m)) if r else "—"
                                 for k in keys for r in [_get(merged, k, "histograms", ps, space)]
                                 for m in ("auc", "bhattacharyya", "positive_mean", "negative_mean")]
                         for ps in labels]))
    hist.figures += [(f"{k}: {ps}", path) for (k, kind, ps), path in figures.items() if kind == "histograms"]
    out.append(hist)

    conf = Section("Confidence margins (Figure 4)",
                   "Gap between each clip's two highest class similarities: median [q1, q3].")
    rows = []
    for ps in sets:
        row = [ps]
        for k in keys:
            r = _get(merged, k, "confidence", ps, space)
            for part in ("correct", "wrong"):
                s = (r or {}).get(part) or {}
                row.append("—" if not s.get("n") else f"{s['median']:.4f} [{s['q1']:.4f}, {s['q3']:.4f}] n={s['n']}")
        rows.append(row)
    for row in rows:
        row[0] = _tie_mark(merged, keys, row[0], space)
    conf.tables.append(("", ["prompt set", *(f"{k} {p}" for k in keys for p in ("correct", "wrong"))], rows))
    conf.figures += [(f"{k}: {ps}", path) for (k, kind, ps), path in figures.items() if kind == "confidence"]
    out.append(conf)

    trip = Section("Ontology triplets in both spaces (Figure 5)",
                   f"Share of triplets (a, p, n) with cos(a, p) > cos(a, n) on ontology {report['options']['ontology']!r}. "
                   "paper: the study's definition; reference: the released code's triplets.")
    spaces = ordered_spaces({s for k in keys for e in PROTOCOLS
                             for by in merged.get(k, {}).get(f"triplets-{e}", {}).values() for s in by})
    for protocol in PROTOCOLS:
        rows = []
        for ps in dict.fromkeys(p for k in keys for p in merged.get(k, {}).get(f"triplets-{protocol}", {})):
            row = [ps]
            for k in keys:
                for s in spaces:
                    r = _get(merged, k, f"triplets-{protocol}", ps, s)
                    row.append("—" if r is None else f"{_fmt(r['accuracy'])} ({r['n_triplets']})")
            rows.append(row)
        trip.tables.append((f"{protocol} protocol", ["prompt set", *(f"{k} {s}" for k in keys for s in spaces)], rows))
    for protocol in PROTOCOLS:
        if ("", "triplets", protocol) in figures:
            trip.figures.append((f"triplet accuracy by model and space, {protocol} protocol",
                                 figures["", "triplets", protocol]))
    out.append(trip)

    centroid = report["options"].get("centroid", "raw")
    made = ("the mean of its stored audio vectors, then L2-normalised (the study's definition)" if centroid == "raw"
            else "the mean of its L2-normalised audio vectors, renormalised")
    cent = Section("Audio-only labels (class centroids)",
                   f"Each class's centroid as its label: {made} (centroid {centroid}, "
                   f"holdout {report['options']['holdout']}), in every audio space.")
    audio_spaces = ordered_spaces({s for k in keys for s in merged.get(k, {}).get("centroids", {}).get("audio", {})})
    cent.tables.append(("", ["metric", *(f"{k} {s}" for k in keys for s in audio_spaces)],
                        [[m] + [_fmt((_get(merged, k, "centroids", "audio", s) or {}).get(m))
                                for k in keys for s in audio_spaces]
                         for m in CENTROID_COLUMNS
                         if any((_get(merged, k, "centroids", "audio", s) or {}).get(m) is not None
                                for k in keys for s in audio_spaces)]))
    out.append(cent)

    if any((k, "umap", "") in figures for k in keys):
        um = Section("UMAP", f"2-D maps (cosine metric) of the {space} audio vectors, coloured by class; "
                             "stars are the prompt ensembles.")
        um.figures += [(k, figures[k, "umap", ""]) for k in keys if (k, "umap", "") in figures]
        out.append(um)

    from analyses.report_beyond import beyond_sections

    out += beyond_sections(report, figures, Section)

    if report["skipped"]:
        sk = Section("Skipped", "Experiments a store could not support, and why.")
        sk.tables.append(("", ["store", "experiment", "prompt set", "space", "reason"],
                          [[s["store"], s["experiment"], s["prompt_set"], s["space"], s["reason"]]
                           for s in report["skipped"]]))
        out.append(sk)
    return out


MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]|~#!])|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def md_escape(value) -> str:
    """``value`` as literal Markdown text on one line: no HTML, emphasis, links or table breaks."""
    text = html.escape(" ".join(str(value).split()), quote=False)
    return MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(0), text)


def render_markdown(title: str, sections: list[Section]) -> str:
    """The report as Markdown, figures as image links; every string shows as written."""
    lines = [f"# {md_escape(title)}", ""]
    for sec in sections:
        lines += [f"## {md_escape(sec.title)}", ""]
        if sec.text:
            lines += [md_escape(sec.text), ""]
        for caption, header, rows in sec.tables:
            if caption:
                lines += [f"**{md_escape(caption)}**", ""]
            lines.append("| " + " | ".join(md_escape(h) for h in header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
            lines.append("")
        for caption, path in sec.figures:
            lines += [f"![{md_escape(caption)}]({path})", ""]
    return "\n".join(lines)


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.2em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}caption{text-align:left;font-weight:bold}
figure{display:inline-block;margin:.5em;vertical-align:top}img{max-width:560px}figcaption{font-size:.85em;color:#555}"""


def render_html(title: str, sections: list[Section]) -> str:
    """The report as one self-contained HTML page (inline CSS; PNGs referenced from ``figures/``)."""
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>"]
    for sec in sections:
        parts.append(f"<h2>{esc(sec.title)}</h2>")
        if sec.text:
            parts.append(f"<p>{esc(sec.text)}</p>")
        for caption, header, rows in sec.tables:
            parts.append("<table>" + (f"<caption>{esc(caption)}</caption>" if caption else ""))
            parts.append("<tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows]
            parts.append("</table>")
        for caption, path in sec.figures:
            parts.append(f"<figure><img src='{esc(path)}' alt='{esc(caption)}'>"
                         f"<figcaption>{esc(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def plot_triplets_by_model(report: dict, protocol: str, path) -> None:
    """Grouped bars: triplet accuracy per model and space, one group per prompt set (Figure 5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    merged = report["results"]
    keys = [s["key"] for s in report["stores"]]
    experiment = f"triplets-{protocol}"
    sets = list(dict.fromkeys(ps for k in keys for ps in merged.get(k, {}).get(experiment, {})))
    spaces = ordered_spaces({s for k in keys for by in merged.get(k, {}).get(experiment, {}).values() for s in by})
    bars = [(k, s) for k in keys for s in spaces]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(sets) * max(1, len(bars)) / 2), 4))
    width = 0.8 / max(len(bars), 1)
    for j, (k, s) in enumerate(bars):
        values = [(_get(merged, k, experiment, ps, s) or {}).get("accuracy", np.nan) for ps in sets]
        ax.bar(np.arange(len(sets)) + (j - (len(bars) - 1) / 2) * width, values, width, label=f"{k} ({s})")
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xticks(np.arange(len(sets)), sets, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("triplet accuracy")
    ax.set_title(f"Ontology triplets, {protocol} protocol")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    try:
        write_atomic(Path(path), lambda fh: fig.savefig(fh, format="png", dpi=120))
    finally:
        plt.close(fig)


def _figures(report: dict, results_dir: Path, figures_dir: Path, say) -> dict:
    """Draw every figure; returns {(store, kind, prompt set or protocol): path relative to the report}."""
    from analyses import plots
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
        stem = file_stem(k)
        results = merged.get(k, {})
        zeroshot = {ps: by[space] for ps, by in results.get("zeroshot", {}).items() if space in by}
        if zeroshot:
            draw((k, "metrics", ""), f"{stem}__metrics.png", plots.plot_metrics, zeroshot)
        for ps, by in results.get("histograms", {}).items():
            if space in by:
                draw((k, "histograms", ps), f"{stem}__histograms__{file_stem(ps)}.png",
                     plots.plot_histograms, by[space])
        for ps, by in results.get("confidence", {}).items():
            if space in by:
                # The per-clip margins live in the result files, not in the merged report.
                full = json.loads((results_dir / result_name(k, store["dataset"], "confidence", ps, space))
                                  .read_text(encoding="utf-8"))["result"]
                draw((k, "confidence", ps), f"{stem}__confidence__{file_stem(ps)}.png",
                     plots.plot_confidence, full)
        for ps, by in results.get("umap", {}).items():
            if space in by:
                full = json.loads((results_dir / result_name(k, store["dataset"], "umap", ps, space))
                                  .read_text(encoding="utf-8"))["result"]
                draw((k, "umap", ""), f"{stem}__umap.png", plot_umap, full)
    for protocol in PROTOCOLS:
        if any(f"triplets-{protocol}" in merged.get(s["key"], {}) for s in report["stores"]):
            draw(("", "triplets", protocol), f"triplets__{protocol}.png", plot_triplets_by_model, report, protocol)
    from analyses.report_beyond import beyond_figures

    beyond_figures(report, draw)
    return made


def _slim(value):
    """The merged results without per-item lists (those stay in results/)."""
    if isinstance(value, dict):
        return {k: _slim(v) for k, v in value.items() if k not in PER_ITEM_KEYS}
    return value


def write_report(out_dir: Path, summaries: list[dict], skipped: list[dict], options: ReportOptions,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Merge ``out_dir/results`` and write the figures, report.json, report.md and report.html."""
    say = progress or (lambda message: None)
    out_dir = Path(out_dir)
    report = {
        "stores": summaries,
        "options": {"prompt_sets": options.prompt_sets, "space": options.space, "ontology": options.ontology,
                    "ontology_map": options.ontology_map, "holdout": options.holdout,
                    "centroid": options.centroid, "umap": options.umap,
                    "bins": options.bins, "seed": options.seed,
                    "selection": None if options.selection is None else options.selection.describe()},
        "skipped": skipped,
        "results": _slim(merge_results(out_dir / "results")),
    }
    figures = _figures(report, out_dir / "results", out_dir / "figures", say)
    report["figures"] = sorted(figures.values())
    title = "embedstore report: " + ", ".join(f"{s['model']} on {s['dataset']}" for s in summaries)
    sections = _sections(report, figures)
    _write_json(out_dir / "report.json", report)
    markdown = render_markdown(title, sections)
    write_atomic(out_dir / "report.md", lambda fh: fh.write(markdown.encode("utf-8")))
    page = render_html(title, sections)
    write_atomic(out_dir / "report.html", lambda fh: fh.write(page.encode("utf-8")))
    return report


def _check_space(stores, space: str) -> None:
    """Refuse a space no store has (every experiment would be skipped), before any work."""
    have = set()
    for store in stores:
        with opened(store) as st:
            have.update(st.audio_spaces)
    if space not in have:
        raise InputError(f"no store has a {space!r} audio space (they have: {', '.join(sorted(have)) or 'none'})")


def _move_into(partial: Path, out_dir: Path) -> None:
    """Replace the earlier report's files in ``out_dir`` by the finished ones in ``partial``."""
    files = sorted(p.relative_to(partial).as_posix() for p in partial.rglob("*") if p.is_file())
    replace_folder(out_dir)
    for name in files:
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial / name, out_dir / name)
    mark_folder(out_dir, REPORT_COMMAND, files)


def build_report(stores, out_dir, options: ReportOptions | None = None, overwrite: bool = False,
                 progress: Callable[[str], None] | None = None) -> dict:
    """Run every experiment on every store and write the report folder.

    Parameters
    ----------
    stores : list of paths
        One store per model (their columns sit side by side).
    out_dir : path
        The report folder: ``results/``, ``figures/``, ``report.json``, ``report.md``,
        ``report.html``. Built in a hidden temporary folder beside it and moved in when
        complete; a missing or empty folder is filled, and an earlier report's folder is
        replaced (with ``overwrite``) only when it holds nothing but that report's files
        (its marker lists them).
    options : ReportOptions, optional
    overwrite : bool
        Replace an earlier report in ``out_dir``; never files the report did not write.
    progress : callable, optional
        Called with a short line before each step.

    Returns
    -------
    dict
        What ``report.json`` holds.
    """
    if not stores:
        raise InputError("give at least one store")
    options = options or ReportOptions()
    # Settings that would make every store skip an experiment fail here, before any work.
    from analyses.centroids import HOLDOUTS, check_centroid
    from embedstore.ontology import load_ontology, read_ontology_map

    if options.holdout not in HOLDOUTS:
        raise InputError(f"holdout must be one of {', '.join(HOLDOUTS)}, got {options.holdout!r}")
    check_centroid(options.centroid)
    if options.bins < 1:
        raise InputError(f"bins must be 1 or more, got {options.bins}")
    load_ontology(options.ontology)
    if options.ontology_map:
        read_ontology_map(options.ontology_map)
    _check_space(stores, options.space)
    out_dir = Path(out_dir)
    made_now = not os.path.lexists(out_dir)
    # The output policy, before any work: only a folder an earlier report made (and
    # nothing else in it, least of all a store) is ever replaced.
    check_outputs(folders=[out_dir], inputs=[*stores, options.ontology, options.ontology_map],
                  overwrite=overwrite, command=REPORT_COMMAND)
    partial = None
    try:
        partial = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
        summaries, skipped = run_experiments(stores, partial / "results", options, progress)
        report = write_report(partial, summaries, skipped, options, progress)
        _move_into(partial, out_dir)
    except BaseException as exc:
        if made_now:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # made by the check above, still empty
        if isinstance(exc, OSError):
            raise WriteFailed(f"cannot write the report in {out_dir}: {exc}") from None
        raise
    finally:
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)  # our own uniquely named folder
    return report
