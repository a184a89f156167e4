"""The report's sections beyond the study: why zero-shot fails, and what repairs it.

Three hooks that :mod:`analyses.report` calls: :func:`plan_beyond` adds the experiments,
:func:`beyond_figures` draws their figures and :func:`beyond_sections` renders their tables.
Results live in the merged report as ``{store: {experiment: {prompt_set: {space: result}}}}``
like every other experiment.
"""

from __future__ import annotations

import re

from analyses.spaces import ordered_spaces

LADDER = "ladder"
NAME_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def plan_beyond(st, prompt_sets: list[str], options):
    """The new experiments for one open store, as (experiment, prompt set, space, function, kwargs)."""
    from analyses.compare import run_prompt_set_comparisons
    from analyses.confusion import run_confusion
    from analyses.hierarchy import run_hierarchy
    from analyses.modality_gap import run_modality_gap
    from analyses.probe import run_probe
    from analyses.text_map import run_text_map

    space = options.space
    onto = {"ontology": options.ontology, "ontology_map": options.ontology_map}
    for name in prompt_sets:
        yield "modality-gap", name, space, run_modality_gap, {"prompt_set": name, "space": space}
        yield "text-map", name, space, run_text_map, {"prompt_set": name, "space": space,
                                                      "centroid": options.centroid}
        yield "confusion", name, space, run_confusion, {"prompt_set": name, "space": space}
        yield "hierarchy", name, space, run_hierarchy, {"prompt_set": name, "space": space, **onto}
    centroids = {"centroids": True, "space": space, "holdout": options.holdout, "centroid": options.centroid}
    yield "confusion", "centroids", space, run_confusion, centroids
    yield "hierarchy", "centroids", space, run_hierarchy, {**centroids, **onto}
    if len(prompt_sets) > 1:
        yield "compare", "prompt sets", space, run_prompt_set_comparisons, {"prompt_sets": list(prompt_sets),
                                                                            "space": space}
    for audio_space in ordered_spaces(st.audio_spaces):
        yield "probe", "audio", audio_space, run_probe, {"space": audio_space}


def _by(merged, key, experiment):
    return merged.get(key, {}).get(experiment, {})


def _best_zeroshot(merged, key, space):
    """(prompt set, top-1) of the best zero-shot prompt set of a store, or (None, None)."""
    scores = {ps: by[space]["top1"] for ps, by in _by(merged, key, "zeroshot").items()
              if space in by and by[space].get("top1") is not None}
    if not scores:
        return None, None
    best = max(scores, key=scores.get)
    return best, scores[best]


def ladder_rows(merged, key, space) -> dict:
    """{audio space: {step: top-1}}: zero-shot (best set), centroids, 1-NN, 5-NN, probe."""
    rows = {}
    spaces = ordered_spaces(set(_by(merged, key, "probe").get("audio", {}))
                            | set(_by(merged, key, "centroids").get("audio", {})))
    best, best_top1 = _best_zeroshot(merged, key, space)
    for s in spaces:
        probe = _by(merged, key, "probe").get("audio", {}).get(s) or {}
        centroids = _by(merged, key, "centroids").get("audio", {}).get(s) or {}
        rows[s] = {
            "zero-shot (best prompt set)": best_top1 if s == space else None,
            "centroids": centroids.get("top1"),
            "1-NN (leave one out)": probe.get("knn1_top1"),
            "5-NN (leave one out)": probe.get("knn5_top1"),
            "linear probe": probe.get("top1"),
        }
    return rows


def beyond_figures(report: dict, draw) -> None:
    """Draw the new figures with ``draw(key, filename, plot, *args)`` (see analyses.report._figures)."""
    from analyses import plots

    merged = report["results"]
    space = report["options"]["space"]
    for store in report["stores"]:
        k = store["key"]
        stem = NAME_SAFE.sub("-", k)
        gaps = {ps: by[space] for ps, by in _by(merged, k, "modality-gap").items() if space in by}
        if gaps:
            draw((k, "modality-gap", ""), f"{stem}__modality-gap.png", plots.plot_gap_shift, gaps)
        rows = ladder_rows(merged, k, space)
        if any(v is not None for by in rows.values() for v in by.values()):
            draw((k, LADDER, ""), f"{stem}__ladder.png", plots.plot_ladder, rows)
        best, _ = _best_zeroshot(merged, k, space)
        for labels in [best, "centroids"]:
            result = _by(merged, k, "confusion").get(labels, {}).get(space) if labels else None
            if result:
                draw((k, "confusion", labels), f"{stem}__confusion__{NAME_SAFE.sub('-', labels)}.png",
                     plots.plot_confusion, result)


def _f(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _shows_something(section) -> bool:
    """A section with a figure or a number: every experiment behind it may have been skipped
    (a multi-label store has no top-1), and then the section says nothing."""
    cells = (cell for _, _, rows in section.tables for row in rows for cell in row[1:])
    return bool(section.figures) or any(str(cell) not in ("—", "") for cell in cells)


def _where(record: dict) -> str:
    """A selection record's conditions, ``split=test, family=a|b``."""
    return ", ".join(f"{c}={'|'.join(v)}" for c, v in record["where"].items()) or "—"


def beyond_sections(report: dict, figures: dict, section_type) -> list:
    """The new sections, built with the report's ``Section`` class."""
    merged, keys = report["results"], [s["key"] for s in report["stores"]]
    space = report["options"]["space"]
    out = []

    selected = [s for s in report["stores"] if s.get("selection")]
    if selected:
        fitted = any(s["selection"].get("fit") for s in selected)
        items = section_type("Items", "Every experiment ran on these items only." + (
            " The audio class centroids are the means of other items (`--fit-where`)." if fitted else ""))
        items.tables.append(("", ["store", "where", "ids file", "items", "of"] + (["centroids fitted on"] if fitted else []),
                             [[s["key"], _where(s["selection"]), s["selection"]["items_file"] or "—",
                               s["selection"]["n_items"], s["selection"]["n_store_items"]]
                              + ([f"{_where(s['selection']['fit'])} ({s['selection']['fit']['n_items']} items)"]
                                 if fitted else []) for s in selected]))
        out.append(items)

    ladder = section_type(
        "From reading to listening",
        "Top-1 as the labels come from less text and more audio: zero-shot with the best prompt set "
        f"({space} space), audio class centroids, leave-one-out nearest neighbours by cosine, and a "
        "logistic-regression probe (stratified 5-fold, mean ± sd over folds).")
    columns = [(k, s) for k in keys for s in ladder_rows(merged, k, space)]
    steps = ["zero-shot (best prompt set)", "centroids", "1-NN (leave one out)", "5-NN (leave one out)",
             "linear probe"]
    rows = []
    for step in steps:
        row = [step]
        for k, s in columns:
            value = ladder_rows(merged, k, space)[s][step]
            if step == "linear probe" and value is not None:
                probe = _by(merged, k, "probe")["audio"][s]
                row.append(f"{value:.3f} ± {probe['top1_sd']:.3f}")
            elif step.startswith("zero-shot") and value is not None:
                row.append(f"{value:.3f} ({_best_zeroshot(merged, k, space)[0]})")
            else:
                row.append(_f(value))
        rows.append(row)
    ladder.tables.append(("", ["labels", *(f"{k} {s}" for k, s in columns)], rows))
    ladder.figures += [(f"{k}: top-1 by labels and space", figures[k, LADDER, ""])
                       for k in keys if (k, LADDER, "") in figures]
    out.append(ladder)

    gap = section_type(
        "Modality gap (Liang et al. 2022)",
        "Distance between the centres of the unit audio and text vectors, and zero-shot top-1 after "
        "shifting both along the gap by λ (0: as embedded; 1: centres moved together).")
    sets = list(dict.fromkeys(ps for k in keys for ps in _by(merged, k, "modality-gap")))
    rows = []
    for ps in sets:
        row = [ps]
        for k in keys:
            r = _by(merged, k, "modality-gap").get(ps, {}).get(space)
            if r is None:
                row += ["—"] * 4
                continue
            top1 = {p["lambda"]: p["top1"] for p in r["shift"]}
            best = max(r["shift"], key=lambda p: -1 if p["top1"] is None else p["top1"])
            row += [_f(r["gap_distance"]), _f(top1.get(0.0)), _f(top1.get(1.0)),
                    f"{_f(best['top1'])} at λ={best['lambda']:g}"]
        rows.append(row)
    gap.tables.append(("", ["prompt set", *(f"{k} {m}" for k in keys for m in ("gap", "top-1 λ=0", "top-1 λ=1",
                                                                                 "best"))], rows))
    gap.figures += [(f"{k}: top-1 along the gap shift", figures[k, "modality-gap", ""])
                    for k in keys if (k, "modality-gap", "") in figures]
    out.append(gap)

    tmap = section_type(
        "Text-to-audio map on unseen classes",
        "An orthogonal (Procrustes) map from class prompt vectors to audio class centroids, fitted on "
        "4/5 of the classes and tested on the rest (5 folds over classes); candidates are the held-out "
        "classes only, so chance is about one in the fold's class count. Unmapped: the same items and "
        "candidates with the plain prompt vectors.")
    sets = list(dict.fromkeys(ps for k in keys for ps in _by(merged, k, "text-map")))
    tmap.tables.append(("", ["prompt set", *(f"{k} {m}" for k in keys for m in ("mapped", "unmapped", "chance"))],
                        [[ps] + [_f(r.get(m)) if r else "—" for k in keys
                                 for r in [_by(merged, k, "text-map").get(ps, {}).get(space)]
                                 for m in ("top1_mapped", "top1_unmapped", "chance")] for ps in sets]))
    out.append(tmap)

    hier = section_type(
        "Hierarchy-aware scores",
        "Family top-1: the prediction lies in the true class's family (its parent node in the "
        f"ontology {report['options']['ontology']!r}); error distance: mean tree distance (edges) "
        "between predicted and true class over the wrong predictions.")
    labels = list(dict.fromkeys(ps for k in keys for ps in _by(merged, k, "hierarchy")))
    hier.tables.append(("", ["labels", *(f"{k} {m}" for k in keys for m in ("top-1", "family top-1", "errors",
                                                                              "error distance"))],
                        [[ps] + [(_f(r.get(m), 2 if m == "error_distance_mean" else 3)
                                  if m != "n_errors" else str(r[m])) if r else "—"
                                 for k in keys for r in [_by(merged, k, "hierarchy").get(ps, {}).get(space)]
                                 for m in ("top1", "family_top1", "n_errors", "error_distance_mean")]
                         for ps in labels]))
    out.append(hier)

    conf = section_type("Per class", "Top-1 of each class (the share of its clips labelled right), per "
                                     "labels; confusion matrices of the best prompt set and of the centroids.")
    for k in keys:
        by_labels = {ps: by[space] for ps, by in _by(merged, k, "confusion").items() if space in by}
        if not by_labels:
            continue
        names = list(by_labels)
        classes = by_labels[names[0]]["classes"]
        conf.tables.append((k, ["class", *names],
                            [[c] + [_f(by_labels[n]["per_class"][c]["recall"]) for n in names] for c in classes]))
    conf.figures += [(f"{k}: {labels}", path) for (k, kind, labels), path in figures.items() if kind == "confusion"]
    out.append(conf)

    cmp_ = section_type("Prompt sets against the best one",
                        "Paired bootstrap over the same clips (1000 resamples): top-1 of the best prompt set "
                        "minus each other's, its 95% interval and two-sided p-value.")
    for k in keys:
        r = _by(merged, k, "compare").get("prompt sets", {}).get(space)
        if r:
            cmp_.tables.append((f"{k}: best = {r['best']}", ["prompt set", "top-1 best − set", "95% interval", "p"],
                                [[ps, f"{c['top1']['diff']:+.3f}",
                                  f"[{c['top1']['ci95'][0]:+.3f}, {c['top1']['ci95'][1]:+.3f}]",
                                  _f(c["top1"]["p_value"], 4)] for ps, c in r["comparisons"].items()]))
    out.append(cmp_)
    return [sec for sec in out if _shows_something(sec)]
