"""tools.export_saved_model and tools.embed end to end on a tiny workdir."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO
from tests.tf_reid.evaluation.conftest import make_tfrecords, make_workdir, tiny_model
from tf_reid.data import augment
from tf_reid.evaluation import features_file


def tool(name, *args):
    return subprocess.run([sys.executable, "-m", f"tools.{name}", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("export_cli"))
    data_dir = make_tfrecords(root)
    model = tiny_model(3)
    workdir = make_workdir(root, data_dir, model)
    done = tool("export_saved_model", f"--workdir={workdir}", f"--export_dir={root}/exports",
                "--model_name=reid", "--warmup_images=3")
    assert done.returncode == 0, done.stderr[-3000:]
    return root, data_dir, model, workdir, done


def test_export_writes_version_1_and_says_how_to_serve_it(exported):
    root, _, _, workdir, done = exported
    assert os.path.isfile(f"{root}/exports/reid/1/saved_model.pb")
    assert f"exported {root}/exports/reid/1" in done.stdout
    assert "tensorflow_model_server" in done.stdout and "--model_name=reid" in done.stdout


def test_embed_files_in_process_equals_the_keras_model(exported, tmp_path):
    root, _, model, _, _ = exported
    pattern = f"{root}/synthetic/query/*.png"
    files = sorted(glob.glob(pattern))
    assert files
    done = tool("embed", f"--saved_model={root}/exports/reid/1", f"--images={pattern}",
                f"--output={tmp_path}/q.npz", "--batch_size=3", "--noprogress")
    assert done.returncode == 0, done.stderr[-3000:]
    saved = np.load(tmp_path / "q.npz")
    assert list(saved["query/paths"]) == files
    # Synthetic names are Market-style: <pid>_c<cam>_<index>.png, cameras 1-based on disk.
    names = [os.path.basename(f) for f in files]
    assert list(saved["query/pids"]) == [int(n[:4]) for n in names]
    assert list(saved["query/camids"]) == [int(n[6]) - 1 for n in names]
    pixels = np.stack([augment.decode_and_resize(tf.io.read_file(f), 32, 16, tf.uint8).numpy()
                       for f in files])
    # Served as evaluated (tf_reid.evaluate's defaults): pre-BN, averaged with the mirror.
    g = (model(pixels, training=False)["global"].numpy()
         + model(np.ascontiguousarray(pixels[:, :, ::-1]), training=False)["global"].numpy()) / 2
    np.testing.assert_allclose(saved["query/global_"], g / np.linalg.norm(g, axis=1, keepdims=True),
                               atol=1e-5)
    # A features file of one split, as tf_reid.evaluate writes them (what build_index reads).
    query = features_file.load(str(tmp_path / "q.npz"), "query")
    np.testing.assert_array_equal(query.global_, saved["query/global_"])
    assert query.local is None and query.tracklets.tolist() == [-1] * len(files)
    assert features_file.load_metadata(str(tmp_path / "q.npz"))["splits"] == {"query": "query"}
    assert os.listdir(tmp_path) == ["q.npz"]
