"""`--dataset=list`: a CSV of path,pid,camid,split rows over the user's own image folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO, image_bytes, write_images
from tf_reid.data.tfrecords import shard_files
from tf_reid.evaluation.metrics import evaluate_rank
from tfrecords_builder import features, list_file, parser
from tfrecords_builder.records import DatasetError, Record
from tools.build_tfrecords import check_required
from tools.cli import FlagError

IMAGES = ["cam0/a.jpg", "cam1/b.jpg", "cam0/c.jpg", "cam1/d.jpg"]
GOOD = [Record("cam0/a.jpg", 1, 0, "train"), Record("cam1/b.jpg", 1, 1, "train"),
        Record("cam0/c.jpg", 2, 0, "query"), Record("cam1/d.jpg", 2, 1, "gallery")]


@pytest.fixture
def world(tmp_path, monkeypatch):
    """cwd = tmp_path holding `root/` with IMAGES; lists are written beside it as l.csv."""
    write_images(tmp_path / "root", IMAGES)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def parse_quietly(text: str | bytes, name: str = "l.csv"):
    """list_file.parse of `text` written to `name`, failing on any warning."""
    with open(name, "wb") as f:
        f.write(text if isinstance(text, bytes) else text.encode())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return list_file.parse("root", name)


def test_registered_as_list():
    assert parser("list") is list_file.parse


def test_good_list_with_header_and_blank_lines(world):
    parsed = parse_quietly("path,pid,camid,split\ncam0/a.jpg,1,0,train\ncam1/b.jpg,1,1,train\n"
                           "\n\ncam0/c.jpg,2,0,query\ncam1/d.jpg,2,1,gallery\n")
    assert parsed.records == tuple(GOOD)
    assert (parsed.dataset, parsed.source) == ("list", "root")
    assert parsed.protocol["list"] == str(world / "l.csv")
    assert parsed.protocol["protocol"] == "single-query"
    assert len(parsed.protocol["list_sha256"]) == 64


def test_good_list_without_header(world):
    parsed = parse_quietly("cam0/a.jpg,1,0,train\ncam1/b.jpg,1,1,train\ncam0/c.jpg,2,0,query\n"
                           "cam1/d.jpg,2,1,gallery\n")
    assert parsed.records == tuple(GOOD)


def test_spreadsheet_export(world):
    """Byte-order mark, CRLF, padded fields, an all-empty row, a quoted path with a comma, a
    path spelled with `./` (stored normalised), and large non-contiguous ids kept as given."""
    write_images(world / "root", ["cam1/b, c.jpg"])
    parsed = parse_quietly("\ufeffpath , pid,camid,split\r\n ./cam0/a.jpg , 1001 ,7, train\r\n"
                           ",,,\r\n\"cam1/b, c.jpg\",42,3,query\r\ncam1/d.jpg,42,0,gallery\r\n")
    assert parsed.records == (Record("cam0/a.jpg", 1001, 7, "train"),
                              Record("cam1/b, c.jpg", 42, 3, "query"),
                              Record("cam1/d.jpg", 42, 0, "gallery"))


# The bad row is line 4: after the header (1), a good row (2) and a blank line (3).
@pytest.mark.parametrize("row, problem", [
    ("cam1/b.jpg,1,1", "expected 4 fields path,pid,camid,split, got 3"),
    ("cam1/b.jpg,1,1,train,tall", "expected 4 fields path,pid,camid,split, got 5 (quote a path"),
    ("cam1/b.jpg,one,1,train", "pid 'one' is not an integer"),
    ("cam1/b.jpg,1_000,1,train", "pid '1_000' is not an integer"),
    ("cam1/b.jpg,1,1.0,train", "camid '1.0' is not an integer"),
    ("cam1/b.jpg,-1,1,train", "pid -1 is negative"),
    ("cam1/b.jpg,1,1,test", "unknown split 'test' (expected train, query, gallery)"),
    ("cam1/b.jpg,1,1,Train", "unknown split 'Train'"),
    ("cam1/e.jpg,1,1,train", "missing image root/cam1/e.jpg"),
    ("cam1,1,1,train", "missing image root/cam1"),
    ("/etc/passwd,1,1,train", "path /etc/passwd is absolute"),
    ("../root/cam1/b.jpg,1,1,train", "path ../root/cam1/b.jpg leaves --data_dir"),
    ("cam0/../cam0/a.jpg,1,1,train", "path cam0/a.jpg is also on line 2"),
    (",1,1,train", "empty path"),
    ('"cam1/b.jpg,1,1,train', "a quoted field runs over several lines (a quote left open?)"),
    ("x" * 200_000 + ",1,1,train", "field larger than field limit"),
])
def test_bad_row_names_file_and_line(world, row, problem):
    text = f"path,pid,camid,split\ncam0/a.jpg,1,0,train\n\n{row}\ncam0/c.jpg,2,0,query\n" \
           "cam1/d.jpg,2,1,gallery\n"
    with pytest.raises(DatasetError) as e:
        parse_quietly(text)
    assert str(e.value).startswith(f"l.csv:4: {problem}")
    assert "\n" not in str(e.value) and "bad rows" not in str(e.value)


def test_first_bad_row_and_how_many(world):
    text = "\ncam0/a.jpg,x,0,train\ncam1/b.jpg,1,1,train\ncam0/c.jpg,2,0,probe\n" \
           "cam1/d.jpg,2,1,gallery\ncam1/d.jpg,2,1,gallery\n"
    with pytest.raises(DatasetError, match=r"^l\.csv:2: pid 'x' is not an integer "
                                           r"\(first of 3 bad rows\)$"):
        parse_quietly(text)


def test_header_in_another_order(world):
    with pytest.raises(DatasetError, match=r"^l\.csv:2: header path,pid,split,camid is not "
                                           r"path,pid,camid,split"):
        parse_quietly("\npath,pid,split,camid\ncam0/a.jpg,1,train,0\n")


def test_a_split_without_rows(world):
    with pytest.raises(DatasetError, match=r"^l\.csv: no gallery rows"):
        parse_quietly("cam0/a.jpg,1,0,train\ncam0/c.jpg,2,0,query\n")


def test_missing_list_or_root(world):
    with pytest.raises(DatasetError, match=r"^nope\.csv: missing file \(--list\)"):
        list_file.parse("root", "nope.csv")
    with pytest.raises(DatasetError, match=r"^nowhere: missing folder"):
        list_file.parse("nowhere", "l.csv")


def test_relative_list_is_read_from_the_cwd_not_the_root(world):
    (world / "root" / "l.csv").write_text("not,a,list\n")
    parsed = parse_quietly("cam0/a.jpg,1,0,train\ncam1/b.jpg,1,1,train\ncam0/c.jpg,2,0,query\n"
                           "cam1/d.jpg,2,1,gallery\n")
    assert parsed.records == tuple(GOOD)


def test_not_utf8(world):
    with pytest.raises(DatasetError, match=r"^l\.csv: not UTF-8 text \(byte 5"):
        parse_quietly(b"cam0/\xff.jpg,1,0,train\n")


UNSCORABLE = """\
path,pid,camid,split
t/1.jpg,1,0,train
q/2a.jpg,2,0,query
q/2b.jpg,2,1,query
q/3.jpg,3,0,query
q/4a.jpg,4,0,query
q/4b.jpg,4,0,query
q/5.jpg,5,1,query
q/6.jpg,6,2,query
g/4.jpg,4,0,gallery
g/5a.jpg,5,0,gallery
g/5b.jpg,5,1,gallery
g/6.jpg,6,0,gallery
g/7.jpg,7,1,gallery
"""


def test_unscorable_queries_are_warnings_with_counts(world):
    """Pids 2 (two queries) and 3 (one) have no gallery image; pid 4's two camera-0 queries find
    pid 4 only in camera 0. Pid 5 (camera 1 has a same-camera and a cross-camera match) and pid 6
    (camera 2 -> 0) are scored."""
    write_images(world / "root", [line.split(",")[0] for line in UNSCORABLE.splitlines()[1:]])
    (world / "l.csv").write_text(UNSCORABLE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parsed = list_file.parse("root", "l.csv")
    assert [str(w.message) for w in caught] == [
        "l.csv: query identities with no gallery image: 2, their 3 queries are skipped in "
        "evaluation (e.g. pid 2, line 3)",
        "l.csv: queries whose identity is in the gallery only under their own camera: 2, "
        "skipped in evaluation (e.g. line 6: q/4a.jpg, pid 4, camid 0)",
    ]
    # The evaluation's own rule skips exactly those five queries.
    query, gallery = parsed.of("query"), parsed.of("gallery")
    details = evaluate_rank(np.random.default_rng(0).random((len(query), len(gallery))),
                            np.array([r.pid for r in query]), np.array([r.pid for r in gallery]),
                            np.array([r.camid for r in query]),
                            np.array([r.camid for r in gallery]), max_rank=1,
                            return_details=True)
    skipped = [r.path for r, ap in zip(query, details["ap"]) if np.isnan(ap)]
    assert skipped == ["q/2a.jpg", "q/2b.jpg", "q/3.jpg", "q/4a.jpg", "q/4b.jpg"]


def test_dataset_list_needs_the_list_flag():
    with pytest.raises(FlagError, match=r"^--dataset=list needs --list$"):
        check_required(list_file.parse, {}, "--dataset=list")
    check_required(list_file.parse, {"list_file": "l.csv"}, "--dataset=list")


def test_converted_list_reads_back_record_by_record(tmp_path):
    """The command on a list (relative --list and --data_dir, read from the cwd), then every
    record of every split read back through the manifest's shards and checked against the list:
    path, pid, camid, the training label (train pids 10, 20 -> 0, 1), and the image bytes."""
    rows = [("people/p20_c1.png", 20, 1, "train"), ("people/p10_c0.jpg", 10, 0, "train"),
            ("people/p10_c2.jpg", 10, 2, "train"), ("people/p20_c2.png", 20, 2, "train"),
            ("probe/p5.jpg", 5, 0, "query"), ("probe/p7.jpg", 7, 1, "query"),
            ("gallery/p5_c1.jpg", 5, 1, "gallery"), ("gallery/p5_c0.jpg", 5, 0, "gallery"),
            ("gallery/p7_c1.jpg", 7, 1, "gallery"), ("gallery/p9_c3.png", 9, 3, "gallery")]
    listed = {}
    for seed, (path, pid, camid, split) in enumerate(rows):
        data = image_bytes(8 + seed, 4, "PNG" if path.endswith(".png") else "JPEG", seed)
        write_images(tmp_path / "mine", [path], data)
        listed[path] = (pid, camid, split, data)
    (tmp_path / "own.csv").write_text(
        "path,pid,camid,split\n" + "".join(f"{p},{pid},{c},{s}\n" for p, pid, c, s in rows))
    result = subprocess.run(
        [sys.executable, "-m", "tools.build_tfrecords", "--dataset=list", "--data_dir=mine",
         "--list=own.csv", "--output_dir=out", "--records_per_shard=2", "--noprogress"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
        text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    # Query p7 (camera 1) has only gallery p7_c1 (camera 1): skipped in evaluation.
    assert result.stderr.splitlines() == [
        "warning: own.csv: queries whose identity is in the gallery only under their own "
        "camera: 1, skipped in evaluation (e.g. line 7: probe/p7.jpg, pid 7, camid 1)"]
    out = str(tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["dataset"] == "list"
    assert manifest["source"] == str(tmp_path / "mine")
    assert manifest["protocol"]["list"] == str(tmp_path / "own.csv")
    assert manifest["label_map"] == {"10": 0, "20": 1}
    seen = {}
    for split in ("train", "query", "gallery"):
        for shard in shard_files(out, split, manifest):
            for e in tf.data.TFRecordDataset(shard).map(features.parse):
                path = e[features.PATH].numpy().decode()
                pid, camid, split_, data = listed[path]
                label = manifest["label_map"][str(pid)] if split == "train" else -1
                assert (split, int(e[features.PID]), int(e[features.CAMID]),
                        int(e[features.LABEL])) == (split_, pid, camid, label), path
                assert e[features.IMAGE].numpy() == data, path
                seen[path] = split
    assert sorted(seen) == sorted(listed)
    assert {s: manifest["splits"][s]["images"] for s in ("train", "query", "gallery")} == \
        {"train": 4, "query": 2, "gallery": 4}
