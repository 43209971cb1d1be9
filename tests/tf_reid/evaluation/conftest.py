"""Shared evaluation fixtures: tiny TFRecords, models and workdirs, hand-built features, and the
slow per-query single-gallery-shot reference.

Also imported by tests/tf_reid/test_evaluate.py and tests/tools/*.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from tf_reid.evaluation.features_file import SplitFeatures
from tf_reid.models.aligned_reid import AlignedReID
from tf_reid.training.workdir import checkpoint, save_model_config
from tfrecords_builder import synthetic, writer
from tfrecords_builder.records import ParsedDataset

HEIGHT, WIDTH = 32, 16
# The protocol options `tfrecords_builder.cuhk03.parse` records for classic split 0.
CLASSIC_PROTOCOL = {"protocol": "classic", "box_type": "labeled", "source": "images",
                    "allow_missing": False, "split_index": 0}


def make_tfrecords(root: str) -> str:
    """Synthetic TFRecords of 32x16 images: 4 test identities x 2 cameras x 3 images.

    Each test identity gives one query per camera (8 queries) and the rest to the gallery (16).
    The images are generated into ROOT/synthetic.
    """
    source = os.path.join(root, "synthetic")
    synthetic.generate(source, num_identities=6, num_train_identities=2, num_cameras=2,
                       images_per_identity_per_camera=3, height=HEIGHT, width=WIDTH)
    data_dir = os.path.join(root, "data")
    writer.build(synthetic.parse(source), data_dir, progress=False)
    return data_dir


def make_classic_tfrecords(root: str) -> str:
    """The images of `make_tfrecords(root)` laid out as CUHK03's classic protocol lays them out.

    As `tfrecords_builder.cuhk03.classic_records` does, every test image (4 identities x 2
    cameras x 3) is both a query and a gallery item (24 each), and the manifest records dataset
    "cuhk03" with the classic protocol. Call after `make_tfrecords(root)`.
    """
    parsed = synthetic.parse(os.path.join(root, "synthetic"))
    test = [r for r in parsed.records if r.split != "train"]
    records = tuple([r for r in parsed.records if r.split == "train"]
                    + [dataclasses.replace(r, split=s) for s in ("query", "gallery")
                       for r in test])
    data_dir = os.path.join(root, "classic")
    writer.build(ParsedDataset("cuhk03", parsed.source, records, CLASSIC_PROTOCOL), data_dir,
                 progress=False)
    return data_dir


def tiny_model(seed: int = 0) -> AlignedReID:
    """A tiny AlignedReID whose BatchNorm statistics are not the identity (so they matter)."""
    keras_model = AlignedReID(num_classes=2, backbone="tiny", input_shape=(HEIGHT, WIDTH, 3))
    rng = np.random.default_rng(seed)
    for variable in keras_model.non_trainable_variables:
        if "moving_variance" in variable.path:
            variable.assign(rng.uniform(0.5, 2.0, variable.shape).astype(np.float32))
        elif "moving_mean" in variable.path:
            variable.assign(rng.normal(0, 0.1, variable.shape).astype(np.float32))
    return keras_model


def make_workdir(root: str, data_dir: str, keras_model: AlignedReID) -> str:
    """A training workdir holding `keras_model`: model.json and one checkpoint."""
    workdir = os.path.join(root, "workdir")
    os.makedirs(workdir)
    save_model_config(workdir, [keras_model], data_dir=data_dir)
    tf.train.CheckpointManager(checkpoint([keras_model]), os.path.join(workdir, "checkpoints"),
                               3).save()
    return workdir


def features(global_, local=None, pids=(), camids=()) -> SplitFeatures:
    """SplitFeatures of images img0.png, img1.png, ... of an image dataset (no tracklets)."""
    n = len(pids)
    return SplitFeatures(
        global_=np.asarray(global_, np.float32),
        local=None if local is None else np.asarray(local, np.float32),
        pids=np.asarray(pids, np.int64), camids=np.asarray(camids, np.int64),
        paths=np.array([f"img{i}.png" for i in range(n)]),
        tracklets=np.full(n, -1, np.int64), frames=np.full(n, -1, np.int64))


A, B = [[1.0, 0.0]], [[0.0, 1.0]]  # one-stripe local features; aligned distance tanh(sqrt(2)/2)


def hand_built_features() -> tuple[SplitFeatures, SplitFeatures]:
    """Features on a line (global = [x, 0]): 3 queries, 6 gallery items.

    q0 (x=0, pid 1, cam 0), q1 (x=3.1, pid 2, cam 0), q2 (x=5, pid 3, cam 0: its only gallery
    image is in its own camera, so it is skipped). Gallery x, pid, cam: g0 0 1 0 (junk for q0),
    g1 1 2 1, g2 2 1 1, g3 4 1 1, g4 3 2 1, g5 5 3 0. Every stripe is A except g1's, B.
    """
    query = features([[0, 0], [3.1, 0], [5, 0]], [A, A, A], pids=[1, 2, 3], camids=[0, 0, 0])
    gallery = features([[0, 0], [1, 0], [2, 0], [4, 0], [3, 0], [5, 0]], [A, B, A, A, A, A],
                       pids=[1, 2, 1, 1, 2, 3], camids=[0, 1, 1, 1, 1, 0])
    return query, gallery


@pytest.fixture
def hand_built() -> tuple[SplitFeatures, SplitFeatures]:
    """`hand_built_features()`."""
    return hand_built_features()


def reference_single_gallery_shot(distmat, q_pids, g_pids, q_camids, g_camids, max_rank, repeats,
                                  seed):
    """The slow obvious twin of `evaluate_single_gallery_shot`: one query and one repeat at a
    time, same random keys as the fast one.

    Per repeat it draws one uniform key per (query, gallery item) — the fast version's draw for
    fewer than 256 queries — and samples, per pid, the non-junk item with the smallest key.

    Returns:
      (cmc [max_rank], mean AP = mean 1 / rank, number of evaluated queries).
    """
    rng = np.random.default_rng(seed)
    num_q, num_g = distmat.shape
    keys = [rng.random((num_q, num_g)) for _ in range(repeats)]
    cmc_sum, ap_sum, evaluated = np.zeros(max_rank), 0.0, 0
    for q in range(num_q):
        valid = [g for g in range(num_g)
                 if not (g_pids[g] == q_pids[q] and g_camids[g] == q_camids[q])]
        if not any(g_pids[g] == q_pids[q] for g in valid):
            continue
        evaluated += 1
        for r in range(repeats):
            sampled = []
            for pid in sorted({g_pids[g] for g in valid}):
                items = [g for g in valid if g_pids[g] == pid]
                sampled.append(min(items, key=lambda g: keys[r][q, g]))
            ranked = sorted(sampled, key=lambda g: (distmat[q, g], g))
            rank = 1 + next(i for i, g in enumerate(ranked) if g_pids[g] == q_pids[q])
            cmc_sum += np.arange(1, max_rank + 1) >= rank
            ap_sum += 1.0 / rank
    return cmc_sum / (evaluated * repeats), ap_sum / (evaluated * repeats), evaluated
