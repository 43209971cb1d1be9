"""Atomic output: success replaces the target in one rename; any failure leaves no trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tfrecords_builder import atomic

FAILURES = [ValueError("failed part-way"), KeyboardInterrupt()]


def listing(folder) -> dict[str, str]:
    """relative path -> text of every file under `folder`."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path) as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def test_file_success_replaces_the_target_in_one_rename(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old")
    with atomic.file(str(target)) as partial:
        assert partial == f"{target}.partial-{os.getpid()}"
        with open(partial, "w") as f:
            f.write("new, half")
            assert target.read_text() == "old"  # a reader meanwhile sees the whole old file
            f.write(" and whole")
        assert target.read_text() == "old"
    assert target.read_text() == "new, half and whole"
    assert os.listdir(tmp_path) == ["metrics.json"]


@pytest.mark.parametrize("existing", [True, False])
@pytest.mark.parametrize("failure", FAILURES, ids=type)
def test_file_failure_part_way_leaves_no_partial_and_no_temporary(tmp_path, existing, failure):
    target = tmp_path / "out.npz"
    if existing:
        target.write_text("old")
    with pytest.raises(type(failure)):
        with atomic.file(str(target)) as partial:
            with open(partial, "w") as f:
                f.write("half")
            raise failure
    assert listing(tmp_path) == ({"out.npz": "old"} if existing else {})


@pytest.mark.parametrize("target, suffix, temporary", [
    ("w.weights.h5", ".weights.h5", "w.partial-{pid}.weights.h5"),
    ("out", ".npz", "out.partial-{pid}.npz"),
    ("out.npz", "", "out.npz.partial-{pid}"),
])
def test_file_suffix_stays_last(tmp_path, target, suffix, temporary):
    with atomic.file(str(tmp_path / target), suffix) as partial:
        assert partial == str(tmp_path / temporary.format(pid=os.getpid()))
        with open(partial, "w") as f:
            f.write("data")
    assert listing(tmp_path) == {target: "data"}


def test_folder_success_replaces_the_old_folder_whole(tmp_path):
    target = tmp_path / "index"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with atomic.folder(str(target)) as partial:
        assert partial == f"{target}.partial-{os.getpid()}"
        assert os.listdir(partial) == []
        os.makedirs(os.path.join(partial, "sub"))
        with open(os.path.join(partial, "sub", "a.txt"), "w") as f:
            f.write("new")
        assert listing(target) == {"stale.txt": "old"}
    assert listing(target) == {os.path.join("sub", "a.txt"): "new"}
    assert os.listdir(tmp_path) == ["index"]  # neither temporary nor old folder left


def test_folder_creates_parents_and_clears_a_leftover_temporary(tmp_path):
    target = tmp_path / "a" / "b" / "out"
    leftover = tmp_path / "a" / "b" / f"out.partial-{os.getpid()}"
    leftover.mkdir(parents=True)
    (leftover / "junk.txt").write_text("junk")
    with atomic.folder(str(target) + os.sep) as partial:  # a trailing separator is the same folder
        assert partial == str(leftover) and os.listdir(partial) == []
        (leftover / "x.txt").write_text("x")
    assert listing(tmp_path) == {os.path.join("a", "b", "out", "x.txt"): "x"}


@pytest.mark.parametrize("existing", [True, False])
@pytest.mark.parametrize("failure", FAILURES, ids=type)
def test_folder_failure_part_way_leaves_no_partial_and_no_temporary(tmp_path, existing, failure):
    target = tmp_path / "out"
    if existing:
        target.mkdir()
        (target / "kept.txt").write_text("old")
    with pytest.raises(type(failure)):
        with atomic.folder(str(target)) as partial:
            with open(os.path.join(partial, "shard-0"), "w") as f:
                f.write("written")
            raise failure
    assert listing(tmp_path) == ({os.path.join("out", "kept.txt"): "old"} if existing else {})
    assert os.listdir(tmp_path) == (["out"] if existing else [])


def test_folder_failed_publish_puts_the_old_folder_back(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "kept.txt").write_text("old")
    with pytest.raises(FileNotFoundError):
        with atomic.folder(str(target)) as partial:
            os.rmdir(partial)  # nothing left to rename in: the second rename fails
    assert listing(tmp_path) == {os.path.join("out", "kept.txt"): "old"}
    assert os.listdir(tmp_path) == ["out"]


def test_folder_never_replaces_unless_allowed_and_uses_the_given_temporary(tmp_path):
    model_dir = tmp_path / "reid"
    hidden = str(model_dir / ".1.partial")
    with atomic.folder(str(model_dir / "1"), replace=False, temporary=hidden) as partial:
        assert partial == hidden
        (model_dir / ".1.partial" / "saved_model.pb").write_text("v1")
    assert listing(model_dir) == {os.path.join("1", "saved_model.pb"): "v1"}
    with pytest.raises(FileExistsError, match="1: exists"):
        with atomic.folder(str(model_dir / "1"), replace=False, temporary=hidden):
            (model_dir / ".1.partial" / "saved_model.pb").write_text("v1 again")
    assert listing(model_dir) == {os.path.join("1", "saved_model.pb"): "v1"}
    assert os.listdir(model_dir) == ["1"]


def test_remove_stale_deletes_only_dead_processes_temporaries(tmp_path):
    finished = subprocess.Popen([sys.executable, "-c", ""])
    finished.wait()  # its pid now names no process
    dead = tmp_path / f"out.partial-{finished.pid}"
    alive = tmp_path / f"out.partial-{os.getpid()}"
    for folder in (dead, alive, tmp_path / "out.partial-x", tmp_path / "outer.partial-1"):
        folder.mkdir()
    (dead / "shard").write_text("left by a killed run")
    (tmp_path / f"run.json.partial-{finished.pid}").write_text("a file too")
    assert atomic.remove_stale(str(tmp_path / "out")) == [str(dead)]
    assert atomic.remove_stale(str(tmp_path / "run.json")) == [
        str(tmp_path / f"run.json.partial-{finished.pid}")]
    assert sorted(os.listdir(tmp_path)) == sorted([alive.name, "out.partial-x", "outer.partial-1"])


def dead_pid() -> int:
    """The pid of a process that has exited (it names no process now)."""
    finished = subprocess.Popen([sys.executable, "-c", ""])
    finished.wait()
    return finished.pid


def test_remove_stale_also_deletes_old_folders_and_any_marked_temporary_of_the_kind(tmp_path):
    pid = dead_pid()
    marked = tmp_path / f"other.partial-{pid}"  # a killed conversion to another output
    with atomic.folder(str(marked), kind="tfrecords") as partial:
        pass  # published at the leftover's name, marker included
    unmarked = tmp_path / f"data.partial-{pid}"  # not ours: no marker
    unmarked.mkdir()
    old = tmp_path / f"out.old-{pid}"
    old.mkdir()
    other_kind = tmp_path / f"ix.partial-{pid}"
    with atomic.folder(str(other_kind), kind="index"):
        pass
    assert atomic.remove_stale(str(tmp_path / "out"), "tfrecords") == [str(marked), str(old)]
    assert sorted(os.listdir(tmp_path)) == sorted([unmarked.name, other_kind.name])
    assert partial  # (the block ran)


def test_a_killed_runs_temporary_is_found_from_any_other_output(tmp_path, monkeypatch):
    monkeypatch.setenv(atomic.STATE_ENV, str(tmp_path / "journal"))
    pid = dead_pid()
    # What a conversion killed while writing a/out leaves: its marked temporary, its entry.
    seen = {}
    with atomic.folder(str(tmp_path / "a" / "out"), kind="tfrecords") as partial:
        seen["entries"] = os.listdir(tmp_path / "journal")
        seen["record"] = json.loads((tmp_path / "journal" / seen["entries"][0]).read_text())
    assert seen["record"] == {"partial": partial, "kind": "tfrecords", "pid": os.getpid()}
    assert os.listdir(tmp_path / "journal") == []  # gone with the temporary
    killed = tmp_path / "a" / f"out.partial-{pid}"
    killed.mkdir()
    (killed / atomic.MARKER).write_text('{"kind": "tfrecords"}')
    (tmp_path / "journal" / "k.json").write_text(json.dumps(
        {"partial": str(killed), "kind": "tfrecords", "pid": pid}))
    (tmp_path / "journal" / "i.json").write_text(json.dumps(
        {"partial": str(killed), "kind": "index", "pid": pid}))  # another tool's: kept
    # The next conversion, elsewhere, deletes it.
    with atomic.folder(str(tmp_path / "b" / "out"), kind="tfrecords"):
        assert not killed.exists()
    assert sorted(os.listdir(tmp_path / "journal")) == ["i.json"]
    assert sorted(os.listdir(tmp_path / "a")) == ["out"]


def test_folder_of_a_kind_is_marked_and_cleans_its_kind_first(tmp_path):
    stale = tmp_path / f"earlier.partial-{dead_pid()}"
    with atomic.folder(str(stale), kind="index"):
        pass
    with atomic.folder(str(tmp_path / "ix"), kind="index") as partial:
        assert os.listdir(partial) == [atomic.MARKER]
        assert not stale.exists()
    assert atomic.is_output(str(tmp_path / "ix"), "index")
    assert not atomic.is_output(str(tmp_path / "ix"), "tfrecords")
    assert not atomic.is_output(str(tmp_path), "index")


def test_exchange_swaps_two_folders_in_one_step(tmp_path):
    # What `folder` does to replace an old folder: no moment without the target's name.
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "v").write_text("new")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "v").write_text("old")
    assert atomic._exchange(str(tmp_path / "a"), str(tmp_path / "b"))  # Linux, ext4 / tmpfs
    assert listing(tmp_path / "a") == {"v": "old"} and listing(tmp_path / "b") == {"v": "new"}
    with pytest.raises(FileNotFoundError):
        atomic._exchange(str(tmp_path / "a"), str(tmp_path / "missing"))


@pytest.mark.parametrize("make, overwrite, message", [
    (lambda p: None, False, None),
    (lambda p: p.mkdir(), False, "output already exists (pass --overwrite to replace it)"),
    (lambda p: p.mkdir(), True, None),  # empty: nothing to lose
    (lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine")), True,
     "exists and is not an earlier 'tfrecords' output of tf-reid (no .tf-reid-output marker "
     "in it)"),
    (lambda p: p.write_text("a file"), True, "exists and is not a folder"),
])
def test_check_target(tmp_path, make, overwrite, message):
    target = tmp_path / "out"
    make(target)
    if message is None:
        atomic.check_target(str(target), overwrite, kind="tfrecords")
    else:
        with pytest.raises(atomic.OutputError) as raised:
            atomic.check_target(str(target), overwrite, kind="tfrecords")
        assert str(raised.value).startswith(f"{target}: {message}")


def test_check_target_accepts_an_earlier_output_of_the_kind_only(tmp_path):
    with atomic.folder(str(tmp_path / "out"), kind="tfrecords") as partial:
        with open(os.path.join(partial, "train-00000-of-00001.tfrecord"), "w") as f:
            f.write("x")
    atomic.check_target(str(tmp_path / "out"), True, kind="tfrecords")
    with pytest.raises(atomic.OutputError, match="not an earlier 'index' output"):
        atomic.check_target(str(tmp_path / "out"), True, kind="index")


@pytest.mark.parametrize("output, given, relation", [
    ("data", "data", "is"), ("data", "data/images", "contains"), (".", "data", "contains"),
    ("data/../data", "data/images/a.png", "contains")])
def test_check_target_never_writes_over_an_input(tmp_path, output, given, relation):
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "images" / "a.png").write_text("pixels")
    output, given = str(tmp_path / output), str(tmp_path / given)
    with pytest.raises(atomic.OutputError) as raised:
        atomic.check_target(output, True, [given], kind="tfrecords")
    assert str(raised.value) == f"{output}: the output {relation} the input {given}; not " \
                                "writing there"
    # An output inside an input folder is allowed (a new folder beside the images).
    atomic.check_target(str(tmp_path / "data" / "tfrecords"), False, [str(tmp_path / "data")])


def test_sha256_file(tmp_path):
    (tmp_path / "f").write_bytes(b"abc")
    # FIPS 180-2's example digest of "abc".
    assert atomic.sha256_file(str(tmp_path / "f")) == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
