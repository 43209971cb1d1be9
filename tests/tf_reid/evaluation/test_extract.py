"""Feature extraction against the model called directly."""

from __future__ import annotations

import numpy as np
import pytest

from tests.tf_reid.evaluation.conftest import HEIGHT, WIDTH, make_tfrecords, tiny_model
from tf_reid.data.eval_input import eval_dataset
from tf_reid.evaluation import extract


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


def test_embed_chooses_the_feature_and_averages_the_mirror(data_dir):
    keras_model = tiny_model(seed=2)
    images = np.concatenate([b["image"] for b in gallery_batches(data_dir, flip=False)])[:6]
    plain = keras_model(images, training=False)
    mirrored = keras_model(np.ascontiguousarray(images[:, :, ::-1]), training=False)
    # The BN-neck (inference mode) moves the feature: the two choices differ.
    assert not np.allclose(plain["global"].numpy(), plain["neck"].numpy(), atol=1e-3)
    for feature, key in (("pre_bn", "global"), ("post_bn", "neck")):
        got = extract.embed(keras_model, images, feature)
        np.testing.assert_allclose(got["global"], plain[key].numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(got["local"], plain["local"].numpy(), rtol=1e-5, atol=1e-5)
        got = extract.embed(keras_model, images, feature, flip=True)
        np.testing.assert_allclose(got["global"], (plain[key] + mirrored[key]).numpy() / 2,
                                   rtol=1e-5, atol=1e-5)
        compiled = extract.keras_model_fn(keras_model, feature)(images)
        np.testing.assert_allclose(compiled["global"], plain[key].numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown feature 'neck'.*pre_bn, post_bn"):
        extract.keras_model_fn(keras_model, "neck")


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
