"""A user's hostile inputs beyond the harness's table (the release test): each gives one
clear error line and a non-zero exit, or works; never a traceback, a hang or a lost file."""

from __future__ import annotations

import numpy as np
from cli_helpers import invoke

from embedstore.store import create_store

CLASSES = ["Violin", "Flute", "Oboe"]


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def store_with_an_empty_prompt_set(path):
    rng = np.random.default_rng(0)
    with create_store(path, model="m", dataset="d", classes=CLASSES) as w:
        w.set_items([f"i{k}" for k in range(15)], labels=np.repeat(np.arange(3), 5))
        w.add_audio("joint", rng.normal(size=(15, 8)))
        w.add_prompt_set("empty", [], np.zeros(0, np.int32), {"joint": np.zeros((0, 8))})
        w.add_prompt_set("ok", CLASSES, np.arange(3), {"joint": rng.normal(size=(3, 8))})
    return path


def test_a_prompt_set_with_zero_prompts(tmp_path):
    store = store_with_an_empty_prompt_set(tmp_path / "s.h5")
    # analyses over every class prompt set leave the empty one out instead of failing on it
    for command in ("zeroshot", "spaces"):
        result = invoke("analyze", command, store, "--json", tmp_path / f"{command}.json")
        assert result.exit_code == 0, result.output
    assert '"empty"' not in (tmp_path / "zeroshot.json").read_text()
    # named explicitly: one line, before any computation (no numpy "Mean of empty slice" first)
    for args in (["analyze", "modality-gap", store, "--prompts", "empty"],
                 ["neighbors", store, "--prompt", "empty:0"]):
        result = invoke(*args)
        assert result.exit_code == 1
        assert error_lines(result) == ["error: prompt set 'empty' holds no prompts"]
