"""``embedstore extract`` under SIGKILL: benchmarks/soak_extract.py with a small budget here,
a large one by hand (``python benchmarks/soak_extract.py --kills 20``) or with ``-m slow``."""

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("soxr")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import soak_extract  # noqa: E402

from embedstore.store import create_store  # noqa: E402


def test_kills_during_the_final_write_and_at_random_leave_the_uninterrupted_store(tmp_path):
    figures = {}
    soak_extract.soak(kills=5, seed=0, clips=8, workdir=tmp_path, figures=figures)
    phases = len(soak_extract.FINALIZE_PHASES)
    assert figures["random_kills"] == 5 and figures["finalize_kills"] == phases
    assert figures["rounds"] >= phases + 1
    # at least one random kill landed mid-run, after the run had journaled new rows
    assert figures["kills_after_new_rows"] >= 1
    assert figures["items"] == 7 and figures["failed"] == 1  # clip 6 is unreadable
    line = soak_extract.summary_line(figures, True)
    assert line.startswith("soak_extract: 5 random SIGKILLs (")
    assert "+ 5 during the final write survived" in line


def write_store(path, joint):
    with create_store(path, model="m", dataset="d", classes=["a", "b"]) as w:
        w.set_items(["x", "y"], ["x.wav", "y.wav"], labels=[0, 1])
        w.add_audio("joint", joint)


def test_the_check_catches_a_single_flipped_bit(tmp_path):
    joint = np.array([[0.6, 0.8], [1.0, 0.0]], np.float32)
    write_store(tmp_path / "reference.h5", joint)
    reference = soak_extract.read_store(tmp_path / "reference.h5")
    write_store(tmp_path / "same.h5", joint.copy())
    soak_extract.check_finished(tmp_path / "same.h5", reference)
    flipped = joint.copy()
    flipped.view(np.uint32)[1, 1] ^= 1  # 0.0 -> the smallest subnormal
    write_store(tmp_path / "flipped.h5", flipped)
    with pytest.raises(soak_extract.SoakFailure, match="audio differ"):
        soak_extract.check_finished(tmp_path / "flipped.h5", reference)


def test_the_script_refuses_unknown_phases(capsys):
    with pytest.raises(SystemExit):
        soak_extract.main(["--phases", "store-flush,lunch"])
    assert "unknown phase(s): lunch" in capsys.readouterr().err


@pytest.mark.slow
def test_twenty_random_kills_and_every_final_write_kill(tmp_path, capsys):
    code = soak_extract.main(["--kills", "20", "--seed", "3", "--clips", "24", "--workdir", str(tmp_path)])
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 0, line
    assert line.startswith("soak_extract: 20 random SIGKILLs (")
    assert "+ 5 during the final write survived" in line
    assert "verify ok: yes" in line
