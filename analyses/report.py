"""The full report: every experiment for every store, one store per model, side by side.

Three steps, as CLIP_benchmark does it: :func:`run_experiments` writes one JSON per
(model, dataset, experiment, prompt set, space) under ``results/``; :func:`merge_results`
reads them back into one dict; :func:`write_report` turns that dict into ``report.json``,
``report.md``, ``report.html`` and the PNG figures under ``figures/``
(:mod:`analyses.report_figures`), with one section per experiment
(:mod:`analyses.report_sections`: a list of section builders). :func:`build_report` runs
all three into a temporary folder and renames it into place only when everything is
written, so a failed run leaves no half-made report.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analyses.embeddings import class_prompt_sets, opened
from analyses.selection import selection_record
from analyses.report_figures import draw_figures
from analyses.report_sections import build_sections, md_escape, render_html, render_markdown  # noqa: F401 (md_escape: public)
from analyses.spaces import ordered_spaces
from analyses.triplets import PROTOCOLS
from embedstore.errors import InputError, WriteFailed
from embedstore.store.fileio import write_atomic
from embedstore.store.outputs import claimed_outputs, mark_folder, replace_folder

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
        Whether to compute the UMAP maps (off by default: umap-learn compiles its numba
        code in every process, 10-25 s).
    bins, seed
        Histogram bins; UMAP seed (and bootstrap seed).
    bootstrap : int
        Resamples of the clips for 95% intervals of the zero-shot and centroid metrics
        (0: none).
    selection : analyses.selection.Selection or None
        Items every experiment reads (``--where`` / ``--items``); None: all.
    """

    prompt_sets: list[str] | None = None
    space: str = "joint"
    ontology: str = "hdio"
    ontology_map: str | None = None
    holdout: str = "none"
    centroid: str = "raw"
    umap: bool = False
    bins: int = 100
    seed: int = 0
    selection: object = None
    bootstrap: int = 0


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
        "text_only": bool(st.text_only),
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "checkpoint_sha256": prov.get("checkpoint_sha256"),
        "selection": selection_record(st),
        "prompt_set_info": {name: prompt_set_info(st.prompt_set(name)) for name in st.prompt_sets},
        "caveats": store_caveats(st),
    }


def prompt_set_info(ps) -> dict:
    """What a prompt set is: its kind, size, source (template or origin) and first prompt."""
    kind = "captions" if ps.items is not None else "ontology terms" if ps.terms else "class prompts"
    return {"kind": kind, "prompts": len(ps.prompts), "source": ps.source or "",
            "example": ps.prompts[0] if ps.prompts else "", "spaces": list(ps.spaces)}


#: What a reader must know about a model before trusting its numbers.
MODEL_CAVEATS = {
    "notes-toy": "notes-toy is the bundled toy model, trained on 168 of the 252 bundled notes (and "
                 "resampled copies of them): only the 84 held-out notes (split=test) are unseen, so "
                 "numbers on all notes overstate it; it knows 14 synthesised instruments and nothing "
                 "else (docs/bundled-model.md).",
}


def store_caveats(st) -> list[str]:
    """Plain sentences on what limits a store's numbers: the model, failures, precision.

    Tied prompts come from the zero-shot results (``tied_classes``) and are added by the
    Stores section.
    """
    out = []
    if st.model in MODEL_CAVEATS:
        out.append(MODEL_CAVEATS[st.model])
    if st.text_only:
        out.append("A text-only store (prompt vectors, no audio): only the triplet experiments apply.")
    if st.failed:
        out.append(f"{len(st.failed)} items could not be embedded and are left out (see `embedstore info`).")
    if any(st.audio(space, lazy=True).dtype == np.float16 for space in st.audio_spaces):
        out.append("Vectors are stored as float16.")
    return out


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
    from analyses.retrieval import caption_sets, run_retrieval
    from analyses.triplets import run_triplets
    from analyses.zeroshot import run_zeroshot

    space = options.space
    audio = not st.text_only
    for name in prompt_sets:
        if audio:
            yield "zeroshot", name, space, run_zeroshot, {"prompt_set": name, "space": space,
                                                          "bootstrap": options.bootstrap, "seed": options.seed}
            yield "histograms", name, space, run_histograms, {"prompt_set": name, "space": space,
                                                              "bins": options.bins}
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
    if not audio:
        return
    for audio_space in ordered_spaces(st.audio_spaces):
        yield "centroids", "audio", audio_space, run_centroids, {
            "space": audio_space, "holdout": options.holdout, "centroid": options.centroid,
            "bootstrap": options.bootstrap, "seed": options.seed}
    yield "histograms", "centroids", space, run_histograms, {"centroids": True, "space": space, "bins": options.bins,
                                                             "centroid": options.centroid}
    for name in caption_sets(st):
        yield "retrieval", name, space, run_retrieval, {"caption_set": name, "space": space}
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
            plan = list(plan_experiments(st, sets, options))
            for step, (experiment, prompt_set, space, run, kwargs) in enumerate(plan, 1):
                say(f"{key} [{step}/{len(plan)}] {experiment} {prompt_set} ({space})")
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
                    "bins": options.bins, "seed": options.seed, "bootstrap": options.bootstrap,
                    "selection": None if options.selection is None else options.selection.describe(),
                    "fit": None if getattr(options.selection, "fit", None) is None
                    else options.selection.fit.describe()},
        "skipped": skipped,
        "results": _slim(merge_results(out_dir / "results")),
    }
    space = options.space

    def full_result(store: dict, experiment: str, prompt_set: str) -> dict:
        name = result_name(store["key"], store["dataset"], experiment, prompt_set, space)
        return json.loads((out_dir / "results" / name).read_text(encoding="utf-8"))["result"]

    figures = draw_figures(report, full_result, file_stem, out_dir / "figures", say)
    report["figures"] = sorted(figures.values())
    title = "embedstore report: " + ", ".join(f"{s['model']} on {s['dataset']}" for s in summaries)
    say("writing report.html, report.md, report.json")
    sections = build_sections(report, figures)
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
    if have and space not in have:  # text-only stores alone have no audio space to check
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
    if options.bootstrap < 0:
        raise InputError(f"bootstrap must be 0 or more, got {options.bootstrap}")
    load_ontology(options.ontology)
    if options.ontology_map:
        read_ontology_map(options.ontology_map)
    _check_space(stores, options.space)
    out_dir = Path(out_dir)
    # The output policy, before any work: only a folder an earlier report made (and
    # nothing else in it, least of all a store) is ever replaced. One report writes a
    # folder at a time: a second is refused at once.
    with claimed_outputs(folders=[out_dir], inputs=[*stores, options.ontology, options.ontology_map],
                         overwrite=overwrite, command=REPORT_COMMAND):
        return _build_into(stores, out_dir, options, progress)


def _build_into(stores, out_dir: Path, options: ReportOptions, progress) -> dict:
    """Run the experiments into a hidden folder beside ``out_dir``, then move them in."""
    partial = None
    try:
        partial = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
        summaries, skipped = run_experiments(stores, partial / "results", options, progress)
        report = write_report(partial, summaries, skipped, options, progress)
        _move_into(partial, out_dir)
    except OSError as exc:
        raise WriteFailed(f"cannot write the report in {out_dir}: {exc}") from None
    finally:
        if partial is not None:
            shutil.rmtree(partial, ignore_errors=True)  # our own uniquely named folder
    return report
