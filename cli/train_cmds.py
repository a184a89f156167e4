"""``embedstore train``: fit a MusCALL-style two-tower model on audio and captions."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from cli.common import console, finite, handle_errors
from embedstore.errors import InputError
from embedstore.store.names import check_name
from embedstore.store.outputs import claimed_outputs, mark_folder, read_marker, replace_folder

commands = typer.Typer()


@commands.command()
@handle_errors
def train(
    csv: Path = typer.Option(..., "--csv", help="CSV with columns path,caption and optionally split (train/val); several rows may share a path."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for checkpoint.pt and the exported model (config.json, model.safetensors, metrics.json)."),
    root: Optional[Path] = typer.Option(None, "--root", help="Folder that relative audio paths start from (default: the CSV's folder)."),
    epochs: int = typer.Option(40, "--epochs", min=1, max=100_000, help="Passes over the training clips."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=2, max=100_000, help="Clips per contrastive batch."),
    lr: float = typer.Option(1e-3, "--lr", min=0.0, max=10.0, callback=finite, help="AdamW learning rate (cosine-decayed to zero)."),
    val_fraction: float = typer.Option(0.1, "--val-fraction", min=0.0, max=1.0, callback=finite, help="Share of clips held out for validation when the CSV has no split column."),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="Seed for the split, batch order, caption choice and initial weights."),
    loss: str = typer.Option("clip", "--loss", help="clip (symmetric InfoNCE) or weighted_clip (weighted by caption similarity)."),
    window_seconds: float = typer.Option(2.0, "--window-seconds", min=0.1, max=60.0, callback=finite, help="Audio window length the model is built for."),
    width: int = typer.Option(8, "--width", min=1, max=256, help="Channels of the ResNet stem (MusCALL's conv_out_channels; the authors use 16)."),
    pitch_shift: float = typer.Option(0.0, "--pitch-shift", min=0.0, max=24.0, callback=finite, help="Augment training clips by resampling them up to +- this many semitones (0: off)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/checkpoint.pt (same CSV and settings)."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace a model folder that `embedstore train` wrote before (never any other folder)."),
    name: str = typer.Option("muscall-trained", "--name", help="Model name recorded in config.json."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=1024, help="Torch CPU threads (default: torch's choice; 1 is often fastest on a busy machine)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 (IEEE, TF32 off), or bf16 / fp16 under autocast (fp16 with a gradient scaler); a resumed run keeps the checkpoint's."),
):
    """Train a MusCALL-style model: its log-mel ResNet audio tower and projections against the frozen all-MiniLM-L6-v2 text tower, with a checkpoint every epoch.

    Prints the validation loss and audio-to-text recall (R@1, R@5) after each epoch. The exported folder loads with `embedstore extract --model muscall --checkpoint OUT`.
    """
    from embedstore.extract import require_torch

    require_torch()
    from embedstore.train import TrainConfig, fit, output_files, read_captions

    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, val_fraction=val_fraction,
                         seed=seed, loss=loss, window_seconds=window_seconds,
                         conv_out_channels=width, pitch_shift=pitch_shift)
    config.validate()
    name = check_name(name, "model name")  # the store's model name later: the one name policy
    table = read_captions(csv, root, val_fraction=val_fraction, seed=seed)
    # Only a folder this command made is ever replaced (or resumed): never a model folder
    # from elsewhere, such as the bundled notes-toy.
    earlier = read_marker(out)
    if earlier and earlier.get("command") == "train" and not (overwrite or resume):
        raise InputError(f"{out} holds an earlier `embedstore train` run: pass --resume to continue it, "
                         f"--overwrite to replace it, or give another --out")
    # A second train into the same folder is refused at once (the writer lock)
    with claimed_outputs(folders=[out], inputs=[csv, root], overwrite=overwrite, resume=resume,
                         command="train"):
        if overwrite and not resume:
            replace_folder(out)
        mark_folder(out, "train", output_files())
        n_val = int(table.is_val.sum())
        console.print(f"{len(table.clips)} clips, {len(table.captions)} captions "
                      f"({len(table.captions) - n_val} train, {n_val} validation rows)",
                      highlight=False)

        with Progress(TextColumn("epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            task = progress.add_task("train", total=None, epoch=0, loss=float("nan"))

            def on_step(epoch, step, n_steps, step_loss):
                progress.update(task, completed=step, total=n_steps, epoch=epoch, loss=step_loss)

            def on_epoch(record):
                validation = ("no validation rows" if record.val_loss is None else
                              f"val loss {record.val_loss:.3f}  R@1 {record.val_r1:.3f}  "
                              f"R@5 {record.val_r5:.3f}")
                progress.console.print(
                    f"epoch {record.epoch:3d}  train loss {record.train_loss:.3f}  {validation}  "
                    f"({record.seconds:.1f} s)", highlight=False)

            result = fit(table, out, config, resume=resume, name=name, threads=threads,
                         device=device, precision=precision, on_step=on_step, on_epoch=on_epoch)

        if result.resumed_from:
            console.print(f"resumed after epoch {result.resumed_from}", highlight=False)
        console.print(f"model written to {out} (config.json, model.safetensors, metrics.json)",
                      highlight=False)
