"""Sharded extraction and merge: shards of one run, merged, equal a single run bit for bit.

At any batch size: no batch spans two blocks of ``--block-items`` items and shards are cut
between blocks, so every window has the same batch mates at the same position as in a
single run (the tiny encoder's rows differ by up to 3e-7 with their position in a batch of
3, 5 or 7: BLAS treats a batch's rows in panels).
"""

import numpy as np
import pytest

pytest.importorskip("torch")

import extract_encoder  # noqa: E402
from test_extract import RecordingModel, fake_clips, read_store, write_clips  # noqa: E402

from embedstore.errors import InputError  # noqa: E402
from embedstore.extract import embed_clips  # noqa: E402
from embedstore.extract.feeding import groups_from_clips  # noqa: E402
from embedstore.extract.shards import Shard, local_device, parse_shard, shard_from_env  # noqa: E402
from embedstore.store import open_store  # noqa: E402
from embedstore.store.merge import merge_shards, shard_path  # noqa: E402

#: Items per block in these tests: 13 items make 4 blocks (the last of one item).
BLOCK = 4


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_clips(tmp_path_factory.mktemp("clips"))


@pytest.fixture
def cli(monkeypatch):
    """``embedstore`` in this process with the test encoder; ``env`` sets the launcher's variables."""
    from typer.testing import CliRunner

    from embedstore import models

    monkeypatch.setitem(models.MODELS, extract_encoder.NAME, extract_encoder.load_tiny)
    for name in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_COUNT",
                 "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    from cli.main import app

    runner = CliRunner()
    return lambda *args, env=None: runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "200", **(env or {})})


def extract_args(root, out, *extra, batch_size=3, workers=0):
    return ["extract", "--model", "test-tiny", "--dataset", "folder", "--root", root, "--out", out,
            "--batch-size", str(batch_size), "--workers", str(workers), "--block-items", str(BLOCK),
            "--prompts", "track", "--prompts", "ontology", *extra]


def assert_same_content(a_path, b_path):
    """Same items, labels, metadata, failures and prompt sets; vectors bit for bit."""
    a, b = read_store(a_path), read_store(b_path)
    assert a["ids"] == b["ids"] and a["failed"] == b["failed"] and a["sets"] == b["sets"]
    np.testing.assert_array_equal(a["labels"], b["labels"])
    np.testing.assert_array_equal(a["take"], b["take"])
    assert a["take"].dtype == b["take"].dtype
    assert a["spaces"] == b["spaces"]
    for space in a["audio"]:
        assert a["audio"][space].dtype == b["audio"][space].dtype
        assert np.array_equal(a["audio"][space], b["audio"][space]), space
        assert a["audio"][space].tobytes() == b["audio"][space].tobytes(), space
    assert a["text"].keys() == b["text"].keys()
    for key in a["text"]:
        assert a["text"][key].tobytes() == b["text"][key].tobytes(), key
    with open_store(a_path) as sa, open_store(b_path) as sb:
        assert list(sa.item_paths) == list(sb.item_paths)
        assert sa.classes == sb.classes and sa.model == sb.model
        for space in sa.audio_spaces:
            assert sa.audio(space, lazy=True).dtype == sb.audio(space, lazy=True).dtype
        for name in sa.prompt_sets:
            pa, pb = sa.prompt_set(name), sb.prompt_set(name)
            assert pa.prompts == pb.prompts and pa.terms == pb.terms
            np.testing.assert_array_equal(pa.classes, pb.classes)


@pytest.mark.parametrize("launcher, count, batch_size, extra", [
    ("slurm", 3, 3, ()),
    ("torchrun", 2, 4, ("--dtype", "float16")),
])
def test_shards_merged_equal_a_single_run_bit_for_bit(cli, clips, tmp_path, launcher, count, batch_size, extra):
    # 13 items (three unreadable, one clip of three windows) in blocks of 4
    single = tmp_path / "single.h5"
    assert cli(*extract_args(clips, single, *extra, batch_size=batch_size)).exit_code == 0
    out = tmp_path / "run.h5"
    for k in range(count):
        env = ({"SLURM_ARRAY_TASK_ID": str(10 + k), "SLURM_ARRAY_TASK_MIN": "10",
                "SLURM_ARRAY_TASK_COUNT": str(count)} if launcher == "slurm"
               else {"RANK": str(k), "WORLD_SIZE": str(count), "LOCAL_RANK": str(k)})
        result = cli(*extract_args(clips, out, *extra, batch_size=batch_size), env=env)
        assert result.exit_code == 0, result.output
        assert f"shard {k} of {count}" in result.output
    assert not out.exists()
    shards = [shard_path(out, k, count) for k in range(count)]
    ranges = []
    for path in shards:
        with open_store(path) as st:
            record = st.provenance["shard"]
            ranges.append((record["start"], record["stop"]))
            assert st.provenance["settings_fingerprint"] == read_store(single)["provenance"]["settings_fingerprint"]
    assert ranges[0][0] == 0 and ranges[-1][1] == 13 and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert all(start % BLOCK == 0 for start, _ in ranges)
    merged = tmp_path / "merged.h5"
    result = cli("merge", *reversed(shards), "--out", merged)
    assert result.exit_code == 0, result.output
    assert "verified" in result.output
    assert_same_content(single, merged)
    with open_store(merged) as st:
        assert [m["file"] for m in st.provenance["merged_from"]] == [p.name for p in shards]
        assert "shard" not in st.provenance
    # the output policy: an existing store only with --overwrite
    assert cli("merge", *shards, "--out", merged).exit_code != 0
    assert cli("merge", *shards, "--out", merged, "--overwrite").exit_code == 0


def test_merge_names_a_missing_shard_and_refuses_other_runs(cli, clips, tmp_path):
    out = tmp_path / "run.h5"
    for k in range(3):
        assert cli(*extract_args(clips, out, "--shard", f"{k}/3")).exit_code == 0
    shards = [shard_path(out, k, 3) for k in range(3)]
    result = cli("merge", shards[0], shards[2], "--out", tmp_path / "m.h5")
    assert result.exit_code != 0 and "run.shard-1-of-3.h5" in result.output
    assert cli("merge", shards[0], shards[0], shards[1], shards[2], "--out", tmp_path / "m.h5").exit_code != 0
    other = tmp_path / "other.h5"
    assert cli(*extract_args(clips, other, "--shard", "1/3", "--long", "first")).exit_code == 0
    result = cli("merge", shards[0], shard_path(other, 1, 3), shards[2], "--out", tmp_path / "m.h5")
    assert result.exit_code != 0 and "different runs" in result.output and "long_mode" in result.output
    result = cli("merge", shards[0], tmp_path / "run.shard-0-of-3.h5", "--out", shards[1], "--overwrite")
    assert result.exit_code != 0  # an input is never the output
    assert not (tmp_path / "m.h5").exists()
    # shards cut with another block size are not parts of this run
    assert cli(*extract_args(clips, other, "--shard", "1/3", "--block-items", "3", "--overwrite")).exit_code == 0
    result = cli("merge", shards[0], shard_path(other, 1, 3), shards[2], "--out", tmp_path / "m.h5")
    assert result.exit_code != 0 and "block_items" in result.output
    # more shards than blocks: refused before any clip is read, naming the fix
    result = cli(*extract_args(clips, tmp_path / "five.h5", "--shard", "0/5"))
    assert result.exit_code != 0 and "--block-items 2" in result.output
    assert not shard_path(tmp_path / "five.h5", 0, 5).exists()


def test_a_killed_shard_resumes_on_its_own(cli, tmp_path):
    """A node dies mid-shard (kill -9): that shard resumes and the merge equals a single run."""
    from test_extract import kill_after_batches, start_process

    (tmp_path / "clips").mkdir()
    clips = write_clips(tmp_path / "clips", n_good=40)  # shard 1 of 2: 23 items, 8 batches of 3
    out = tmp_path / "run.h5"
    assert cli(*extract_args(clips, tmp_path / "single.h5")).exit_code == 0
    assert cli(*extract_args(clips, out, "--shard", "0/2")).exit_code == 0
    journal = tmp_path / "run.shard-1-of-2.h5.partial"
    kill_after_batches(start_process(*extract_args(clips, out, "--shard", "1/2", workers=1), delay=0.5), journal, 2)
    shards = [shard_path(out, k, 2) for k in range(2)]
    result = cli("merge", *shards, "--out", tmp_path / "m.h5")
    assert result.exit_code != 0 and "run.shard-1-of-2.h5" in result.output  # unfinished: named
    resumed = cli(*extract_args(clips, out, "--shard", "1/2", "--resume"))
    assert resumed.exit_code == 0 and "resumed at row" in resumed.output
    with open_store(shards[1]) as st:
        assert 0 < st.provenance["resumed"] < 23
    assert cli("merge", *shards, "--out", tmp_path / "m.h5").exit_code == 0
    assert_same_content(tmp_path / "single.h5", tmp_path / "m.h5")
    result = cli(*extract_args(clips, out, "--shard", "1/2", "--resume"))
    assert result.exit_code == 0 and "already complete" in result.output
    result = cli(*extract_args(clips, out, "--shard", "1/2", "--resume", "--block-items", "8"))
    assert result.exit_code != 0 and "--block-items" in result.output


def _real_encoder(name, folder):
    """notes-toy (bundled), or LAION-CLAP HTSAT-tiny with random weights (its published layout)."""
    import warnings

    from embedstore.models import load_model

    if name == "notes-toy":
        return load_model("notes-toy", device="cpu")
    from clap_fixtures import build_laion_clap, import_laion_clap, write_clap_checkpoint, write_tokenizer

    import_laion_clap()
    tokenizer = write_tokenizer(folder / "tokenizer")
    checkpoint = write_clap_checkpoint(build_laion_clap("HTSAT-tiny", tokenizer), folder / "tiny.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random weights' digest is not the registry's
        return load_model("clap-general", checkpoint=checkpoint, tokenizer=tokenizer, device="cpu")


@pytest.mark.parametrize("name, batch_size", [
    # both move a row's vectors by 3e-8 to 5e-8 with its position in a batch of 5
    ("notes-toy", 5),
    pytest.param("clap-htsat-tiny", 5, marks=pytest.mark.slow),
])
def test_real_encoders_in_shards_equal_a_single_run_bit_for_bit(clips, tmp_path, name, batch_size):
    from embedstore.datasets import load_dataset
    from embedstore.extract import run_extract
    from embedstore.extract.prompts import build_prompt_set

    model = _real_encoder(name, tmp_path)
    data = load_dataset("folder", clips)
    specs = [build_prompt_set("track", data.classes)]
    settings = dict(batch_size=batch_size, block_items=BLOCK, long_mode="mean", command=["test"])
    run_extract(model, data, specs, tmp_path / "single.h5", **settings)
    for k in range(3):
        run_extract(model, data, specs, tmp_path / "run.h5", shard=Shard(k, 3), **settings)
    shards = [shard_path(tmp_path / "run.h5", k, 3) for k in range(3)]
    merge_shards(shards, tmp_path / "merged.h5", command=["test"])
    assert_same_content(tmp_path / "single.h5", tmp_path / "merged.h5")


def _batches(counts, failed, batch_size, block_items, start=0, stop=None):
    """The batches ``embed_clips`` sends for rows ``start..stop-1``, and its chunks."""
    model = RecordingModel()
    clips = fake_clips(counts, start, failed=failed)[:None if stop is None else stop - start]
    chunks = list(embed_clips(model.forward, groups_from_clips(clips), batch_size, start, window_samples=8,
                              block_items=block_items))
    return model.batches, chunks


@pytest.mark.parametrize("batch_size, block_items", [(3, 4), (4, 5), (2, 6)])
def test_any_sharding_and_any_resume_send_a_single_runs_batches(batch_size, block_items):
    counts = [1, 3, 2, 5, 1, 1, 4, 2, 2, 1, 1, 6, 1, 2, 3, 1, 1]
    failed = {2, 5, 8, 9}
    single, chunks = _batches(counts, failed, batch_size, block_items)
    assert all(b.shape == (batch_size, 8) for b in single)
    for count in range(1, -(-len(counts) // block_items) + 1):
        sent = []
        for k in range(count):
            start, stop = Shard(k, count).range(len(counts), block_items)
            sent += _batches(counts, failed, batch_size, block_items, start, stop)[0]
        assert len(sent) == len(single) and all(np.array_equal(a, b) for a, b in zip(sent, single)), count
    for chunk in chunks[1:]:  # a resumed run restarts where a chunk ended
        resumed = _batches(counts, failed, batch_size, block_items, chunk.start)[0]
        assert all(np.array_equal(a, b) for a, b in zip(resumed, single[len(single) - len(resumed):]))
    # without blocks, a shard's first batch starts at its first item: other batch mates
    plain = _batches(counts, failed, batch_size, None)[0]

    def same_tail(start):
        shard = _batches(counts, failed, batch_size, None, start)[0]
        return all(np.array_equal(a, b) for a, b in zip(shard, plain[len(plain) - len(shard):]))

    assert not all(same_tail(start) for start in range(block_items, len(counts), block_items))


def test_a_batch_never_spans_two_blocks():
    counts, failed = [2, 1, 3, 1, 1, 2, 1], {3}
    batches, chunks = _batches(counts, failed, 4, 3)
    # block 0: rows 0-2 = 6 windows -> 4 + 2 (padded); block 1: rows 3-5 = 3 windows (row 3
    # failed) -> 3 (padded); block 2: row 6 -> 1 (padded)
    real = [int((b != 0).any(axis=1).sum()) for b in batches]
    assert real == [4, 2, 3, 1]
    assert [(c.start, c.stop) for c in chunks] == [(0, 3), (3, 6), (6, 7)]


def test_shard_ranges_tile_the_items_in_whole_blocks():
    for n in (2, 7, 14, 1000, 1025):
        for block in (1, 3, 4, 64, 1024):
            blocks = -(-n // block)
            for count in range(1, min(blocks, 9) + 1):
                ranges = [Shard(k, count).range(n, block) for k in range(count)]
                assert ranges[0][0] == 0 and ranges[-1][1] == n
                assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
                assert all(start % block == 0 for start, _ in ranges)
                sizes = [-(-(b - a) // block) for a, b in ranges]  # in blocks
                assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert Shard(1, 3).range(10) == (3, 6)  # one item per block: items as before blocks


def test_shard_comes_from_the_option_slurm_or_torchrun():
    assert parse_shard("2/5") == Shard(2, 5)
    for bad in ("5/5", "-1/3", "1", "a/b", "0/0"):
        with pytest.raises(InputError):
            parse_shard(bad)
    slurm = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_COUNT": "8"}
    assert (shard_from_env(slurm).index, shard_from_env(slurm).count) == (3, 8)
    assert (shard_from_env({"RANK": "1", "WORLD_SIZE": "4"}).index, shard_from_env({"RANK": "1", "WORLD_SIZE": "4"}).count) == (1, 4)
    assert shard_from_env({"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert shard_from_env({}) is None
    with pytest.raises(InputError):
        shard_from_env({"RANK": "x", "WORLD_SIZE": "2"})
    assert local_device("cuda", {"LOCAL_RANK": "3"}) == "cuda:3"
    assert local_device("auto", {"LOCAL_RANK": "1"}, cuda_available=True) == "cuda:1"
    assert local_device("auto", {"LOCAL_RANK": "1"}, cuda_available=False) == "auto"  # CPU-only node
    assert local_device("cpu", {"LOCAL_RANK": "3"}) == "cpu"
    assert local_device("cuda:0", {"LOCAL_RANK": "3"}) == "cuda:0"
    assert local_device("cuda", {}) == "cuda"


def test_engine_and_shard_options_are_checked(cli, clips, tmp_path):
    result = cli(*extract_args(clips, tmp_path / "x.h5", "--engine", "ray", "--shard", "0/2"))
    assert result.exit_code != 0 and "one or the other" in result.output
    result = cli(*extract_args(clips, tmp_path / "x.h5", "--engine", "spark"))
    assert result.exit_code != 0 and "--engine" in result.output
    assert not list(tmp_path.iterdir())


def test_shards_of_a_caption_dataset_merge_into_the_single_run(cli, tmp_path):
    """Each shard keeps the captions of its own items, tied to its own rows; merged, the caption
    set equals the single run's (it was the whole dataset's captions in every shard: IndexError)."""
    from cli_helpers import write_caption_folder
    from test_export_roundtrip import content

    root = write_caption_folder(tmp_path / "clips")
    args = ["extract", "--model", "test-tiny", "--dataset", "captions", "--root", root, "--workers", "0",
            "--prompts", "track", "--batch-size", "1", "--block-items", "1"]
    assert cli(*args, "--out", tmp_path / "single.h5").exit_code == 0
    for k in range(3):
        result = cli(*args, "--out", tmp_path / "run.h5", "--shard", f"{k}/3")
        assert result.exit_code == 0, result.output
    with open_store(shard_path(tmp_path / "run.h5", 1, 3)) as st:
        assert st.prompt_set("captions").items.max() < st.n_items
    shards = [shard_path(tmp_path / "run.h5", k, 3) for k in range(3)]
    assert cli("merge", *shards, "--out", tmp_path / "merged.h5").exit_code == 0
    assert content(tmp_path / "merged.h5") == content(tmp_path / "single.h5")
    with open_store(tmp_path / "merged.h5") as st:
        assert st.prompt_set("captions").items.tolist() == [0, 1, 1, 2, 3, 3, 4]
