"""The converter and inspector CLIs, end to end on the real CUHK03 crops in ../shared."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import scipy.io

from tests.conftest import REPO
from tfrecords_builder import features, verify

NOISE = ("absl::InitializeLog", "cudart_stub", "cuInit", "cpu_feature_guard", "oneDNN")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def cuhk03_out(shared, tmp_path_factory):
    out = tmp_path_factory.mktemp("cuhk03") / "out"
    result = run("tools.build_tfrecords", "--dataset=cuhk03",
                 f"--data_dir={shared / 'data/cuhk03'}", f"--output_dir={out}", "--allow_missing")
    assert result.returncode == 0, result.stderr
    return out, result


def expected_cuhk03_counts(shared):
    """Counts worked out from the official split file and the files present, independently."""
    config = scipy.io.loadmat(shared / "data/cuhk03/cuhk03_new_protocol_config_labeled.mat")
    names = [str(n[0][0]) for n in config["filelist"]]
    labels = config["labels"].ravel()
    present = {os.path.splitext(n)[0] for n in os.listdir(shared / "data/cuhk03/images_labeled")}
    counts = {}
    for split in ("train", "query", "gallery"):
        idx = [i - 1 for i in config[f"{split}_idx"].ravel()
               if os.path.splitext(names[i - 1])[0] in present]
        counts[split] = (len(idx), len({labels[i] for i in idx}))
    return counts


def test_cuhk03_counts_match_the_issue_and_the_split_file(shared, cuhk03_out):
    out, result = cuhk03_out
    manifest = json.loads((out / "manifest.json").read_text())
    got = {s: (manifest["splits"][s]["images"], manifest["splits"][s]["identities"])
           for s in ("train", "query", "gallery")}
    assert got == {"train": (4145, 427), "query": (832, 416), "gallery": (3200, 416)}
    assert got == expected_cuhk03_counts(shared)
    assert manifest["num_classes"] == 427
    assert len(manifest["missing"]) == 14096 - 8177
    assert "missing (listed by the protocol, absent on disk): 5919" in result.stdout


def test_cuhk03_records_hold_the_source_files_bytes(shared, cuhk03_out):
    out, _ = cuhk03_out
    manifest = json.loads((out / "manifest.json").read_text())
    source = shared / "data/cuhk03"
    checked = 0
    for split, summary in manifest["splits"].items():
        for shard in summary["shards"]:
            for e in verify.read_shard(str(out / shard["file"])):
                path = e[features.PATH].decode()
                assert e[features.IMAGE] == (source / path).read_bytes(), path
                # Names are {pair}_{pid:03d}_{view}_{img:02d}; pair 1 only, so camid = view - 1.
                pair, _, view, _ = os.path.basename(path)[:-4].split("_")
                assert e[features.CAMID] == 2 * (int(pair) - 1) + int(view) - 1
                checked += 1
    assert checked == 8177


def test_cli_output_has_no_tensorflow_noise(cuhk03_out):
    _, result = cuhk03_out
    for line in (result.stdout + result.stderr).splitlines():
        assert not any(n in line for n in NOISE), line


def test_inspect_passes_then_catches_corruption(cuhk03_out, tmp_path):
    out, _ = cuhk03_out
    ok = run("tools.inspect_tfrecords", str(out))
    assert ok.returncode == 0, ok.stderr
    assert "train        4145    427" in ok.stdout
    assert not any(n in ok.stderr for n in NOISE)
    # A copy with one shard truncated: record count and checksum no longer agree.
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in os.listdir(out):
        data = (out / name).read_bytes()
        (copy / name).write_bytes(data[: len(data) // 2] if name.startswith("query-") else data)
    # The command's check, in this process (the command's lines are as for the intact copy).
    _, problems = verify.verify(str(copy), 8)
    assert [p for p in problems if "query-00000-of-00001.tfrecord: sha256" in p]
