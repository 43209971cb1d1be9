"""`python -m tf_reid.train` end to end on synthetic data: workdir, evaluation, kill and resume."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO, write_generated
from tf_reid.training import workdir as workdir_lib
from tfrecords_builder import synthetic, writer

SMOKE = str(REPO / "configs" / "smoke.flags")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """24 identities (12 train, 12 test), 2 cameras x 3 images, 32x16 PNGs, as TFRecords."""
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.generate(str(root / "images"), num_identities=24, num_cameras=2,
                       images_per_identity_per_camera=3, height=32, width=16)
    writer.build(synthetic.parse(str(root / "images")), str(root / "tfrecords"),
                 records_per_shard=20, progress=False)
    return str(root / "tfrecords")


def command(data_dir, workdir, *extra):
    return [sys.executable, "-m", "tf_reid.train", f"--flagfile={SMOKE}", f"--data_dir={data_dir}",
            f"--workdir={workdir}", "--num_identities=4", "--height=32", "--width=16",
            "--noprogress", *extra]


def train(data_dir, workdir, *extra, timeout=300):
    return subprocess.run(command(data_dir, workdir, *extra), cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def variables(prefix: str) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if "save_counter" not in name}


def test_smoke_run_writes_the_workdir_and_evaluates(data_dir, tmp_path):
    workdir = tmp_path / "run"
    # Another global metric loss than TriHard (the other end-to-end runs train TriHard), and
    # students that see their own views (the kill-and-resume run shares one).
    done = train(data_dir, workdir, "--students=2", "--metric_loss=quadruplet",
                 "--mutual_views=independent")
    assert done.returncode == 0, done.stderr[-3000:]
    assert {"flags.txt", "model.json", "checkpoints", "best", "logs", "metrics.json"} <= set(
        os.listdir(workdir))
    # flags.txt is a valid flagfile holding the resolved values, command-line overrides included.
    flags_text = (workdir / "flags.txt").read_text().split()
    assert "--students=2" in flags_text and "--backbone=tiny" in flags_text
    assert "--metric_loss=quadruplet" in flags_text and "--mutual_views=independent" in flags_text
    assert sorted(os.listdir(workdir / "checkpoints")) == [
        "checkpoint", *[f"ckpt-{e}.{ext}" for e in (1, 2, 3)
                        for ext in ("data-00000-of-00001", "index")]]
    metrics = json.loads((workdir / "metrics.json").read_text())
    assert metrics["epoch"] == 3
    result = metrics["metrics"]["global"]
    assert result["num_query"] == 24 and 0.0 <= result["mAP"] <= 1.0
    assert 0.0 <= result["rank1"] <= result["rank5"] <= result["rank10"] <= 1.0
    best = json.loads((workdir / "best" / "best.json").read_text())
    assert best["metric"] == "global/mAP" and 1 <= best["epoch"] <= 3
    # Two students: each tracked separately, both restored from the best checkpoint.
    assert {"loss_0", "loss_1", "mutual_id", "mutual_metric"} <= set(metrics["train"])
    students = workdir_lib.load_students(str(workdir), "best")
    assert [s.name for s in students] == ["student_0", "student_1"]
    logs = os.listdir(workdir / "logs")
    assert len(logs) == 1 and logs[0].startswith("events.out.tfevents")


@pytest.mark.parametrize("values, message", [
    ({"epochs": 0}, "--epochs=0: must be >= 1"),
    ({"learning_rate": -0.01}, "--learning_rate=-0.01: must be > 0.0"),
    ({"learning_rate": 0.0}, "--learning_rate=0.0: must be > 0.0"),
    ({"erasing_probability": 1.5}, "--erasing_probability=1.5: must be in [0.0, 1.0]"),
    ({"warmup_factor": 0.0}, "--warmup_factor=0.0: must be in (0.0, 1.0]"),
    ({"last_stride": 3}, "--last_stride=3: must be in [1, 2]"),
    ({"eval_every": -2}, "--eval_every=-2: must be >= -1"),
    ({"num_instances": 0}, "--num_instances=0: must be >= 1"),
])
def test_numeric_flags_out_of_range_are_named(values, message):
    from tf_reid import train as train_cli

    assert train_cli.range_errors(values) == [message]


def test_numeric_flags_at_their_bounds_pass():
    from tf_reid import train as train_cli

    edges = {"epochs": 1, "learning_rate": 1e-9, "erasing_probability": 1.0, "warmup_factor": 1.0,
             "last_stride": 2, "eval_every": -1, "pad": 0, "embedding_dim": None}
    assert train_cli.range_errors(edges) == []


def test_batches_the_objective_cannot_use_are_refused():
    from tf_reid import train as train_cli

    triplet = {"global_triplet_weight": 1.0, "local_triplet_weight": 0.0}
    assert train_cli.batch_errors({**triplet, "num_identities": 4, "num_instances": 4}, 12) == []
    k1, p1, big = (train_cli.batch_errors({**triplet, "num_identities": p, "num_instances": k}, 12)
                   for p, k in ((4, 1), (1, 4), (13, 4)))
    assert len(k1) == 1 and k1[0].startswith("--num_instances=1: the triplet losses need K >= 2")
    assert len(p1) == 1 and p1[0].startswith("--num_identities=1: the triplet losses need P >= 2")
    assert big == ["--num_identities=13: more than the 12 training identities an epoch draws "
                   "from --data_dir"]
    # P is per replica: 4 x 3 replicas fill 12 identities, 4 x 4 do not.
    four = {**triplet, "num_identities": 4, "num_instances": 4}
    assert train_cli.batch_errors(four, 12, replicas=3) == []
    assert train_cli.batch_errors(four, 12, replicas=4) == [
        "--num_identities=4: x 4 replicas = 16 identities per step, more than the 12 training "
        "identities an epoch draws from --data_dir"]
    # The soft margin is TriHard's.
    assert train_cli.batch_errors({**triplet, "num_identities": 4, "num_instances": 4,
                                   "soft_margin": True, "metric_loss": "msml"}, 12) == [
        "--soft_margin: applies to --metric_loss=trihard, not --metric_loss=msml"]
    # Generated images need their folder, and the folder needs a count.
    assert train_cli.batch_errors({**four, "generated_per_batch": 2}, 12) == [
        "--generated_per_batch=2: needs --generated_dir"]
    assert train_cli.batch_errors({**four, "generated_dir": "gan", "generated_per_batch": 0},
                                  12) == ["--generated_dir=gan: has no effect without "
                                          "--generated_per_batch > 0"]
    # Views of their own need two students and no generated images (which have one view).
    assert train_cli.batch_errors({**four, "mutual_views": "independent", "students": 1}, 12) == [
        "--mutual_views=independent: needs --students >= 2, got --students=1"]
    assert train_cli.batch_errors({**four, "mutual_views": "independent", "students": 2,
                                   "generated_dir": "gan", "generated_per_batch": 2}, 12) == [
        "--mutual_views=independent: not with --generated_per_batch (generated images have "
        "one view)"]
    # ID loss alone trains on K = 1.
    id_only = {"global_triplet_weight": 0.0, "local_triplet_weight": 0.0}
    assert train_cli.batch_errors({**id_only, "num_identities": 4, "num_instances": 1}, 12) == []


def test_flags_txt_resumes_from_anywhere_and_refuses_changed_settings(data_dir, tmp_path):
    """(With generated images mixed in by LSRO, which the other end-to-end runs do not train.)"""
    workdir = tmp_path / "run"
    generated = write_generated(tmp_path, 9)
    # What a killed start leaves (flags, logs, no checkpoint) is nothing to resume: a run with
    # other settings starts afresh, --resume or not.
    (workdir / "logs").mkdir(parents=True)
    (workdir / "flags.txt").write_text("--margin=0.9\n")
    first = train(os.path.relpath(data_dir, REPO), workdir, "--epochs=1", "--eval_every=-1",
                  "--resume", f"--generated_dir={os.path.relpath(generated, REPO)}",
                  "--generated_per_batch=2")
    assert first.returncode == 0, first.stderr[-3000:]
    # flags.txt is a flagfile: absolute paths, and only the backbone flags tiny takes.
    text = (workdir / "flags.txt").read_text().split()
    assert f"--data_dir={data_dir}" in text and f"--workdir={workdir}" in text
    assert f"--generated_dir={generated}" in text and "--generated_per_batch=2" in text
    assert not [line for line in text if "last_stride" in line or "torch_padding" in line]

    def resume(*extra):
        return subprocess.run([sys.executable, "-m", "tf_reid.train",
                               f"--flagfile={workdir}/flags.txt", "--resume", *extra],
                              cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
                              capture_output=True, text=True, timeout=300)

    done = resume("--epochs=2", "--margin=0.5")
    assert done.returncode == 1 and "margin" in done.stderr and "error:" in done.stderr
    done = resume("--epochs=2", "--generated_per_batch=3")
    assert done.returncode == 1 and "generated_per_batch" in done.stderr
    # --epochs may grow: the run continues from epoch 1 to 2.
    done = resume("--epochs=2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert tf.train.latest_checkpoint(str(workdir / "checkpoints")).endswith("ckpt-2")


def test_joint_training_on_two_datasets_evaluates_each_and_resumes(data_dir, tmp_path):
    # A second dataset: 16 identities, the first 8 for training (the fixture's has 12 of 24).
    synthetic.generate(str(tmp_path / "images"), num_identities=16, num_cameras=2,
                       images_per_identity_per_camera=3, height=32, width=16, seed=1)
    second = str(tmp_path / "second")
    writer.build(synthetic.parse(str(tmp_path / "images")), second, records_per_shard=20,
                 progress=False)
    workdir = tmp_path / "run"
    done = train(f"{data_dir},{second}", workdir, "--epochs=1", "--eval_every=1")
    assert done.returncode == 0, done.stderr[-3000:]
    model = workdir_lib.read_model_config(str(workdir))
    # Labels 0..11 are the first dataset's 12 training identities, 12..19 the second's 8.
    assert model["num_classes"] == 20
    assert [(t["data_dir"], t["label_offset"], t["identities"])
            for t in model["training_sets"]] == [(data_dir, 0, 12), (second, 12, 8)]
    assert model["students"][0]["num_classes"] == 20
    # Each dataset evaluated under its own protocol; the top level is their mean.
    metrics = json.loads((workdir / "metrics.json").read_text())["metrics"]
    per_dataset = metrics["datasets"]
    assert sorted(per_dataset) == ["second", "tfrecords"]
    # One query per test identity and camera: 12 x 2 and 8 x 2.
    assert per_dataset["tfrecords"]["global"]["num_query"] == 24
    assert per_dataset["second"]["global"]["num_query"] == 16
    for key in ("rank1", "mAP"):
        assert metrics["global"][key] == pytest.approx(
            (per_dataset["tfrecords"]["global"][key] + per_dataset["second"]["global"][key]) / 2)
    assert metrics["global"]["num_query"] == sum(d["global"]["num_query"]
                                                 for d in per_dataset.values())
    # flags.txt keeps both folders, absolute; --resume continues.
    assert f"--data_dir={data_dir},{second}" in (workdir / "flags.txt").read_text().split()
    done = subprocess.run([sys.executable, "-m", "tf_reid.train",
                           f"--flagfile={workdir}/flags.txt", "--resume", "--epochs=2",
                           "--eval_every=-1"], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert tf.train.latest_checkpoint(str(workdir / "checkpoints")).endswith("ckpt-2")

    # tf_reid.evaluate on the best checkpoint (epoch 1, the one evaluated while training): by
    # default each joint dataset and the mean, as training scored them; and one dataset alone
    # (cross-dataset evaluation is the same flag).
    evaluate = [sys.executable, "-m", "tf_reid.evaluate", f"--workdir={workdir}", "--noprogress"]
    both = subprocess.Popen(evaluate, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    one = subprocess.run([*evaluate, f"--data_dir={second}", f"--output={tmp_path}/one.json"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    stdout, stderr = both.communicate(timeout=300)
    assert both.returncode == 0 and one.returncode == 0, stderr[-2000:] + one.stderr[-2000:]
    assert "== tfrecords: query 24 images" in stdout and "== mean over the 2 datasets" in stdout
    evaluated = json.loads((workdir / "eval.json").read_text())
    for name in ("tfrecords", "second"):
        assert evaluated["datasets"][name]["metrics"]["global"] == pytest.approx(
            per_dataset[name]["global"], abs=1e-6)
    assert evaluated["metrics"]["global"] == pytest.approx(metrics["global"], abs=1e-6)
    alone = json.loads((tmp_path / "one.json").read_text())
    assert alone["metrics"]["global"] == pytest.approx(per_dataset["second"]["global"], abs=1e-6)


def test_the_library_refuses_to_start_over_checkpoints_without_resume(tmp_path):
    """`loop.train(resume=False)` on a workdir that holds checkpoints: refused before any work."""
    from tf_reid.training import loop

    checkpoints = tmp_path / "run" / workdir_lib.CHECKPOINTS
    checkpoints.mkdir(parents=True)
    (checkpoints / "ckpt-1.index").write_bytes(b"")
    (checkpoints / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
    config = loop.TrainConfig(data_dirs=(str(tmp_path / "no_data"),),
                              workdir=str(tmp_path / "run"))
    with pytest.raises(workdir_lib.WorkdirError, match="holds checkpoints"):
        loop.train(config, resume=False)


def test_killed_and_resumed_equals_uninterrupted(data_dir, tmp_path):
    """SIGKILL as soon as a checkpoint is recorded, resume, and compare every variable
    (weights, BatchNorm statistics, Adam moments and iterations) with a run never killed."""
    extra = ["--epochs=3", "--eval_every=1", "--deterministic", "--students=2"]
    whole = train(data_dir, tmp_path / "whole", *extra)
    assert whole.returncode == 0, whole.stderr[-3000:]

    killed = tmp_path / "killed"
    process = subprocess.Popen(command(data_dir, killed, *extra), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = killed / "checkpoints" / "checkpoint"  # written after ckpt-1's files
    deadline = time.time() + 240
    while not first.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert first.exists()
    latest = tf.train.latest_checkpoint(str(killed / "checkpoints"))
    assert latest and not latest.endswith("ckpt-3"), "killed before the end"

    resumed = train(data_dir, killed, *extra, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected = variables(str(tmp_path / "whole" / "checkpoints" / "ckpt-3"))
    got = variables(str(killed / "checkpoints" / "ckpt-3"))
    assert sorted(got) == sorted(expected)
    assert any("optimizers" in name and "iteration" in name for name in got)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert json.loads((killed / "metrics.json").read_text())["metrics"] == json.loads(
        (tmp_path / "whole" / "metrics.json").read_text())["metrics"]


def free_ports(n: int) -> list[int]:
    """n ports nobody listens on now (held together while choosing, so they differ)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_cluster(data_dir, workdir, tmp_root, *extra, workers=2):
    """`workers` processes of tf_reid.train on localhost, one TF_CONFIG task each; returns
    their stdouts. Each process gets its own TMPDIR (tmp_root/<index>)."""
    spec = {"worker": [f"localhost:{port}" for port in free_ports(workers)]}
    processes = []
    try:
        for index in range(workers):
            tmp = tmp_root / str(index)
            tmp.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "TMPDIR": str(tmp), "TF_CONFIG": json.dumps(
                {"cluster": spec, "task": {"type": "worker", "index": index}})}
            processes.append(subprocess.Popen(
                command(data_dir, workdir, "--strategy=multi_worker", *extra), cwd=REPO, env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outputs = [p.communicate(timeout=300) for p in processes]
    finally:
        for p in processes:
            p.kill()
    for p, (_, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outputs]


def test_two_workers_take_the_steps_of_two_replicas_and_resume(data_dir, tmp_path):
    """MultiWorkerMirroredStrategy over two processes on localhost (one CPU replica each) must
    take exactly the steps of MirroredStrategy over two logical CPUs in one process: same data
    slices, all-reduced gradients, same BatchNorm statistics. Checked on the chief's
    checkpoints after a run of 1 epoch resumed by both workers to 2; the second worker reads
    the chief's checkpoint, writes nothing to the workdir and leaves no temporary files. One
    student (more are a loop inside the same step; the other tests train two), evaluated at the
    end only (kill-and-resume covers the best checkpoint across a resume)."""
    extra = ["--eval_every=0", "--students=1"]
    mirrored = train(data_dir, tmp_path / "mirrored", "--epochs=2", *extra,
                     "--strategy=mirrored", "--cpu_replicas=2")
    assert mirrored.returncode == 0, mirrored.stderr[-3000:]

    cluster = tmp_path / "cluster"
    run_cluster(data_dir, cluster, tmp_path / "tmp", "--epochs=1", *extra)
    assert tf.train.latest_checkpoint(str(cluster / "checkpoints")).endswith("ckpt-1")
    chief, other = run_cluster(data_dir, cluster, tmp_path / "tmp", "--epochs=2", "--resume",
                               *extra)
    assert f"trained 2 epochs in {cluster}" in chief
    assert f"worker-1: trained 2 epochs (the chief writes {cluster})" in other
    assert os.listdir(tmp_path / "tmp" / "1") == []

    assert sorted(os.listdir(cluster / "checkpoints")) == sorted(
        os.listdir(tmp_path / "mirrored" / "checkpoints"))
    expected = variables(str(tmp_path / "mirrored" / "checkpoints" / "ckpt-2"))
    got = variables(str(cluster / "checkpoints" / "ckpt-2"))
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    metrics = [json.loads((d / "metrics.json").read_text())["metrics"]["global"]
               for d in (cluster, tmp_path / "mirrored")]
    assert metrics[0] == pytest.approx(metrics[1], abs=1e-4)
