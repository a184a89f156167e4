"""The report's sections: one builder per experiment, and the HTML and Markdown they render to.

A builder takes the :class:`Context` (the merged report and its figures) and returns a
:class:`Section` or ``None`` when no store has that experiment. :data:`SECTION_BUILDERS`
lists them in report order: a new analysis adds its builder there.

Tables follow one layout: rows are stores and prompt sets (or spaces), columns are the
metrics; numbers are :class:`Num` cells, the best of each column marked (bold), with the
95% interval beside the value when the report was run with ``--bootstrap``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from analyses.spaces import ordered_spaces
from analyses.triplets import PROTOCOLS

ZEROSHOT_COLUMNS = ("top1", "top3", "top5", "f1_weighted", "roc_auc_macro", "pr_auc_macro")
COLUMN_LABELS = {"top1": "top-1", "top3": "top-3", "top5": "top-5", "f1_weighted": "F1 (weighted)",
                 "roc_auc_macro": "ROC-AUC (macro)", "pr_auc_macro": "PR-AUC (macro)"}
RETRIEVAL_COLUMNS = (("a2t_r1", "a2t R@1", True), ("a2t_r5", "a2t R@5", True), ("a2t_r10", "a2t R@10", True),
                     ("a2t_map10", "a2t mAP@10", True), ("a2t_median_rank", "a2t median rank", False),
                     ("t2a_r1", "t2a R@1", True), ("t2a_r5", "t2a R@5", True), ("t2a_r10", "t2a R@10", True),
                     ("t2a_map10", "t2a mAP@10", True), ("t2a_median_rank", "t2a median rank", False))


@dataclass
class Num:
    """A number in a table: its value, optional 95% interval, format and whether it is the column's best."""

    value: float | int | None
    ci: list | None = None
    digits: int = 3
    best: bool = False

    def text(self) -> str:
        if self.value is None:
            return "—"
        if isinstance(self.value, int) or self.digits == 0:
            return f"{self.value:.0f}" if isinstance(self.value, float) else str(self.value)
        main = f"{self.value:.{self.digits}f}"
        if self.ci:
            main += f" [{self.ci[0]:.{self.digits}f}, {self.ci[1]:.{self.digits}f}]"
        return main


@dataclass
class Table:
    """Rows of cells (str or :class:`Num`) under a header; ``note`` says how to read it."""

    caption: str
    header: list
    rows: list
    note: str = ""


@dataclass
class Section:
    """One part of the report: a heading, a sentence, tables and figures (paths relative to the report)."""

    title: str
    text: str = ""
    tables: list = field(default_factory=list)  # Table, or (caption, header, rows)
    figures: list = field(default_factory=list)  # (caption, relative path)
    items: list = field(default_factory=list)  # bullet points (caveats)


@dataclass
class Context:
    """What every builder reads: the merged report and the figures drawn for it."""

    report: dict
    figures: dict

    @property
    def results(self) -> dict:
        return self.report["results"]

    @property
    def keys(self) -> list[str]:
        return [s["key"] for s in self.report["stores"]]

    @property
    def options(self) -> dict:
        return self.report["options"]

    def get(self, key, experiment, prompt_set, space):
        return self.results.get(key, {}).get(experiment, {}).get(prompt_set, {}).get(space)

    def prompt_sets(self, experiment: str) -> list[str]:
        return list(dict.fromkeys(ps for k in self.keys for ps in self.results.get(k, {}).get(experiment, {})))


def mark_best(rows: list, higher: dict[int, bool]) -> list:
    """Mark the best :class:`Num` of each column ``c`` in ``higher`` (True: largest is best).

    Ties are all marked; a column with fewer than two numbers marks nothing.
    """
    for column, larger in higher.items():
        cells = [row[column] for row in rows if isinstance(row[column], Num) and row[column].value is not None]
        if len(cells) < 2:
            continue
        best = max(c.value for c in cells) if larger else min(c.value for c in cells)
        for cell in cells:
            cell.best = cell.value == best
    return rows


def _num(result: dict | None, key: str, digits: int = 3) -> Num:
    result = result or {}
    return Num(result.get(key), (result.get("ci95") or {}).get(key), digits)


# -- the section builders ------------------------------------------------------------------


def stores_section(ctx: Context) -> Section:
    stores = ctx.report["stores"]
    sec = Section("Stores", "One store per model; the checkpoint digest says exactly which weights made the "
                            "vectors. Read the caveats before the numbers.")
    sec.tables.append(Table("", ["column", "model", "dataset", "items", "classes", "spaces", "checkpoint", "sha256"],
                            [[s["key"], s["model"], s["dataset"], s["n_items"], s["n_classes"],
                              ", ".join(s["audio_spaces"]) or "text only", s["checkpoint"] or "—",
                              (s["checkpoint_sha256"] or "—")[:16]] for s in stores]))
    sec.items = [f"{s['key']}: {caveat}" for s in stores for caveat in s.get("caveats", [])]
    sec.items += [f"{k}: tied classes in {ps!r} ({groups}): their prompt vectors are identical, so among "
                  "them top-1 is the tie-break's choice and the margin is 0 (marked * below)."
                  for k, ps, groups in _tied(ctx)]
    return sec


def _tied(ctx: Context) -> list[tuple[str, str, str]]:
    """(store, prompt set, "a = b; c = d") for every zero-shot result with tied classes."""
    space = ctx.options["space"]
    out = []
    for k in ctx.keys:
        for ps in ctx.prompt_sets("zeroshot"):
            groups = (ctx.get(k, "zeroshot", ps, space) or {}).get("tied_classes") or []
            if groups:
                out.append((k, ps, "; ".join(" = ".join(g) for g in groups)))
    return out


def _tie_mark(ctx: Context, key: str, prompt_set: str) -> str:
    """The prompt set's name, with `` *`` when this store's zero-shot result has tied classes."""
    tied = (ctx.get(key, "zeroshot", prompt_set, ctx.options["space"]) or {}).get("tied_classes")
    return f"{prompt_set} *" if tied else prompt_set


def prompt_sets_section(ctx: Context) -> Section | None:
    rows = []
    for s in ctx.report["stores"]:
        for name, info in (s.get("prompt_set_info") or {}).items():
            rows.append([s["key"], name, info["kind"], info["prompts"], info["source"] or "—", info["example"]])
    if not rows:
        return None
    return Section("Prompt sets", "What each set of texts is: its template or source, and its first prompt.",
                   [Table("", ["store", "prompt set", "kind", "prompts", "template or source", "first prompt"], rows)])


def zeroshot_section(ctx: Context) -> Section | None:
    space = ctx.options["space"]
    sets = ctx.prompt_sets("zeroshot")
    if not sets:
        return None
    columns = [m for m in ZEROSHOT_COLUMNS
               if any((ctx.get(k, "zeroshot", ps, space) or {}).get(m) is not None for k in ctx.keys for ps in sets)]
    rows = [[k, _tie_mark(ctx, k, ps), *(_num(r, m) for m in columns)]
            for k in ctx.keys for ps in sets for r in [ctx.get(k, "zeroshot", ps, space)] if r]
    sec = Section("Zero-shot classification (Figure 2)",
                  f"Each clip takes the class whose prompt ensemble is nearest ({space} space).")
    sec.tables.append(Table("", ["store", "prompt set", *(COLUMN_LABELS[m] for m in columns)],
                            mark_best(rows, {i + 2: True for i in range(len(columns))}), _interval_note(ctx)))
    sec.figures += [(f"{k}: metrics per prompt set", ctx.figures[k, "metrics", ""])
                    for k in ctx.keys if (k, "metrics", "") in ctx.figures]
    return sec


def _interval_note(ctx: Context) -> str:
    n = ctx.options.get("bootstrap") or 0
    return (f"Bold: best in its column. [lo, hi]: 95% interval over {n} bootstrap resamples of the clips."
            if n else "Bold: best in its column. Run with --bootstrap N for 95% intervals.")


def histograms_section(ctx: Context) -> Section | None:
    space = ctx.options["space"]
    labels = ctx.prompt_sets("histograms")
    if not labels:
        return None
    metrics = (("auc", "AUC", True), ("bhattacharyya", "overlap (BC)", False),
               ("positive_mean", "positive mean", True), ("negative_mean", "negative mean", False))
    rows = [[k, ps, *(_num(r, m) for m, _, _ in metrics)]
            for k in ctx.keys for ps in labels for r in [ctx.get(k, "histograms", ps, space)] if r]
    sec = Section("Positive vs negative similarities (Figure 3)",
                  "Overlap of matching and non-matching clip-label cosines: the AUC between the two "
                  "distributions (1 = fully apart) and the Bhattacharyya coefficient (1 = identical).")
    sec.tables.append(Table("", ["store", "labels", *(label for _, label, _ in metrics)],
                            mark_best(rows, {2: True, 3: False}), "Bold: best in its column."))
    sec.figures += [(f"{k}: one panel per label set", path) for (k, kind, _), path in ctx.figures.items()
                    if kind == "histograms"]
    return sec


def confidence_section(ctx: Context) -> Section | None:
    space = ctx.options["space"]
    sets = ctx.prompt_sets("confidence")
    if not sets:
        return None
    rows = []
    for k in ctx.keys:
        for ps in sets:
            r = ctx.get(k, "confidence", ps, space)
            if not r:
                continue
            row = [k, _tie_mark(ctx, k, ps)]
            for part in ("correct", "wrong"):
                stats = r.get(part) or {}
                row += [Num(stats.get("median") if stats.get("n") else None, digits=4),
                        "—" if not stats.get("n") else f"{stats['q1']:.4f} – {stats['q3']:.4f}", stats.get("n", 0)]
            rows.append(row)
    sec = Section("Confidence margins (Figure 4)",
                  "Gap between each clip's two highest class similarities, for correct and wrong predictions.")
    sec.tables.append(Table("", ["store", "prompt set", "correct: median", "correct: q1 – q3", "n",
                                 "wrong: median", "wrong: q1 – q3", "n"], rows))
    sec.figures += [(f"{k}: margins per prompt set", path) for (k, kind, _), path in ctx.figures.items()
                    if kind == "confidence"]
    return sec


def triplets_section(ctx: Context) -> Section | None:
    experiments = [f"triplets-{p}" for p in PROTOCOLS]
    if not any(ctx.prompt_sets(e) for e in experiments):
        return None
    rows = []
    for k in ctx.keys:
        sets = list(dict.fromkeys(ps for e in experiments for ps in ctx.results.get(k, {}).get(e, {})))
        for ps in sets:
            spaces = ordered_spaces({s for e in experiments for s in ctx.results.get(k, {}).get(e, {}).get(ps, {})})
            for space in spaces:
                row = [k, ps, space]
                for e in experiments:
                    r = ctx.get(k, e, ps, space)
                    row += [Num(None if r is None else r["accuracy"]), "—" if r is None else r["n_triplets"]]
                rows.append(row)
    sec = Section("Ontology triplets in every space (Figure 5)",
                  f"Share of triplets (a, p, n) with cos(a, p) > cos(a, n) on ontology {ctx.options['ontology']!r}. "
                  "paper: the study's definition; reference: the released code's triplets. A text-only store "
                  "(a generic sentence encoder) on the same prompts says what the audio-text towers add.")
    sec.tables.append(Table("", ["store", "prompt set", "space", "paper accuracy", "paper triplets",
                                 "reference accuracy", "reference triplets"],
                            mark_best(rows, {3: True, 5: True}), "Bold: best in its column; 0.5 is chance."))
    sec.figures += [(f"triplet accuracy by store and space, {p} protocol", ctx.figures["", "triplets", p])
                    for p in PROTOCOLS if ("", "triplets", p) in ctx.figures]
    return sec


def centroids_section(ctx: Context) -> Section | None:
    rows = []
    for k in ctx.keys:
        for space in ordered_spaces(ctx.results.get(k, {}).get("centroids", {}).get("audio", {})):
            rows.append([k, space, ctx.get(k, "centroids", "audio", space)])
    if not rows:
        return None
    columns = [m for m in ZEROSHOT_COLUMNS if any(r.get(m) is not None for _, _, r in rows)]
    table_rows = [[k, space, *(_num(r, m) for m in columns)] for k, space, r in rows]
    centroid = ctx.options.get("centroid", "raw")
    made = ("the mean of its stored audio vectors, then L2-normalised, as the study defines it" if centroid == "raw"
            else "the mean of its L2-normalised audio vectors, renormalised")
    fit = ctx.options.get("fit")
    fitted = (f" The centroids are fitted on other items ({fit}) than those scored; every centroid label in "
              "this report is." if fit else "")
    sec = Section("Audio-only labels: pre-joint against joint",
                  f"Each class's centroid as its label: {made} (centroid {centroid}, holdout "
                  f"{ctx.options['holdout']}), in every audio space: what the audio tower separates before "
                  f"and after the projection head.{fitted}")
    sec.tables.append(Table("", ["store", "space", *(COLUMN_LABELS[m] for m in columns)],
                            mark_best(table_rows, {i + 2: True for i in range(len(columns))}), _interval_note(ctx)))
    sec.figures += [(f"{k}: centroids and triplets per space", ctx.figures[k, "spaces", ""])
                    for k in ctx.keys if (k, "spaces", "") in ctx.figures]
    return sec


def retrieval_section(ctx: Context) -> Section | None:
    space = ctx.options["space"]
    sets = ctx.prompt_sets("retrieval")
    if not sets:
        return None
    rows = [[k, ps, Num(r["n_items"]), Num(r["n_captions"]),
             *(Num(r.get(key), digits=3 if higher else 0) for key, _, higher in RETRIEVAL_COLUMNS)]
            for k in ctx.keys for ps in sets for r in [ctx.get(k, "retrieval", ps, space)] if r]
    higher = {i + 4: h for i, (_, _, h) in enumerate(RETRIEVAL_COLUMNS)}
    sec = Section("Audio-text retrieval",
                  "Each captioned clip queries all captions (a2t: its best-ranked caption counts) and each "
                  "caption queries all captioned clips (t2a); recall at k, mAP@10 and the median rank, as "
                  "the CLAP papers compute them (docs/metrics.md).")
    sec.tables.append(Table("", ["store", "caption set", "clips", "captions", *(label for _, label, _ in RETRIEVAL_COLUMNS)],
                            mark_best(rows, higher), "Bold: best in its column (lowest for ranks)."))
    return sec


def umap_section(ctx: Context) -> Section | None:
    shown = [k for k in ctx.keys if (k, "umap", "") in ctx.figures]
    if not shown:
        return None
    return Section("UMAP", f"2-D maps (cosine metric) of the {ctx.options['space']} audio vectors, one colour and "
                           "shape per class; the large outlined marker of a class is its prompt ensemble.",
                   figures=[(k, ctx.figures[k, "umap", ""]) for k in shown])


def skipped_section(ctx: Context) -> Section | None:
    skipped = ctx.report["skipped"]
    if not skipped:
        return None
    return Section("Skipped", "Experiments a store could not support, and why.",
                   [Table("", ["store", "experiment", "prompt set", "space", "reason"],
                          [[s["store"], s["experiment"], s["prompt_set"], s["space"], s["reason"]] for s in skipped])])


def beyond_study_sections(ctx: Context) -> list[Section]:
    """The analyses beyond the study (:mod:`analyses.report_beyond`): several sections."""
    from analyses.report_beyond import beyond_sections

    return beyond_sections(ctx.report, ctx.figures, Section)


#: The report's sections in order; each builder returns a Section, a list of them, or None.
SECTION_BUILDERS: list[Callable[[Context], Section | list[Section] | None]] = [
    stores_section,
    prompt_sets_section,
    zeroshot_section,
    histograms_section,
    confidence_section,
    triplets_section,
    centroids_section,
    retrieval_section,
    umap_section,
    beyond_study_sections,
    skipped_section,
]


def build_sections(report: dict, figures: dict) -> list[Section]:
    """Every section that has something to show, in :data:`SECTION_BUILDERS` order."""
    ctx = Context(report, figures)
    built = [build(ctx) for build in SECTION_BUILDERS]
    return [sec for out in built for sec in (out if isinstance(out, list) else [out]) if sec is not None]


# -- rendering ---------------------------------------------------------------------------------


MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]|~#!])|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def md_escape(value) -> str:
    """``value`` as literal Markdown text on one line: no HTML, emphasis, links or table breaks."""
    text = html.escape(" ".join(str(value).split()), quote=False)
    return MARKDOWN_SPECIAL.sub(lambda m: "\\" + m.group(0), text)


def _as_table(table) -> Table:
    return table if isinstance(table, Table) else Table(*table)


def _cell_md(cell) -> str:
    text = md_escape(cell.text() if isinstance(cell, Num) else cell)
    return f"**{text}**" if isinstance(cell, Num) and cell.best else text


def render_markdown(title: str, sections: list[Section]) -> str:
    """The report as Markdown, figures as image links; every string shows as written."""
    lines = [f"# {md_escape(title)}", ""]
    for sec in sections:
        lines += [f"## {md_escape(sec.title)}", ""]
        if sec.text:
            lines += [md_escape(sec.text), ""]
        if sec.items:
            lines += [f"- {md_escape(item)}" for item in sec.items] + [""]
        for table in map(_as_table, sec.tables):
            if table.caption:
                lines += [f"**{md_escape(table.caption)}**", ""]
            lines.append("| " + " | ".join(md_escape(h) for h in table.header) + " |")
            lines.append("|" + "---|" * len(table.header))
            lines += ["| " + " | ".join(_cell_md(c) for c in row) + " |" for row in table.rows]
            lines.append("")
            if table.note:
                lines += [f"*{md_escape(table.note)}*", ""]
        for caption, path in sec.figures:
            lines += [f"![{md_escape(caption)}]({path})", ""]
    return "\n".join(lines)


CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:1em 1.5em;
max-width:1100px;color:#222;line-height:1.45;box-sizing:border-box}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
.scroll{overflow-x:auto;max-width:100%;margin:.5em 0 1.2em}
table{border-collapse:collapse;font-size:.9em;font-variant-numeric:tabular-nums}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right;vertical-align:top}
th{background:#f3f3f3;text-align:center}td.name{text-align:left}
td.text{text-align:left;min-width:16em;max-width:28em;white-space:normal}
td{white-space:nowrap}td.best{background:#e8f1fb;font-weight:bold}.ci{font-size:.8em;color:#555;font-weight:normal}caption{text-align:left;font-weight:bold;padding:.3em 0}
p.note{font-size:.85em;color:#555;margin-top:-.8em}
figure{margin:1em 0}figure img{display:block;max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}ul.caveats li{margin:.3em 0}"""


#: Text cells up to this long never wrap (names, ranges); longer ones wrap.
NAME_CHARS = 24


def _cell_html(cell) -> str:
    esc = html.escape
    if isinstance(cell, Num):
        text = esc(cell.text())
        if cell.ci and cell.value is not None:  # the interval on its own line, small: columns stay narrow
            value, _, interval = cell.text().partition(" ")
            text = f"{esc(value)}<br><span class='ci'>{esc(interval)}</span>"
        return f"<td class='best'>{text}</td>" if cell.best else f"<td>{text}</td>"
    if isinstance(cell, (int, float)):
        return f"<td>{esc(str(cell))}</td>"
    text = str(cell)
    # A name or a range stays on one line; a sentence wraps, but never narrower than
    # 16em, so a narrow window scrolls the table rather than stacking one word per line.
    kind = "text" if len(text) > NAME_CHARS else "name"
    return f"<td class='{kind}'>{esc(text)}</td>"


def render_html(title: str, sections: list[Section]) -> str:
    """The report as one HTML page (inline CSS; PNGs from ``figures/``, each a link to itself at full size)."""
    esc = html.escape
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>{esc(title)}</title><style>{CSS}</style></head><body><h1>{esc(title)}</h1>"]
    for sec in sections:
        parts.append(f"<h2>{esc(sec.title)}</h2>")
        if sec.text:
            parts.append(f"<p>{esc(sec.text)}</p>")
        if sec.items:
            parts.append("<ul class='caveats'>" + "".join(f"<li>{esc(i)}</li>" for i in sec.items) + "</ul>")
        for table in map(_as_table, sec.tables):
            parts.append("<div class='scroll'><table>" + (f"<caption>{esc(table.caption)}</caption>"
                                                          if table.caption else ""))
            parts.append("<tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in table.header) + "</tr>")
            parts += ["<tr>" + "".join(_cell_html(c) for c in row) + "</tr>" for row in table.rows]
            parts.append("</table></div>")
            if table.note:
                parts.append(f"<p class='note'>{esc(table.note)}</p>")
        for caption, path in sec.figures:
            parts.append(f"<figure><a href='{esc(path)}' title='open at full size'>"
                         f"<img src='{esc(path)}' alt='{esc(caption)}'></a>"
                         f"<figcaption>{esc(caption)} (click to enlarge)</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
