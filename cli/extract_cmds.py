"""``embedstore extract`` and ``embedstore extract-text``: embed audio and prompts into a store."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from cli.common import (
    check_input_names,
    console,
    err_console,
    finite,
    handle_errors,
    styled,
)
from embedstore.errors import InputError
from embedstore.extract.shards import BLOCK_ITEMS
from embedstore.models import MODELS
from embedstore.store.outputs import check_outputs

commands = typer.Typer()

MODEL_HELP = f"A registered model ({', '.join(sorted(MODELS))}) or hf:<hub id or local directory>."
PROMPTS_HELP = ("A built-in prompt set (track, definition, definition-nolabel, lorem, recording, "
                "solo, negative, family, ontology; sound, sound-clap) or a .txt/.csv/.json file; "
                "repeat for several.")


class ClipsPerSecond(ProgressColumn):
    """Throughput of the rows done in this run."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- clips/s" if speed is None else f"{speed:.1f} clips/s", style="cyan")


def _load_model(name, checkpoint, tokenizer, device, precision):
    from embedstore.extract import require_torch

    require_torch()
    from embedstore.models import load_model

    return load_model(name, checkpoint=checkpoint, device=device, precision=precision,
                      tokenizer=tokenizer)


@commands.command()
@handle_errors
def extract(
    out: Path = typer.Option(..., "--out", "-o", help="The store to write (an .h5 file)."),
    model: str = typer.Option(
        "notes-toy", "--model", "-m",
        help=MODEL_HELP + " Default: notes-toy, the bundled toy model (not a research model).",
    ),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Local weights file instead of the published one."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Local tokenizer folder for the text tower."),
    dataset: str = typer.Option("tinysol", "--dataset", "-d", help="A dataset of `embedstore datasets list` (tinysol, notes, esc50, openmic, ..., captions, folder)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Dataset folder; tinysol without --root reads the bundled notes."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="folder: CSV with columns path,label (several labels split by ';'), default <root>/labels.csv; captions: the captions CSV, default <root>/captions.csv."),
    where: Optional[str] = typer.Option(None, "--where", metavar="COLUMN=VALUE", help="Embed only the items whose metadata column equals VALUE (e.g. fold=1)."),
    prompts: Optional[List[str]] = typer.Option(None, "--prompts", "-p", help=PROMPTS_HELP + " Default: every built-in set that fits the classes."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, max=65_536, help="Audio windows per forward pass (may change on --resume, e.g. after running out of device memory)."),
    workers: int = typer.Option(2, "--workers", "-w", min=0, max=256, help="Processes decoding and resampling audio ahead of the model (0: none)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 (IEEE, TF32 off), or bf16 / fp16 under autocast (front ends and outputs stay fp32)."),
    long_mode: str = typer.Option("mean", "--long", help="Clips longer than the model's window: first, center, or mean of all windows (whole-clip models, the fusion LAION-CLAPs, take each clip whole)."),
    dtype: str = typer.Option("float32", "--dtype", help="Storage precision of the vectors: float32 or float16."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run of the same command."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store at --out."),
    engine: str = typer.Option("local", "--engine", help="local, or ray: decoding in Ray tasks, the encoder in --actors actors, one shard store per actor, merged into --out (the ray extra)."),
    actors: int = typer.Option(1, "--actors", min=1, help="ray: encoder actors, each holding the model."),
    gpus_per_actor: float = typer.Option(0.0, "--gpus-per-actor", min=0.0, callback=finite, help="ray: GPUs per encoder actor."),
    shard: Optional[str] = typer.Option(None, "--shard", help="K/N: embed shard K (from 0) of N, contiguous items, into OUT.shard-K-of-N.h5; default from a SLURM job array or torchrun's RANK/WORLD_SIZE. Join them with `embedstore merge`."),
    block_items: int = typer.Option(BLOCK_ITEMS, "--block-items", min=1, max=1 << 30, help="Items per block: no batch spans two blocks and shards are cut between blocks, so merged shards equal a single run bit for bit (costs at most one padded batch per block). Every shard and --resume use the same."),
    record_host: bool = typer.Option(False, "--record-host",
                                     help="Record host and user names and the dataset's absolute path (off: stores are shared)."),
):
    """Embed a dataset's audio and prompt sets with a model into a new store.

    Clips are decoded in parallel and embedded in fixed-size batches.
    Each batch is saved as it completes: an interrupted run continues with --resume.
    Clips that cannot be read are recorded in the store with their reason, and skipped.
    """
    from embedstore.datasets import load_dataset
    from embedstore.errors import InputError
    from embedstore.extract import check_settings, run_extract
    from embedstore.extract.prompts import build_prompt_set, default_prompt_specs
    from embedstore.extract.shards import check_block_items, local_device, resolve_shard
    from embedstore.store.merge import shard_path

    if engine not in ("local", "ray"):
        raise InputError(f"--engine must be local or ray, got {engine!r}")
    part = resolve_shard(shard)
    if part is not None and engine != "local":
        raise InputError("--shard (or a SLURM array / torchrun rank) runs one shard per process; "
                         "--engine ray shards and merges by itself: use one or the other")
    device = local_device(device)
    check_settings(batch_size=batch_size, workers=workers, long_mode=long_mode, dtype=dtype)
    check_block_items(block_items)
    check_input_names(prompts or [])
    if dataset == "tinysol" and root is None:
        dataset = "notes"
    data = load_dataset(dataset, root, labels)
    if where is not None:
        column, sep, value = where.partition("=")
        if not sep:
            raise InputError(f"--where takes COLUMN=VALUE, not {where!r}")
        data = data.where(column.strip(), value.strip())
    specs = ([build_prompt_set(p, data.classes) for p in prompts] if prompts
             else default_prompt_specs(data.classes) + fitting_clap_specs(data))
    # The store is checked before any model loads or clip is read; no input (labels,
    # weights, prompts, audio) is ever a target; --resume continues what is there.
    inputs = [labels or data.root / "labels.csv", checkpoint, *_prompt_files(prompts),
              *(item.path for item in data.items)]
    target = out if part is None else shard_path(out, part.index, part.count)
    check_outputs([target], inputs=inputs, overwrite=overwrite or resume)
    encoder = _load_model(model, checkpoint, tokenizer, device, precision)
    console.print(f"{data.name}: {len(data.items)} clips, {len(data.classes)} classes, "
                  f"{len(specs)} prompt sets; model {encoder.name} on {encoder.device} ({precision})",
                  highlight=False)
    if part is not None:
        console.print(f"shard {part.index} of {part.count} (from {part.source})", highlight=False)
    bar = Progress(TextColumn("[bold]embedding"), BarColumn(), MofNCompleteColumn(), ClipsPerSecond(),
                   TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                   TextColumn("{task.fields[failed]} failed"), console=err_console)
    task = None

    def progress(done: int, total: int, failed: int) -> None:
        nonlocal task
        if task is None:  # shown once audio starts; a resumed run's rate counts its new rows only
            bar.start()
            task = bar.add_task("clips", total=total, completed=done, failed=failed)
        bar.update(task, completed=done, failed=failed)

    if engine != "local":
        _print_summary(_run_ray(actors, gpus_per_actor, encoder, data, specs, out, model=model, checkpoint=checkpoint,
                                tokenizer=tokenizer, device=device, precision=precision, batch_size=batch_size,
                                long_mode=long_mode, dtype=dtype, resume=resume, overwrite=overwrite,
                                block_items=block_items))
        return
    try:
        summary = run_extract(encoder, data, specs, out, batch_size=batch_size, workers=workers,
                              long_mode=long_mode, resume=resume, overwrite=overwrite, dtype=dtype,
                              command=["embedstore", *sys.argv[1:]], progress=progress, shard=part,
                              record_host=record_host, block_items=block_items)
    finally:
        bar.stop()
    _print_summary(summary)


def _prompt_files(prompts: list[str] | None) -> list[Path]:
    """The ``--prompts`` values that name files (the others are built-in sets)."""
    return [Path(p) for p in prompts or [] if Path(p).is_file()]


def _run_ray(actors, gpus_per_actor, encoder, data, specs, out, *, model, checkpoint, tokenizer, device,
             precision, **settings):
    import functools

    from embedstore.extract.ray_engine import run_extract_ray
    from embedstore.models import load_model

    loader = functools.partial(load_model, model, checkpoint=checkpoint, device=device, precision=precision,
                               tokenizer=tokenizer)
    return run_extract_ray(loader, data, specs, out, model=encoder, shards=actors, concurrency=actors, num_gpus=gpus_per_actor,
                           command=["embedstore", *sys.argv[1:]], **settings)


def fitting_clap_specs(data) -> list:
    """The CLAP papers' sound prompt sets that the dataset's registry entry says fit it."""
    from embedstore.datasets import DATASETS
    from embedstore.extract.prompts import build_prompt_set, clap_prompt_sets

    info = DATASETS.get(data.name)
    fitting = [name for name in clap_prompt_sets() if info is not None and name in info.prompts]
    return [build_prompt_set(name, data.classes) for name in fitting]


def _print_summary(summary) -> None:
    if summary.already_complete:
        console.print(f"{summary.path} is already complete, made with the same settings: "
                      "nothing to do", highlight=False)
    table = Table(show_header=False, box=None)
    table.add_row("store", str(summary.path))
    table.add_row("items", str(summary.items))
    table.add_row("failed", str(len(summary.failed)))
    table.add_row("audio spaces", ", ".join(summary.audio_spaces))
    table.add_row("prompt sets", ", ".join(summary.prompt_sets))
    if summary.resumed_from:
        table.add_row("resumed at row", str(summary.resumed_from))
    table.add_row("time", f"{summary.seconds:.1f} s")
    console.print(table)
    unchecked = sum(reason.startswith("the model gave") for _, reason in summary.failed)
    if unchecked:
        console.print(styled("  ", (f"{unchecked} clip(s) gave non-finite or non-unit vectors and "
                                    "were not stored", "yellow"),
                             " (see the reasons below and `embedstore info`)"), highlight=False)
    for path, reason in summary.failed[:10]:
        console.print(styled("  ", ("skipped", "yellow"), f" {path}: {reason}"), highlight=False)
    if len(summary.failed) > 10:
        console.print(f"  ... and {len(summary.failed) - 10} more (see `embedstore info`)")


TEXT_MODEL_HELP = (MODEL_HELP + " With --out also minilm (all-MiniLM-L6-v2, offline) or st:<folder> "
                   "(any sentence-transformers folder). Default: the store's model.")


def _stored_device(store: Path, recorded: str | None) -> str:
    """The device a store was made on, when this machine has it (extract-text's default)."""
    from embedstore.errors import InputError
    from embedstore.extract import require_torch

    if not recorded:
        return "auto"
    require_torch()
    from embedstore.models.device import resolve_device

    try:
        return str(resolve_device(recorded))
    except InputError:
        raise InputError(f"{store} was made on {recorded}, which this machine does not have; pass "
                         "--device (e.g. --device cpu: its text vectors then differ from the "
                         "store's by rounding)") from None


@commands.command("extract-text")
@handle_errors
def extract_text(
    store: Optional[Path] = typer.Argument(None, help="An existing store to add prompt sets to (or use --out)."),
    prompts: List[str] = typer.Option(..., "--prompts", "-p", help=PROMPTS_HELP),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Write a new text-only store here instead: the dataset's classes and "
        "the prompt sets, no audio."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=TEXT_MODEL_HELP),
    dataset: str = typer.Option("tinysol", "--dataset", "-d", help="With --out: the dataset whose classes the prompts name."),
    root: Optional[Path] = typer.Option(None, "--root", help="With --out: the dataset folder (tinysol without it: the bundled notes)."),
    labels: Optional[Path] = typer.Option(None, "--labels", help="With --out, folder datasets: the CSV of path,label."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Local weights file; must be the one that made the store."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="Local tokenizer folder for the text tower."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N or mps; default: the store's."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32, fp16 or bf16; default: the store's."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, max=65_536, help="Prompts per forward pass."),
    replace: bool = typer.Option(False, "--replace", "--overwrite",
                                 help="Replace prompt sets the store already has, or with --out an existing store "
                                      "(--overwrite says the same)."),
):
    """Add prompt sets to a store, or (--out) write a text-only store of prompt sets alone.

    Adding: the model's checkpoint SHA-256 must equal the one in the store's provenance.
    --out: any text encoder (minilm, st:<folder>, or an audio-text model's text tower)
    embeds the prompt sets for the dataset's classes; `analyze triplets`, `analyze spaces`
    and `report` read the store beside those of audio-text models.
    """
    from embedstore.errors import StoreExists
    from embedstore.extract.prompts import build_prompt_set

    if (store is None) == (out is None):
        raise InputError("give either an existing STORE to add prompt sets to, or --out for a new text-only store")
    if out is None and (root is not None or labels is not None or dataset != "tinysol"):
        raise InputError("--dataset, --root and --labels name the classes of a new text-only store: use them with --out")
    if out is not None:
        _text_only_store(out, prompts, model or "minilm", dataset, root, labels, checkpoint, tokenizer,
                         device, precision or "fp32", batch_size, replace)
        return
    from embedstore.extract import add_prompt_sets
    from embedstore.store import open_store

    check_input_names(prompts)
    with open_store(store) as st:
        classes, made_by, present = st.classes, st.model, st.prompt_sets
        # a store imported or written by another tool may record no extraction at all
        extraction = (st.provenance or {}).get("extraction")
        stored = extraction if isinstance(extraction, dict) else {}
    specs = [build_prompt_set(p, classes) for p in prompts]
    taken = [spec.name for spec in specs if spec.name in present]
    if taken and not replace:  # said before the model loads; add_prompt_sets checks again under the lock
        raise StoreExists(f"{store} already has prompt set(s) {', '.join(taken)}; pass --replace to replace them")
    encoder = _load_model(model or made_by, checkpoint, tokenizer,
                          device or _stored_device(store, stored.get("device")),
                          precision or stored.get("precision") or "fp32")
    sets = add_prompt_sets(store, encoder, specs, batch_size=batch_size, replace=replace)
    console.print(f"added {', '.join(s.name for s in specs)} to {store}; "
                  f"prompt sets now: {', '.join(sets)}", highlight=False)


def _text_only_store(out, prompts, model, dataset, root, labels, checkpoint, tokenizer, device, precision,
                     batch_size, overwrite) -> None:
    from embedstore.datasets import load_dataset
    from embedstore.extract import check_settings, make_text_store
    from embedstore.extract.prompts import build_prompt_set
    from embedstore.models.sentence import is_text_model
    from embedstore.store.outputs import check_outputs

    check_settings(batch_size=batch_size)
    check_input_names(prompts)
    check_outputs([out], overwrite=overwrite, command="extract-text")
    if dataset == "tinysol" and root is None:
        dataset = "notes"
    data = load_dataset(dataset, root, labels)
    specs = [build_prompt_set(p, data.classes) for p in prompts]
    if is_text_model(model):
        from embedstore.extract import require_torch
        from embedstore.models.sentence import load_text_model

        if checkpoint is not None or tokenizer is not None:
            raise InputError(f"{model} reads its weights and tokenizer from its folder, not --checkpoint/--tokenizer")
        require_torch()
        encoder = load_text_model(model, device)
    else:
        encoder = _load_model(model, checkpoint, tokenizer, device, precision)
    summary = make_text_store(encoder, data, specs, out, batch_size=batch_size, overwrite=overwrite,
                              command=["embedstore", *sys.argv[1:]])
    console.print(f"wrote text-only store {out}: {len(data.classes)} classes of {data.name}, model "
                  f"{encoder.name}, prompt sets {', '.join(summary.prompt_sets)} ({summary.seconds:.1f} s)",
                  highlight=False)
