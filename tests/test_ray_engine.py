"""The Ray engine on a local Ray instance (CPU, the tests' tiny encoder): the vectors of a plain run."""

import functools
import os

import pytest

pytest.importorskip("torch")
ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import extract_encoder  # noqa: E402
from test_extract import extract, write_clips  # noqa: E402
from test_shards import assert_same_content  # noqa: E402

from embedstore.datasets import load_dataset  # noqa: E402
from embedstore.extract.prompts import build_prompt_set  # noqa: E402
from embedstore.extract.ray_engine import run_extract_ray  # noqa: E402
from embedstore.store import open_store  # noqa: E402
from embedstore.store.merge import shard_path  # noqa: E402


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    here = os.path.dirname(extract_encoder.__file__)
    # the workers import the tests' encoder module, as the driver does
    os.environ["PYTHONPATH"] = os.pathsep.join([os.path.dirname(here), here, os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield
    ray.shutdown()


@pytest.mark.slow  # a local Ray instance takes a minute to start and run on 2 cores
def test_ray_engine_gives_a_plain_runs_store(local_ray, tmp_path):
    (tmp_path / "clips").mkdir()
    clips = write_clips(tmp_path / "clips")
    data = load_dataset("folder", clips)
    # batches of 3 windows in blocks of 4 items; Ray hands the actors 2 batches per call
    extract(data, tmp_path / "plain.h5", batch_size=3, block_items=4)
    specs = [build_prompt_set(name, data.classes) for name in ("track", "ontology")]
    summary = run_extract_ray(functools.partial(extract_encoder.load_tiny), data, specs, tmp_path / "ray.h5",
                              shards=2, batch_size=3, batches_per_call=2, concurrency=1, long_mode="mean",
                              command=["test"], block_items=4)
    assert summary.items == 10 and len(summary.failed) == 3
    assert_same_content(tmp_path / "plain.h5", tmp_path / "ray.h5")
    with open_store(tmp_path / "ray.h5") as st:
        assert st.provenance["extraction"]["engine"]["name"] == "ray"
        assert st.provenance["extraction"]["block_items"] == 4
        assert len(st.provenance["merged_from"]) == 2
    assert shard_path(tmp_path / "ray.h5", 1, 2).exists()


@pytest.mark.slow
def test_ray_engine_keeps_a_caption_datasets_captions(local_ray, tmp_path):
    """As a plain run: the items' captions as a caption set, each shard's tied to its own items."""
    from cli_helpers import write_caption_folder
    from test_export_roundtrip import content

    root = write_caption_folder(tmp_path / "clips")
    data = load_dataset("captions", root)
    extract(data, tmp_path / "plain.h5", batch_size=1, block_items=2)
    specs = [build_prompt_set(name, data.classes) for name in ("track", "ontology")]
    run_extract_ray(functools.partial(extract_encoder.load_tiny), data, specs, tmp_path / "ray.h5", shards=2,
                    batch_size=1, batches_per_call=2, concurrency=1, long_mode="mean", command=["test"],
                    block_items=2)
    with open_store(tmp_path / "ray.h5") as st:
        assert st.prompt_set("captions").items.tolist() == [0, 1, 1, 2, 3, 3, 4]
    plain, ray_store = content(tmp_path / "plain.h5"), content(tmp_path / "ray.h5")
    assert {k: v for k, v in plain.items() if k != "/"} == {k: v for k, v in ray_store.items() if k != "/"}
