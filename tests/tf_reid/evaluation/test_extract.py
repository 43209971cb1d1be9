"""Feature extraction against the model called directly; hand-worked retrieval metrics; the file."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import tensorflow as tf

from tf_reid.data.eval_input import eval_dataset
from tf_reid.evaluation import extract, metrics, reranking
from tf_reid.models.aligned_reid import AlignedReID
from tf_reid.training.workdir import checkpoint, save_model_config
from tfrecords_builder import synthetic, writer

HEIGHT, WIDTH = 32, 16


def make_tfrecords(root: str) -> str:
    """Synthetic TFRecords of 32x16 images: 4 test identities x 2 cameras x 3 images.

    Each test identity gives one query per camera (8 queries) and the rest to the gallery (16).
    """
    source = os.path.join(root, "synthetic")
    synthetic.generate(source, num_identities=6, num_train_identities=2, num_cameras=2,
                       images_per_identity_per_camera=3, height=HEIGHT, width=WIDTH)
    data_dir = os.path.join(root, "data")
    writer.build(synthetic.parse(source), data_dir, progress=False)
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


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return make_tfrecords(str(tmp_path_factory.mktemp("extract")))


def gallery_batches(data_dir: str, flip: bool) -> list[dict[str, np.ndarray]]:
    return [{k: v.numpy() for k, v in b.items()}
            for b in eval_dataset(data_dir, "gallery", HEIGHT, WIDTH, batch_size=5, flip=flip)]


def test_features_equal_the_model_called_directly(data_dir):
    keras_model = tiny_model()
    batches = gallery_batches(data_dir, flip=False)
    images = np.concatenate([b["image"] for b in batches])
    direct = keras_model(images, training=False)

    got = extract.extract_features(extract.keras_model_fn(keras_model),
                                   eval_dataset(data_dir, "gallery", HEIGHT, WIDTH, batch_size=5),
                                   progress=False)
    assert len(got) == 16 and got.global_.dtype == np.float32
    np.testing.assert_allclose(got.global_, direct["global"].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got.local, direct["local"].numpy(), rtol=1e-5, atol=1e-5)
    for field, key in (("pids", "pid"), ("camids", "camid"), ("tracklets", "tracklet"),
                       ("frames", "frame")):
        np.testing.assert_array_equal(getattr(got, field),
                                      np.concatenate([b[key] for b in batches]))
    assert got.paths.tolist() == [p.decode() for b in batches for p in b["path"]]
    assert all(p.startswith("bounding_box_test/") for p in got.paths)

    without_local = extract.extract_features(keras_model.__call__, batches, with_local=False,
                                             progress=False)
    assert without_local.local is None
    np.testing.assert_allclose(without_local.global_, got.global_, rtol=1e-5, atol=1e-5)


def test_flip_averages_the_image_and_its_mirror(data_dir):
    keras_model = tiny_model(seed=1)
    images = np.concatenate([b["image"] for b in gallery_batches(data_dir, flip=False)])
    plain = keras_model(images, training=False)
    mirrored = keras_model(np.ascontiguousarray(images[:, :, ::-1]), training=False)
    want = {k: (plain[k].numpy() + mirrored[k].numpy()) / 2 for k in ("global", "local")}
    # The mirror of a person is not the person: flipping must change the features.
    assert not np.allclose(plain["global"].numpy(), want["global"], atol=1e-3)

    model_fn = extract.keras_model_fn(keras_model)
    # The dataset's own mirror ("image_flipped"), and one made here when the batch lacks it.
    for flip_in_dataset in (True, False):
        got = extract.extract_features(model_fn, gallery_batches(data_dir, flip_in_dataset),
                                       flip=True, progress=False)
        np.testing.assert_allclose(got.global_, want["global"], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got.local, want["local"], rtol=1e-5, atol=1e-5)


def test_extract_split_reads_the_split_in_manifest_order(data_dir):
    keras_model = tiny_model()
    got = extract.extract_split(extract.keras_model_fn(keras_model), data_dir, "query", HEIGHT,
                                WIDTH, batch_size=3, progress=True)
    assert len(got) == 8
    # One query per test identity (3..6) per camera (0, 1), shards in pid order.
    assert sorted(zip(got.pids.tolist(), got.camids.tolist())) == [
        (p, c) for p in range(3, 7) for c in (0, 1)]
    assert got.pids.tolist() == sorted(got.pids.tolist())


def test_empty_dataset_is_an_error():
    with pytest.raises(ValueError, match="no images"):
        extract.extract_features(lambda x: {}, [], progress=False)


def features(global_, local=None, pids=(), camids=()) -> extract.Features:
    n = len(pids)
    return extract.Features(
        global_=np.asarray(global_, np.float32),
        local=None if local is None else np.asarray(local, np.float32),
        pids=np.asarray(pids, np.int64), camids=np.asarray(camids, np.int64),
        paths=np.array([f"img{i}.png" for i in range(n)]),
        tracklets=np.full(n, -1, np.int64), frames=np.full(n, -1, np.int64))


A, B = [[1.0, 0.0]], [[0.0, 1.0]]  # one-stripe local features; aligned distance tanh(sqrt(2)/2)


@pytest.fixture
def hand_built() -> tuple[extract.Features, extract.Features]:
    """Features on a line (global = [x, 0]): 3 queries, 6 gallery items.

    q0 (x=0, pid 1, cam 0), q1 (x=3.1, pid 2, cam 0), q2 (x=5, pid 3, cam 0: its only gallery
    image is in its own camera, so it is skipped). Gallery x, pid, cam: g0 0 1 0 (junk for q0),
    g1 1 2 1, g2 2 1 1, g3 4 1 1, g4 3 2 1, g5 5 3 0. Every stripe is A except g1's, B.
    """
    query = features([[0, 0], [3.1, 0], [5, 0]], [A, A, A], pids=[1, 2, 3], camids=[0, 0, 0])
    gallery = features([[0, 0], [1, 0], [2, 0], [4, 0], [3, 0], [5, 0]], [A, B, A, A, A, A],
                       pids=[1, 2, 1, 1, 2, 3], camids=[0, 1, 1, 1, 1, 0])
    return query, gallery


def test_evaluate_features_hand_worked(hand_built):
    query, gallery = hand_built
    got = extract.evaluate_features(query, gallery, local=True, normalize=False, local_weight=2.0)
    assert list(got) == ["global", "global+local"]
    # Global. q0 ranks (junk g0 removed) g1 x, g2 hit, g4 x, g3 hit, g5 x: hits at 2 and 4,
    # AP (1/2 + 2/4) / 2 = 0.5, INP 2/4. q1 ranks g4 hit (0.1), g3 (0.9), g2 (1.1), g5 (1.9),
    # g1 hit (2.1), g0 (3.1): AP (1/1 + 2/5) / 2 = 0.7, INP 2/5.
    assert got["global"] == pytest.approx({
        "rank1": 0.5, "rank5": 1.0, "rank10": 1.0, "mAP": (0.5 + 0.7) / 2,
        "mINP": (0.5 + 0.4) / 2, "num_query": 3, "skipped_queries": 1})
    # Global + 2 x local: only g1 (stripe B) moves, by 2 tanh(sqrt(2) / 2) = 1.2178. q0: g2 hit
    # (2), g4 (3), g1 (3.22), g3 hit (4): AP (1 + 2/4) / 2, INP 2/4. q1: g4 hit, g3, g2, g5,
    # g0 (3.1), g1 hit (3.32): AP (1 + 2/6) / 2, INP 2/6.
    assert 2 * math.tanh(math.sqrt(2) / 2) == pytest.approx(1.2178, abs=1e-4)
    assert got["global+local"] == pytest.approx({
        "rank1": 1.0, "rank5": 1.0, "rank10": 1.0, "mAP": (0.75 + 2 / 3) / 2,
        "mINP": (0.5 + 1 / 3) / 2, "num_query": 3, "skipped_queries": 1})
    assert all(type(v) in (int, float) for row in got.values() for v in row.values())
    assert all(set(row) == set(extract.METRIC_KEYS) for row in got.values())


def test_normalized_global_distances_compare_directions():
    # Normalised, [1, 0] and [10, 1] are close in direction; raw, [1, 0] is nearer [0, 1].
    query = features([[1, 0]], pids=[1], camids=[0])
    gallery = features([[10, 1], [0, 1]], pids=[1, 2], camids=[1, 1])
    assert extract.evaluate_features(query, gallery)["global"]["rank1"] == 1.0
    assert extract.evaluate_features(query, gallery, normalize=False)["global"]["rank1"] == 0.0


def dense_euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([[np.linalg.norm(x - y) for y in b] for x in a], np.float32)


def test_rerank_matches_the_dense_release(hand_built):
    query, gallery = hand_built
    got = extract.evaluate_features(query, gallery, rerank=True, normalize=False, k1=3, k2=2)
    assert list(got) == ["global", "global+rerank"]
    q, g = query.global_, gallery.global_
    dist = reranking.re_ranking_dense(dense_euclidean(q, g), dense_euclidean(q, q),
                                      dense_euclidean(g, g), k1=3, k2=2, lambda_value=0.3)
    cmc, mean_ap = metrics.evaluate_rank(dist, query.pids, gallery.pids, query.camids,
                                         gallery.camids)
    assert got["global+rerank"]["rank1"] == pytest.approx(cmc[0])
    assert got["global+rerank"]["mAP"] == pytest.approx(mean_ap)


def test_global_plus_local_needs_local_features(hand_built):
    query, gallery = hand_built
    query = features(query.global_, None, query.pids, query.camids)
    with pytest.raises(ValueError, match="local features"):
        extract.evaluate_features(query, gallery, local=True)


def test_features_check_their_lengths():
    with pytest.raises(ValueError, match="pids"):
        extract.Features(np.zeros((2, 3), np.float32), None, np.zeros(3, np.int64),
                         np.zeros(2, np.int64), np.array(["a", "b"]), np.zeros(2, np.int64),
                         np.zeros(2, np.int64))


def test_metrics_table_in_percent():
    row = {"rank1": 0.5, "rank5": 0.75, "rank10": 1.0, "mAP": 0.6, "mINP": 0.45,
           "num_query": 3, "skipped_queries": 1}
    lines = extract.metrics_table({"global": row})
    assert lines[0].split() == ["distance", "rank-1", "rank-5", "rank-10", "mAP", "mINP"]
    assert lines[1].split() == ["global", "50.00", "75.00", "100.00", "60.00", "45.00"]
    assert lines[2] == "queries: 3, skipped (no cross-camera match): 1"


def test_save_and_load_round_trip(hand_built, tmp_path):
    query, gallery = hand_built
    gallery = features(gallery.global_, None, gallery.pids, gallery.camids)
    path = str(tmp_path / "features.npz")
    extract.save_features(path, query, gallery, {"data_dir": "/data"})
    assert os.listdir(tmp_path) == ["features.npz"]  # no temporary file left behind
    got_query, got_gallery = extract.load_features(path)
    for want, got in ((query, got_query), (gallery, got_gallery)):
        for field in ("global_", "pids", "camids", "paths", "tracklets", "frames"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    np.testing.assert_array_equal(got_query.local, query.local)
    assert got_gallery.local is None
    assert extract.load_metadata(path) == {
        "data_dir": "/data", "format_version": 1,
        "splits": {"query": "query", "gallery": "gallery"}}


def test_pool_tracklets_averages_each_tracklets_frames():
    # Frames of tracklet 7 (pid 1, cam 0), then 3 (pid 2, cam 1), the last frame 7 again.
    frames = extract.Features(
        global_=np.array([[1, 2], [3, 0], [0, 0], [6, 3], [5, 4]], np.float32),
        local=np.arange(10, dtype=np.float32).reshape(5, 1, 2),
        pids=np.array([1, 1, 2, 2, 1]), camids=np.array([0, 0, 1, 1, 0]),
        paths=np.array(["a0", "a1", "b0", "b1", "a2"]), tracklets=np.array([7, 7, 3, 3, 7]),
        frames=np.array([0, 1, 0, 1, 2]))
    got = extract.pool_tracklets(frames)
    np.testing.assert_allclose(got.global_, [[3, 2], [3, 1.5]])
    # Local stripes [[0, 1]], [[2, 3]], [[8, 9]] for 7; [[4, 5]], [[6, 7]] for 3.
    np.testing.assert_allclose(got.local, [[[10 / 3, 13 / 3]], [[5, 6]]])
    assert got.pids.tolist() == [1, 2] and got.camids.tolist() == [0, 1]
    assert got.tracklets.tolist() == [7, 3] and got.frames.tolist() == [-1, -1]
    assert got.paths.tolist() == ["a0", "b0"]
    np.testing.assert_allclose(extract.pool_tracklets(frames, "max").global_, [[5, 4], [6, 3]])
    with pytest.raises(ValueError, match="no tracklet"):
        extract.pool_tracklets(features([[0, 0]], pids=[1], camids=[0]))
