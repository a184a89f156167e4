"""A small real torch encoder for the extraction tests, and a CLI entry point that knows it.

``TinyEncoder`` meets the Encoder contract with real computation: framed log spectra
through a linear layer (prejoint) and a projection head (joint, unit length); text as
byte histograms through the same kind of layers. Its weights are seeded or read from a
safetensors checkpoint, whose SHA-256 is its provenance.

Run as a script, it registers the model as ``test-tiny`` and runs the ``embedstore``
CLI, so a test can kill a real extraction process. ``EXTRACT_TEST_DELAY`` (seconds)
slows every audio batch down to give the test time to kill it mid-run.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from embedstore.models.base import Encoder

NAME = "test-tiny"
FRAME, HOP = 256, 128


def make_weights(seed: int) -> dict[str, torch.Tensor]:
    """Seeded random weights of the tiny encoder."""
    gen = torch.Generator().manual_seed(seed)
    shapes = {"audio_pre": (24, FRAME // 2 + 1), "audio_head": (16, 24),
              "text_pre": (20, 256), "text_head": (16, 20)}
    return {name: torch.randn(shape, generator=gen) / shape[1] ** 0.5 for name, shape in shapes.items()}


def save_checkpoint(path: Path, seed: int) -> Path:
    from safetensors.torch import save_file

    save_file(make_weights(seed), str(path))
    return path


class TinyEncoder(Encoder):
    name = NAME
    sample_rate = 16000
    window_seconds = 0.5
    int16_roundtrip = False
    audio_dims = {"prejoint": 24, "joint": 16}
    text_dims = {"prejoint": 20, "joint": 16}

    def __init__(self, checkpoint: str | None = None, seed: int = 0):
        if checkpoint is None:
            self.weights = make_weights(seed)
            self.checkpoint = {"file": None, "seed": seed}
        else:
            from safetensors.torch import load_file

            self.weights = load_file(checkpoint)
            self.checkpoint = {"file": Path(checkpoint).name}
        digest = hashlib.sha256()
        for key in sorted(self.weights):
            digest.update(key.encode() + self.weights[key].numpy().tobytes())
        self.checkpoint["sha256"] = digest.hexdigest()
        self.window = torch.hann_window(FRAME)
        self.delay = float(os.environ.get("EXTRACT_TEST_DELAY", "0"))

    def _towers(self, features: torch.Tensor, tower: str) -> dict[str, np.ndarray]:
        pre = torch.tanh(features @ self.weights[f"{tower}_pre"].T)
        joint = torch.nn.functional.normalize(pre @ self.weights[f"{tower}_head"].T, dim=-1)
        return {"prejoint": pre.numpy().astype(np.float32), "joint": joint.numpy().astype(np.float32)}

    def embed_audio(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        assert windows.shape[1] == self.window_samples, windows.shape
        time.sleep(self.delay)
        with torch.inference_mode():
            frames = torch.from_numpy(np.ascontiguousarray(windows)).unfold(1, FRAME, HOP)
            spectra = torch.fft.rfft(frames * self.window).abs().add(1e-4).log().mean(dim=1)
            return self._towers(spectra, "audio")

    def embed_text(self, texts: list[str]) -> dict[str, np.ndarray]:
        counts = np.zeros((len(texts), 256), dtype=np.float32)
        for row, text in enumerate(texts):
            np.add.at(counts[row], np.frombuffer(text.encode(), dtype=np.uint8), 1.0)
        with torch.inference_mode():
            return self._towers(torch.from_numpy(counts / np.maximum(counts.sum(1, keepdims=True), 1)), "text")

    def provenance(self) -> dict:
        return {"name": self.name, "architecture": {"frame": FRAME, "hop": HOP},
                "checkpoint": dict(self.checkpoint), "precision": "fp32", "device": "cpu",
                "versions": {"torch": torch.__version__}}


def load_tiny(checkpoint=None, device="cpu", precision="fp32", cache_dir=None, **_) -> TinyEncoder:
    return TinyEncoder(checkpoint)


def register() -> None:
    from embedstore.models import MODELS

    MODELS[NAME] = load_tiny


if __name__ == "__main__":
    register()
    from cli.main import app

    sys.argv[0] = "embedstore"
    app()
