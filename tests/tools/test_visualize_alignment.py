"""The alignment picture end to end: a tiny workdir, the printed distances against the restored
model's features of the same two images, and the one-shard image reader."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO
from tests.tf_reid.evaluation.conftest import (HEIGHT, WIDTH, make_tfrecords, make_workdir,
                                               tiny_model)
from tf_reid.data.eval_input import eval_dataset
from tf_reid.evaluation import extract
from tf_reid.evaluation.matching import global_distances, local_distances
from tf_reid.training.workdir import load_student
from tfrecords_builder import synthetic, writer
from tfrecords_builder.manifest import read_manifest
from tools.visualize_alignment import read_image

QUERY, GALLERY = 5, 11  # q5 (pid 5, cam 1) and g11 (pid 5): past the first shards


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """root/data (the workdir's data_dir), root/sharded (its images in shards of an identity
    each: 4 query and 4 gallery shards) and root/workdir (a tiny model, one checkpoint)."""
    root = str(tmp_path_factory.mktemp("alignment"))
    data_dir = make_tfrecords(root)
    sharded = os.path.join(root, "sharded")
    writer.build(synthetic.parse(os.path.join(root, "synthetic")), sharded, records_per_shard=1,
                 progress=False)
    return {"root": root, "sharded": sharded,
            "workdir": make_workdir(root, data_dir, tiny_model(seed=2))}


def test_picture_and_distances_of_one_pair(world):
    output = os.path.join(world["root"], "pictures", "q5_g11.png")
    # --data_dir: the sharded copy instead of the workdir's data_dir, so the command has to
    # find each image's shard.
    command = subprocess.Popen(
        [sys.executable, "-m", "tools.visualize_alignment", f"--workdir={world['workdir']}",
         f"--data_dir={world['sharded']}", f"--query={QUERY}", f"--gallery={GALLERY}",
         f"--output={output}"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    # Meanwhile, what tf_reid.evaluate would rank the pair by, from the restored model.
    model_fn = extract.keras_model_fn(load_student(world["workdir"]))
    query, gallery = (extract.extract_split(model_fn, world["sharded"], split, HEIGHT, WIDTH,
                                            progress=False) for split in ("query", "gallery"))
    want_local = local_distances(query.local[QUERY:QUERY + 1],
                                 gallery.local[GALLERY:GALLERY + 1])[0, 0]
    want_global = global_distances(query.global_[QUERY:QUERY + 1],
                                   gallery.global_[GALLERY:GALLERY + 1], normalize=True)[0, 0]
    stdout, stderr = command.communicate(timeout=300)

    assert command.returncode == 0, stderr
    lines = stdout.splitlines()
    assert len(lines) == 1
    match = re.fullmatch(
        rf"wrote {re.escape(output)} \(query {QUERY} pid (\d+) cam (\d+), gallery {GALLERY} "
        r"pid (\d+) cam (\d+), local distance ([\d.]+), global distance ([\d.]+)\)", lines[0])
    assert match, lines[0]
    assert [int(v) for v in match.groups()[:4]] == [
        query.pids[QUERY], query.camids[QUERY], gallery.pids[GALLERY], gallery.camids[GALLERY]]
    assert float(match[5]) == pytest.approx(want_local, abs=2e-5)
    assert float(match[6]) == pytest.approx(want_global, abs=2e-5)
    # 4 stripes of normalised features: the path's 7 cells, each in (0, tanh(1)].
    assert 0 < float(match[5]) < 7 * np.tanh(1.0)
    with Image.open(output) as picture:
        assert picture.format == "PNG" and picture.size == (1100, 600)


def test_read_image_finds_the_image_in_its_shard(world):
    manifest = read_manifest(world["sharded"])
    for split in ("query", "gallery"):
        shards = [s["records"] for s in manifest["splits"][split]["shards"]]
        assert len(shards) == 4
        want = next(iter(eval_dataset(world["sharded"], split, HEIGHT, WIDTH, batch_size=100)))
        # The first and last image of every shard.
        starts = np.cumsum([0, *shards[:-1]])
        for index in sorted({*starts, *(starts + shards - 1)}):
            got = read_image(world["sharded"], manifest, split, index, HEIGHT, WIDTH)
            assert got["path"] == want["path"][index].numpy(), (split, index)
            np.testing.assert_array_equal(got["image"], want["image"][index].numpy())
            assert got["pid"] == want["pid"][index] and got["camid"] == want["camid"][index]
