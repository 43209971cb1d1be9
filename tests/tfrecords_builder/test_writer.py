"""The identity-sharded writer: round trip, labels, sharding, determinism, atomicity, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO, image_bytes, write_images
from tfrecords_builder import atomic, features, verify, writer
from tfrecords_builder.manifest import read_manifest
from tfrecords_builder.records import DatasetError, ParsedDataset, Record


def make_split(root, spec, fmt_of=lambda i: "JPEG") -> ParsedDataset:
    """Writes one distinct tiny image per (split, pid, camid) entry of `spec`, repeated n times.

    spec: list of (split, pid, camid, n). Returns a ParsedDataset over those files.
    """
    records, i = [], 0
    for split, pid, camid, n in spec:
        for k in range(n):
            path = f"{split}/{pid:04d}_c{camid + 1}_{k:03d}.jpg"
            write_images(root, [path], image_bytes(6 + i % 5, 4 + i % 3, fmt_of(i), seed=i))
            records.append(Record(path=path, pid=pid, camid=camid, split=split))
            i += 1
    return ParsedDataset("handmade", str(root), tuple(records), {"note": "test"})


def read_output(output_dir):
    """Every example of every shard, by split, in file order, with its shard file."""
    manifest = read_manifest(output_dir)
    out = {}
    for name, summary in manifest["splits"].items():
        out[name] = [(s["file"], e) for s in summary["shards"]
                     for e in verify.read_shard(os.path.join(output_dir, s["file"]))]
    return manifest, out


SPEC = [("train", 9, 0, 3), ("train", 2, 1, 2), ("train", 5, 0, 4), ("train", 5, 1, 1),
        ("query", 7, 0, 1), ("query", 0, 1, 1), ("gallery", 7, 1, 2), ("gallery", 0, 0, 3)]


def test_plan_shards_packs_whole_identities_in_pid_order():
    recs = [Record(f"{p}_{k}", p, 0, "train") for p, n in ((4, 1), (1, 3), (3, 4), (2, 2))
            for k in range(n)]
    shards = writer.plan_shards(recs, records_per_shard=5)
    # pid 1 (3) + pid 2 (2) = 5 fills the first shard; pid 3 (4) + pid 4 (1) the second.
    assert [[r.pid for r in s] for s in shards] == [[1, 1, 1, 2, 2], [3, 3, 3, 3, 4]]
    big = writer.plan_shards(recs, records_per_shard=2)
    assert [[r.pid for r in s] for s in big] == [[1, 1, 1], [2, 2], [3, 3, 3, 3], [4]]


def test_round_trip_bytes_labels_and_metadata(tmp_path):
    # Every third image is PNG bytes under a .jpg name: the format comes from the content.
    split = make_split(tmp_path / "src", SPEC, fmt_of=lambda i: "PNG" if i % 3 == 0 else "JPEG")
    manifest = writer.build(split, str(tmp_path / "out"), records_per_shard=4, progress=False)
    _, out = read_output(tmp_path / "out")
    by_path = {r.path: r for r in split.records}
    for name, examples in out.items():
        assert len(examples) == len(split.of(name))
        for _, e in examples:
            record = by_path[e[features.PATH].decode()]
            source = (tmp_path / "src" / record.path).read_bytes()
            assert e[features.IMAGE] == source
            assert e[features.FORMAT].decode() == ("png" if source.startswith(b"\x89PNG") else "jpeg")
            pixels = tf.io.decode_image(source).numpy()
            assert (e[features.HEIGHT], e[features.WIDTH]) == pixels.shape[:2]
            assert (e[features.PID], e[features.CAMID], e[features.TRACKLET], e[features.FRAME]) == \
                (record.pid, record.camid, -1, -1)
    # Train pids 2, 5, 9 get labels 0, 1, 2; other splits carry -1.
    assert manifest["label_map"] == {"2": 0, "5": 1, "9": 2}
    assert {e[features.PID]: e[features.LABEL] for _, e in out["train"]} == {2: 0, 5: 1, 9: 2}
    assert {e[features.LABEL] for n in ("query", "gallery") for _, e in out[n]} == {-1}
    assert manifest["splits"]["train"]["images"] == 10
    assert manifest["splits"]["train"]["identities"] == 3
    assert manifest["splits"]["gallery"]["cameras"] == 2
    assert manifest["protocol"] == {"note": "test"}
    assert manifest["format_version"] == features.FORMAT_VERSION


def test_video_tracklets_and_frames_round_trip(tmp_path):
    # Two tracklets of pid 3 (3 and 2 frames), listed out of order; one query, one gallery.
    plan = [("train", 3, 0, 11, 2), ("train", 3, 0, 11, 0), ("train", 3, 1, 12, 1),
            ("train", 3, 0, 11, 1), ("train", 3, 1, 12, 0), ("query", 8, 0, 20, 0),
            ("gallery", 8, 1, 21, 0)]
    records = []
    for i, (split, pid, camid, tracklet, frame) in enumerate(plan):
        path = f"bbox/{pid:04d}C{camid + 1}T{tracklet:04d}F{frame:03d}.jpg"
        write_images(tmp_path / "src", [path], image_bytes(seed=i))
        records.append(Record(path, pid, camid, split, tracklet, frame))
    split = ParsedDataset("video", str(tmp_path / "src"), tuple(records))
    manifest = writer.build(split, str(tmp_path / "out"), progress=False)
    _, out = read_output(tmp_path / "out")
    got = [(int(e[features.TRACKLET]), int(e[features.FRAME])) for _, e in out["train"]]
    assert got == [(11, 0), (11, 1), (11, 2), (12, 0), (12, 1)]  # tracklet, then frame order
    assert manifest["splits"]["train"]["tracklets"] == 2
    assert manifest["splits"]["query"]["tracklets"] == 1


def test_identities_are_contiguous_in_one_shard(tmp_path):
    rng = np.random.default_rng(0)
    spec = [("train", int(p), int(rng.integers(0, 3)), int(rng.integers(1, 6))) for p in range(1, 40)]
    spec += [("query", 100, 0, 1), ("gallery", 100, 1, 1)]
    split = make_split(tmp_path / "src", spec)
    writer.build(split, str(tmp_path / "out"), records_per_shard=7, progress=False)
    _, out = read_output(tmp_path / "out")
    shard_of, order = {}, []
    for file, e in out["train"]:
        pid = int(e[features.PID])
        assert shard_of.setdefault(pid, file) == file, f"pid {pid} is in two shards"
        if not order or order[-1] != pid:
            order.append(pid)
    assert order == sorted(set(order)), "an identity's images are not contiguous"
    assert len(set(shard_of.values())) > 1


def test_output_is_deterministic(tmp_path):
    split = make_split(tmp_path / "src", SPEC)
    writer.build(split, str(tmp_path / "a"), records_per_shard=3, progress=False, num_workers=1)
    writer.build(split, str(tmp_path / "b"), records_per_shard=3, progress=False, num_workers=4)
    names = sorted(os.listdir(tmp_path / "a"))
    assert names == sorted(os.listdir(tmp_path / "b"))
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_refuses_to_overwrite_unless_asked(tmp_path):
    split = make_split(tmp_path / "src", SPEC)
    out = str(tmp_path / "out")
    writer.build(split, out, progress=False)
    with pytest.raises(atomic.OutputError, match="already exists.*--overwrite"):
        writer.build(split, out, progress=False)
    (tmp_path / "out" / "stale.txt").write_text("old")
    writer.build(split, out, overwrite=True, progress=False)
    assert not (tmp_path / "out" / "stale.txt").exists()
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]


def test_bad_image_fails_naming_it_and_leaves_nothing(tmp_path):
    split = make_split(tmp_path / "src", SPEC)
    bad = split.of("gallery")[0].path
    (tmp_path / "src" / bad).write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    with pytest.raises(DatasetError) as info:
        writer.build(split, str(tmp_path / "out"), progress=False)
    assert str(info.value).startswith(str(tmp_path / "src" / bad) + ": image does not decode")
    assert "\n" not in str(info.value)
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_skip_bad_images_lists_them(tmp_path):
    split = make_split(tmp_path / "src", SPEC)
    bad = split.of("train")[0].path
    (tmp_path / "src" / bad).write_bytes(b"not an image at all")
    manifest = writer.build(split, str(tmp_path / "out"), skip_bad_images=True, progress=False)
    assert [b["path"] for b in manifest["bad_images"]] == [bad]
    assert "not JPEG, PNG" in manifest["bad_images"][0]["error"]
    assert manifest["splits"]["train"]["images"] == 9
    _, problems = verify.verify(str(tmp_path / "out"))
    assert problems == []


def test_empty_split_is_an_error(tmp_path):
    split = make_split(tmp_path / "src", [s for s in SPEC if s[0] != "query"])
    with pytest.raises(DatasetError, match="empty split 'query'"):
        writer.build(split, str(tmp_path / "out"), progress=False)
    assert not (tmp_path / "out").exists()


def test_verify_catches_a_flipped_byte(tmp_path):
    split = make_split(tmp_path / "src", SPEC)
    out = tmp_path / "out"
    manifest = writer.build(split, str(out), progress=False)
    assert verify.verify(str(out))[1] == []
    shard = out / manifest["splits"]["gallery"]["shards"][0]["file"]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    problems = verify.verify(str(out))[1]
    assert any("sha256" in p and shard.name in p for p in problems)


def _duke_tree(root, fifo_pid=None):
    """A small DukeMTMC-reID layout; optionally one gallery image is a FIFO that blocks reads."""
    names = [f"bounding_box_train/{p:04d}_c{c}_f{p * 100 + c:07d}.jpg" for p in range(1, 31)
             for c in (1, 2)]
    names += [f"query/{p:04d}_c1_f{p:07d}.jpg" for p in range(40, 50)]
    names += [f"bounding_box_test/{p:04d}_c2_f{p:07d}.jpg" for p in range(40, 50)]
    write_images(root, names)
    if fifo_pid is not None:
        fifo = root / f"bounding_box_test/{fifo_pid:04d}_c3_f0000001.jpg"
        os.mkfifo(fifo)
        return fifo
    return None


def test_killed_run_leaves_nothing_that_looks_complete(tmp_path):
    src, out = tmp_path / "DukeMTMC-reID", tmp_path / "out"
    fifo = _duke_tree(src, fifo_pid=49)  # the last gallery identity: train shards get written
    cmd = [sys.executable, "-m", "tools.build_tfrecords", "--dataset=dukemtmc",
           f"--data_dir={tmp_path}", f"--output_dir={out}", "--records_per_shard=4",
           "--noprogress", "--num_workers=1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial, deadline = None, time.time() + 120
    while partial is None and time.time() < deadline and proc.poll() is None:
        for p in tmp_path.glob("out.partial-*"):
            if any(n.startswith("train-") for n in os.listdir(p)):
                partial = p
        time.sleep(0.05)
    proc.kill()  # the run is blocked reading the FIFO (or, on failure, must not linger)
    _, stderr = proc.communicate()
    assert partial is not None, stderr.decode()
    assert not out.exists()
    assert not list(tmp_path.rglob("manifest.json"))
    # A rerun with the image in place finishes, and cleans up the dead run's partial folder.
    fifo.unlink()
    write_images(src, [fifo.relative_to(src)])
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    assert (out / "manifest.json").is_file()
    assert not partial.exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["gallery"]["images"] == 11


def test_a_record_serialises_to_the_same_bytes_in_every_process():
    # Protobuf map order follows a per-process hash seed unless serialisation is deterministic:
    # without it, the same dataset gave other shard bytes (and checksums) in each process.
    code = ("import sys; from tfrecords_builder import features; sys.stdout.write(features."
            "serialize(b'img', 'png', 8, 4, 'a/b.png', 7, 2, 1).hex())")
    processes = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
                 for _ in range(2)]
    outputs = {process.communicate(timeout=120)[0] for process in processes}
    assert outputs == {features.serialize(b"img", "png", 8, 4, "a/b.png", 7, 2, 1).hex()}
