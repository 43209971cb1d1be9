"""Export -> load -> the same embeddings as the Keras model, for every signature."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.tf_reid.export.conftest import SHAPE, encoded
from tf_reid.data import augment
from tf_reid.export import saved_model


def reference(model, pixels: np.ndarray, key: str = "global", flip: bool = True
              ) -> dict[str, np.ndarray]:
    """The Keras model on evaluation-resized uint8 pixels (by default averaged with the same
    pixels mirrored in NumPy, as evaluated), embeddings normalised in NumPy."""
    views = [pixels, np.ascontiguousarray(pixels[:, :, ::-1])] if flip else [pixels]
    outs = [model(v, training=False) for v in views]
    g = sum(o[key].numpy() for o in outs) / len(outs)
    return {"embeddings": g / np.linalg.norm(g, axis=1, keepdims=True),
            **({"local": sum(o["local"].numpy() for o in outs) / len(outs)}
               if "local" in outs[0] else {})}


def test_layout_is_tf_servings(exported):
    _, path, _ = exported
    assert os.path.basename(path) == "1" and os.path.basename(os.path.dirname(path)) == "reid"
    assert {"saved_model.pb", "variables", "assets.extra"} <= set(os.listdir(path))
    assert sorted(os.listdir(os.path.join(path, "assets.extra"))) == [
        "model_card.json", "tf_serving_warmup_requests"]
    assert not [n for n in os.listdir(os.path.dirname(path)) if "partial" in n]


def test_serving_default_takes_encoded_images_of_any_size(exported):
    model, _, loaded = exported
    images = [encoded(2, 45, 21), encoded(3, 20, 64, "JPEG"), encoded(4, 32, 16)]
    got = loaded.signatures["serving_default"](images=tf.constant(images))["embeddings"].numpy()
    pixels = np.stack([augment.decode_and_resize(tf.constant(b), 32, 16, tf.uint8).numpy()
                       for b in images])
    np.testing.assert_allclose(got, reference(model, pixels)["embeddings"], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_embed_pixels_resizes_like_evaluation(exported):
    model, _, loaded = exported
    pixels = np.random.default_rng(5).integers(0, 256, (3, 50, 30, 3), dtype=np.uint8)
    got = loaded.signatures["embed_pixels"](pixels=tf.constant(pixels))["embeddings"].numpy()
    resized = augment.resize(tf.constant(pixels), 32, 16, tf.uint8).numpy()
    np.testing.assert_allclose(got, reference(model, resized)["embeddings"], atol=1e-5)


def test_embed_local_gives_the_stripes(exported):
    model, _, loaded = exported
    images = [encoded(6), encoded(7)]
    got = loaded.signatures["embed_local"](images=tf.constant(images))
    pixels = np.stack([augment.decode_and_resize(tf.constant(b), 32, 16, tf.uint8).numpy()
                       for b in images])
    want = reference(model, pixels)
    np.testing.assert_allclose(got["embeddings"].numpy(), want["embeddings"], atol=1e-5)
    np.testing.assert_allclose(got["local"].numpy(), want["local"], atol=1e-5)


def test_empty_batch_and_bad_bytes(exported):
    model, _, loaded = exported
    empty = loaded.signatures["serving_default"](images=tf.constant([], tf.string))["embeddings"]
    assert empty.shape == (0, model(np.zeros((1, *SHAPE), np.uint8))["global"].shape[-1])
    with pytest.raises(tf.errors.InvalidArgumentError, match="Unknown image file format"):
        loaded.signatures["serving_default"](images=tf.constant([encoded(8), b"not an image"]))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP"])
def test_header_size_is_the_decoded_size(fmt):
    for height, width in ((7, 5), (300, 1000), (64, 32)):
        data = encoded(0, height, width, fmt)
        assert saved_model.header_size(tf.constant(data)).numpy().tolist() == [height, width]
        decoded = tf.io.decode_image(data, expand_animations=False)
        assert decoded.shape[:2] == (height, width)  # the decoder agrees
    assert saved_model.header_size(tf.constant(b"not an image, long enough")).numpy().tolist() \
        == [0, 0]


def test_an_image_above_the_cap_fails_its_request_before_decoding(exported):
    _, path, loaded = exported
    # 20000 x 20000 grey PNG: 0.4 MB encoded, 400 MB decoded; refused from its header.
    bomb = io.BytesIO()
    Image.new("L", (20000, 20000)).save(bomb, "PNG")
    with pytest.raises(tf.errors.InvalidArgumentError, match="larger than the served maximum of "
                       f"{saved_model.MAX_PIXELS} pixels"):
        loaded.signatures["serving_default"](images=tf.constant([encoded(8), bomb.getvalue()]))
    # The model goes on serving; the cap is in the model card.
    assert loaded.signatures["serving_default"](
        images=tf.constant([encoded(8)]))["embeddings"].shape[0] == 1
    card = json.load(open(os.path.join(path, "assets.extra", "model_card.json")))
    assert card["input"]["max_pixels"] == saved_model.MAX_PIXELS == 4096 * 4096


def test_a_baseline_serves_no_local_signature_and_the_chosen_feature(tmp_path):
    from tf_reid.models.aligned_reid import AlignedReID

    model = AlignedReID(7, backbone="tiny", input_shape=SHAPE, local_branch=False)
    # Non-trivial BN-neck statistics, so that post-BN differs from pre-BN.
    model(np.random.default_rng(0).integers(0, 256, (16, *SHAPE), dtype=np.uint8), training=True)
    path = saved_model.export(model, str(tmp_path), "base", warmup_images=[encoded(0)],
                              feature="post_bn", flip=False)
    loaded = tf.saved_model.load(path)
    assert sorted(loaded.signatures) == ["embed_pixels", "serving_default"]
    embeddings = loaded.signatures["serving_default"](images=tf.constant([encoded(3), encoded(4)]))
    pixels = np.stack([augment.decode_and_resize(encoded(i), *SHAPE[:2], tf.uint8).numpy()
                       for i in (3, 4)])
    want = reference(model, pixels, "neck", flip=False)["embeddings"]
    assert not np.allclose(want, reference(model, pixels, flip=False)["embeddings"], atol=1e-3)
    np.testing.assert_allclose(embeddings["embeddings"].numpy(), want, atol=1e-5)
    card = json.load(open(os.path.join(path, "assets.extra", "model_card.json")))
    assert card["feature"] == "post_bn" and card["flip"] is False
    assert card["signatures"] == ["serving_default", "embed_pixels"]
    assert card["local_stripes"] is None
    records = list(tf.data.TFRecordDataset(
        os.path.join(path, "assets.extra", saved_model.WARMUP_FILE)).as_numpy_iterator())
    assert len(records) == 1  # serving_default only


def test_saved_model_cli_lists_the_signatures(exported):
    _, path, _ = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", path, "--all"], capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    text = shown.stdout
    for signature in saved_model.SIGNATURES:
        assert f"signature_def['{signature}']" in text
    assert "dtype: DT_STRING" in text and "dtype: DT_UINT8" in text
    assert "shape: (-1)" in text and "shape: (-1, -1, -1, 3)" in text
    assert "outputs['embeddings']" in text and "outputs['local']" in text


def test_warmup_requests_are_prediction_logs_the_model_answers(exported):
    from tensorflow_serving.apis import prediction_log_pb2

    _, path, loaded = exported
    records = list(tf.data.TFRecordDataset(
        os.path.join(path, "assets.extra", saved_model.WARMUP_FILE)).as_numpy_iterator())
    assert len(records) == 2
    for record in records:
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        assert request.model_spec.name == "reid"
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        assert list(inputs) == ["images"] and inputs["images"].shape == (2,)
        out = loaded.signatures[request.model_spec.signature_name](**inputs)
        assert out["embeddings"].shape[0] == 2


def test_model_card(exported):
    import json

    model, path, _ = exported
    card = json.load(open(os.path.join(path, "assets.extra", "model_card.json")))
    assert card["input"]["height"] == 32 and card["input"]["width"] == 16
    assert card["backbone"] == "tiny" and card["training_data"] == "synthetic"
    assert card["feature"] == "pre_bn" and card["flip"] is True  # the evaluated defaults
    assert card["embedding_dim"] == model(np.zeros((1, *SHAPE), np.uint8))["global"].shape[-1]


def test_versions_are_never_overwritten_and_failures_leave_nothing(exported, tmp_path):
    model, path, _ = exported
    root = os.path.dirname(os.path.dirname(path))
    with pytest.raises(saved_model.ExportError, match="exists"):
        saved_model.export(model, root, "reid", version=1)
    assert saved_model.next_version(os.path.join(root, "reid")) == 2
    with pytest.raises(TypeError):  # fails after the SavedModel is written
        saved_model.export(model, str(tmp_path), "reid", warmup_images=[12345])
    assert os.listdir(tmp_path / "reid") == []
