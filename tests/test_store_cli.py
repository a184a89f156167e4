"""`embedstore info | verify | import | export`: results, one-line errors and exit codes."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import invoke

from embedstore.store import open_store


@pytest.fixture
def release(tmp_path):
    """Files shaped like a paper's release: items CSV, audio .npy per space, prompts, text .npy."""
    rng = np.random.default_rng(3)
    (tmp_path / "items.csv").write_text(
        "clip,path,instrument,pitch\n"
        + "".join(f"c{i},notes/c{i}.wav,{['violin', 'flute', 'oboe'][i % 3]},{60 + i}\n" for i in range(9))
    )
    np.save(tmp_path / "joint.npy", rng.standard_normal((9, 4)).astype(np.float32))
    np.save(tmp_path / "prejoint.npy", rng.standard_normal((9, 6)))
    (tmp_path / "classes.txt").write_text("violin\nflute\noboe\n")
    (tmp_path / "track.txt").write_text("A violin track\nA flute track\nAn oboe track\n")
    (tmp_path / "multi.txt").write_text("violin\nfiddle\nflute\n")
    (tmp_path / "multi_classes.txt").write_text("violin\nviolin\nflute\n")
    np.save(tmp_path / "track_joint.npy", rng.standard_normal((3, 4)))
    np.save(tmp_path / "multi_joint.npy", rng.standard_normal((3, 4)))
    return tmp_path


def import_args(d, out="s.h5", *extra):
    return [
        "import", d / out, "--items", d / "items.csv", "--id-column", "clip",
        "--label-column", "instrument", "--classes", d / "classes.txt",
        "--audio", f"joint={d / 'joint.npy'}", "--audio", f"prejoint={d / 'prejoint.npy'}",
        "--prompts", f"track={d / 'track.txt'}", "--text", f"track:joint={d / 'track_joint.npy'}",
        "--prompts", f"multi={d / 'multi.txt'}", "--prompt-classes", f"multi={d / 'multi_classes.txt'}",
        "--text", f"multi:joint={d / 'multi_joint.npy'}",
        "--model", "paper-clap", "--dataset", "tinysol", *extra,
    ]  # fmt: skip


def test_import_info_verify_export(release):
    d = release
    result = invoke(*import_args(d))
    assert result.exit_code == 0, result.output
    with open_store(d / "s.h5") as st:
        assert st.classes == ["violin", "flute", "oboe"]
        assert st.labels.tolist() == [0, 1, 2] * 3
        assert st.item_paths[0] == "notes/c0.wav"
        assert st.metadata["pitch"][2] == "62"
        np.testing.assert_array_equal(st.audio("joint"), np.load(d / "joint.npy"))
        np.testing.assert_allclose(st.audio("prejoint"), np.load(d / "prejoint.npy"), rtol=1e-6)
        assert st.prompt_set("multi").classes.tolist() == [0, 0, 1]
        assert st.model == "paper-clap"
    info = invoke("info", d / "s.h5")
    assert info.exit_code == 0
    for word in ("paper-clap", "tinysol", "violin", "prejoint", "multi", "float32"):
        assert word in info.output
    assert invoke("verify", d / "s.h5").exit_code == 0

    result = invoke("export", d / "s.h5", "--audio", "joint", "--out", d / "joint_out")
    assert result.exit_code == 0
    np.testing.assert_array_equal(np.load(d / "joint_out.npy"), np.load(d / "joint.npy"))
    assert (d / "joint_out.csv").read_text().splitlines()[:2] == ["id,path", "c0,notes/c0.wav"]
    invoke("export", d / "s.h5", "--text", "multi:joint", "--out", d / "multi_out")
    # The prompt CSV is an import format: class,prompt.
    assert (d / "multi_out.csv").read_text().splitlines() == ["class,prompt", "violin,violin", "violin,fiddle", "flute,flute"]


def test_import_onehot_multilabel_float16(tmp_path):
    (tmp_path / "items.csv").write_text("id,guitar,voice,drums\na,1,1,0\nb,0,0,1\nc,1,0,1\n")
    np.save(tmp_path / "a.npy", np.arange(6, dtype=np.float32).reshape(3, 2))
    result = invoke(
        "import", tmp_path / "s.h5", "--items", tmp_path / "items.csv", "--id-column", "id",
        "--onehot", "--audio", f"joint={tmp_path / 'a.npy'}", "--float16",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    with open_store(tmp_path / "s.h5") as st:
        assert st.multilabel and st.classes == ["guitar", "voice", "drums"]
        assert st.label_matrix.tolist() == [[1, 1, 0], [0, 0, 1], [1, 0, 1]]
        assert st.audio("joint", lazy=True).dtype == np.float16


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: np.save(d / "joint.npy", np.ones((8, 4))), "8 rows for 9 items"),
        (lambda d: np.save(d / "joint.npy", np.ones((9, 4, 1))), "must be 2-D"),
        (lambda d: np.save(d / "joint.npy", np.full((9, 4), np.inf)), "NaN or inf"),
        (lambda d: np.save(d / "joint.npy", np.array([{"a": 1}] * 9), allow_pickle=True), "not a plain numeric"),
        (lambda d: (d / "joint.npy").write_bytes(b"garbage"), "not a plain numeric|not a readable"),
        (lambda d: (d / "joint.npy").unlink(), "not found"),
        (lambda d: (d / "classes.txt").write_text("violin\nflute\n"), "'oboe' is not in the classes file"),
        (lambda d: (d / "items.csv").write_text("clip,path,instrument\nx,a,violin\nx,b,flute\n"), "unique"),
        (lambda d: (d / "track.txt").write_text("A violin track\n"), "1 prompts for 3 classes"),
        (lambda d: (d / "multi_classes.txt").write_text("violin\nviolin\ntrumpet\n"), "unknown class 'trumpet'"),
        (lambda d: np.save(d / "track_joint.npy", np.ones((4, 4))), "4 rows for 3 prompts"),
    ],
)
def test_import_errors_are_one_line_and_write_nothing(release, change, message):
    change(release)
    result = invoke(*import_args(release))
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:")
    import re

    assert re.search(message, " ".join(result.output.split())), result.output
    assert not (release / "s.h5").exists()
    assert not [p for p in release.iterdir() if p.name.endswith(".tmp")]


def test_import_refuses_to_overwrite(release):
    assert invoke(*import_args(release)).exit_code == 0
    before = (release / "s.h5").read_bytes()
    result = invoke(*import_args(release))
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert (release / "s.h5").read_bytes() == before
    assert invoke(*import_args(release, "s.h5", "--overwrite")).exit_code == 0


def test_verify_exit_codes(release, tmp_path):
    invoke(*import_args(release))
    store = release / "s.h5"
    data = bytearray(store.read_bytes())
    import h5py

    with h5py.File(store, "r") as f:
        offset = f["audio/joint"].id.get_chunk_info(0).byte_offset
    data[offset + 3] ^= 0xFF
    (tmp_path / "flipped.h5").write_bytes(bytes(data))
    result = invoke("verify", tmp_path / "flipped.h5")
    assert result.exit_code == 1 and "/audio/joint" in result.output
    (tmp_path / "short.h5").write_bytes(store.read_bytes()[:3000])
    result = invoke("verify", tmp_path / "short.h5")
    assert result.exit_code == 1 and "truncated" in result.output
    result = invoke("verify", release / "items.csv")
    assert result.exit_code == 2 and "not an HDF5 file" in result.output
    assert invoke("info", release / "items.csv").exit_code == 2


def test_export_errors(release):
    invoke(*import_args(release))
    result = invoke("export", release / "s.h5", "--audio", "nope", "--out", release / "x")
    assert result.exit_code == 1 and "no audio space 'nope'" in result.output
    # The output policy creates missing parent folders.
    result = invoke("export", release / "s.h5", "--audio", "joint", "--out", release / "new_dir" / "x")
    assert result.exit_code == 0 and (release / "new_dir" / "x.npy").is_file()
    assert invoke("export", release / "s.h5", "--audio", "joint", "--text", "track:joint", "--out", release / "x").exit_code == 2
    assert not list(release.glob("x.*"))


def test_console_script_reports_errors_without_traceback(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    proc = subprocess.run(
        [sys.executable, "-c", "from cli.main import app; app()", "verify", str(bad)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "damaged or truncated" in proc.stderr


# -- issue 10: labels, prompt order, export as import's inverse, space names, hostile CSVs --


def write_onehot(folder, rows):
    (folder / "items.csv").write_text("id,guitar,voice,drums\n" + "".join(f"i{n},{r}\n" for n, r in enumerate(rows)))
    np.save(folder / "a.npy", np.ones((len(rows), 2), dtype=np.float32))
    return ["import", folder / "s.h5", "--items", folder / "items.csv", "--id-column", "id", "--onehot",
            "--audio", f"joint={folder / 'a.npy'}"]


def test_onehot_with_one_class_per_row_is_single_label_unless_asked(tmp_path):
    args = write_onehot(tmp_path, ["0,1,0", "1,0,0", "0,0,1"])
    result = invoke(*args)
    assert result.exit_code == 0 and "single-label" in result.output
    with open_store(tmp_path / "s.h5") as st:
        assert not st.multilabel and st.labels.tolist() == [1, 0, 2]
    assert "single-label" in invoke("info", tmp_path / "s.h5").output
    assert invoke(*args, "--multilabel", "--overwrite").exit_code == 0
    with open_store(tmp_path / "s.h5") as st:
        assert st.multilabel and st.label_matrix.tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 1]]
    assert "multi-label" in invoke("info", tmp_path / "s.h5").output
    write_onehot(tmp_path, ["0,1,0", "0,0,0", "0,0,1"])  # a row without a class: multi-label
    assert invoke(*args, "--overwrite").exit_code == 0
    with open_store(tmp_path / "s.h5") as st:
        assert st.multilabel


def test_prompt_lines_need_an_explicit_class_order(release):
    d = release
    args = [a for a in import_args(d) if a not in ("--classes", d / "classes.txt")]
    result = invoke(*args)
    assert result.exit_code == 1 and not (d / "s.h5").exists()
    message = " ".join(result.output.split())
    for flag in ("--classes", "--prompt-classes", "class,prompt CSV", "--onehot"):
        assert flag in message
    # The same prompts as a class,prompt CSV, in another order than the sorted classes.
    (d / "track.csv").write_text("class,prompt\noboe,An oboe track\nviolin,A violin track\nflute,A flute track\n")
    args = [a if a != f"track={d / 'track.txt'}" else f"track={d / 'track.csv'}" for a in args]
    assert invoke(*args).exit_code == 0, invoke(*args, "--overwrite").output
    with open_store(d / "s.h5") as st:
        assert st.classes == ["flute", "oboe", "violin"]  # sorted: no order was given for the classes
        ps = st.prompt_set("track")
        assert [st.classes[c] for c in ps.classes] == ["oboe", "violin", "flute"]
        assert ps.prompts[0] == "An oboe track"


@pytest.mark.parametrize("space, words", [("pre_joint", "did you mean 'prejoint'"), ("Joint", "did you mean 'joint'"),
                                          ("mert", "--extra-space mert")])
def test_a_space_the_spec_does_not_name_is_refused_unless_asked(release, space, words):
    d = release
    args = [a.replace("prejoint=", f"{space}=") if isinstance(a, str) else a for a in import_args(d)]
    result = invoke(*args)
    assert result.exit_code == 1 and words in " ".join(result.output.split()) and not (d / "s.h5").exists()
    assert invoke(*args, "--extra-space", space).exit_code == 0
    with open_store(d / "s.h5") as st:
        assert st.audio_spaces == sorted(["joint", space])


@pytest.mark.parametrize(
    "csv_text, words",
    [
        ("clip,path,instrument\nc0,a,violin\nc1,b\n", "line 3 has 2 cells, the header 3"),
        ("clip,path,instrument,\nc0,a,violin,\n", "header cell 4 is empty"),
        ("clip,path,instrument,.\nc0,a,violin,x\n", "invalid metadata column '.'"),
        ("clip,path,instrument\nc\x000,a,violin\n", "control character"),
        ("clip,path,instrument,x,x\nc0,a,violin,1,2\n", "occurs twice"),
    ],
)
def test_hostile_items_csvs_are_one_line_errors(tmp_path, csv_text, words):
    (tmp_path / "items.csv").write_text(csv_text)
    np.save(tmp_path / "joint.npy", np.ones((csv_text.count("\n") - 1, 2)))
    result = invoke("import", tmp_path / "s.h5", "--items", tmp_path / "items.csv", "--id-column", "clip",
                    "--label-column", "instrument", "--audio", f"joint={tmp_path / 'joint.npy'}")
    assert result.exit_code == 1 and words in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "s.h5").exists()


def test_import_records_no_private_paths_or_host(release):
    d = release
    assert invoke(*import_args(d)).exit_code == 0
    with open_store(d / "s.h5") as st:
        text = str(st.provenance)
        assert "host" not in st.provenance and "user" not in st.provenance
        assert str(d) not in text and st.provenance["items_csv"] == "items.csv"
    assert invoke(*import_args(d, "s.h5", "--overwrite", "--record-host")).exit_code == 0
    with open_store(d / "s.h5") as st:
        assert st.provenance["record_host"] is True and st.provenance["host"]
