"""Atomic output: success replaces the target in one rename; any failure leaves no trace."""

from __future__ import annotations

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
