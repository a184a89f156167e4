"""Store commands: info, verify, import, export."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from cli.common import OVERWRITE_HELP, check_input_names, console, fail, handle_errors, styled
from embedstore.errors import StoreDamaged
from embedstore.store.outputs import check_outputs

commands = typer.Typer()


@commands.command()
@handle_errors
def info(store: Path = typer.Argument(..., help="The store file (.h5).")) -> None:
    """Summarise a store: model, dataset, items, classes, spaces, prompt sets, provenance."""
    from embedstore.store import open_store

    with open_store(store) as st:
        head = Table.grid(padding=(0, 2))
        head.add_row(styled(("store", "bold")), str(st.path))
        head.add_row(styled(("format", "bold")), f"embedstore {st.format_version}")
        head.add_row(styled(("model", "bold")), st.model)
        head.add_row(styled(("dataset", "bold")), st.dataset)
        head.add_row(styled(("items", "bold")), f"{st.n_items} ({_label_kind(st)}), {len(st.failed)} failed")
        head.add_row(styled(("classes", "bold")), f"{len(st.classes)}: " + ", ".join(st.classes))
        meta = st.metadata_columns
        if meta:
            head.add_row(styled(("item columns", "bold")), ", ".join(meta))
        console.print(head)

        spaces = Table(title="Vectors", title_justify="left")
        for col in ("tower", "set", "space", "rows", "dim", "dtype"):
            spaces.add_column(col)
        for space in st.audio_spaces:
            ds = st.audio(space, lazy=True)
            spaces.add_row("audio", "", space, str(ds.shape[0]), str(ds.shape[1]), str(ds.dtype))
        for name in st.prompt_sets:
            ps = st.prompt_set(name)
            for space in ps.spaces:
                ds = st.text(name, space, lazy=True)
                spaces.add_row("text", name, space, str(ds.shape[0]), str(ds.shape[1]), str(ds.dtype))
        console.print(spaces)

        prov = Table(title="Provenance", title_justify="left", show_header=False)
        for key, value in sorted(st.provenance.items()):
            prov.add_row(key, _short(value))
        prov.add_row("history", f"{len(st.history)} events, last: {_last_event(st.history)}")
        console.print(prov)


def _label_kind(st) -> str:
    """Single- or multi-label; with partial labels, how many pairs the metrics leave out."""
    kind = "multi-label" if st.multilabel else "single-label"
    mask = st.label_mask
    if mask is not None:
        kind += f", {int(mask.size - mask.sum())} of {mask.size} item-class pairs unlabelled"
    return kind


def _short(value, limit: int = 100) -> str:
    import json

    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _last_event(history: list[dict]) -> str:
    if not history:
        return "none"
    e = history[-1]
    return f"{e.get('action')} at {e.get('time')}"


@commands.command()
@handle_errors
def verify(store: Path = typer.Argument(..., help="The store file (.h5).")) -> None:
    """Prove a store intact: structure, tags, chunk checksums and content digests.

    Exit 0 when intact, 1 when damaged (saying what and where), 2 when not a store.
    """
    from embedstore.store.verify import verify_store

    report = verify_store(store)
    if not report.ok:
        for problem in report.problems[1:]:
            console.print(styled(("damaged:", "red"), f" {problem}"), highlight=False)
        raise StoreDamaged(f"{store} is damaged: {report.problems[0]}")
    for note in report.notes:
        console.print(styled(("note:", "yellow"), f" {note}"), highlight=False)
    bound = "" if report.notes else " at their paths"
    console.print(styled(("intact", "green"), f": {store} ({report.arrays_checked} arrays match their digests{bound})"),
                  highlight=False)


@commands.command("import")
@handle_errors
def import_(
    out: Path = typer.Argument(..., help="The store to create (.h5)."),
    items: Optional[Path] = typer.Option(None, "--items", help="CSV with one row per item."),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="Column holding the item ids."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="Column holding class names."),
    onehot: bool = typer.Option(
        False, "--onehot",
        help="0/1 class columns (every column but id and path, or those --classes lists): "
             "single-label when every row has exactly one 1, else multi-label.",
    ),
    multilabel: bool = typer.Option(False, "--multilabel", help="Make a multi-label store even if every item has one class."),
    partial_labels: bool = typer.Option(
        False, "--partial-labels",
        help="With --onehot: an empty cell is an item-class pair with no label (OpenMIC-style); the store "
             "gets a label mask and metrics leave those pairs out.",
    ),
    classes: Optional[Path] = typer.Option(
        None, "--classes", help="Class order, one per line (default: sorted labels; then a prompt text file needs "
                                "--prompt-classes or a class,prompt CSV)."
    ),
    audio: List[str] = typer.Option([], "--audio", help="SPACE=FILE.npy; row i is item i; SPACE is joint or prejoint. Repeatable."),
    prompts: List[str] = typer.Option(
        [], "--prompts", help="SET=FILE.txt (one prompt per line) or SET=FILE.csv (columns class,prompt[,term]). Repeatable."
    ),
    prompt_classes: List[str] = typer.Option(
        [], "--prompt-classes", help="SET=FILE.txt naming the class of each prompt line. Repeatable."
    ),
    text: List[str] = typer.Option([], "--text", help="SET:SPACE=FILE.npy; row i is prompt (or caption row) i. Repeatable."),
    captions: List[str] = typer.Option(
        [], "--captions", help="SET=FILE.csv, a caption set for retrieval: columns id,caption, "
        "several rows per id allowed. Repeatable."),
    extra_space: List[str] = typer.Option(
        [], "--extra-space", help="Allow a space name besides joint and prejoint. Repeatable."
    ),
    source: Optional[Path] = typer.Option(
        None, "--from", help="A folder `embedstore export STORE --out FOLDER` wrote: rebuild that store."
    ),
    model: str = typer.Option("unknown", "--model", help="Name of the model that made the vectors."),
    dataset: str = typer.Option("unknown", "--dataset", help="Name of the dataset."),
    float16: bool = typer.Option(False, "--float16", help="Store vectors as float16 (default float32)."),
    record_host: bool = typer.Option(
        False, "--record-host", help="Record host and user names in the provenance (off: stores are shared)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store (never an input file)."),
) -> None:
    """Build a store from arrays computed elsewhere (e.g. the .npy files a paper releases)."""
    from embedstore.store import open_store
    from embedstore.store.interchange import import_folder, import_store, parse_assignment

    if source is not None:
        # The folder's import.json says how to read it; an option it would ignore is refused.
        given = {"--items": items is not None, "--id-column": id_column is not None,
                 "--label-column": label_column is not None, "--onehot": onehot, "--multilabel": multilabel,
                 "--partial-labels": partial_labels, "--classes": classes is not None, "--audio": bool(audio),
                 "--prompts": bool(prompts), "--prompt-classes": bool(prompt_classes), "--text": bool(text),
                 "--captions": bool(captions), "--extra-space": bool(extra_space), "--model": model != "unknown",
                 "--dataset": dataset != "unknown", "--float16": float16}
        extra = [flag for flag, on in given.items() if on]
        if extra:
            fail(f"--from takes everything from the export folder (names, labels, dtypes); drop {', '.join(extra)}", 2)
        check_outputs([out], inputs=[source], overwrite=overwrite)
        import_folder(out, source, overwrite=overwrite, record_host=record_host)
    else:
        if items is None or id_column is None:
            fail("give --items CSV and --id-column NAME (or --from FOLDER)", 2)
        files = [parse_assignment(spec, "=", flag)[1]
                 for flag, specs in (("--audio", audio), ("--prompts", prompts),
                                     ("--prompt-classes", prompt_classes), ("--text", text),
                                     ("--captions", captions))
                 for spec in specs]
        check_input_names(files)
        check_outputs([out], inputs=[items, classes, *files], overwrite=overwrite)
        import_store(
            out,
            items_csv=items,
            id_column=id_column,
            label_column=label_column,
            onehot=onehot,
            multilabel=multilabel,
            partial_labels=partial_labels,
            classes_file=classes,
            audio=audio,
            prompts=prompts,
            prompt_classes=prompt_classes,
            text=text,
            captions=captions,
            extra_spaces=extra_space,
            model=model,
            dataset=dataset,
            dtype="float16" if float16 else "float32",
            record_host=record_host,
            overwrite=overwrite,
        )
    with open_store(out) as st:
        kind = _label_kind(st)
        console.print(styled(
            ("wrote", "green"), f" {out}: {st.n_items} items ({kind}), {len(st.classes)} classes, "
            f"audio spaces {st.audio_spaces or '-'}, prompt sets {st.prompt_sets or '-'}"
        ), highlight=False)


@commands.command()
@handle_errors
def export(
    store: Path = typer.Argument(..., help="The store file (.h5)."),
    audio: Optional[str] = typer.Option(None, "--audio", help="Audio space to export alone."),
    text: Optional[str] = typer.Option(None, "--text", help="SET:SPACE of prompt vectors to export alone."),
    out: Path = typer.Option(
        ..., "--out", help="A folder for the whole store (read back by `import --from`); "
                           "with --audio or --text, a prefix: writes PREFIX.npy and PREFIX.csv; "
                           "with --format parquet, OUT.parquet and OUT.prompts.parquet."
    ),
    format_: str = typer.Option("npy", "--format", help="npy (a folder of .npy + .csv files, or one space) "
                                "or parquet (the whole store)."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Write a store as files `embedstore import --from` reads back, or one space as PREFIX.npy + PREFIX.csv."""
    from embedstore.store.interchange import export_space, export_store

    if format_ == "parquet":
        from embedstore.store.parquet import export_parquet

        if audio is not None or text is not None:
            fail("--format parquet exports every space; leave out --audio and --text", 2)
        items, prompts = export_parquet(store, out, overwrite=overwrite)
        console.print(styled(("wrote", "green"), f" {items} and {prompts}"), highlight=False)
        return
    if format_ != "npy":
        fail(f"--format must be npy or parquet, got {format_!r}", 2)
    if audio is not None and text is not None:
        fail("give at most one of --audio SPACE or --text SET:SPACE", 2)
    if audio is None and text is None:
        folder = export_store(store, out, overwrite=overwrite)  # the folder follows the output policy
        console.print(styled(("wrote", "green"), f" {folder} (read it back with `embedstore import OUT.h5 --from {folder}`)"),
                      highlight=False)
        return
    check_outputs([Path(f"{out}.npy"), Path(f"{out}.csv")], inputs=[store], overwrite=overwrite)
    npy, csv_path = export_space(store, out, audio=audio, text=text, overwrite=overwrite)
    console.print(styled(("wrote", "green"), f" {npy} and {csv_path}"), highlight=False)
