"""tools.train_gan and tools.generate_gan_samples: the input pipeline, the sample grid, and a tiny
run killed after its first checkpoint, resumed, compared with an uninterrupted run, and turned
into TFRecords of generated images (same seed, same images)."""

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

from tests.conftest import REPO
from tf_reid.training import gan
from tf_reid.training import workdir as workdir_lib
from tfrecords_builder import features, synthetic, writer
from tfrecords_builder.manifest import read_manifest
from tfrecords_builder.records import GENERATED, NO_IDENTITY
from tools import generate_gan_samples, train_gan
from tools.cli import FlagError

TINY = ["--height=32", "--width=16", "--base_channels=4", "--batch_size=4", "--num_samples=8",
        "--log_every=2", "--noprogress"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """8 identities (4 train: 24 images), 2 cameras x 3 images, 32x16 PNGs, as TFRecords."""
    root = tmp_path_factory.mktemp("gan_data")
    synthetic.generate(str(root / "images"), num_identities=8, num_train_identities=4,
                       num_cameras=2, images_per_identity_per_camera=3, height=32, width=16)
    writer.build(synthetic.parse(str(root / "images")), str(root / "tfrecords"),
                 records_per_shard=10, progress=False)
    return str(root / "tfrecords")


def test_batches_are_scaled_crops_and_a_pass_depends_only_on_seed_and_epoch(data_dir):
    def batches(start_epoch, count, seed=0):
        data = gan.gan_dataset(data_dir, 32, 16, batch_size=4, seed=seed, start_epoch=start_epoch)
        return [b.numpy() for b in data.take(count)]

    from_zero = batches(0, 12)  # 24 images: 6 batches per pass
    assert from_zero[0].shape == (4, 32, 16, 3) and from_zero[0].dtype == np.float32
    assert -1.0 <= min(b.min() for b in from_zero) and max(b.max() for b in from_zero) <= 1.0
    # What a run resumed at epoch 1 reads is what the uninterrupted run read from epoch 1 on.
    np.testing.assert_array_equal(np.stack(batches(1, 6)), np.stack(from_zero[6:]))
    # Passes differ (order and flips); seeds differ.
    assert not np.array_equal(np.stack(from_zero[:6]), np.stack(from_zero[6:]))
    assert not np.array_equal(np.stack(batches(0, 6, seed=1)), np.stack(from_zero[:6]))


def test_sizes_and_batches_the_data_cannot_fill_are_flag_errors():
    with pytest.raises(FlagError, match="--height=100 --width=50: a DCGAN size is 4x2 doubled"):
        train_gan.check_size(100, 50)
    train_gan.check_size(32, 16)
    assert gan.steps_per_epoch(24, 4) == 6 and gan.steps_per_epoch(25, 4) == 6
    train_gan.check_batch(24, 24)
    with pytest.raises(FlagError, match="--batch_size=30: more than the 24 training images"):
        train_gan.check_batch(24, 30)


def test_image_grid_layout():
    images = np.stack([np.full((2, 1, 3), value, np.uint8) for value in (10, 20, 30)])
    grid = gan.image_grid(images, columns=2, pad=1, fill=255)
    # 2 rows x 2 columns of 2x1 cells, 1 pixel apart and from the edges; the 4th cell empty.
    assert grid.shape == (7, 5, 3)
    assert grid[1:3, 1, 0].tolist() == [10, 10] and grid[1:3, 3, 0].tolist() == [20, 20]
    assert grid[4:6, 1, 0].tolist() == [30, 30] and grid[4:6, 3, 0].tolist() == [255, 255]
    assert grid[0].max() == grid[0].min() == 255
    assert gan.grid_columns(32) == 8 and gan.grid_columns(8) == 4


def test_only_a_start_without_checkpoint_counts_as_failed(tmp_path):
    """What a run writes before its first checkpoint is cleared by the next run; anything else,
    or a checkpoint, keeps the workdir (refused unless --resume)."""
    workdir = tmp_path / "run"
    assert not workdir_lib.failed_start(str(workdir), gan.RUN_FILES)  # absent
    workdir.mkdir()
    assert not workdir_lib.failed_start(str(workdir), gan.RUN_FILES)  # empty: nothing to clear
    for name in ("flags.txt", "gan.json", "noise.npy", "noise.partial-99.npy"):
        (workdir / name).write_text("")
    (workdir / "samples").mkdir()
    assert workdir_lib.failed_start(str(workdir), gan.RUN_FILES)
    (workdir / "notes.txt").write_text("a user's file")
    assert not workdir_lib.failed_start(str(workdir), gan.RUN_FILES)
    (workdir / "notes.txt").unlink()
    (workdir / "checkpoints").mkdir()
    (workdir / "checkpoints" / "ckpt-1.index").write_bytes(b"")
    (workdir / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    assert not workdir_lib.failed_start(str(workdir), gan.RUN_FILES)


def command(module, *args):
    return [sys.executable, "-m", module, *args]


def variables(prefix: str) -> dict[str, np.ndarray]:
    """A checkpoint's values by object path (the object graph, which names Keras layers by how
    many a process created before, and the save counter left out)."""
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "save_counter" not in name and name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


def images_of(output_dir: str) -> dict[str, tuple[bytes, int, int, int]]:
    """{path: (encoded image, pid, camid, label)} of an output's generated split."""
    manifest = read_manifest(output_dir)
    assert list(manifest["splits"]) == [GENERATED]
    files = [os.path.join(output_dir, s["file"]) for s in manifest["splits"][GENERATED]["shards"]]
    return {e[features.PATH].numpy().decode(): (e[features.IMAGE].numpy(), int(e[features.PID]),
                                                int(e[features.CAMID]), int(e[features.LABEL]))
            for e in tf.data.TFRecordDataset(files).map(features.parse)}


def test_killed_run_resumes_as_uninterrupted_and_generates_by_seed(data_dir, tmp_path):
    """SIGKILL once the first checkpoint is recorded; resume and generate through the command
    lines (one interpreter: tests.tools.forked_commands); compare with a run never killed."""
    workdir = tmp_path / "run"
    args = [f"--data_dir={data_dir}", f"--workdir={workdir}", "--epochs=3", *TINY]
    process = subprocess.Popen(command("tools.train_gan", *args), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = workdir / "checkpoints" / "checkpoint"  # written after ckpt-1's files
    deadline = time.time() + 240
    while not first.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    latest = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    assert latest and not latest.endswith("ckpt-3"), "killed before the end"
    noise = np.load(workdir / "noise.npy")
    assert noise.shape == (8, 100)

    cases = [{"module": "tools.train_gan", "args": [*args, "--resume"]}]
    cases += [{"module": "tools.generate_gan_samples",
               "args": [f"--workdir={workdir}", "--num_images=10", f"--output_dir={out}",
                        f"--seed={seed}", "--batch_size=4", "--noprogress"]}
              for out, seed in ((tmp_path / "seed0", 0), (tmp_path / "seed1", 1))]
    (tmp_path / "cases.json").write_text(json.dumps([{**c, "cwd": str(REPO)} for c in cases]))
    done = subprocess.run(command("tests.tools.forked_commands", str(tmp_path / "cases.json"),
                                  str(tmp_path / "results.json")),
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    for result in results:
        assert result["status"] == 0, result["stderr"][-3000:]
    assert "trained 3 epochs" in results[0]["stdout"]
    assert "generated       10" in results[1]["stdout"]

    # The resumed run went on from the killed one's epoch, with the same sample noise.
    assert tf.train.latest_checkpoint(str(workdir / "checkpoints")).endswith("ckpt-3")
    np.testing.assert_array_equal(np.load(workdir / "noise.npy"), noise)
    assert {"epoch_0001.png", "epoch_0002.png", "epoch_0003.png", "latest.png"} <= set(
        os.listdir(workdir / "samples"))
    assert (workdir / "samples" / "latest.png").read_bytes() == (
        workdir / "samples" / "epoch_0003.png").read_bytes()
    assert set(os.listdir(workdir)) == set(gan.RUN_FILES)

    # Every variable (weights, BatchNorm statistics, both Adams, the epoch) equals a run never
    # killed, here trained by the library in this process.
    whole = tmp_path / "whole"
    os.makedirs(whole)
    result = gan.train(gan.GanConfig(
        data_dir=data_dir, workdir=str(whole), height=32, width=16, base_channels=4,
        batch_size=4, epochs=3, num_samples=8, log_every=2, progress=False))
    assert result["epoch"] == 3
    # TensorBoard: the epoch means, at the step counts of epochs 1-3 (6 steps each).
    steps = {}
    for event in tf.compat.v1.train.summary_iterator(str(next((whole / "logs").iterdir()))):
        for value in event.summary.value:
            steps.setdefault(value.tag, []).append(event.step)
    for name in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert steps[f"train/{name}"] == [6, 12, 18]
    expected = variables(str(whole / "checkpoints" / "ckpt-3"))
    got = variables(str(workdir / "checkpoints" / "ckpt-3"))
    assert sorted(got) == sorted(expected)
    assert any("discriminator_optimizer" in name and "iteration" in name for name in got)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)

    # Generated TFRecords: images of nobody; the same seed gives the same images in another
    # process (and batch size), another seed others.
    seed0 = images_of(str(tmp_path / "seed0"))
    assert sorted(seed0) == [f"generated/{i:06d}.png" for i in range(10)]
    assert {v[1:] for v in seed0.values()} == {(NO_IDENTITY, NO_IDENTITY, -1)}
    manifest = read_manifest(str(tmp_path / "seed0"))
    assert manifest["source"] == str(workdir) and manifest["num_classes"] == 0
    assert manifest["protocol"]["checkpoint"] == "ckpt-3" and manifest["protocol"]["seed"] == 0
    assert os.path.isfile(tmp_path / "seed0" / ".tf-reid-output")  # the writer's output kind
    generate_gan_samples.generate(str(workdir), 10, str(tmp_path / "again"), seed=0,
                                  batch_size=16, progress=False)
    assert images_of(str(tmp_path / "again")) == seed0
    seed1 = images_of(str(tmp_path / "seed1"))
    assert all(seed1[path][0] != seed0[path][0] for path in seed0)
    # Decoded, they are crops of the run's size.
    assert tf.io.decode_png(seed0["generated/000000.png"][0]).shape == (32, 16, 3)
