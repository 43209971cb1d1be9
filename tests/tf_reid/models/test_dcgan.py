"""DCGAN: sizes and channels, hand-worked losses, one train step against Adam written out."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_reid.models import dcgan

LN2 = math.log(2.0)


@pytest.mark.parametrize("height, width, steps", [(32, 16, 3), (64, 32, 4)])
def test_networks_map_noise_to_images_to_one_logit(height, width, steps):
    keras.utils.set_random_seed(0)
    generator = dcgan.build_generator(height, width, base_channels=4)
    discriminator = dcgan.build_discriminator(height, width, base_channels=4)
    images = generator(np.random.default_rng(0).normal(size=(2, 100)).astype(np.float32))
    assert images.shape == (2, height, width, 3)
    assert np.all(np.abs(images.numpy()) <= 1.0)  # tanh
    assert discriminator(images).shape == (2, 1)
    # 4x2 doubled `steps` times; the feature maps mirror each other, 32 channels at 4x2 (base 4).
    ups = [layer for layer in generator.layers if isinstance(layer, keras.layers.Conv2DTranspose)]
    downs = [layer for layer in discriminator.layers if isinstance(layer, keras.layers.Conv2D)]
    assert len(ups) == len(downs) == steps
    assert [u.output.shape[1:] for u in ups[:-1]] == [d.output.shape[1:] for d in downs[::-1][1:]]
    assert downs[-1].output.shape[1:] == (4, 2, 32)
    assert ups[-1].output.shape[1:] == (height, width, 3)
    # BatchNorm everywhere but the generator's output and the discriminator's first layer.
    norms = [sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
             for model in (generator, discriminator)]
    assert norms == [steps, steps - 1]


def test_sizes_are_4x2_times_a_power_of_two():
    assert dcgan.upsampling_steps(128, 64) == 5
    assert dcgan.upsampling_steps(8, 4) == 1
    for height, width in ((4, 2), (100, 50), (64, 64), (96, 48), (128, 32)):
        with pytest.raises(ValueError, match=f"{height}x{width}: a DCGAN size is 4x2 doubled"):
            dcgan.upsampling_steps(height, width)
    # 128x64, base 64: 512 channels at 4x2, halved per doubling down to 64.
    assert [dcgan.feature_channels(level, 64) for level in range(6)] == [512, 256, 128, 64, 64, 64]


def test_losses_against_hand_worked_values():
    zero = tf.zeros([3])
    np.testing.assert_allclose(dcgan.discriminator_loss(zero, zero), [2 * LN2] * 3, rtol=1e-6)
    np.testing.assert_allclose(dcgan.generator_loss(zero), [LN2] * 3, rtol=1e-6)
    # ln(1 + e^-2) + ln(1 + e^-1) = 0.126928 + 0.313262; the generator: ln(1 + e^1) = 1.313262.
    real, fake = tf.constant([2.0]), tf.constant([-1.0])
    np.testing.assert_allclose(dcgan.discriminator_loss(real, fake), [0.440190], atol=1e-6)
    np.testing.assert_allclose(dcgan.generator_loss(fake), [1.313262], atol=1e-6)
    # Confident logits stay finite: a sure discriminator costs ~0, a fooled one ~|logit|.
    sure = dcgan.discriminator_loss(tf.constant([100.0]), tf.constant([-100.0]))
    fooled = dcgan.discriminator_loss(tf.constant([-100.0]), tf.constant([100.0]))
    np.testing.assert_allclose(sure, [0.0], atol=1e-6)
    np.testing.assert_allclose(fooled, [200.0], rtol=1e-6)


def test_pixels_round_trip_through_the_generator_range():
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 1, 256, 1).repeat(3, axis=-1)
    scaled = dcgan.scale_images(pixels).numpy()
    assert scaled.min() == -1.0 and scaled.max() == 1.0
    np.testing.assert_array_equal(dcgan.to_pixels(scaled), pixels)
    np.testing.assert_array_equal(dcgan.to_pixels(np.array([-1.5, 1.5])), [0, 255])


def adam_first_step(weights: np.ndarray, gradient: np.ndarray, learning_rate: float,
                    beta_2: float = 0.999, epsilon: float = 1e-7) -> np.ndarray:
    """Keras' Adam after one step from zero moments, written out: the bias corrections cancel,
    leaving w - lr * g / (|g| + epsilon / sqrt(1 - beta_2))."""
    return weights - learning_rate * gradient / (np.abs(gradient) + epsilon / np.sqrt(1 - beta_2))


def test_a_train_step_moves_each_network_by_one_adam_step_on_its_own_loss():
    keras.utils.set_random_seed(1)
    gan = dcgan.DCGAN(32, 16, base_channels=4, seed=3)
    gan.build_optimizers()
    images = tf.random.stateless_uniform([6, 32, 16, 3], [1, 2], -1.0, 1.0)
    generator, discriminator = gan.generator.trainable_variables, \
        gan.discriminator.trainable_variables
    before = [v.numpy() for v in generator + discriminator]
    # The reference: both losses at the step's starting weights, on the step's noise.
    with tf.GradientTape(persistent=True) as tape:
        fake = gan.generator(gan.step_noise(6, 0), training=True)
        real_logits = gan.discriminator(images, training=True)[:, 0]
        fake_logits = gan.discriminator(fake, training=True)[:, 0]
        d_loss = tf.reduce_mean(dcgan.discriminator_loss(real_logits, fake_logits))
        g_loss = tf.reduce_mean(dcgan.generator_loss(fake_logits))
    gradients = tape.gradient(g_loss, generator) + tape.gradient(d_loss, discriminator)

    logs = gan.train_step(images)

    assert float(logs["d_loss"]) == pytest.approx(float(d_loss), rel=1e-5)
    assert float(logs["g_loss"]) == pytest.approx(float(g_loss), rel=1e-5)
    assert float(logs["d_fake"]) == pytest.approx(float(tf.reduce_mean(tf.sigmoid(fake_logits))))
    assert int(gan.generator_optimizer.iterations) == int(gan.discriminator_optimizer.iterations) \
        == 1
    for variable, weights, gradient in zip(generator + discriminator, before, gradients):
        expected = adam_first_step(weights, gradient.numpy(), 2e-4)
        # float32 spacing near BatchNorm's gamma = 1 is 1.2e-7; a step moves weights by ~2e-4.
        np.testing.assert_allclose(variable.numpy(), expected, rtol=0, atol=2e-7,
                                   err_msg=variable.path)
    # Not trivially so: the generator's loss would move the discriminator elsewhere.
    other = tape.gradient(g_loss, discriminator)
    assert any(not np.allclose(adam_first_step(w, g.numpy(), 2e-4), v.numpy(), atol=2e-7)
               for v, w, g in zip(discriminator, before[len(generator):], other))


def test_the_training_noise_is_a_function_of_seed_and_step():
    gan = dcgan.DCGAN(8, 4, base_channels=2, seed=5)
    np.testing.assert_array_equal(gan.step_noise(3, 7), gan.step_noise(3, 7))
    assert not np.array_equal(gan.step_noise(3, 7), gan.step_noise(3, 8))
    assert not np.array_equal(gan.step_noise(3, 7), dcgan.DCGAN(8, 4, 2, seed=6).step_noise(3, 7))


def test_config_round_trip():
    gan = dcgan.DCGAN(16, 8, base_channels=2, seed=4, learning_rate=1e-3, beta_1=0.4)
    rebuilt = dcgan.DCGAN.from_config(gan.get_config())
    assert rebuilt.get_config() == gan.get_config()
    assert [v.shape for v in rebuilt.weights] == [v.shape for v in gan.weights]
    assert float(rebuilt.generator_optimizer.learning_rate) == pytest.approx(1e-3)
    assert float(rebuilt.discriminator_optimizer.beta_1) == pytest.approx(0.4)
    assert rebuilt(tf.zeros([1, 100])).shape == (1, 16, 8, 3)
