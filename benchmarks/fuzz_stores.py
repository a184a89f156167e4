"""Fuzz the store readers with damaged, mistagged and foreign files.

Builds valid stores (single- and multi-label, float32 and float16, several prompt sets),
damages copies of them in many ways (flipped bytes anywhere, truncations, deleted,
reshaped or retyped datasets, wrong tags and versions, foreign HDF5 files, random bytes,
an empty file, a directory) and runs every reader on each: ``open_store`` and all its
accessors, ``verify_store``, and the CLI commands ``info``, ``verify`` and ``export``.

Every run must end in success or in one of the project's errors (one line on stderr,
exit 1 or 2): never another exception, a traceback, a hang or a crash. The readers run
in a worker process, so a segfault or a hang in the HDF5 library is caught and counted
instead of ending the fuzzer. A store that ``verify`` calls intact must hold the same
digested arrays as the store it was made from.

    python benchmarks/fuzz_stores.py                 # 3000 damaged stores
    python benchmarks/fuzz_stores.py -n 200 --seed 7 # a quick run

The figures printed at the end go into ``docs/reliability.md``.
``tests/test_fuzz_stores.py`` drives the same mutations and worker with hypothesis on a
small budget.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CLASSES = ["violin", "flute", "oboe", "horn"]

# -- valid stores --------------------------------------------------------------------

KINDS = ("single", "multi", "float16", "prompts")


def build_store(path: Path, kind: str, seed: int = 0) -> None:
    """Write a small valid store of ``kind`` (one of :data:`KINDS`) at ``path``."""
    from embedstore.store import create_store

    rng = np.random.default_rng(seed)
    n = 10
    dtype = "float16" if kind == "float16" else "float32"
    with create_store(path, model="toy", dataset="fuzz", classes=CLASSES, provenance={"checkpoint_sha256": "ab"}) as w:
        if kind == "multi":
            labels = {"label_matrix": rng.integers(0, 2, (n, len(CLASSES)))}
        else:
            labels = {"labels": np.arange(n) % len(CLASSES)}
        w.set_items(
            [f"id{i}" for i in range(n)],
            [f"notes/{i}.wav" for i in range(n)],
            metadata={"family": np.array(["strings", "winds"] * (n // 2)), "pitch": np.arange(n) + 60},
            **labels,
        )
        w.add_audio("joint", rng.standard_normal((n, 8)), dtype=dtype)
        w.add_audio("prejoint", rng.standard_normal((n, 12)), dtype=dtype)
        w.add_prompt_set("track", [f"A {c} track" for c in CLASSES], range(len(CLASSES)), {"joint": rng.standard_normal((4, 8))}, dtype=dtype)
        if kind == "prompts":
            w.add_prompt_set(
                "ontology",
                ["bowed string", "woodwind", "brass", "instrument"],
                [0, 1, 3, -1],
                {"joint": rng.standard_normal((4, 8)), "prejoint": rng.standard_normal((4, 12))},
                terms=["bowed", "wood", "brass", "any"],
            )
        w.add_failed("notes/broken.wav", "zero-length file")


def base_stores(folder: Path) -> dict[str, Path]:
    """One valid store of every kind in ``folder``."""
    out = {}
    for i, kind in enumerate(KINDS):
        out[kind] = folder / f"base-{kind}.h5"
        if not out[kind].exists():
            build_store(out[kind], kind, seed=i)
    return out


# -- mutations -----------------------------------------------------------------------
# Each takes (path, rng) on a copy of a valid store, damages it in place and returns a
# short description. Byte-level ones may hit anything: superblock, object headers, heaps,
# B-trees, chunks, attributes or padding.


def flip_bytes(path: Path, rng: np.random.Generator) -> str:
    data = bytearray(path.read_bytes())
    k = int(rng.integers(1, 9))
    # Half the time aim at the first 4 KiB, where the superblock and root headers live.
    limit = min(len(data), 4096) if rng.random() < 0.5 else len(data)
    offsets = rng.integers(0, limit, k)
    for off in offsets:
        data[off] ^= 1 << int(rng.integers(0, 8))
    path.write_bytes(bytes(data))
    return f"flip {k} bits at {sorted(int(o) for o in offsets)}"


def overwrite_run(path: Path, rng: np.random.Generator) -> str:
    data = bytearray(path.read_bytes())
    length = int(rng.integers(2, 64))
    off = int(rng.integers(0, max(1, len(data) - length)))
    fill = rng.choice([0x00, 0xFF, -1])
    data[off : off + length] = (rng.integers(0, 256, length, dtype=np.uint8).tobytes() if fill < 0 else bytes([fill]) * length)
    path.write_bytes(bytes(data))
    return f"overwrite {length} bytes at {off}"


def truncate(path: Path, rng: np.random.Generator) -> str:
    size = path.stat().st_size
    keep = int(rng.integers(0, size))
    with open(path, "r+b") as fh:
        fh.truncate(keep)
    return f"truncate to {keep} of {size} bytes"


def extend(path: Path, rng: np.random.Generator) -> str:
    extra = int(rng.integers(1, 4096))
    with open(path, "ab") as fh:
        fh.write(rng.integers(0, 256, extra, dtype=np.uint8).tobytes())
    return f"append {extra} random bytes"


def _objects(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visit(names.append)
    return names


def _datasets(f: h5py.File) -> list[str]:
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def delete_object(path: Path, rng: np.random.Generator) -> str:
    with h5py.File(path, "r+") as f:
        name = str(rng.choice(_objects(f)))
        del f[name]
    return f"delete /{name}"


def _replace_dataset(f: h5py.File, name: str, data) -> None:
    attrs = dict(f[name].attrs)
    del f[name]
    ds = f.create_dataset(name, data=data)
    for key, value in attrs.items():
        ds.attrs[key] = value


def reshape_dataset(path: Path, rng: np.random.Generator) -> str:
    with h5py.File(path, "r+") as f:
        name = str(rng.choice(_datasets(f)))
        old = f[name][()]
        arr = np.asarray(old)
        choice = int(rng.integers(0, 5))
        if choice == 0 or arr.ndim == 0:
            new = arr.reshape(-1)[:0] if arr.size else np.zeros((0,), arr.dtype)  # empty
        elif choice == 1:
            new = arr.reshape(-1)  # flattened
        elif choice == 2:
            new = arr[: max(0, arr.shape[0] - int(rng.integers(1, 4)))]  # fewer rows
        elif choice == 3:
            new = np.concatenate([arr, arr[:1]]) if arr.shape[0] else arr  # one more row
        else:
            new = arr.reshape(arr.shape + (1,))  # an extra axis
        _replace_dataset(f, name, new)
    return f"reshape /{name} {np.shape(old)} -> {np.shape(new)}"


RETYPES = ("int8", "float64", "string", "bool", "compound", "scalar", "nan", "huge")


def retype_dataset(path: Path, rng: np.random.Generator) -> str:
    with h5py.File(path, "r+") as f:
        name = str(rng.choice(_datasets(f)))
        shape = f[name].shape
        how = str(rng.choice(RETYPES))
        n = shape[0] if shape else 1
        if how == "int8":
            data = rng.integers(-128, 127, shape or (), dtype=np.int8)
        elif how == "float64":
            data = rng.standard_normal(shape or ())
        elif how == "string":
            data = np.array([f"s{i}" for i in range(max(n, 1))][: n or None], dtype=object)
            data = data.astype(h5py.string_dtype()) if data.size else np.zeros(0, h5py.string_dtype())
        elif how == "bool":
            data = rng.integers(0, 2, shape or ()).astype(bool)
        elif how == "compound":
            data = np.zeros(n, dtype=[("a", "i4"), ("b", "f4")])
        elif how == "scalar":
            data = np.float32(1.5)
        elif how == "nan":
            data = np.full(shape or (), np.nan, dtype=np.float32)
        else:
            data = np.full(shape or (), 2**40, dtype=np.int64)
        _replace_dataset(f, name, data)
    return f"retype /{name} to {how}"


def swap_group_and_dataset(path: Path, rng: np.random.Generator) -> str:
    with h5py.File(path, "r+") as f:
        name = str(rng.choice(_objects(f)))
        obj = f[name]
        attrs = dict(obj.attrs)
        is_group = isinstance(obj, h5py.Group)
        del f[name]
        new = f.create_dataset(name, data=np.arange(3)) if is_group else f.create_group(name)
        for key, value in attrs.items():
            new.attrs[key] = value
    return f"{'group' if is_group else 'dataset'} /{name} replaced by a {'dataset' if is_group else 'group'}"


BAD_TAGS = ("embedding", "string-array", "json", "items", "dataframe", "nonsense", "", "embedstore")
BAD_VERSIONS = ("2.0.0", "99.1", "0.9.0", "abc", "", "1", "1.x.y", "-1.0", " 1.0.0", "１.0.0")


def _bad_attr_value(rng: np.random.Generator, text: str):
    how = int(rng.integers(0, 6))
    return [text, text.encode(), np.array([text, text], dtype=object), np.int64(3), np.float64(1.0), np.zeros(0)][how]


def change_tag(path: Path, rng: np.random.Generator) -> str:
    from embedstore.store import elements as el

    with h5py.File(path, "r+") as f:
        target = f if rng.random() < 0.2 else f[str(rng.choice(_objects(f)))]
        value = _bad_attr_value(rng, str(rng.choice(BAD_TAGS)))
        target.attrs[el.TYPE_ATTR] = value
        return f"tag {target.name} as {value!r}"


def change_version(path: Path, rng: np.random.Generator) -> str:
    from embedstore.store import elements as el

    with h5py.File(path, "r+") as f:
        target = f if rng.random() < 0.3 else f[str(rng.choice(_objects(f)))]
        value = _bad_attr_value(rng, str(rng.choice(BAD_VERSIONS)))
        target.attrs[el.VERSION_ATTR] = value
        return f"version of {target.name} set to {value!r}"


def delete_attribute(path: Path, rng: np.random.Generator) -> str:
    with h5py.File(path, "r+") as f:
        holders = [f] + [f[n] for n in _objects(f)]
        holders = [h for h in holders if len(h.attrs)]
        target = holders[int(rng.integers(0, len(holders)))]
        key = str(rng.choice(list(target.attrs)))
        del target.attrs[key]
        return f"delete attribute {key!r} of {target.name}"


def garble_attribute(path: Path, rng: np.random.Generator) -> str:
    with h5py.File(path, "r+") as f:
        holders = [f] + [f[n] for n in _objects(f)]
        holders = [h for h in holders if len(h.attrs)]
        target = holders[int(rng.integers(0, len(holders)))]
        key = str(rng.choice(list(target.attrs)))
        target.attrs[key] = _bad_attr_value(rng, "garbage")
        return f"garble attribute {key!r} of {target.name}"


def garble_strings(path: Path, rng: np.random.Generator) -> str:
    """Replace a string dataset's content (JSON, ids, prompts) with invalid UTF-8 or non-JSON."""
    with h5py.File(path, "r+") as f:
        names = [n for n in _datasets(f) if f[n].dtype.kind == "O"]
        name = str(rng.choice(names))
        shape = f[name].shape
        bad = [b"\xff\xfe not utf-8", b"{not json", b"", b"[1, 2", "é".encode(), b"null"][int(rng.integers(0, 6))]
        attrs = dict(f[name].attrs)
        del f[name]
        if shape == () and rng.random() < 0.2:
            ds = f.create_dataset(name, data=np.void(bad or b"\0"))  # opaque bytes, not a string
        elif shape == ():
            ds = f.create_dataset(name, data=bad, dtype=h5py.string_dtype("ascii"))
        else:
            ds = f.create_dataset(name, data=np.array([bad] * shape[0], dtype=object), dtype=h5py.string_dtype("ascii"), maxshape=(None,))
        for key, value in attrs.items():
            ds.attrs[key] = value
    return f"garble strings of /{name} with {bad!r}"


def corrupt_labels(path: Path, rng: np.random.Generator) -> str:
    """Out-of-range values where class indices are expected."""
    with h5py.File(path, "r+") as f:
        names = [n for n in _datasets(f) if n.endswith(("label", "class", "label_matrix"))]
        name = str(rng.choice(names))
        arr = f[name][()]
        arr.flat[int(rng.integers(0, arr.size))] = rng.choice([-5, 99, 127])
        f[name][()] = arr
    return f"out-of-range value in /{name}"


def random_hdf5(path: Path, rng: np.random.Generator) -> str:
    """A foreign HDF5 file; half of them carry the store's root tag to get past the first check."""
    from embedstore.store import elements as el

    tagged = rng.random() < 0.5
    with h5py.File(path, "w") as f:
        if tagged:
            el.tag(f, "embedstore", "1.0.0")
        for name in ("classes", "items", "audio", "text", "provenance", "history", "failed", "x", "y"):
            if rng.random() < 0.5:
                continue
            if rng.random() < 0.5:
                g = f.create_group(name)
                for i in range(int(rng.integers(0, 3))):
                    g.create_dataset(f"d{i}", data=rng.standard_normal(tuple(rng.integers(0, 4, int(rng.integers(0, 3))))))
                target = g
            else:
                target = f.create_dataset(name, data=rng.integers(0, 10, int(rng.integers(0, 5))))
            if rng.random() < 0.5:
                target.attrs[el.TYPE_ATTR] = str(rng.choice(BAD_TAGS))
                target.attrs[el.VERSION_ATTR] = str(rng.choice(BAD_VERSIONS))
    return f"random HDF5 file ({'tagged' if tagged else 'untagged'})"


def random_bytes(path: Path, rng: np.random.Generator) -> str:
    n = int(rng.integers(0, 5000))
    head = b"\x89HDF\r\n\x1a\n" if rng.random() < 0.5 else b""
    path.write_bytes(head + rng.integers(0, 256, n, dtype=np.uint8).tobytes())
    return f"{'HDF5 signature and ' if head else ''}{n} random bytes"


def empty_file(path: Path, rng: np.random.Generator) -> str:
    path.write_bytes(b"")
    return "empty file"


def directory(path: Path, rng: np.random.Generator) -> str:
    path.unlink()
    path.mkdir()
    return "a directory"


def text_file(path: Path, rng: np.random.Generator) -> str:
    path.write_text("id,label\nc1,violin\n")
    return "a CSV file"


MUTATIONS = {
    f.__name__: f
    for f in (
        flip_bytes,
        overwrite_run,
        truncate,
        extend,
        delete_object,
        reshape_dataset,
        retype_dataset,
        swap_group_and_dataset,
        change_tag,
        change_version,
        delete_attribute,
        garble_attribute,
        garble_strings,
        corrupt_labels,
        random_hdf5,
        random_bytes,
        empty_file,
        directory,
        text_file,
    )
}
# Mutations that damage the file below HDF5's own structures, where a reader bug in the
# C library would show as a crash: the tests run these only in the worker process.
BYTE_LEVEL = ("flip_bytes", "overwrite_run", "truncate", "extend", "random_bytes")


def mutate(base: Path, target: Path, mutation: str, seed: int) -> str:
    """Copy ``base`` to ``target`` and apply ``mutation`` with a seeded generator."""
    if target.is_dir():
        shutil.rmtree(target)
    shutil.copyfile(base, target)
    return MUTATIONS[mutation](target, np.random.default_rng(seed))


# -- running every reader ---------------------------------------------------------------


def spec_elements(reference: Path) -> list[str]:
    """The arrays the spec gives a digest, as the valid ``reference`` store holds them:
    every dataset element except JSON ones (docs/store-format.md, section 4). Taken from the
    reference, not from the store under test, whose attributes a mutation may have removed."""
    names = []
    with h5py.File(reference, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and str(obj.attrs.get("encoding-type", "")) not in ("json", "json-lines"):
                names.append("/" + name)

        f.visititems(visit)
    return names


def digested_arrays(path: Path, elements: list[str]) -> dict[str, object]:
    """Each of ``elements`` read raw with h5py from ``path`` (absent ones left out): the
    oracle for ``intact``, blind to the attributes a mutation may have changed."""
    from embedstore.store import elements as el

    out = {}
    with h5py.File(path, "r") as f:
        for name in elements:
            obj = f.get(name)
            if isinstance(obj, h5py.Dataset):
                value = obj[()]
                out[name] = [el._as_str(v) for v in value] if obj.dtype.kind == "O" else value
            elif obj is not None:
                out[name] = "not a dataset"
    return out


def compare_arrays(found: dict, original: dict) -> str:
    """``same``; ``missing`` when only whole elements are gone; else ``differs``."""
    for key in found:
        if key not in original:
            return "differs"
        x, y = found[key], original[key]
        if isinstance(x, str) or isinstance(y, str):
            return "differs"
        if isinstance(x, list) or isinstance(y, list):
            if not isinstance(x, list) or not isinstance(y, list) or x != y:
                return "differs"
        elif x.shape != y.shape or x.dtype != y.dtype or not np.array_equal(x, y):
            return "differs"
    return "same" if found.keys() == original.keys() else "missing"


def read_everything(path: Path) -> None:
    """Open a store and use every accessor, as an analysis would."""
    from embedstore.store import open_store

    with open_store(path) as st:
        _ = (st.model, st.dataset, st.classes, st.n_items, st.item_ids, st.item_paths, st.multilabel)
        _ = (st.provenance, st.history, st.failed, st.format_version, st.digests())
        if not st.multilabel:
            st.labels
        st.label_matrix
        st.metadata_columns
        st.metadata
        for space in st.audio_spaces:
            st.audio(space)
            st.audio(space, lazy=True)
        for name in st.prompt_sets:
            ps = st.prompt_set(name)
            for space in ps.spaces:
                st.text(name, space)


def _classify(func) -> tuple[str, str | None, str]:
    """Run ``func``; return (outcome, problem or None, the error message)."""
    from embedstore.errors import EmbedstoreError

    try:
        func()
    except EmbedstoreError as exc:
        message = str(exc)
        if "\n" in message.strip() or not message.strip():
            return type(exc).__name__, f"{type(exc).__name__} message is not one line: {message!r}", message
        return type(exc).__name__, None, message
    except Exception as exc:
        return "escape", traceback.format_exc(), repr(exc)
    return "ok", None, ""


def _cli_targets(path: Path) -> list[list[str]]:
    """The CLI invocations to try on ``path``: info, verify and an export of each space."""
    runs = [["info", str(path)], ["verify", str(path)]]
    spaces, sets = ["joint", "missing"], ["ontology:prejoint", "track:nope"]
    runs += [["export", str(path), "--audio", s] for s in spaces]
    runs += [["export", str(path), "--text", t] for t in sets]
    return runs


@functools.lru_cache(maxsize=1)
def _cli():
    """typer's test runner and the app, whose click command is built once, not per call."""
    import typer.main
    import typer.testing

    from cli.main import app

    command = typer.main.get_command(app)
    builder = getattr(typer.testing, "_get_command", None)
    if builder is not None:  # typer.testing rebuilds the command on every invoke: reuse ours
        typer.testing._get_command = lambda target: command if target is command else builder(target)
    return typer.testing.CliRunner(), command if builder is not None else app


def check_cli(path: Path, out_dir: Path) -> list[str]:
    """Run the CLI commands through typer's runner; return a problem string per bad run."""
    runner, command = _cli()
    problems = []
    for i, args in enumerate(_cli_targets(path)):
        if args[0] == "export":
            args = args + ["--out", str(out_dir / f"e{i}")]
        result = runner.invoke(command, args)
        where = " ".join(args[:1] + args[2:])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            exc = result.exception
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            problems.append(f"{where}: escaped {tb}")
            continue
        stderr = result.stderr.strip()
        if result.exit_code not in (0, 1, 2):
            problems.append(f"{where}: exit {result.exit_code}")
        elif result.exit_code != 0 and (not stderr or "\n" in stderr or "Traceback" in result.output):
            problems.append(f"{where}: exit {result.exit_code} without one error line: {stderr!r}")
        elif result.exit_code == 0 and stderr:
            problems.append(f"{where}: success with stderr {stderr!r}")
    return problems


def check_store(path: Path, reference: Path | None, cli: bool = True) -> dict:
    """Run every reader on ``path``; ``reference`` is the valid store it was made from."""
    from embedstore.store.verify import verify_store

    result = {"problems": []}
    result["open"], tb, result["open_message"] = _classify(lambda: read_everything(path))
    if tb:
        result["problems"].append(f"open_store/accessors: {tb}")
    reports = []
    result["verify"], tb, result["verify_message"] = _classify(lambda: reports.append(verify_store(path)))
    if tb:
        result["problems"].append(f"verify_store: {tb}")
    if reports:
        report = reports[0]
        result["verify"] = "intact" if report.ok else "damaged"
        if report.ok and reference is not None:
            # An element deleted whole (an audio space, a prompt set) leaves a store that
            # is consistent without it: counted apart, as the format has no manifest.
            try:
                elements = spec_elements(reference)
                same = compare_arrays(digested_arrays(path, elements), digested_arrays(reference, elements))
            except Exception as exc:  # the raw h5py reading here is the oracle, not the reader
                same = f"unreadable ({type(exc).__name__})"
            if same == "missing":
                result["verify"] = "intact-without-element"
            elif same != "same":
                result["problems"].append(f"verify said intact but digested arrays differ from the original: {same}")
        if report.ok and result["open"] != "ok":
            result["problems"].append(f"verify said intact but open_store/accessors gave {result['open']}")
    if cli:
        with tempfile.TemporaryDirectory() as out_dir:
            result["problems"] += check_cli(path, Path(out_dir))
    return result


# -- the worker process ------------------------------------------------------------------


def worker_main() -> None:
    """Read JSON requests ``{"path", "reference", "cli"}`` on stdin; answer one JSON line each."""
    for line in sys.stdin:
        request = json.loads(line)
        ref = request.get("reference")
        answer = check_store(Path(request["path"]), Path(ref) if ref else None, request.get("cli", True))
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


class Worker:
    """A reader process that survives our mistakes: a crash or hang is an answer, not an end."""

    def __init__(self, timeout: float = 60.0):
        self.timeout = timeout
        self.proc = None

    def _start(self) -> None:
        env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True).start()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump_list, args=(self.proc.stderr, self.stderr), daemon=True).start()

    @staticmethod
    def _pump(stream, q: queue.Queue) -> None:
        for line in stream:
            q.put(line)
        q.put(None)

    @staticmethod
    def _pump_list(stream, out: list) -> None:
        for line in stream:
            out.append(line)

    def check(self, path: Path, reference: Path | None = None, cli: bool = True) -> dict:
        """Check ``path`` in the worker; ``{"crash": ...}`` or ``{"hang": ...}`` when it dies."""
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        request = {"path": str(path), "reference": str(reference) if reference else None, "cli": cli}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        try:
            line = self.lines.get(timeout=self.timeout)
        except queue.Empty:
            # SIGABRT first: the worker's faulthandler prints where it was stuck.
            self.proc.send_signal(signal.SIGABRT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            time.sleep(0.2)
            where = [line.strip() for line in self.stderr if line.strip().startswith("File ")][:3]
            self.proc = None
            return {"hang": where, "problems": [f"hang (> {self.timeout:.0f} s) in {' < '.join(where)}"]}
        if line is None:
            code = self.proc.wait()
            tail = "".join(self.stderr[-20:])
            self.proc = None
            return {"crash": code, "problems": [f"worker died with code {code}: {tail}"]}
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def run_cli_subprocess(args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Run the real console entry point, as a user's shell would, to see true exit codes."""
    return subprocess.run(
        [sys.executable, "-c", "from cli.main import app; app()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


# -- the fuzzer --------------------------------------------------------------------------


def fuzz(n: int, seed: int, cli_every: int, timeout: float, keep: Path | None) -> dict:
    """Damage ``n`` stores and check each; return the figures."""
    rng = np.random.default_rng(seed)
    names = list(MUTATIONS)
    outcomes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    problems: list[dict] = []
    started = time.perf_counter()
    worker = Worker(timeout=timeout)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bases = base_stores(tmp)
        try:
            for i in range(n):
                kind = KINDS[int(rng.integers(0, len(KINDS)))]
                mutation = names[int(rng.integers(0, len(names)))]
                mseed = int(rng.integers(0, 2**31))
                target = tmp / f"fuzz-{i}.h5"
                what = mutate(bases[kind], target, mutation, mseed)
                answer = worker.check(target, bases[kind], cli=(i % cli_every == 0))
                status = "crash" if "crash" in answer else "hang" if "hang" in answer else f"{answer['open']}/{answer['verify']}"
                outcomes[mutation][status] += 1
                if answer["problems"]:
                    problems.append({"i": i, "kind": kind, "mutation": mutation, "seed": mseed, "what": what, "problems": answer["problems"]})
                    if keep is not None:
                        keep.mkdir(parents=True, exist_ok=True)
                        dest = keep / f"fuzz-{i}-{mutation}.h5"
                        shutil.copytree(target, dest) if target.is_dir() else shutil.copyfile(target, dest)
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink()
                if (i + 1) % 100 == 0:
                    print(f"  {i + 1}/{n} stores, {len(problems)} with problems", file=sys.stderr, flush=True)
        finally:
            worker.close()
    return {
        "stores": n,
        "seed": seed,
        "mutations": len(names),
        "cli_checked": (n + cli_every - 1) // cli_every,
        "seconds": round(time.perf_counter() - started, 1),
        "outcomes": {m: dict(c) for m, c in sorted(outcomes.items())},
        "problems": problems,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--stores", type=int, default=3000, help="damaged stores to try (default 3000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cli-every", type=int, default=4, help="run the CLI commands on every k-th store")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a store counts as a hang")
    parser.add_argument("--keep", type=Path, help="copy stores that show a problem here")
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main()
        return 0
    figures = fuzz(args.stores, args.seed, args.cli_every, args.timeout, args.keep)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    totals = collections.Counter()
    print(f"stores fuzzed: {figures['stores']} (seed {figures['seed']}, {figures['mutations']} mutation kinds, "
          f"CLI on {figures['cli_checked']}), {figures['seconds']} s")
    print(f"{'mutation':<24} outcomes (open/verify)")
    for mutation, counts in figures["outcomes"].items():
        totals.update(counts)
        print(f"{mutation:<24} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
    print("totals: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items(), key=lambda kv: -kv[1])))
    print(f"stores with problems (escaped exception, traceback, bad exit, crash, hang, wrong 'intact'): {len(figures['problems'])}")
    for p in figures["problems"][:20]:
        print(f"- #{p['i']} {p['kind']} {p['what']}:")
        for line in p["problems"]:
            print("    " + line.strip().splitlines()[-1][:300])
    return 1 if figures["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
