"""The shared mechanisms every writing command uses: output policy, writer lock, name policy."""

from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np
import pytest

from embedstore.errors import InputError, StoreExists
from embedstore.store import create_store, edit_store, open_store
from embedstore.store.lock import StoreLocked, lock_path, writer_lock
from embedstore.store.names import check_name, check_names
from embedstore.store.outputs import MARKER, check_outputs, mark_folder, replace_folder


# ---------------------------------------------------------------- output policy

def test_an_existing_file_is_refused_without_overwrite(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("mine")
    with pytest.raises(InputError, match="exists; pass --overwrite"):
        check_outputs([target])
    check_outputs([target], overwrite=True)
    assert target.read_text() == "mine"  # checking writes nothing


def test_an_input_is_never_a_target_even_with_overwrite(tmp_path):
    store = tmp_path / "s.h5"
    store.write_bytes(b"x")
    link = tmp_path / "alias.h5"
    os.symlink(store, link)
    for target in (store, link, tmp_path / "." / "s.h5"):
        with pytest.raises(InputError, match="is an input"):
            check_outputs([target], inputs=[store], overwrite=True)


def test_two_outputs_of_one_command_must_differ(tmp_path):
    with pytest.raises(InputError, match="two outputs"):
        check_outputs([tmp_path / "a.json", tmp_path / "a.json"])


def test_a_folder_as_a_file_target_is_refused(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        check_outputs([tmp_path], overwrite=True)


def test_missing_parents_are_created_only_when_every_output_passes(tmp_path):
    existing = tmp_path / "taken.png"
    existing.write_bytes(b"")
    with pytest.raises(InputError):
        check_outputs([tmp_path / "new" / "deep" / "r.json", existing])
    assert not (tmp_path / "new").exists()
    check_outputs([tmp_path / "new" / "deep" / "r.json"])
    assert (tmp_path / "new" / "deep").is_dir()


def test_a_folder_holding_other_files_is_never_replaced(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    for overwrite in (False, True):
        with pytest.raises(InputError, match="did not write"):
            check_outputs(folders=[out], overwrite=overwrite, command="report")
    assert (out / "thesis.tex").read_text() == "precious"


def test_an_empty_or_missing_folder_is_fine(tmp_path):
    (tmp_path / "empty").mkdir()
    check_outputs(folders=[tmp_path / "empty", tmp_path / "missing"], command="report")
    assert (tmp_path / "missing").is_dir()


def test_a_folder_the_command_made_is_replaced_only_with_overwrite_and_only_its_files(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    (out / "figures").mkdir()
    (out / "report.html").write_text("old")
    (out / "figures" / "a.png").write_bytes(b"png")
    mark_folder(out, "report", ["report.html", "figures/a.png"])
    with pytest.raises(InputError, match="pass --overwrite"):
        check_outputs(folders=[out], command="report")
    with pytest.raises(InputError, match="did not write"):
        check_outputs(folders=[out], command="export", overwrite=True)
    check_outputs(folders=[out], command="report", overwrite=True)
    replace_folder(out)
    assert list(out.iterdir()) == []
    # A file the user added later stops the replacement.
    (out / "report.html").write_text("new")
    mark_folder(out, "report", ["report.html"])
    (out / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="notes.txt"):
        check_outputs(folders=[out], command="report", overwrite=True)


def test_an_input_inside_the_output_folder_is_refused(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    store = out / "s.h5"
    store.write_bytes(b"x")
    mark_folder(out, "report", ["s.h5"])  # even a marker that (wrongly) lists it
    with pytest.raises(InputError, match="inside the output folder"):
        check_outputs(folders=[out], inputs=[store], command="report", overwrite=True)
    assert store.exists() and (out / MARKER).exists()


# ---------------------------------------------------------------- writer lock

def _hold_lock(path, ready, release):
    with writer_lock(path):
        ready.set()
        release.wait(30)


def test_a_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    store = tmp_path / "s.h5"
    with create_store(store, model="m", dataset="d", classes=["a"]) as w:
        w.set_items(["x"], labels=[0])
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(store), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(StoreLocked, match="another process is writing"):
            with edit_store(store) as w:
                w.add_audio("joint", np.ones((1, 2)))
        with pytest.raises(StoreLocked):
            with create_store(store, model="m", dataset="d", classes=["a"], overwrite=True):
                pass
    finally:
        release.set()
        holder.join(30)
    with edit_store(store) as w:  # free again
        w.add_audio("joint", np.ones((1, 2)))
    with open_store(store) as st:
        assert st.audio_spaces == ["joint"]


def test_a_killed_writer_leaves_no_lock(tmp_path):
    store = tmp_path / "s.h5"
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(store), ready, release))
    holder.start()
    assert ready.wait(60)
    holder.kill()
    holder.join(30)
    with writer_lock(store):
        pass


def _hold_lock_with_a_forked_child(path, ready, release):
    import time

    with writer_lock(path):
        if os.fork() == 0:  # a child that outlives its parent, as a decoding worker may
            time.sleep(30)
            os._exit(0)
        ready.set()
        release.wait(30)


def test_a_forked_child_does_not_keep_a_killed_writers_lock(tmp_path):
    store = tmp_path / "s.h5"
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock_with_a_forked_child, args=(str(store), ready, release))
    holder.start()
    assert ready.wait(60)
    holder.kill()
    holder.join(30)
    with writer_lock(store):  # the child still sleeps, and holds no lock
        pass


def test_the_lock_is_reentrant_in_one_process(tmp_path):
    store = tmp_path / "s.h5"
    with writer_lock(store), writer_lock(store):
        assert lock_path(store).name == "s.h5.lock" and lock_path(store).exists()
    assert not lock_path(store).exists()  # the holder removes it
    with create_store(store, model="m", dataset="d", classes=["a"]) as w:
        w.set_items(["x"], labels=[0])
    with writer_lock(store):
        with edit_store(store) as w:
            w.add_audio("joint", np.ones((1, 2)))


# ---------------------------------------------------------------- name policy

@pytest.mark.parametrize("bad", ["", "   ", "a\x00b", "line\nbreak", "\ufeff"])
def test_names_refused_for_every_kind(bad):
    for object_name in (False, True):
        with pytest.raises(InputError):
            check_name(bad, "class", object_name=object_name)


@pytest.mark.parametrize("bad", ["split/fold", ".", ".."])
def test_object_names_refuse_separators(bad):
    with pytest.raises(InputError):
        check_name(bad, "metadata column", object_name=True)
    if bad == "split/fold":
        assert check_name(bad, "item id") == bad  # a value may hold '/'


def test_a_duplicate_is_named_whatever_the_name_kind_says():
    # `what` may be a phrase ("column name in x.csv"): the message never pluralises it
    with pytest.raises(InputError) as info:
        check_names(["x", "x"], "column name in dupcol.csv", object_name=True)
    assert str(info.value) == "column name in dupcol.csv 'x' occurs twice; names must be unique"


def test_names_are_normalised_and_duplicates_after_normalisation_refused():
    assert check_name("\ufeffviolin ", "class") == "violin"
    assert check_name("e\u0301", "class") == "\u00e9"
    with pytest.raises(InputError, match="must be unique"):
        check_names(["\u00e9", "e\u0301"], "class")
    with pytest.raises(InputError, match="must be unique"):
        check_names(["violin", "violin "], "class")


def test_the_store_applies_the_name_policy(tmp_path):
    with pytest.raises(InputError, match="holds '/'"):
        with create_store(tmp_path / "s.h5", model="m", dataset="d", classes=["a"]) as w:
            w.set_items(["x"], labels=[0], metadata={"split/fold": [1]})
    with pytest.raises(InputError, match="control character"):
        with create_store(tmp_path / "s.h5", model="m", dataset="d", classes=["a"]) as w:
            w.set_items(["x\x00"], labels=[0])
    with pytest.raises(InputError, match="must be unique"):
        create_store(tmp_path / "s.h5", model="m", dataset="d", classes=["a", "a "]).__enter__()
    assert not (tmp_path / "s.h5").exists()


def test_create_store_refuses_an_existing_store(tmp_path):
    store = tmp_path / "s.h5"
    with create_store(store, model="m", dataset="d", classes=["a"]) as w:
        w.set_items(["x"], labels=[0])
    with pytest.raises(StoreExists):
        with create_store(store, model="m", dataset="d", classes=["a"]):
            pass


def test_a_dangling_link_is_an_existing_output(tmp_path):
    link = tmp_path / "out.json"
    link.symlink_to(tmp_path / "missing" / "target.json")
    with pytest.raises(InputError, match="a link to the missing .*; pass --overwrite"):
        check_outputs([link])
    assert link.is_symlink()  # left as it was
    check_outputs([link], overwrite=True)
