"""AlignedReID: heads checked against NumPy on the backbone's feature map, modes, config, ResNet50."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_reid.models.aligned_reid import AlignedReID
from tf_reid.models.batch_norm import batch_norms

SHAPE = (32, 16, 3)  # the tiny backbone gives h = 4 stripes, w = 2
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
BN_EPSILON = 1e-3  # Keras' BatchNormalization default


def tiny_model(**options) -> AlignedReID:
    """A tiny-backbone model whose BN layers hold random, non-trivial inference statistics."""
    defaults = dict(num_classes=5, backbone="tiny", backbone_options={"width": 4},
                    input_shape=SHAPE, local_channels=6)
    model = AlignedReID(**{**defaults, **options})
    rng = np.random.default_rng(7)
    for layer in [model.bn_neck, model.local_bn, *model.backbone.layers]:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([
                rng.uniform(0.5, 2.0, w.shape).astype(np.float32)
                if "variance" in w.path or "gamma" in w.path
                else rng.normal(size=w.shape).astype(np.float32)
                for w in layer.weights])
    return model


def images(batch: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, *SHAPE), dtype=np.uint8)


def batch_norm(x: np.ndarray, layer: keras.layers.BatchNormalization) -> np.ndarray:
    """Inference-mode BN written out: gamma * (x - moving_mean) / sqrt(var + eps) + beta."""
    out = (x - layer.moving_mean.numpy()) / np.sqrt(layer.moving_variance.numpy() + BN_EPSILON)
    out = out * layer.gamma.numpy()
    return out + layer.beta.numpy() if layer.center else out


def reference_heads(model: AlignedReID, feature_map: np.ndarray) -> dict[str, np.ndarray]:
    """The heads on a [B, h, w, C] feature map, in NumPy, inference mode."""
    pools = {"mean": np.mean, "max": np.max}
    global_feature = pools[model.global_pooling](feature_map, axis=(1, 2))
    if model.embedding is not None:
        global_feature = global_feature @ model.embedding.kernel.numpy() + model.embedding.bias.numpy()
    neck = batch_norm(global_feature, model.bn_neck) if model.bn_neck is not None else global_feature
    logits = neck @ model.classifier.kernel.numpy()
    local = pools[model.local_pooling](feature_map, axis=2)
    local = local @ model.local_conv.kernel.numpy() + model.local_conv.bias.numpy()
    local = np.maximum(batch_norm(local, model.local_bn), 0.0)
    return {"global": global_feature, "neck": neck, "local": local, "logits": logits}


def assert_outputs_close(actual: dict, expected: dict, tol: float = 1e-4) -> None:
    assert sorted(actual) == sorted(expected)
    for key in expected:
        np.testing.assert_allclose(np.asarray(actual[key]), expected[key], rtol=tol, atol=tol,
                                   err_msg=key)


def test_output_keys_shapes_dtypes():
    model = tiny_model()
    out = model(images(3))
    assert sorted(out) == ["global", "local", "logits", "neck"]
    assert out["global"].shape == out["neck"].shape == (3, 16)  # pooled C = 4 * width
    assert out["local"].shape == (3, 4, 6)
    assert out["logits"].shape == (3, 5)
    assert all(v.dtype == tf.float32 for v in out.values())


def test_without_local_branch_no_stripe_variables_nor_output():
    full = tiny_model()
    baseline = tiny_model(local_branch=False)
    local = [w for w in full.weights if "local_" in w.path]
    assert len(local) == 6  # local_conv kernel, bias; local_bn gamma, beta, moving mean, var
    assert not [w for w in baseline.weights if "local_" in w.path]
    assert len(baseline.weights) == len(full.weights) - len(local)
    # The same global branch: with the full model's other weights, the same outputs.
    baseline.set_weights([w.numpy() for w in full.weights if "local_" not in w.path])
    pixels = images(2, seed=4)
    out = baseline(pixels)
    assert sorted(out) == ["global", "logits", "neck"]
    expected = full(pixels)
    assert_outputs_close(out, {k: np.asarray(expected[k]) for k in out}, tol=0)
    rebuilt = AlignedReID.from_config(baseline.get_config())
    assert not rebuilt.local_branch and len(rebuilt.weights) == len(baseline.weights)


def test_embedding_dim_projects_global():
    model = tiny_model(embedding_dim=10)
    out = model(images(2))
    assert out["global"].shape == (2, 10)
    assert_outputs_close(out, reference_heads(model, np.asarray(
        model.backbone((images(2).astype(np.float32) / 255 - MEAN) / STD))))


def test_uint8_equals_float_pixels():
    model = tiny_model()
    pixels = images(2)
    assert_outputs_close(model(pixels), {k: np.asarray(v) for k, v in
                                         model(pixels.astype(np.float32)).items()}, tol=0)


def test_normalisation_maps_mean_pixel_to_zero_input():
    model = tiny_model()
    mean_image = np.broadcast_to(255.0 * MEAN, (2, *SHAPE)).astype(np.float32)
    feature_map = np.asarray(model.backbone(np.zeros((2, *SHAPE), np.float32)))
    assert_outputs_close(model(mean_image), reference_heads(model, feature_map))


@pytest.mark.parametrize("local_pooling", ["mean", "max"])
@pytest.mark.parametrize("global_pooling", ["mean", "max"])
@pytest.mark.parametrize("bn_neck", [True, False])
def test_heads_match_numpy(local_pooling, global_pooling, bn_neck):
    model = tiny_model(local_pooling=local_pooling, global_pooling=global_pooling,
                       bn_neck=bn_neck)
    pixels = images(3, seed=1)
    normalised = (pixels.astype(np.float32) / 255.0 - MEAN) / STD
    feature_map = np.asarray(model.backbone(normalised))
    assert_outputs_close(model(pixels), reference_heads(model, feature_map))


def test_training_flag_switches_batch_norm_only():
    model = tiny_model()
    pixels = images(4, seed=2)
    before = [w.numpy() for w in model.weights]
    inference = model(pixels, training=False)
    # Inference is deterministic and leaves every variable alone.
    assert_outputs_close(model(pixels, training=False),
                         {k: np.asarray(v) for k, v in inference.items()}, tol=0)
    for a, w in zip(before, model.weights):
        np.testing.assert_array_equal(a, w.numpy())

    training = model(pixels, training=True)
    for key in ("global", "neck", "local", "logits"):
        assert not np.allclose(np.asarray(training[key]), np.asarray(inference[key])), key
    # Only BN moving statistics moved (no optimiser step was taken).
    for a, w in zip(before, model.weights):
        moving = "moving_" in w.path
        assert (not np.array_equal(a, w.numpy())) == moving, w.path


def test_get_config_round_trip(tmp_path):
    model = tiny_model(embedding_dim=8, local_pooling="mean", global_pooling="max",
                       local_channels=5)
    config = model.get_config()
    assert config["backbone"] == "tiny" and config["backbone_options"] == {"width": 4}
    rebuilt = AlignedReID.from_config(config)
    assert rebuilt.get_config() == config
    rebuilt.set_weights(model.get_weights())
    pixels = images(2, seed=3)
    expected = {k: np.asarray(v) for k, v in model(pixels).items()}
    assert_outputs_close(rebuilt(pixels), expected, tol=0)
    # Through Keras' own serialisation too (registered class).
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert isinstance(again, AlignedReID)
    again.set_weights(model.get_weights())
    assert_outputs_close(again(pixels), expected, tol=0)
    # And through a .keras archive, weights included.
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(loaded, AlignedReID)
    assert_outputs_close(loaded(pixels), expected, tol=0)


@pytest.mark.parametrize("backbone, options", [
    ("tiny", {"width": 4}),
    ("mobilenet_v2", {"torch_padding": True}),  # Keras builds its BatchNorms with 0.999
])
def test_bn_momentum_governs_every_moving_average(backbone, options):
    """One training call from the same moving statistics: with momentum m every BN (backbone's
    and heads') must land on m * old + (1 - m) * new0, new0 being where momentum 0 lands (the
    batch statistics, identical in both models since training mode ignores the moving ones)."""
    def build(momentum):
        keras.utils.set_random_seed(11)
        return AlignedReID(num_classes=3, backbone=backbone, backbone_options=options,
                           input_shape=(64, 32, 3), bn_momentum=momentum)

    slow, instant = build(0.9), build(0.0)
    norms = [batch_norms(m) for m in (slow, instant)]
    assert len(norms[0]) == len(norms[1]) > 2
    old = [bn.moving_mean.numpy() for bn in norms[0]]
    pixels = np.random.default_rng(2).integers(0, 256, (4, 64, 32, 3), dtype=np.uint8)
    slow(pixels, training=True)
    instant(pixels, training=True)
    for a, b, before in zip(*norms, old):
        np.testing.assert_allclose(a.moving_mean.numpy(),
                                   0.9 * before + 0.1 * b.moving_mean.numpy(),
                                   rtol=1e-4, atol=1e-5, err_msg=a.name)
    assert build(0.5).get_config()["bn_momentum"] == 0.5


def test_invalid_options():
    with pytest.raises(ValueError, match="backbone"):
        AlignedReID(num_classes=2, backbone="vgg")
    with pytest.raises(ValueError, match="local_pooling"):
        tiny_model(local_pooling="sum")


def test_resnet50_one_training_step():
    model = AlignedReID(num_classes=5, backbone="resnet50", input_shape=(64, 32, 3))
    pixels = np.random.default_rng(5).integers(0, 256, (4, 64, 32, 3), dtype=np.uint8)
    pids = np.array([0, 1, 2, 3])
    optimizer = keras.optimizers.SGD(learning_rate=0.01)
    watched = ["conv1_conv/kernel", "conv5_block1_1_conv/kernel", "classifier/kernel",
               "local_conv/kernel"]
    variables = {w.path.split("/", 1)[-1] if w.path.startswith("aligned_reid/") else w.path: w
                 for w in model.trainable_variables}
    before = {name: variables[name].numpy() for name in watched}

    with tf.GradientTape() as tape:
        out = model(pixels, training=True)
        identity = keras.losses.sparse_categorical_crossentropy(pids, out["logits"],
                                                                from_logits=True)
        # Feature norms stand in for the metric losses so that both branches get gradients.
        loss = (tf.reduce_mean(identity) + tf.reduce_mean(tf.norm(out["global"], axis=1))
                + tf.reduce_mean(tf.norm(out["local"], axis=2)))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))

    assert out["global"].shape == (4, 2048) and out["local"].shape == (4, 4, 128)
    assert np.isfinite(loss.numpy())
    for name in watched:
        assert not np.array_equal(before[name], variables[name].numpy()), name
