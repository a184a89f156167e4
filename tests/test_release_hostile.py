"""A user's hostile inputs beyond the harness's table (the release test): each gives one
clear error line and a non-zero exit, or works; never a traceback, a hang or a lost file."""

from __future__ import annotations

import numpy as np
import pytest
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


def clip_folder(tmp_path):
    import soundfile as sf

    folder = tmp_path / "clips"
    folder.mkdir()
    t = np.arange(8000) / 16000
    for i in range(4):
        sf.write(folder / f"c{i}.wav", (0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t)).astype(np.float32), 16000)
    return folder


def test_a_csv_that_is_not_utf8_is_named_in_one_line(tmp_path):
    pytest.importorskip("torch")  # extract checks its extra first
    folder = clip_folder(tmp_path)
    rows = {"folder": "path,label\nc0.wav,tr\u00e8s\nc1.wav,haut\n",
            "captions": "path,caption\nc0.wav,tr\u00e8s bas\nc1.wav,haut\n"}
    for dataset, text in rows.items():
        csv_file = tmp_path / f"{dataset}-latin1.csv"
        csv_file.write_bytes(text.encode("latin-1"))
        result = invoke("extract", "--dataset", dataset, "--root", folder, "--labels", csv_file,
                        "--out", tmp_path / f"{dataset}.h5")
        assert result.exit_code == 1, result.output
        [line] = error_lines(result)
        assert line.startswith(f"error: cannot read {csv_file}: 'utf-8' codec can't decode")
        assert line.endswith("(save it as UTF-8 text)")
        assert not (tmp_path / f"{dataset}.h5").exists()


def test_a_decode_error_no_reader_named_is_still_one_line():
    import typer
    from typer.testing import CliRunner

    from cli.common import handle_errors

    app = typer.Typer()

    @app.command()
    @handle_errors
    def read() -> None:
        b"\xe8".decode("utf-8")

    result = CliRunner().invoke(app, [])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert error_lines(result) == ["error: a text file is not UTF-8 ('utf-8' codec can't decode byte 0xe8 in "
                                   "position 0: unexpected end of data); save it as UTF-8"]


def test_csv_paths_stay_inside_the_dataset_folder(tmp_path):
    from embedstore.datasets import load_dataset
    from embedstore.errors import InputError

    folder = clip_folder(tmp_path)
    outside = tmp_path / "outside.wav"
    outside.write_bytes((folder / "c0.wav").read_bytes())
    for dataset, header in (("folder", "path,label"), ("captions", "path,caption")):
        for bad in ("../outside.wav", str(outside), "sub/../../outside.wav"):
            csv_file = tmp_path / f"{dataset}.csv"
            csv_file.write_text(f"{header}\n{bad},x\nc1.wav,y\n", encoding="utf-8")
            with pytest.raises(InputError, match="is not inside the dataset folder"):
                load_dataset(dataset, folder, csv_file)
        # an absolute path inside the folder is kept, relative to it: no absolute path in the store
        csv_file.write_text(f"{header}\n{folder / 'c0.wav'},x\nc1.wav,y\n", encoding="utf-8")
        ds = load_dataset(dataset, folder, csv_file)
        assert [item.id for item in ds.items] == ["c0.wav", "c1.wav"]
        assert ds.items[0].path == folder / "c0.wav"
